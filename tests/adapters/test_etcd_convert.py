"""Pure conversion of etcd keys and values: the key layout, both value formats, every
malformed case, services built from several instances, and the key table that keeps
the last good value of each key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from registryd.adapter import Delete, Problems, Replace, Upsert
from registryd.adapters.etcd.mapping import build_service
from registryd.adapters.etcd.parse import (
    DEFAULT_PREFIX,
    InvalidEntry,
    Options,
    parse_entry,
    parse_key,
    valid_hostname,
)
from registryd.adapters.etcd.state import KeyTable
from registryd.model import (
    Endpoint,
    Health,
    Labels,
    Locality,
    Location,
    Port,
    Resolution,
    Service,
)

PREFIX = DEFAULT_PREFIX
OPTIONS = Options()


def key(service: str, instance: str = "i-1", prefix: str = PREFIX) -> bytes:
    return f"{prefix}{service}/{instance}".encode()


def value(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def rich(address: str = "10.0.0.1", port: int = 8080, **fields: Any) -> bytes:
    return value(address=address, port=port, **fields)


def naming(addr: Any, **fields: Any) -> bytes:
    return value(Addr=addr, **fields)


def error_of(raw_key: bytes, raw_value: bytes, options: Options = OPTIONS) -> str:
    with pytest.raises(InvalidEntry) as caught:
        parse_entry(raw_key, raw_value, options)
    message = str(caught.value)
    assert message.startswith(raw_key.decode("utf-8", "backslashreplace") + ": "), message
    return message


# -- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "options", "expected"),
    [
        (key("web", "a"), OPTIONS, ("web", "a")),
        (key("Web", "a"), OPTIONS, ("web", "a")),
        (key("my-svc_1", "10.0.0.1:80"), OPTIONS, ("my-svc_1", "10.0.0.1:80")),
        (key("web", "zone-a/host-1"), OPTIONS, ("web", "zone-a/host-1")),
        (key("api.v2", "x"), OPTIONS, ("api.v2", "x")),
        (key("web", "a"), Options(hostname_suffix="svc.example"), ("web.svc.example", "a")),
        (key("web", "a", "foo/"), Options(prefix="foo/"), ("web", "a")),
    ],
)
def test_keys(raw: bytes, options: Options, expected: tuple[str, str]) -> None:
    assert parse_key(raw, options) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (f"{PREFIX}web".encode(), f"does not match {PREFIX}<service>/<instance-id>"),
        (f"{PREFIX}web/".encode(), "does not match"),
        (f"{PREFIX}/a".encode(), "does not match"),
        (PREFIX.encode(), "does not match"),
        (key("we b"), "service name 'we b' does not make a valid DNS name"),
        (key("-web"), "does not make a valid DNS name"),
        (key("web..x"), "does not make a valid DNS name"),
        (key("a" * 64), "does not make a valid DNS name"),
        (PREFIX.encode() + b"w\xffb/1", "key is not UTF-8"),
        (b"/other/web/1", f"key is not under the prefix {PREFIX}"),
    ],
)
def test_bad_keys(raw: bytes, reason: str) -> None:
    assert reason in error_of(raw, rich())


def test_valid_hostname() -> None:
    assert valid_hostname("web") and valid_hostname("a-b.c_d.example")
    assert not valid_hostname("") and not valid_hostname("Web")
    assert not valid_hostname("a." * 127 + "a")  # 255 characters
    assert not valid_hostname("web-") and not valid_hostname(".web")


# -- gRPC naming values -------------------------------------------------------------------


def test_grpc_naming_value() -> None:
    instance = parse_entry(key("greeter", "e1"), naming("10.0.0.3:50051", Metadata=None), OPTIONS)
    assert instance.key == f"{PREFIX}greeter/e1"
    assert instance.port == Port(number=50051, name="grpc-50051", protocol="GRPC")
    assert instance.endpoint == Endpoint(
        hostname="greeter", address="10.0.0.3", port=50051, service_port=50051
    )
    assert instance.raw == {"Addr": "10.0.0.3:50051", "Metadata": None}


def test_grpc_naming_metadata_strings_become_labels() -> None:
    metadata = {"version": "v2", "weight": 3, "nested": {"a": "b"}, "zone": "z1"}
    instance = parse_entry(key("greeter"), naming("10.0.0.3:1", Metadata=metadata), OPTIONS)
    assert instance.endpoint.labels == Labels({"version": "v2", "zone": "z1"})
    for other in ("just text", [1, 2], 7):
        plain = parse_entry(key("greeter"), naming("10.0.0.3:1", Metadata=other), OPTIONS)
        assert plain.endpoint.labels == Labels()


def test_grpc_naming_ipv6_op_and_extra_fields() -> None:
    instance = parse_entry(key("g"), naming("[::0001]:443", Op=0, Extra="x"), OPTIONS)
    assert (instance.endpoint.address, instance.endpoint.port) == ("::1", 443)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (naming("10.0.0.3"), "Addr: must be <ip>:<port> or [<ipv6>]:<port>, got '10.0.0.3'"),
        (naming("10.0.0.3:"), "Addr: must be <ip>:<port>"),
        (naming(":50051"), "Addr: must be <ip>:<port>"),
        (naming("::1:50051"), "Addr: must be <ip>:<port>"),
        (naming("greeter.local:50051"), "Addr: host must be an IP address, got 'greeter.local'"),
        (naming("[10.0.0.3]:50051"), "Addr: host must be an IP address"),
        (naming("10.0.0.3:0"), "Addr: port: must be an integer 1-65535, got 0"),
        (naming("10.0.0.3:65536"), "Addr: port: must be an integer 1-65535"),
        (naming(50051), "Addr: must be a string <ip>:<port>, got a number"),
        (naming(None), "Addr: must be a string <ip>:<port>, got null"),
        (naming("10.0.0.3:1", Op=1), "Op: a stored endpoint must be 0 (Add), got 1"),
        (naming("10.0.0.3:1", Op=False), "Op: a stored endpoint must be 0 (Add)"),
        (naming("10.0.0.3:1", address="10.0.0.3"), "has both Addr"),
    ],
)
def test_bad_grpc_naming_values(raw: bytes, reason: str) -> None:
    message = error_of(key("greeter"), raw)
    assert "invalid gRPC naming value" in message
    assert reason in message


# -- registryd values ---------------------------------------------------------------------


def test_rich_value_with_every_field() -> None:
    raw = rich(
        "10.0.0.1",
        8080,
        servicePort=80,
        protocol="http",
        portName="web",
        locality="eu-west/eu-west-1a/rack-7",
        weight=2,
        labels={"version": "v1"},
        health="draining",
        network="net-1",
    )
    instance = parse_entry(key("shop"), raw, Options(namespace="ns"))
    assert instance.port == Port(number=80, name="web", protocol="HTTP")
    assert instance.endpoint == Endpoint(
        hostname="shop",
        address="10.0.0.1",
        port=8080,
        service_port=80,
        locality=Locality(region="eu-west", zone="eu-west-1a", subzone="rack-7"),
        weight=2,
        health=Health.DRAINING,
        labels=Labels({"version": "v1"}),
        network="net-1",
    )
    assert instance.raw == json.loads(raw)


@pytest.mark.parametrize(
    ("fields", "port"),
    [
        ({}, Port(number=8080, name="tcp-8080", protocol="TCP")),
        ({"servicePort": 80}, Port(number=80, name="tcp-80", protocol="TCP")),
        ({"protocol": "GRPC"}, Port(number=8080, name="grpc-8080", protocol="GRPC")),
        ({"protocol": "grpc-web"}, Port(number=8080, name="grpc-web-8080", protocol="GRPC-WEB")),
        ({"portName": "http"}, Port(number=8080, name="http", protocol="HTTP")),
        ({"portName": "grpc-api"}, Port(number=8080, name="grpc-api", protocol="GRPC")),
        ({"portName": "grpc-web-x"}, Port(number=8080, name="grpc-web-x", protocol="GRPC-WEB")),
        ({"portName": "metrics"}, Port(number=8080, name="metrics", protocol="TCP")),
        ({"portName": "http", "protocol": "TCP"}, Port(number=8080, name="http", protocol="TCP")),
        (
            {"protocol": None, "portName": None, "servicePort": None},
            Port(number=8080, name="tcp-8080", protocol="TCP"),
        ),
    ],
)
def test_rich_port_defaults(fields: dict[str, Any], port: Port) -> None:
    assert parse_entry(key("s"), rich(**fields), OPTIONS).port == port


def test_rich_endpoint_defaults() -> None:
    raw = rich(
        "2001:db8::0:1", 9000, weight=0, locality=None, labels=None, health=None, network=None
    )
    endpoint = parse_entry(key("s"), raw, OPTIONS).endpoint
    assert endpoint == Endpoint(hostname="s", address="2001:db8::1", port=9000, service_port=9000)
    assert endpoint.weight == 1  # 0 means unset, as in Istio
    assert endpoint.health == Health.HEALTHY


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (value(port=8080), "address: required"),
        (value(address=None, port=8080), "address: required"),
        (rich(address=""), "address: must be an IP address, got ''"),
        (rich(address="web.local"), "address: must be an IP address, got 'web.local'"),
        (rich(address="10.0.0.1:80"), "address: must be an IP address"),
        (value(address=["10.0.0.1"], port=1), "address: must be a string, got a list"),
        (value(address="10.0.0.1"), "port: required"),
        (rich(port=0), "port: must be an integer 1-65535, got 0"),
        (rich(port=65536), "port: must be an integer 1-65535, got 65536"),
        (value(address="10.0.0.1", port="8080"), 'port: must be an integer 1-65535, got "8080"'),
        (value(address="10.0.0.1", port=80.5), "port: must be an integer 1-65535, got 80.5"),
        (value(address="10.0.0.1", port=True), "port: must be an integer 1-65535, got true"),
        (rich(servicePort=-1), "servicePort: must be an integer 1-65535, got -1"),
        (rich(protocol="SCTP"), "protocol: must be one of"),
        (rich(protocol=6), "protocol: must be a string, got a number"),
        (rich(portName="http web"), "portName: must be 1-63 letters"),
        (rich(portName="-http"), "portName: must be 1-63 letters"),
        (rich(portName="h" * 64), "portName: must be 1-63 letters"),
        (rich(weight=-1), "weight: must be an integer 0-4294967295, got -1"),
        (rich(weight=2**32), "weight: must be an integer 0-4294967295"),
        (rich(weight=1.5), "weight: must be an integer"),
        (rich(weight="2"), "weight: must be an integer"),
        (rich(health="SICK"), "health: must be one of HEALTHY, UNHEALTHY, DRAINING, got"),
        (rich(health=1), "health: must be one of"),
        (rich(locality="a/b/c/d"), "locality: must be region/zone/subzone, got 'a/b/c/d'"),
        (rich(locality=3), "locality: must be a string, got a number"),
        (rich(network=True), "network: must be a string, got a boolean"),
        (rich(labels=["a"]), "labels: must be an object of strings, got a list"),
        (rich(labels={"a": 1}), "labels: keys must be non-empty and values strings; bad: ['a']"),
        (rich(labels={"": "x"}), "labels: keys must be non-empty"),
        (rich(servicport=80), "unknown fields ['servicport']"),
    ],
)
def test_bad_rich_values(raw: bytes, reason: str) -> None:
    message = error_of(key("web"), raw)
    assert "invalid registryd value" in message
    assert reason in message


def test_every_reason_is_reported_at_once() -> None:
    message = error_of(key("web"), value(address="nope", port=0, health="SICK", extra=1))
    for reason in ("unknown fields ['extra']", "address:", "port:", "health:"):
        assert reason in message


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "value is empty (expected a JSON object)"),
        (b"  \n", "value is empty"),
        (b"{not json", "value is not valid JSON: "),
        (b'{"address": "10.0.0.1",}', "value is not valid JSON"),
        (b"\xff\xfe\xfa", "value is not"),
        (b"[1, 2]", "value must be a JSON object, got a list"),
        (b'"10.0.0.1:80"', "value must be a JSON object, got a string"),
        (b"42", "value must be a JSON object, got a number"),
        (b"null", "value must be a JSON object, got null"),
    ],
)
def test_bad_values(raw: bytes, reason: str) -> None:
    assert reason in error_of(key("web"), raw)


# -- services from instances ----------------------------------------------------------------


def instance(name: str, raw: bytes, service: str = "web") -> Any:
    return parse_entry(key(service, name), raw, OPTIONS)


def test_one_port_per_distinct_service_port() -> None:
    built = build_service(
        "web",
        [
            instance("c", rich("10.0.0.3", 9090, servicePort=90, portName="grpc")),
            instance("a", rich("10.0.0.1", 8080, servicePort=80, protocol="HTTP")),
            instance("b", rich("10.0.0.2", 8080, servicePort=80, protocol="HTTP")),
        ],
        Options(namespace="shop"),
    )
    assert built.service == Service(
        hostname="web",
        namespace="shop",
        ports=(
            Port(number=80, name="http-80", protocol="HTTP"),
            Port(number=90, name="grpc", protocol="GRPC"),
        ),
        resolution=Resolution.STATIC,
        location=Location.MESH_INTERNAL,
    )
    assert [(e.service_port, e.address) for e in built.endpoints] == [
        (80, "10.0.0.1"),
        (80, "10.0.0.2"),
        (90, "10.0.0.3"),
    ]
    assert built.notes == ()


def test_grpc_naming_instances_each_give_their_port() -> None:
    built = build_service(
        "greeter",
        [
            instance("a", naming("10.0.0.1:50051"), "greeter"),
            instance("b", naming("10.0.0.2:50052"), "greeter"),
        ],
        OPTIONS,
    )
    assert [p.number for p in built.service.ports] == [50051, 50052]
    assert [(e.address, e.port, e.service_port) for e in built.endpoints] == [
        ("10.0.0.1", 50051, 50051),
        ("10.0.0.2", 50052, 50052),
    ]


def test_first_key_wins_a_port_conflict_with_a_note() -> None:
    built = build_service(
        "web",
        [
            instance("b", rich("10.0.0.2", 80, protocol="GRPC")),
            instance("a", rich("10.0.0.1", 80, protocol="HTTP")),
        ],
        OPTIONS,
    )
    assert built.service.ports == (Port(number=80, name="http-80", protocol="HTTP"),)
    assert len(built.endpoints) == 2
    (note,) = built.notes
    assert f"{PREFIX}web/b declares port 80 as grpc-80/GRPC but {PREFIX}web/a as" in note


def test_same_endpoint_twice_is_kept_once_with_a_note() -> None:
    built = build_service(
        "web",
        [
            instance("old", rich("10.0.0.1", 8080, weight=5)),
            instance("new", rich("10.0.0.1", 8080, weight=1)),
        ],
        OPTIONS,
    )
    (endpoint,) = built.endpoints
    assert endpoint.weight == 1  # "new" sorts before "old"
    (note,) = built.notes
    assert "give the same endpoint 10.0.0.1:8080 for port 8080" in note


# -- the key table --------------------------------------------------------------------------


def test_table_changes() -> None:
    table = KeyTable(OPTIONS)
    assert table.replace() == Replace()
    table.put(key("web", "a"), rich("10.0.0.1"))
    table.put(key("web", "b"), rich("10.0.0.2"))
    (upsert,) = table.changes()
    assert isinstance(upsert, Upsert)
    assert [e.address for e in upsert.endpoints] == ["10.0.0.1", "10.0.0.2"]
    assert table.changes() == []

    table.put(key("web", "b"), rich("10.0.0.2"))  # same value
    table.put(key("web", "b"), b' {"port": 8080,  "address": "10.0.0.2"}')  # same meaning
    assert table.changes() == []

    table.put(key("api", "a"), rich("10.0.0.3"))
    table.delete(key("web", "a"))
    table.delete(key("web", "b"))
    table.delete(key("nothing", "here"))
    changes = table.changes()
    assert [type(c).__name__ for c in changes] == ["Upsert", "Delete"]
    assert changes[1] == Delete(hostname="web")
    assert table.changes() == []


def test_table_keeps_the_last_good_value() -> None:
    table = KeyTable(OPTIONS)
    good = {"address": "10.0.0.1", "port": 8080}
    table.put(key("web", "a"), value(**good))
    table.replace()
    sources = table.sources

    table.put(key("web", "a"), b"{broken")
    assert table.changes() == []
    problems = table.problems()
    assert list(problems.errors) == [f"{PREFIX}web/a"]
    assert problems.sources == {f"{PREFIX}web/a": good}
    assert table.sources is sources  # unchanged: the same mapping

    table.put(key("web", "a"), rich("10.0.0.9"))
    (upsert,) = table.changes()
    assert isinstance(upsert, Upsert) and upsert.endpoints[0].address == "10.0.0.9"
    assert table.problems().errors == {}
    assert table.sources is not sources


def test_table_broken_new_key_contributes_nothing_and_delete_clears_it() -> None:
    table = KeyTable(OPTIONS)
    table.put(key("web", "a"), b"[]")
    table.put(f"{PREFIX}stray".encode(), rich())
    assert table.changes() == []
    assert sorted(table.errors) == [f"{PREFIX}stray", f"{PREFIX}web/a"]
    table.delete(key("web", "a"))
    table.delete(f"{PREFIX}stray".encode())
    assert table.problems() == Problems()


def test_table_reset_is_a_full_listing() -> None:
    table = KeyTable(OPTIONS)
    table.put(key("web", "a"), rich("10.0.0.1"))
    table.put(key("web", "b"), rich("10.0.0.2"))
    table.put(key("gone", "a"), rich("10.0.0.3"))
    table.put(key("bad", "a"), b"x")
    table.replace()

    table.reset(
        [
            (key("web", "a"), b"{still broken"),  # broken now: keeps its last good value
            (key("web", "c"), rich("10.0.0.4")),
            (key("new", "a"), naming("10.0.0.5:50051")),
        ]
    )
    replace = table.replace()
    assert [s.hostname for s in replace.services] == ["new", "web"]
    assert [(e.hostname, e.address) for e in replace.endpoints] == [
        ("new", "10.0.0.5"),
        ("web", "10.0.0.1"),
        ("web", "10.0.0.4"),
    ]
    assert list(table.errors) == [f"{PREFIX}web/a"]
    assert table.changes() == []


def test_table_raw_only_change_updates_sources_without_an_upsert() -> None:
    table = KeyTable(OPTIONS)
    table.put(key("g", "a"), naming("10.0.0.1:1", Metadata={"n": 1}))
    table.replace()
    before = table.sources
    table.put(key("g", "a"), naming("10.0.0.1:1", Metadata={"n": 2}))
    assert table.changes() == []
    assert table.sources is not before
    assert table.sources[f"{PREFIX}g/a"] == {"Addr": "10.0.0.1:1", "Metadata": {"n": 2}}


def test_table_notes_are_warnings_of_its_problems() -> None:
    table = KeyTable(OPTIONS)
    table.put(key("web", "a"), rich("10.0.0.1", 80, protocol="HTTP"))
    table.put(key("web", "b"), rich("10.0.0.2", 80, protocol="TCP"))
    table.replace()
    (note,) = table.notes
    assert "declares port 80" in note
    assert table.problems().warnings == (note,)
    assert table.problems().errors == {}
    table.delete(key("web", "b"))
    table.changes()
    assert table.notes == () and table.problems().warnings == ()


def test_hostnames_differing_in_case_are_one_service() -> None:
    table = KeyTable(Options(hostname_suffix="svc.example"))
    table.put(key("Web", "a"), rich("10.0.0.1"))
    table.put(key("web", "b"), rich("10.0.0.2"))
    replace = table.replace()
    assert [s.hostname for s in replace.services] == ["web.svc.example"]
    assert len(replace.endpoints) == 2
