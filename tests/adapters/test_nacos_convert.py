"""The Nacos mapping (pure): hostnames, instances -> endpoints, settings, snapshots."""

from __future__ import annotations

from typing import Any

import pytest

from registryd.adapter import ConfigError
from registryd.adapters.nacos.adapter import Record, signature, snapshot
from registryd.adapters.nacos.convert import convert_service, hostname
from registryd.adapters.nacos.settings import DEFAULT_HOSTNAME, parse_settings
from registryd.model import Health, Locality

HOST = "orders.default-group.public.nacos"


def host(ip: str, port: int = 8080, **fields: Any) -> dict[str, Any]:
    return {
        "ip": ip,
        "port": port,
        "weight": 1.0,
        "healthy": True,
        "enabled": True,
        "ephemeral": True,
        "clusterName": "DEFAULT",
        "metadata": {},
        **fields,
    }


def convert(*hosts: dict[str, Any], zone_from: str = "clusterName", scale: float = 1.0) -> Any:
    document = {"name": "DEFAULT_GROUP@@orders", "hosts": list(hosts), "checksum": "c"}
    return convert_service(
        document, host=HOST, namespace="public", zone_from=zone_from, weight_scale=scale
    )


def test_default_hostname_is_lower_cased_with_dashes_for_underscores() -> None:
    name = hostname(DEFAULT_HOSTNAME, service="Orders", group="DEFAULT_GROUP", namespace="public")
    assert name == HOST


def test_a_hostname_that_is_not_a_dns_name_is_refused() -> None:
    with pytest.raises(ValueError, match="not a DNS name"):
        hostname(DEFAULT_HOSTNAME, service="providers:com.a.B:1.0", group="g", namespace="n")


def test_instances_map_to_endpoints_field_by_field() -> None:
    converted = convert(
        host(
            "10.0.0.2",
            weight=0.5,
            healthy=False,
            clusterName="zone-b",
            metadata={"version": "v2", "protocol": "http"},
        ),
        host("10.0.0.1", weight=2.0, metadata={"protocol": "http", "gen": 3}),
    )
    service = converted.service
    assert service.hostname == HOST and service.namespace == "public"
    assert [(p.number, p.protocol, p.name) for p in service.ports] == [(8080, "HTTP", "http-8080")]
    first, second = converted.endpoints
    assert (first.address, first.port, first.service_port) == ("10.0.0.1", 8080, 8080)
    assert (first.weight, first.health, first.locality) == (
        2,
        Health.HEALTHY,
        Locality(zone="DEFAULT"),
    )
    assert dict(first.labels) == {"protocol": "http", "gen": "3"}
    assert (second.weight, second.health, second.locality.zone) == (1, Health.UNHEALTHY, "zone-b")
    assert second.labels["version"] == "v2"
    assert converted.notes == ()


def test_one_service_port_per_distinct_instance_port_tcp_by_default() -> None:
    converted = convert(host("10.0.0.1", 9000), host("10.0.0.2", 8080), host("10.0.0.3", 9000))
    assert [(p.number, p.protocol) for p in converted.service.ports] == [
        (8080, "TCP"),
        (9000, "TCP"),
    ]
    assert sorted(e.service_port for e in converted.endpoints) == [8080, 9000, 9000]


def test_disabled_and_zero_weight_instances_are_not_served_but_keep_their_port() -> None:
    converted = convert(
        host("10.0.0.1", enabled=False),
        host("10.0.0.2", 9000, weight=0.0),
        host("10.0.0.3", weight=0.001),
    )
    assert [p.number for p in converted.service.ports] == [8080, 9000]
    assert [(e.address, e.weight) for e in converted.endpoints] == [("10.0.0.3", 1)]


def test_a_default_instance_weighs_what_other_registries_default_endpoints_weigh() -> None:
    # Nacos' own mesh integration hands Istio the weight's integer part: a default
    # instance (1.0) is weight 1, as a ServiceEntry endpoint, a pod or a Consul
    # instance is, so merged registries share traffic evenly
    weights = [e.weight for e in convert(host("10.0.0.1"), host("10.0.0.2", weight=2.4)).endpoints]
    assert weights == [1, 2]


@pytest.mark.parametrize(
    ("weight", "scale", "expected"),
    [(1.0, 100, 100), (0.5, 100, 50), (0.005, 100, 1), (2.5, 1, 3), (0.4, 1, 1), (7.25, 4, 29)],
)
def test_weight_scale_keeps_fractions_rounded_half_up_and_at_least_one(
    weight: float, scale: float, expected: int
) -> None:
    (endpoint,) = convert(host("10.0.0.1", weight=weight), scale=scale).endpoints
    assert endpoint.weight == expected


@pytest.mark.parametrize("weight", [float("inf"), float("nan"), 10**400, 10000.5, -1, "2", True])
def test_an_instance_with_a_weight_nacos_would_never_send_is_left_out(weight: Any) -> None:
    # JSON's Infinity and NaN parse as floats, and a huge integer does not fit in one
    converted = convert(host("10.0.0.1", weight=weight), host("10.0.0.2"))
    assert [e.address for e in converted.endpoints] == ["10.0.0.2"]
    (note,) = converted.notes
    assert note.startswith("instance #0 left out: 10.0.0.1:8080: 'weight' must be")
    assert len(note) < 150


