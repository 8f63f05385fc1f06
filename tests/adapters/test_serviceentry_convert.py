"""ServiceEntry/WorkloadEntry conversion and validation (pure, no file watching)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from registryd.adapter import Delete, Upsert
from registryd.adapters.serviceentry.convert import Model, build_model, diff_models
from registryd.adapters.serviceentry.schema import (
    InvalidConfig,
    ParsedFile,
    parse_document,
    parse_file,
)
from registryd.adapters.serviceentry.state import FileTable
from registryd.build.clusters import build_cluster
from registryd.model import Endpoint, Health, Locality, Location, Port, Resolution

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "serviceentries"
ISTIO = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "istio"


def load_tree(root: Path) -> FileTable:
    table = FileTable()
    for path in sorted(root.rglob("*.y*ml")):
        table.load(str(path), path.read_bytes())
    return table


def load_text(text: str) -> FileTable:
    table = FileTable()
    table.load("entries.yaml", text.encode())
    return table


def model_of(*texts: str) -> Model:
    return build_model(parse_file(text, f"file{i}.yaml") for i, text in enumerate(texts))


def se(spec: str, name: str = "se", namespace: str = "default") -> str:
    body = "\n".join("  " + line for line in spec.strip().splitlines())
    return (
        f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{body}\n"
    )


def by_port(endpoints: tuple[Endpoint, ...]) -> dict[tuple[str, int], Endpoint]:
    return {(e.address, e.service_port): e for e in endpoints}


# -- conversion -------------------------------------------------------------------------


def test_static_service_entry_becomes_one_service_per_host() -> None:
    table = load_tree(FIXTURES / "mesh")
    assert table.errors == {}
    model = table.model()
    assert model.notes == ()
    for host in ("payments.shop.example", "pay.example"):
        service = model.services[host]
        assert service.namespace == "shop"
        assert service.resolution is Resolution.STATIC
        assert service.location is Location.MESH_INTERNAL
        assert dict(service.labels) == {"team": "payments"}
        assert service.addresses == ("240.0.0.10",)
        assert service.export_to == (".", "billing")
        assert service.ports == (
            Port(number=8080, name="http", protocol="HTTP", target_port=9080),
            Port(number=9090, name="grpc-api", protocol="GRPC"),
            Port(number=7000, name="admin", protocol="TLS"),
        )
        endpoints = model.endpoints[host]
        assert len(endpoints) == 6  # one per (address, service port)
        assert {e.hostname for e in endpoints} == {host}
        found = by_port(endpoints)
        first = found[("10.0.0.1", 8080)]
        assert first.port == 8081  # the endpoint's own port for "http" wins
        assert first.locality == Locality(region="eu-west1", zone="eu-west1-a", subzone="rack1")
        assert (first.weight, first.network, dict(first.labels)) == (5, "net-1", {"version": "v1"})
        assert found[("10.0.0.2", 8080)].port == 9080  # then targetPort
        assert found[("10.0.0.1", 9090)].port == 9090  # then the service port
        second = found[("10.0.0.2", 7000)]
        assert (second.weight, second.locality, second.network) == (1, Locality(), "")


def test_a_passthrough_service_entry_keeps_its_port_override() -> None:
    # istiod: serviceentry/conversion.go convertServices fills PassthroughTargetPorts from
    # targetPort, and cluster_builder.go buildCluster overrides the ORIGINAL_DST port with it
    port = "{number: 5433, name: tcp, protocol: TCP, targetPort: 5432}"
    model = model_of(se(f"hosts: [db.example]\nresolution: NONE\nports: [{port}]"))
    service = model.services["db.example"]
    assert service.ports == (Port(number=5433, name="tcp", protocol="TCP", target_port=5432),)
    cluster = build_cluster(service, service.ports[0], model.endpoints.get("db.example", ()))
    assert cluster is not None
    assert cluster.original_dst_lb_config.upstream_port_override.value == 5432


def test_workload_selector_picks_workload_entries_of_the_same_namespace_in_any_file() -> None:
    model = load_tree(FIXTURES / "mesh").model()
    endpoints = model.endpoints["orders.shop.example"]
    assert [(e.address, e.port, e.weight) for e in endpoints] == [
        ("10.1.0.1", 18080, 3),
        ("10.1.0.2", 8080, 1),
    ]
    assert endpoints[0].locality == Locality(region="us-east1", zone="us-east1-b")
    assert dict(endpoints[0].labels) == {"app": "orders", "version": "v1"}


def test_empty_selector_selects_every_workload_of_the_namespace() -> None:
    workload = (
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
        "metadata: {name: w, namespace: %s}\nspec: {address: %s}\n"
    )
    model = model_of(
        se(
            "hosts: [a.example]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
            "workloadSelector: {}"
        ),
        workload % ("default", "10.0.0.1"),
        workload % ("elsewhere", "10.0.0.2"),
    )
    assert [e.address for e in model.endpoints["a.example"]] == ["10.0.0.1"]


def test_selected_workload_entries_are_in_name_order_whatever_the_files_say() -> None:
    # serviceentry/conversion.go services(): the selected workloads are sorted by name
    workload = (
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
        "metadata: {name: %s}\nspec: {address: %s, labels: {app: a}}\n"
    )
    model = model_of(
        workload % ("zeta", "10.0.0.1"),
        se(
            "hosts: [a.example]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
            "workloadSelector: {labels: {app: a}}"
        ),
        workload % ("alpha", "10.0.0.9"),
    )
    assert [e.address for e in model.endpoints["a.example"]] == ["10.0.0.9", "10.0.0.1"]


def test_defaults_follow_istio() -> None:
    model = model_of(se("hosts: [plain.example]\nports: [{number: 5432, name: tcp-db}]"))
    service = model.services["plain.example"]
    assert service.resolution is Resolution.NONE
    assert service.location is Location.MESH_EXTERNAL
    assert service.namespace == "default"
    assert service.ports[0].protocol == "AUTO"  # auto-detected, whatever the name says
    assert model.endpoints["plain.example"] == ()


def test_weight_zero_means_unset_and_dns_endpoints_may_be_names() -> None:
    model = model_of(
        se(
            "hosts: [db.example]\nresolution: DNS\nports: [{number: 5432, name: tcp}]\n"
            "endpoints: [{address: db1.internal, weight: 0}, {address: 10.9.0.1, weight: 7}]"
        )
    )
    assert [(e.address, e.weight) for e in model.endpoints["db.example"]] == [
        ("db1.internal", 1),  # in document order, as istiod serves them
        ("10.9.0.1", 7),
    ]


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_api_versions(version: str) -> None:
    text = se("hosts: [a.example]").replace(
        "networking.istio.io/v1", f"networking.istio.io/{version}"
    )
    assert set(model_of(text).services) == {"a.example"}


def test_same_host_in_two_files_first_wins_and_endpoints_are_combined() -> None:
    model = load_tree(FIXTURES / "duplicate-host").model()
    service = model.services["search.example"]
    assert service.resolution is Resolution.STATIC  # from a.yaml, first by path
    assert [p.number for p in service.ports] == [8080]
    # every entry's endpoints, in order (istiod: mergeServicesInstancesByNamespaceHost)
    endpoints = model.endpoints["search.example"]
    assert [e.address for e in endpoints] == ["10.2.0.1", "10.2.0.2", "10.2.0.1"]
    assert len(model.notes) == 2
    assert "search.example" in model.notes[0] and "a.yaml" in model.notes[0]
    assert "b.yaml" in model.notes[0] and "9000" in model.notes[1]


def _entry(name: str, spec: str, created: str = "") -> str:
    meta = f"name: {name}" + (f", creationTimestamp: '{created}'" if created else "")
    head = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
    return f"{head}metadata: {{{meta}}}\nspec: {spec}\n"


def test_a_compatible_second_entry_adds_its_ports_as_istiods_sidecar_scope_merges_them() -> None:
    # model/sidecar.go appendSidecarServices + canMergeServices: same namespace,
    # resolution, labels, selector and exportTo -> the later entry's new ports are added
    http = "{hosts: [api.example], resolution: DNS, ports: [{number: 80, name: http}]}"
    tls = (
        "{hosts: [api.example], resolution: DNS, ports: [{number: 443, name: tls, protocol: TLS}]}"
    )
    model = model_of(_entry("a", http) + "---\n" + _entry("b", tls))
    assert [p.number for p in model.services["api.example"].ports] == [80, 443]
    assert {e.service_port for e in model.endpoints["api.example"]} == {80, 443}
    assert len(model.notes) == 1  # defined twice; nothing left out
    # another resolution: not merged, its port is left out and a note says why
    static = tls.replace("DNS", "STATIC").replace("}]}", "}], endpoints: [{address: 10.0.0.1}]}")
    model = model_of(_entry("a", http) + "---\n" + _entry("b", static))
    assert [p.number for p in model.services["api.example"].ports] == [80]
    assert "443" in model.notes[1] and "resolution" in model.notes[1]


def test_an_endpoint_written_twice_is_served_twice_as_istiod_serves_it() -> None:
    spec = (
        "{hosts: [web.example], resolution: STATIC, ports: [{number: 80, name: http}], "
        "endpoints: [{address: 10.1.0.1}, {address: 10.1.0.1, locality: r/z, weight: 7}]}"
    )
    endpoints = model_of(_entry("web", spec)).endpoints["web.example"]
    assert [(e.address, str(e.locality), e.weight) for e in endpoints] == [
        ("10.1.0.1", "", 1),
        ("10.1.0.1", "r/z", 7),
    ]


def test_the_oldest_entry_of_a_hostname_wins_whatever_the_file_order() -> None:
    dns = "{hosts: [db.example], resolution: DNS, ports: [{number: 5432, name: tcp}]}"
    none = "{hosts: [db.example], resolution: NONE, ports: [{number: 5433, name: tcp}]}"
    model = model_of(
        _entry("young", dns, "2024-05-01T00:00:00Z")
        + "---\n"
        + _entry("old", none, "2023-01-01T00:00:00Z")
    )
    assert model.services["db.example"].resolution is Resolution.NONE
    # an entry with no creation time counts as newer than one with it (istiod stamps it
    # when it reads the file)
    model = model_of(_entry("plain", dns) + "---\n" + _entry("old", none, "2023-01-01T00:00:00Z"))
    assert model.services["db.example"].resolution is Resolution.NONE


def test_a_creation_timestamp_that_is_not_a_time_is_an_error() -> None:
    text = _entry("x", "{hosts: [x.example], ports: [{number: 80, name: http}]}", "yesterday")
    with pytest.raises(InvalidConfig, match="creationTimestamp: not an RFC 3339 time"):
        parse_file(text, "x.yaml")


def test_unix_socket_endpoints_serve_the_service_port() -> None:
    model = model_of(
        se(
            "hosts: [uds.example]\nresolution: STATIC\nports: [{number: 8080, name: http}]\n"
            "endpoints: [{address: 'unix:///var/run/app.sock'}]"
        )
    )
    (endpoint,) = model.endpoints["uds.example"]
    assert (endpoint.address, endpoint.port) == ("unix:///var/run/app.sock", 8080)


def test_ipv6_address_ending_in_double_colon_in_a_flow_list() -> None:
    model = model_of(se("hosts: [v6.example]\naddresses: [2001:db8::, 10.0.0.0/8]"))
    assert model.services["v6.example"].addresses == ("2001:db8::", "10.0.0.0/8")


def test_empty_documents_and_files_are_fine() -> None:
    assert parse_file("", "empty.yaml").documents == ()
    parsed = parse_file("---\n# only a comment\n---\n" + se("hosts: [a.example]") + "---\n", "x")
    assert len(parsed.documents) == 1 and len(parsed.raw) == 1


@pytest.mark.parametrize("host", ["*.a.example", "*api.example", "*-1.api.example"])
def test_a_wildcard_may_lead_the_first_label(host: str) -> None:
    """istiod's ValidateWildcardDomain: ``*``, ``*<label>`` or ``*-<label>`` first."""
    parsed = parse_file(se(f"hosts: ['{host}']"), "w.yaml")
    assert [d.spec.hosts for d in parsed.documents] == [(host,)]


