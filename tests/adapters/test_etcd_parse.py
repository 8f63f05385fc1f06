"""Reading etcd keys and values (:mod:`registryd.adapters.etcd.parse`), pure: the key layout,
both value formats and every malformed case."""

from __future__ import annotations

import json
from typing import Any

import pytest

from registryd.adapters.etcd.parse import (
    InvalidEntry,
    Options,
    parse_entry,
    parse_key,
    valid_hostname,
)
from registryd.model import (
    Endpoint,
    Health,
    Labels,
    Locality,
    Port,
)
from tests.adapters.etcd_values import OPTIONS, PREFIX, key, naming, rich, value


def error_of(raw_key: bytes, raw_value: bytes, options: Options = OPTIONS) -> str:
    with pytest.raises(InvalidEntry) as caught:
        parse_entry(raw_key, raw_value, options)
    message = str(caught.value)
    assert message.startswith(raw_key.decode("utf-8", "backslashreplace") + ": "), message
    return message


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