def test_unknown_and_disagreeing_protocols_are_tcp_or_first_with_a_note() -> None:
    converted = convert(
        host("10.0.0.1", 20880, metadata={"protocol": "dubbo"}),
        host("10.0.0.2", 8080, metadata={"protocol": "grpc"}),
        host("10.0.0.3", 8080, metadata={"protocol": "http"}),
    )
    assert [(p.number, p.protocol) for p in converted.service.ports] == [
        (8080, "GRPC"),
        (20880, "TCP"),
    ]
    assert any("unknown protocol 'dubbo'" in n for n in converted.notes)
    assert any("disagree" in n and "GRPC" in n for n in converted.notes)


def test_zone_from_metadata_or_none() -> None:
    entry = host("10.0.0.1", clusterName="c1", metadata={"zone": "z9"})
    assert convert(entry, zone_from="metadata:zone").endpoints[0].locality.zone == "z9"
    assert convert(entry, zone_from="none").endpoints[0].locality == Locality()


def test_a_malformed_instance_is_left_out_with_a_note() -> None:
    converted = convert(host("10.0.0.1"), {"ip": "10.0.0.2", "port": "80"}, host("", 80))
    assert [e.address for e in converted.endpoints] == ["10.0.0.1"]
    assert len(converted.notes) == 2 and "'port' must be 1-65535" in converted.notes[0]


def test_an_answer_without_a_hosts_list_raises() -> None:
    with pytest.raises(ValueError, match="'hosts' list"):
        convert_service({"hosts": "x"}, host=HOST, namespace="public")


def test_the_checksum_identifies_an_answer_else_the_hosts() -> None:
    assert signature({"checksum": "abc", "hosts": [1]}) == signature(
        {"checksum": "abc", "hosts": [2]}
    )
    assert signature({"checksum": "", "hosts": [1]}) != signature({"checksum": "", "hosts": [2]})


def test_snapshot_keeps_the_last_good_service_of_a_failed_one_and_refuses_a_taken_hostname() -> (
    None
):
    good = convert(host("10.0.0.1"))
    records = {
        ("DEFAULT_GROUP", "orders"): Record(good, "s", "HTTP 500"),
        ("Z_GROUP", "orders"): Record(good, "s"),
    }
    shard = snapshot(records)
    assert list(shard.services) == [HOST] and shard.endpoints[HOST] == good.endpoints
    assert shard.problems.errors == {
        "DEFAULT_GROUP@@orders": "HTTP 500",
        "Z_GROUP@@orders": f"hostname {HOST} is already that of DEFAULT_GROUP@@orders",
    }


def test_settings_defaults_and_several_servers() -> None:
    settings = parse_settings("n", {"server_addr": "10.0.0.1:8848, http://nacos-2:8848"})
    assert settings.servers == ("http://10.0.0.1:8848", "http://nacos-2:8848")
    assert (settings.namespace, settings.groups) == ("public", ("DEFAULT_GROUP",))
    assert (settings.poll_interval, settings.zone_from) == (2.0, "clusterName")
    assert settings.weight_scale == 1.0
    assert settings.hostname_template == "{service}.{group}.{namespace}.nacos"
    assert (settings.max_response_bytes, settings.max_services) == (16 * 2**20, 10_000)
    assert (settings.timeout, settings.request_timeout) == (5.0, 10.0)
    listed = parse_settings("n", {"server_addr": ["a:1", "b:2"], "groups": ["G1", "G_2"]})
    assert listed.servers == ("http://a:1", "http://b:2") and listed.groups == ("G1", "G_2")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "'server_addr' must be"),
        ({"server_addr": "nacos"}, "is not host:port"),
        ({"server_addr": "a:1", "hostname_template": "{name}.nacos"}, "may use only"),
        ({"server_addr": "a:1", "hostname_template": "{group}.nacos"}, "must contain {service}"),
        ({"server_addr": "a:1", "zone_from": "rack"}, "'zone_from' must be"),
        ({"server_addr": "a:1", "groups": []}, "'groups' must be"),
        ({"server_addr": "a:1", "poll_interval": 0}, "'poll_interval' must be"),
        ({"server_addr": "a:1", "weight_scale": 0}, "'weight_scale' must be > 0"),
        ({"server_addr": "a:1", "weight_scale": "x"}, "'weight_scale' must be a number"),
        ({"server_addr": "a:1", "username": "u"}, "go together"),
        ({"server_addr": "a:1", "bogus": 1}, "unknown settings"),
        ({"server_addr": "a:1", "max_response_bytes": 1000}, "'max_response_bytes' must be a"),
        ({"server_addr": "a:1", "max_response_bytes": "16Mi"}, "'max_response_bytes' must be"),
        ({"server_addr": "a:1", "max_services": 0}, "'max_services' must be a whole"),
        ({"server_addr": "a:1", "max_services": True}, "'max_services' must be a whole"),
        ({"server_addr": "a:1", "request_timeout": 0}, "'request_timeout' must be > 0"),
        ({"server_addr": "a:1", "request_timeout": 301}, "'request_timeout' must be > 0"),
    ],
)
def test_bad_settings_name_the_registry_and_the_setting(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_settings("nacos-1", settings)
    assert "registry 'nacos-1' (nacos)" in str(caught.value)


def test_the_password_is_in_no_message_and_no_repr() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings("n", {"server_addr": "a:1", "username": "u", "password": 12345})
    assert "12345" not in str(caught.value)
    settings = parse_settings("n", {"server_addr": "a:1", "username": "u", "password": "hunter2"})
    assert "hunter2" not in repr(settings)