def test_bundled_examples_are_valid() -> None:
    table = load_tree(EXAMPLES)
    assert table.errors == {}
    model = table.model()
    assert model.notes == ()
    assert {"web.example", "cache.example", "api.shop.example"} <= set(model.services)
    assert len(model.endpoints["api.shop.example"]) == 4


# -- validation -------------------------------------------------------------------------

BROKEN: list[tuple[str, str, str]] = [
    ("bad yaml", "apiVersion: [unclosed\n", r"invalid YAML at line \d+"),
    ("tab yaml", "kind: ServiceEntry\n\tspec: {}\n", r"invalid YAML"),
    ("not a mapping", "- a\n- b\n", r"document 1: expected a mapping"),
    (
        "unknown kind",
        se("hosts: [a.example]").replace("ServiceEntry", "Gateway"),
        r"\(Gateway default/se\): unsupported kind 'Gateway'",
    ),
    (
        "unknown apiVersion",
        se("hosts: [a.example]").replace("io/v1", "io/v2"),
        r"unsupported apiVersion 'networking.istio.io/v2'",
    ),
    ("no spec", se("x: 1").split("spec:")[0], r"\(ServiceEntry default/se\): spec: required"),
    ("no name", se("hosts: [a.example]").replace("name: se, ", ""), r"metadata.name: required"),
    ("missing hosts", se("ports: [{number: 80, name: http}]"), r"spec.hosts: required"),
    ("empty hosts", se("hosts: []"), r"spec.hosts: required"),
    ("wildcard host", se("hosts: ['*']"), r"full wildcard"),
    ("bad host", se("hosts: [foo*]"), r"'foo\*' is not a valid DNS name"),
    ("wildcard dash no label", se("hosts: ['*-.a.example']"), r"is not a valid DNS name"),
    ("wildcard twice", se("hosts: ['*.*.a.example']"), r"is not a valid DNS name"),
    ("port number missing", se("hosts: [a.b]\nports: [{name: http}]"), r"ports\[0\].number"),
    ("port out of range", se("hosts: [a.b]\nports: [{number: 0, name: h}]"), r"between 1 and"),
    ("port as text", se("hosts: [a.b]\nports: [{number: '80', name: h}]"), r"got '80'"),
    (
        "bad protocol",
        se("hosts: [a.b]\nports: [{number: 80, name: h, protocol: SOAP}]"),
        r"unsupported protocol 'SOAP'",
    ),
    (
        "bad targetPort",
        se("hosts: [a.b]\nports: [{number: 80, name: h, targetPort: 65536}]"),
        r"ports\[0\].targetPort",
    ),
    ("port without name", se("hosts: [a.b]\nports: [{number: 80}]"), r"ports\[0\].name"),
    (
        "duplicate port numbers",
        se("hosts: [a.b]\nports: [{number: 80, name: a}, {number: 80, name: b}]"),
        r"port number 80 is duplicated",
    ),
    (
        "selector and endpoints",
        se(
            "hosts: [a.b]\nresolution: STATIC\nworkloadSelector: {labels: {app: a}}\n"
            "endpoints: [{address: 1.2.3.4}]"
        ),
        r"only one of workloadSelector or endpoints",
    ),
    (
        "wildcard selector",
        se("hosts: [a.b]\nworkloadSelector: {labels: {app: '*'}}"),
        r"wildcards are not supported",
    ),
    (
        "bad resolution",
        se("hosts: [a.b]\nresolution: dns"),
        r"spec.resolution: 'dns' is not one of",
    ),
    ("bad location", se("hosts: [a.b]\nlocation: OUTSIDE"), r"spec.location: 'OUTSIDE'"),
    (
        "static with a name",
        se("hosts: [a.b]\nresolution: STATIC\nendpoints: [{address: db.internal}]"),
        r"'db.internal' is not an IP address \(resolution STATIC",
    ),
    (
        "none with endpoints",
        se("hosts: [a.b]\nendpoints: [{address: 1.2.3.4}]"),
        r"resolution NONE cannot have endpoints",
    ),
    (
        "unknown endpoint port",
        se(
            "hosts: [a.b]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
            "endpoints: [{address: 1.2.3.4, ports: {grpc: 90}}]"
        ),
        r"endpoints\[0\].ports: 'grpc' is not a port name",
    ),
    (
        "bad locality",
        se("hosts: [a.b]\nresolution: STATIC\nendpoints: [{address: 1.1.1.1, locality: a//c}]"),
        r"locality: 'a//c'",
    ),
    (
        "negative weight",
        se("hosts: [a.b]\nresolution: STATIC\nendpoints: [{address: 1.1.1.1, weight: -1}]"),
        r"weight: must be between",
    ),
    (
        "label not a string",
        se("hosts: [a.b]").replace("namespace: default", "labels: {v: 1}"),
        r"metadata.labels: keys and values must be strings",
    ),
    (
        "cidr with dns",
        se("hosts: [a.b]\nresolution: DNS\naddresses: [10.0.0.0/8]"),
        r"CIDR addresses are allowed only",
    ),
    ("bad address", se("hosts: [a.b]\naddresses: [nope]"), r"'nope' is not an IP address or CIDR"),
    ("bad exportTo", se("hosts: [a.b]\nexportTo: [Not_A_Namespace]"), r"spec.exportTo"),
    (
        "workload without address",
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: w}\nspec: {}\n",
        r"\(WorkloadEntry default/w\): spec.address: required",
    ),
]


