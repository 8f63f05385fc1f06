"""The model's value types: validation, normalisation, identity."""

from __future__ import annotations

import dataclasses
import ipaddress
import random

import pytest

from registryd.model import (
    Endpoint,
    Labels,
    Locality,
    Port,
    Service,
    ShardKey,
    is_http,
    is_ip,
)


@pytest.mark.parametrize("number", [0, -1, 65536, 100000])
def test_port_number_out_of_range_is_rejected(number: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        Port(number=number)


@pytest.mark.parametrize("number", [1, 80, 65535])
def test_port_number_in_range_is_accepted(number: int) -> None:
    assert Port(number=number).number == number


@pytest.mark.parametrize("target", [0, 65536])
def test_port_target_port_out_of_range_is_rejected(target: int) -> None:
    with pytest.raises(ValueError, match="targetPort"):
        Port(number=80, target_port=target)


def test_port_target_port_kept_when_valid() -> None:
    assert Port(number=80, target_port=8080).target_port == 8080
    assert Port(number=80).target_port is None


def test_port_protocol_is_upper_cased() -> None:
    assert Port(number=80, protocol="grpc-web").protocol == "GRPC-WEB"
    assert Port(number=80).protocol == "TCP"


def test_is_http_is_case_insensitive() -> None:
    assert is_http("http2") and is_http("GRPC") and is_http("grpc-web")
    assert not is_http("TCP") and not is_http("TLS")


def test_labels_are_immutable() -> None:
    labels = Labels({"app": "a"})
    with pytest.raises(TypeError):
        labels["app"] = "b"  # type: ignore[index]
    with pytest.raises(AttributeError):
        labels.extra = 1  # type: ignore[attr-defined]


def test_labels_are_hashable_and_order_independent() -> None:
    one = Labels({"a": "1", "b": "2"})
    two = Labels([("b", "2"), ("a", "1")])
    assert one == two
    assert hash(one) == hash(two)
    assert len({one, two}) == 1
    assert list(one) == ["a", "b"]


def test_labels_compare_equal_to_a_dict() -> None:
    assert Labels({"a": "1"}) == {"a": "1"}
    assert Labels({"a": "1"}) != {"a": "2"}
    assert Labels({"a": "1"}) != {"a": "1", "b": "2"}
    assert Labels() == {}
    assert Labels({"a": "1"}) != "a"


def test_labels_reject_non_string_values() -> None:
    with pytest.raises(TypeError):
        Labels({"a": 1})  # type: ignore[arg-type]


def test_labels_matches_selector() -> None:
    labels = Labels({"app": "a", "version": "v1"})
    assert labels.matches({"app": "a"})
    assert labels.matches({})
    assert not labels.matches({"app": "b"})
    assert not labels.matches({"app": "a", "zone": "z"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("us-east/us-east-1a/rack1", ("us-east", "us-east-1a", "rack1")),
        ("us-east/us-east-1a", ("us-east", "us-east-1a", "")),
        ("us-east", ("us-east", "", "")),
        ("", ("", "", "")),
        (None, ("", "", "")),
    ],
)
def test_locality_parse(text: str | None, expected: tuple[str, str, str]) -> None:
    loc = Locality.parse(text)
    assert (loc.region, loc.zone, loc.subzone) == expected


def test_locality_str_round_trips() -> None:
    assert str(Locality.parse("r/z/s")) == "r/z/s"
    assert str(Locality.parse("r")) == "r"
    assert str(Locality()) == ""
    # a zone without a region (Nacos clusters, Consul datacenters as zones) keeps its place:
    # istiod reads a WorkloadEntry's "z1" as a region (label.SplitLocalityLabel)
    for parts in (("", "z1", ""), ("", "", "s"), ("r", "", "s"), ("", "z", "s")):
        loc = Locality(region=parts[0], zone=parts[1], subzone=parts[2])
        assert Locality.parse(str(loc)) == loc, str(loc)
    assert str(Locality(zone="z1")) == "/z1"


def test_service_rejects_duplicate_port_numbers() -> None:
    with pytest.raises(ValueError, match="duplicate port"):
        Service(hostname="a.example", ports=(Port(number=80, name="a"), Port(number=80, name="b")))


def test_service_rejects_empty_hostname() -> None:
    with pytest.raises(ValueError):
        Service(hostname="")


def test_service_normalises_labels_and_ports() -> None:
    service = Service(
        hostname="a.example",
        ports=[Port(number=80)],  # type: ignore[arg-type]
        labels={"app": "a"},  # type: ignore[arg-type]
    )
    assert isinstance(service.ports, tuple)
    assert isinstance(service.labels, Labels)
    hash(service)  # frozen, hashable value
    assert service.port(80) == Port(number=80)
    assert service.port(81) is None


@pytest.mark.parametrize("port", [0, 65536])
def test_endpoint_port_out_of_range_is_rejected(port: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        Endpoint(hostname="a", address="10.0.0.1", port=port, service_port=80)


def test_endpoint_negative_weight_is_rejected() -> None:
    with pytest.raises(ValueError, match="negative weight"):
        Endpoint(hostname="a", address="10.0.0.1", port=80, service_port=80, weight=-1)


def test_endpoint_zero_weight_is_accepted_and_labels_normalised() -> None:
    e = Endpoint(
        hostname="a",
        address="10.0.0.1",
        port=80,
        service_port=80,
        weight=0,
        labels={"v": "1"},  # type: ignore[arg-type]
    )
    assert e.weight == 0
    assert isinstance(e.labels, Labels)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.port = 81  # type: ignore[misc]


def test_shard_key_str() -> None:
    assert str(ShardKey("consul", "dc1")) == "consul/dc1"


def test_is_ip_decides_as_ipaddress_does() -> None:
    """``is_ip`` answers the plain forms with the C parser and the rest with
    ``ipaddress``: on random strings made of address characters, and on the forms
    where parsers disagree (leading zeros, scoped IPv6, embedded IPv4), it says what
    ``ipaddress.ip_address`` says."""
    rng = random.Random(7)
    alphabet = "0123456789abcdefABCDEF:.%x \x00"
    samples = [
        "10.0.0.1",
        "010.0.0.1",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        "::",
        "::1",
        "fe80::1%eth0",
        "::ffff:1.2.3.4",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:9",
        "00000::1",
        "[::1]",
        "1.2.3.4 ",
        "",
        "example.com",
        "1.2.3.4/32",
    ]
    samples += [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 16))) for _ in range(20000)
    ]
    samples += [
        ".".join(str(rng.choice([0, 1, 99, 255, 256, "01", "00"])) for _ in range(4))
        for _ in range(2000)
    ]

    def reference(address: str) -> bool:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return False
        return True

    wrong = [s for s in samples if is_ip(s) != reference(s)]
    assert wrong == []
    assert sum(map(reference, samples)) > 200  # both answers are exercised
