"""Unknown fields in ServiceEntry / WorkloadEntry documents: named with their line and
the closest known field, at every level; the file registry serves the document without
them (as istiod does) and reports each as a warning."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registryd.adapter import AdapterContext, Problems, Replace, Upsert
from registryd.adapters.serviceentry import ServiceEntryAdapter
from registryd.adapters.serviceentry.documents import read_documents
from registryd.adapters.serviceentry.fields import KNOWN, PROTO_NAMES, unknown_fields
from registryd.adapters.serviceentry.schema import InvalidConfig, parse_document
from registryd.adapters.serviceentry.yamlsafe import load_documents
from registryd.tools.configcheck import check
from tests.adapters.feed import Feed

TYPO = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: db
  anything: goes
spec:
  hosts: [db.example]
  ports:
  - {number: 5432, name: tcp, protocl: TCP}
  resolutoin: STATIC
  endpoints:
  - address: 10.0.0.1
    lables: {app: db}
"""
SELECTOR = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.example]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  workloadSelector:
    lables: {app: web}
statuz: {}
"""
WORKLOAD = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm1}
spec:
  address: 10.0.0.4
  adress: 10.0.0.3
"""


def fields_of(text: str) -> list[tuple[str, str | None]]:
    (raw,) = load_documents(text)
    return [(f.name, f.closest) for f in unknown_fields(raw)]


def test_unknown_fields_at_every_level_with_the_closest_known_one() -> None:
    assert fields_of(TYPO) == [
        ("spec.resolutoin", "resolution"),
        ("spec.ports[0].protocl", "protocol"),
        ("spec.endpoints[0].lables", "labels"),
    ]
    assert fields_of(SELECTOR) == [
        ("statuz", "status"),
        ("spec.workloadSelector.lables", "labels"),
    ]
    assert fields_of(WORKLOAD) == [("spec.adress", "address")]


def test_metadata_is_not_checked_as_istioctl_does_not() -> None:
    assert not any(name.startswith("metadata") for name, _ in fields_of(TYPO))


def test_a_field_like_nothing_known_gets_no_suggestion() -> None:
    text = WORKLOAD.replace("adress", "zzzzzzzz")
    assert fields_of(text) == [("spec.zzzzzzzz", None)]


def test_every_field_the_parser_reads_is_known() -> None:
    """The table is the one list of fields: a complete document of every object uses
    nothing outside it."""
    text = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: full, namespace: ns, labels: {a: b}}
spec:
  hosts: [full.example]
  addresses: [10.1.0.0/16]
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - {address: 10.1.0.1, ports: {http: 8080}, labels: {a: b}, network: n, locality: r/z,
     weight: 2, serviceAccount: sa}
  exportTo: ["."]
  subjectAltNames: [spiffe://x]
"""
    (raw,) = load_documents(text)
    parse_document(raw)
    assert unknown_fields(raw) == ()
    json_names = KNOWN["ServiceEntry.spec"] - PROTO_NAMES.keys()
    assert set(raw["spec"]) == json_names - {"workloadSelector"}


def test_a_broken_document_names_its_unknown_fields_first() -> None:
    (raw,) = load_documents(TYPO)
    with pytest.raises(InvalidConfig) as caught:
        parse_document(raw)
    message = str(caught.value)
    assert message.startswith(
        "document 1 (ServiceEntry default/db): "
        "spec.resolutoin: unknown field (did you mean 'resolution'?); "
    )
    assert "spec.endpoints[0].lables: unknown field (did you mean 'labels'?)" in message


def test_a_document_whose_only_fault_is_an_unknown_field_is_used_with_a_warning() -> None:
    reading = read_documents(WORKLOAD + "---\n" + SELECTOR, "vms.yaml")
    assert reading.errors == ()
    assert len(reading.documents) == 2
    assert reading.warnings == (
        "vms.yaml:6: document 1 (WorkloadEntry default/vm1): spec.adress: unknown field "
        "(did you mean 'address'?); ignored, as istiod does",
        "vms.yaml:17: document 2 (ServiceEntry default/web): statuz: unknown field "
        "(did you mean 'status'?); ignored, as istiod does",
        "vms.yaml:16: document 2 (ServiceEntry default/web): spec.workloadSelector.lables: "
        "unknown field (did you mean 'labels'?); ignored, as istiod does",
    )


def replace_file(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@pytest.fixture
async def feed(tmp_path: Path) -> AsyncIterator[tuple[Feed, Path]]:
    root = tmp_path / "entries"
    root.mkdir()
    adapter = ServiceEntryAdapter(
        name="files", settings={"path": str(root)}, context=AdapterContext()
    )
    started = Feed(adapter)
    try:
        assert isinstance(await started.next(), Replace)
        assert (await started.expect(Problems)).warnings == ()
        yield started, root
    finally:
        await started.close()


async def test_the_file_registry_serves_it_and_warns_until_the_field_is_fixed(
    feed: tuple[Feed, Path],
) -> None:
    updates, root = feed
    path = root / "vm.yaml"
    text = SELECTOR.replace("statuz: {}\n", "").replace(
        "  workloadSelector:\n    lables: {app: web}\n",
        "  endpoints:\n  - address: 10.0.0.9\n    lables: {app: web}\n",
    )
    replace_file(path, text)
    upsert = await updates.expect(Upsert)
    assert [e.address for e in upsert.endpoints] == ["10.0.0.9"]
    problems = await updates.expect(Problems)
    assert problems.errors == {}
    assert problems.warnings == (
        f"{path}:10: document 1 (ServiceEntry default/web): spec.endpoints[0].lables: "
        "unknown field (did you mean 'labels'?); ignored, as istiod does",
    )
    replace_file(path, text.replace("lables", "labels"))
    await updates.expect(Upsert)
    assert (await updates.expect(Problems)).warnings == ()


def test_validate_and_the_daemon_say_the_same_of_each_unknown_field(tmp_path: Path) -> None:
    path = tmp_path / "vms.yaml"
    path.write_text(WORKLOAD + "---\n" + SELECTOR)
    reading = read_documents(path.read_text(), str(path))
    findings = [f for f in check(paths=[str(path)]).findings if f.code == "unknown-field"]
    said = [f"{f.source}:{f.line}: {f.message}; ignored, as istiod does" for f in findings]
    assert sorted(said) == sorted(reading.warnings)


def test_proto_names_are_read_as_protojson_reads_them() -> None:
    text = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.example]
  ports: [{number: 80, name: http, target_port: 8080}]
  resolution: STATIC
  workload_selector:
    lables: {app: web}
  export_to: ["."]
"""
    (raw,) = load_documents(text)
    doc = parse_document(raw)
    assert doc.spec.export_to == (".",)
    assert doc.spec.ports[0].target_port == 8080
    assert raw["spec"]["export_to"] == ["."]  # the loaded document is not changed
    reading = read_documents(text, "web.yaml")
    assert reading.warnings == (
        "web.yaml:9: document 1 (ServiceEntry default/web): spec.workloadSelector.lables: "
        "unknown field (did you mean 'labels'?); ignored, as istiod does",
    )