@pytest.mark.parametrize(("text", "reason"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_file_is_rejected_with_file_and_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidConfig) as raised:
        parse_file(text, "conf/broken.yaml")
    message = str(raised.value)
    assert message.startswith("conf/broken.yaml: ")
    assert re.search(reason, message), message


def test_one_broken_document_rejects_the_whole_file() -> None:
    path = FIXTURES / "broken" / "one-bad-document.yaml"
    with pytest.raises(InvalidConfig) as raised:
        parse_file(path.read_bytes(), str(path))
    message = str(raised.value)
    assert str(path) in message
    assert "document 2 (ServiceEntry shop/broken): spec.ports[0].number" in message
    assert "document 1" not in message


def test_not_utf8_is_rejected() -> None:
    with pytest.raises(InvalidConfig, match=r"x\.yaml: not UTF-8"):
        parse_file(b"\xff\xfe\x00", "x.yaml")


# -- last good content and increments ---------------------------------------------------

GOOD = se(
    "hosts: [a.example]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
    "endpoints: [{address: 10.0.0.1}]"
)


def test_broken_version_keeps_the_last_good_content() -> None:
    table = FileTable()
    assert table.load("a.yaml", GOOD)
    assert table.load("b.yaml", "kind: [") is False  # never good: contributes nothing
    assert set(table.errors) == {"b.yaml"}
    before = table.model()
    assert table.load("a.yaml", GOOD.replace("hosts: [a.example]", "hosts: []")) is False
    assert set(table.errors) == {"a.yaml", "b.yaml"}
    assert "spec.hosts" in table.errors["a.yaml"]
    assert table.model() == before
    assert table.sources["a.yaml"][0]["spec"]["hosts"] == ["a.example"]  # what is in use
    assert table.load("a.yaml", GOOD.replace("10.0.0.1", "10.0.0.2"))
    assert set(table.errors) == {"b.yaml"}
    assert [e.address for e in table.model().endpoints["a.example"]] == ["10.0.0.2"]
    assert table.load("a.yaml", GOOD.replace("10.0.0.1", "10.0.0.2")) is False  # unchanged


def test_error_of_a_file_never_good_does_not_claim_a_last_good_content() -> None:
    table = FileTable()
    assert table.load("a.yaml", "kind: [") is False
    (message,) = table.errors.values()
    assert "invalid YAML" in message and "last good" not in message
    table.load("a.yaml", GOOD)
    table.load("a.yaml", "kind: [")
    assert table.errors["a.yaml"].endswith("; its last good content stays in use")


def test_unreadable_and_removed_files() -> None:
    table = FileTable()
    table.load("a.yaml", GOOD)
    table.fail("a.yaml", "cannot read: Permission denied")
    assert table.errors == {
        "a.yaml": "a.yaml: cannot read: Permission denied; its last good content stays in use"
    }
    assert "a.example" in table.model().services
    assert table.remove("a.yaml")
    assert table.errors == {} and table.model().services == {}
    assert table.remove("a.yaml") is False


def test_diff_models() -> None:
    old = model_of(GOOD, se("hosts: [b.example]", name="b"))
    same = model_of(GOOD, se("hosts: [b.example]", name="b"))
    assert diff_models(old, same) == []
    new = model_of(GOOD.replace("10.0.0.1", "10.0.0.9"), se("hosts: [c.example]", name="c"))
    changes = diff_models(old, new)
    assert [type(c).__name__ for c in changes] == ["Upsert", "Upsert", "Delete"]
    upsert = changes[0]
    assert isinstance(upsert, Upsert) and upsert.service.hostname == "a.example"
    assert [e.address for e in upsert.endpoints] == ["10.0.0.9"]
    assert changes[2] == Delete(hostname="b.example")
    replace = new.replace()
    assert [s.hostname for s in replace.services] == ["a.example", "c.example"]
    assert len(replace.endpoints) == 1


# -- Istio's own accepted and rejected objects ------------------------------------------

needs_istio = pytest.mark.skipif(not ISTIO.is_dir(), reason="Istio conformance data absent")


def istio_documents(name: str) -> list[tuple[int, Any]]:
    docs = yaml.safe_load_all((ISTIO / name).read_text())
    return [(i, doc) for i, doc in enumerate(docs, 1) if doc is not None]


@needs_istio
@pytest.mark.parametrize(
    "name", ["serviceentry-valid.yaml", "workloadentry-valid.yaml", "static-weighted-se.yaml"]
)
def test_istio_valid_objects_convert(name: str) -> None:
    for index, raw in istio_documents(name):
        doc = parse_document(raw, index=index)
        build_model([ParsedFile(name, (doc,), (raw,))])


# Istio's error text -> ours, for the rejections present in the data today.
ISTIO_REASONS = {
    "spec: Required value": r"spec: required",
    "spec.hosts: Required value": r"spec\.hosts: required",
    "wildcard is not supported in selector": r"wildcards are not supported",
    "only one of WorkloadSelector or Endpoints can be set": r"only one of workloadSelector",
    "hostname cannot be wildcard": r"full wildcard",
    "CIDR addresses are allowed only for NONE/STATIC resolution types": r"CIDR addresses",
    "Duplicate value": r"port name 'a' is duplicated",
    "port number cannot be duplicated": r"port number 1 is duplicated",
    "port must be between 1-65535": r"between 1 and 65535, got 99999",
    "NONE mode cannot set endpoints": r"resolution NONE cannot have endpoints",
    "DNS_ROUND_ROBIN mode cannot have multiple endpoints": r"DNS_ROUND_ROBIN allows at most",
    "Address is required": r"address: required",
    "UDS may not be a dir": r"must not be a directory",
    "UDS must be an absolute path or abstract socket": r"absolute path or an abstract",
    "UDS may not include ports": r"must not have ports",
    "spec.ports: Invalid value": r"invalid port name '@'",
}


@needs_istio
@pytest.mark.parametrize("name", ["serviceentry-invalid.yaml", "workloadentry-invalid.yaml"])
def test_istio_invalid_objects_are_rejected(name: str) -> None:
    documents = istio_documents(name)
    assert len(documents) >= 7
    for index, raw in documents:
        with pytest.raises(InvalidConfig) as raised:
            parse_document(raw, index=index)
        message = str(raised.value)
        assert f"/{raw['metadata']['name']})" in message, message
        assert re.search(ISTIO_REASONS.get(raw["_err"], ""), message), (raw["_err"], message)


@needs_istio
def test_istio_weighted_localities() -> None:
    path = ISTIO / "static-weighted-se.yaml"
    model = build_model([parse_file(path.read_bytes(), str(path))])
    endpoints = model.endpoints["weighted.static.svc.cluster.local"]
    assert sorted((e.address, str(e.locality), e.weight) for e in endpoints) == [
        ("1.1.1.1", "b", 3),
        ("2.2.2.2", "a", 8),
        ("3.3.3.3", "a", 1),
    ]


def render_benchmark_template(text: str, services: int, instances: int) -> str:
    """Expand the few Go-template constructs Istio's benchmark config uses."""
    counts = {"Services": services, "Instances": instances}

    def render(body: str, var: str, i: int) -> str:
        def arithmetic(m: re.Match[str]) -> str:
            divisor = services if m[2] == "$.Services" else int(m[2])
            return str(i // divisor if m[1] == "div" else i % divisor)

        body = body.replace("{{$" + var + "}}", str(i))
        return re.sub(r"\{\{(div|mod) \$\w+ (\d+|\$\.Services) ?\}\}", arithmetic, body)

    def expand(m: re.Match[str]) -> str:
        return "".join(render(m[3], m[1], i) for i in range(counts[m[2]]))

    pattern = r"\{\{- range \$(\w+) := until \.(\w+) \}\}(.*?)\{\{- end \}\}"
    return re.sub(pattern, expand, text, flags=re.S)


@needs_istio
def test_istio_benchmark_config_with_workload_selectors() -> None:
    text = render_benchmark_template((ISTIO / "serviceentry-workloadentry.yaml").read_text(), 3, 9)
    assert "{{" not in text
    model = build_model([parse_file(text, "benchmark.yaml")])
    assert len(model.services) == 4
    assert [p.protocol for p in model.services["example.com"].ports] == [
        "HTTP",
        "TCP",
        "HTTPS",
        "AUTO",
    ]
    for i in range(3):
        endpoints = model.endpoints[f"random-{i}.host.example"]
        assert len(endpoints) == 3 * 4  # three workloads, four ports
        assert {e.address for e in endpoints} == {f"240.241.0.{j}" for j in range(i, 9, 3)}


def test_convert_service_entry_to_instances_dns_without_endpoints_resolves_its_host() -> None:
    # serviceentry/conversion.go convertServiceEntryToInstances (hostnameToServiceInstance)
    model = model_of(
        se(
            "hosts: [a.example, b.example]\nresolution: DNS\n"
            "ports: [{number: 443, name: tls, protocol: TLS, targetPort: 8443},"
            " {number: 80, name: web, protocol: HTTP}]"
        )
    )
    for host in ("a.example", "b.example"):
        got = sorted((e.address, e.port, e.service_port) for e in model.endpoints[host])
        assert got == [(host, 80, 80), (host, 8443, 443)]
    selected = model_of(
        se(
            "hosts: [c.example]\nresolution: DNS\nports: [{number: 80, name: web}]\n"
            "workloadSelector: {labels: {app: none}}"
        )
    )
    assert selected.endpoints["c.example"] == ()  # a selector that selects nothing: no host


def test_convert_workload_entry_merges_spec_and_metadata_labels() -> None:
    # serviceentry/conversion.go ConvertWorkloadEntry: metadata labels win
    text = (
        se(
            "hosts: [a.example]\nresolution: STATIC\nports: [{number: 80, name: http}]\n"
            "workloadSelector: {labels: {app: web}}"
        )
        + """---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: default, labels: {app: web, tier: meta}}
spec: {address: 10.0.0.9, labels: {tier: spec, version: v2}}
"""
    )
    (endpoint,) = model_of(text).endpoints["a.example"]
    assert dict(endpoint.labels) == {"app": "web", "tier": "meta", "version": "v2"}


def test_hosts_differing_only_in_case_are_one_host_and_the_duplicate_is_reported() -> None:
    model = model_of(
        se(
            "hosts: [Victim.example, victim.example, other.example]\nresolution: STATIC\n"
            "ports: [{number: 80, name: http, protocol: HTTP}]\nendpoints: [{address: 10.0.0.1}]"
        )
    )
    assert sorted(model.services) == ["other.example", "victim.example"]
    assert model.services["victim.example"].hostname == "victim.example"
    assert len(model.endpoints["victim.example"]) == 1
    (note,) = model.notes
    assert "victim.example is listed 2 times" in note and "Victim.example" in note


def test_a_port_name_implies_no_protocol() -> None:
    # serviceentry/conversion.go convertPort: the protocol field alone says it
    model = model_of(
        se("hosts: [a.example]\nresolution: STATIC\nports: [{number: 9090, name: grpc-api}]")
    )
    assert model.services["a.example"].ports == (
        Port(number=9090, name="grpc-api", protocol="AUTO"),
    )


def test_several_hosts_need_ports_that_tell_them_apart() -> None:
    # validation.go ValidateServiceEntry: "multiple hosts provided with non-HTTP, non-TLS
    # ports" unless the resolution is NONE (an unset protocol is not HTTP either)
    for port in ("{number: 5432, name: db, protocol: TCP}", "{number: 9090, name: grpc-api}"):
        table = load_text(se(f"hosts: [a.example, b.example]\nresolution: STATIC\nports: [{port}]"))
        (error,) = table.errors.values()
        assert "multiple hosts provided with non-HTTP, non-TLS ports" in error
    hosts = "hosts: [a.example, b.example]\n"
    for ok in (
        "resolution: NONE\nports: [{number: 5432, name: db, protocol: TCP}]",
        "resolution: DNS\nports: [{number: 443, name: t, protocol: TLS}]",
    ):
        assert load_text(se(hosts + ok)).errors == {}


def test_service_entry_endpoints_have_no_health() -> None:
    model = model_of(
        se(
            "hosts: [a.example]\nresolution: STATIC\n"
            "ports: [{number: 80, name: http, protocol: HTTP}]\n"
            "endpoints: [{address: 10.0.0.1}]"
        )
    )
    (endpoint,) = model.endpoints["a.example"]
    assert endpoint.health is Health.UNKNOWN
