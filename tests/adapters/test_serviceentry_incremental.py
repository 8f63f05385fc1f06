"""FileTable's incremental model against from-scratch conversions, over random edits."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from typing import Any

import pytest
import yaml

from registryd.adapters.serviceentry import convert
from registryd.adapters.serviceentry.convert import Model, build_model, diff_models
from registryd.adapters.serviceentry.schema import (
    InvalidConfig,
    ParsedFile,
    ServiceEntry,
    WorkloadEntry,
    parse_file,
)
from registryd.adapters.serviceentry.state import FileTable
from registryd.model import Endpoint, Service

API = "networking.istio.io/v1"
NAMESPACES = ("default", "shop")
HOSTS = ("a.example", "b.example", "c.example", "d.example", "e.example")
PORTS = {80: "http", 81: "grpc-api", 82: "tcp", 83: "redis"}
ADDRESSES = ("10.0.0.1", "10.0.0.2", "10.0.0.3")  # of inline endpoints
WORKLOAD_ADDRESSES = ("10.1.0.1", "10.1.0.2", "10.1.0.3")  # of WorkloadEntries
FILES = ("f0.yaml", "f1.yaml", "f2.yaml", "f3.yaml", "f4.yaml", "sub/f5.yaml", "sub/f6.yaml")


def reference_model(files: Iterable[ParsedFile]) -> Model:
    """The conversion written the obvious way, in one pass over every document."""
    ordered = sorted(files, key=lambda f: f.source)
    documents = [doc for f in ordered for doc in f.documents]
    # istiod sorts the WorkloadEntries a selector picks by name (stable: files in order)
    workloads = sorted(
        (d for d in documents if isinstance(d, WorkloadEntry)), key=lambda w: w.meta.name
    )
    notes: list[str] = []
    services: dict[str, Service] = {}
    owners: dict[str, ServiceEntry] = {}
    entries = [d for d in documents if isinstance(d, ServiceEntry)]
    for entry in entries:  # first the ports: the first definition's, and compatible ones'
        for host in entry.spec.hosts:
            if host not in owners:
                owners[host] = entry
                services[host] = convert._service(host, entry)
            elif convert.mergeable(owners[host], entry):
                known = {p.number for p in services[host].ports}
                more = tuple(
                    p for p in convert._service(host, entry).ports if p.number not in known
                )
                services[host] = dataclasses.replace(
                    services[host], ports=services[host].ports + more
                )
    endpoints: dict[str, list[Endpoint]] = {}
    for entry in entries:  # then the endpoints of the first one's namespace on those ports
        selector = entry.spec.workload_selector
        selected = (
            list(entry.spec.endpoints)
            if selector is None
            else [
                w.spec
                for w in workloads
                if w.meta.namespace == entry.meta.namespace and w.spec.labels.matches(selector)
            ]
        )
        for host in entry.spec.hosts:
            if owners[host] is not entry:
                notes.append(convert._duplicate_note(host, owners[host], entry))
            numbers = {p.number for p in services[host].ports}
            found = endpoints.setdefault(host, [])
            same_namespace = entry.meta.namespace == owners[host].meta.namespace
            for workload in selected if same_namespace else ():
                for endpoint in convert._workload_endpoints(host, entry, workload):
                    if endpoint.service_port in numbers:
                        found.append(endpoint)
            if extra := sorted({p.number for p in entry.spec.ports} - numbers):
                notes.append(convert._ports_note(host, entry, extra))
    return Model(
        services=services,
        endpoints={h: tuple(eps) for h, eps in endpoints.items()},
        notes=tuple(notes),
    )


def random_labels(rng: random.Random) -> dict[str, str]:
    labels = {"app": rng.choice("xy"), "version": rng.choice(("v1", "v2"))}
    return {k: v for k, v in labels.items() if rng.random() < 0.7}


def random_workload(
    rng: random.Random, port_names: list[str], addresses: tuple[str, ...]
) -> dict[str, Any]:
    spec: dict[str, Any] = {"labels": random_labels(rng), "weight": rng.randint(0, 3)}
    if rng.random() < 0.1:
        spec["network"] = "remote"  # no address: reached through a gateway, no endpoints
    else:
        spec["address"] = rng.choice(addresses)
    if port_names and rng.random() < 0.4:
        spec["ports"] = {rng.choice(port_names): rng.randint(9000, 9002)}
    if rng.random() < 0.3:
        spec["locality"] = rng.choice(("r1", "r1/z1", "r2/z2/s"))
    return spec


def random_document(rng: random.Random, name: str) -> dict[str, Any]:
    namespace = rng.choice(NAMESPACES)
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if rng.random() < 0.4:
        workload = random_workload(rng, list(PORTS.values()), WORKLOAD_ADDRESSES)
        return {"apiVersion": API, "kind": "WorkloadEntry", "metadata": meta, "spec": workload}
    numbers = rng.sample(sorted(PORTS), rng.randint(1, 3))
    ports: list[dict[str, Any]] = [{"number": n, "name": PORTS[n]} for n in numbers]
    if rng.random() < 0.3:
        ports[0]["targetPort"] = 8000 + numbers[0]
    spec: dict[str, Any] = {
        "hosts": rng.sample(HOSTS, rng.randint(1, 2)),
        "resolution": "STATIC",
        "location": rng.choice(("MESH_INTERNAL", "MESH_EXTERNAL")),
        "ports": ports,
    }
    if rng.random() < 0.5:
        selector = random_labels(rng)
        spec["workloadSelector"] = {"labels": selector} if selector or rng.random() < 0.5 else {}
    else:
        names = [p["name"] for p in ports]
        spec["endpoints"] = [
            random_workload(rng, names, ADDRESSES) for _ in range(rng.randint(0, 3))
        ]
        for endpoint in spec["endpoints"]:
            if "address" not in endpoint:
                endpoint["address"] = rng.choice(ADDRESSES)
    if rng.random() < 0.2:
        meta["labels"] = {"team": rng.choice(("one", "two"))}
    return {"apiVersion": API, "kind": "ServiceEntry", "metadata": meta, "spec": spec}


def random_file(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return rng.choice(("kind: [\n", "apiVersion: networking.istio.io/v1\nkind: Nope\n"))
    documents = [random_document(rng, f"doc{i}") for i in range(rng.randint(0, 3))]
    return yaml.safe_dump_all(documents)


def expected_models(good: dict[str, str]) -> tuple[Model, Model]:
    files = [parse_file(text, source) for source, text in good.items()]
    return build_model(files), reference_model(files)


@pytest.mark.parametrize("seed", range(6))
def test_random_edits_match_a_full_rebuild(seed: int) -> None:
    rng = random.Random(seed)
    table = FileTable()
    texts: dict[str, str] = {}  # what each file holds now
    good: dict[str, str] = {}  # the last good content of each file
    previous = table.model()
    seen = {"notes": 0, "selected": 0, "broken": 0}
    for _ in range(150):
        for _ in range(rng.choice((1, 1, 1, 2, 3))):  # one batch of file events
            source = rng.choice(FILES)
            if source in texts and rng.random() < 0.25:
                del texts[source]
                good.pop(source, None)
                table.remove(source)
                continue
            if source in texts and rng.random() < 0.1:
                text = texts[source]  # unchanged content, e.g. touched or renamed over
            elif source in good and rng.random() < 0.1:
                document = yaml.safe_load_all(good[source])
                text = yaml.safe_dump_all(list(document)[::-1])  # same documents, reordered
            else:
                text = random_file(rng)
            texts[source] = text
            try:
                parse_file(text, source)
            except InvalidConfig:
                pass
            else:
                good[source] = text
            table.load(source, text)
        model = table.model()
        full, reference = expected_models(good)
        assert model == full
        assert model == reference
        assert diff_models(previous, model, table.changed) == diff_models(previous, model)
        previous = model
        seen["notes"] += bool(model.notes)
        seen["broken"] += bool(table.errors)
        seen["selected"] += any(
            e.address in WORKLOAD_ADDRESSES for eps in model.endpoints.values() for e in eps
        )
    assert all(seen.values()), seen  # the edits covered what they are meant to


def entry(host: str, namespace: str = "default", **extra: Any) -> dict[str, Any]:
    spec = {"hosts": [host], "resolution": "STATIC", "ports": [{"number": 80, "name": "http"}]}
    meta = {"name": host.split(".")[0], "namespace": namespace}
    return {"apiVersion": API, "kind": "ServiceEntry", "metadata": meta, "spec": spec | extra}


def workload(name: str, address: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace}
    spec = {"address": address, "labels": labels}
    return {"apiVersion": API, "kind": "WorkloadEntry", "metadata": meta, "spec": spec}


def dump(*documents: dict[str, Any]) -> str:
    return yaml.safe_dump_all(documents)


def test_changed_names_only_what_an_edit_can_affect() -> None:
    table = FileTable()
    for i in range(20):
        table.load(f"s{i}.yaml", dump(entry(f"s{i}.example", endpoints=[{"address": "10.0.0.1"}])))
    table.load("x.yaml", dump(entry("x.example", workloadSelector={"labels": {"app": "x"}})))
    table.load("y.yaml", dump(entry("y.example", workloadSelector={"labels": {"app": "y"}})))
    table.load("z.yaml", dump(entry("z.example", "other", workloadSelector={})))
    table.load("w.yaml", dump(workload("w1", "10.1.0.1", app="x")))
    before = table.model()
    assert len(table.changed) == 23

    table.load("s3.yaml", dump(entry("s3.example", endpoints=[{"address": "10.0.0.9"}])))
    after = table.model()
    assert table.changed == {"s3.example"}
    assert diff_models(before, after, table.changed) == diff_models(before, after)
    assert after.services["s4.example"] is before.services["s4.example"]  # reused as is

    table.load("w.yaml", dump(workload("w1", "10.1.0.2", app="x")))  # y and z do not select it
    assert [e.address for e in table.model().endpoints["x.example"]] == ["10.1.0.2"]
    assert table.changed == {"x.example"}

    table.load("w.yaml", dump(workload("w1", "10.1.0.2", app="y")))
    assert table.model().endpoints["x.example"] == ()
    assert table.changed == {"x.example", "y.example"}

    table.load("w.yaml", "# comment only\n" + dump(workload("w1", "10.1.0.2", app="y")))
    assert table.model().endpoints["y.example"] != ()
    assert table.changed == frozenset()  # same documents: nothing to convert

    assert table.remove("w.yaml")
    model = table.model()
    assert table.changed == {"y.example"} and model.endpoints["y.example"] == ()


def test_duplicate_host_across_files_follows_the_first_definition() -> None:
    table = FileTable()
    first = entry("d.example", endpoints=[{"address": "10.0.0.1", "weight": 2}])
    second = entry("d.example", endpoints=[{"address": "10.0.0.1", "weight": 5}])
    second["spec"]["ports"].append({"number": 90, "name": "tcp"})
    table.load("b.yaml", dump(second))
    assert [e.weight for e in table.model().endpoints["d.example"]] == [5, 5]
    table.load("a.yaml", dump(first))  # now the first by path: its attributes win
    model = table.model()
    # the second is compatible (same namespace, resolution, labels…): it adds port 90
    assert [p.number for p in model.services["d.example"].ports] == [80, 90]
    weights = [(e.service_port, e.weight) for e in model.endpoints["d.example"]]
    assert weights == [(80, 2), (80, 5), (90, 5)]  # both entries' endpoints, as istiod
    assert len(model.notes) == 1 and "a.yaml" in model.notes[0]
    assert table.remove("a.yaml")
    model = table.model()
    assert [e.weight for e in model.endpoints["d.example"]] == [5, 5]
    assert model.notes == ()
