"""Reading Consul's answers (:mod:`registryd.adapters.consul.parse`), pure: hostnames, tags,
statuses, one health entry -> an instance, catalog and health replies."""

from __future__ import annotations

from typing import Any

import pytest
from consul.base import ConsulException, Response

from registryd.adapters.consul.client import decode
from registryd.adapters.consul.faults import ConsulError
from registryd.adapters.consul.parse import (
    EntryError,
    Options,
    aggregate_status,
    catalog_names,
    health_entries,
    hostname_for,
    public_entry,
    service_kind,
    tag_labels,
)
from registryd.jsonbound import JsonLimits
from registryd.model import Health, Labels
from tests.adapters.consul_entries import check, convert, entry, proxy_entry


def test_hostname_default_template_and_lower_case() -> None:
    assert hostname_for("{service}.service.consul", "Web") == "web.service.consul"


def test_hostname_template_with_datacenter() -> None:
    template = "{service}.service.{datacenter}.consul"
    assert hostname_for(template, "api", "eu-1") == "api.service.eu-1.consul"


@pytest.mark.parametrize("name", ["my_svc", "-web", "a..b", "web/x", "x" * 64])
def test_hostname_that_is_not_a_dns_name_is_an_error(name: str) -> None:
    with pytest.raises(EntryError, match="not a DNS name"):
        hostname_for("{service}.service.consul", name)


def test_tag_labels_follow_istio() -> None:
    tags = ["version|v1", "a|b|c", "primary", "|orphan", "empty|", "version|v2"]
    # later tags win, only the first two parts count, plain and key-less tags are skipped
    assert tag_labels(tags) == {"version": "v2", "a": "b", "empty": ""}


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], "passing"),
        (["passing", "passing"], "passing"),
        (["passing", "warning"], "warning"),
        (["warning", "critical", "passing"], "critical"),
        (["passing", "bogus"], ""),
    ],
)
def test_aggregate_status_is_consuls(statuses: list[str], expected: str) -> None:
    checks = [check(s, f"c{i}") for i, s in enumerate(statuses)]
    assert aggregate_status(checks) == expected


@pytest.mark.parametrize("check_id", ["_node_maintenance", "_service_maintenance:web1"])
def test_maintenance_beats_critical(check_id: str) -> None:
    checks = [check("critical", "c"), check("critical", check_id)]
    assert aggregate_status(checks) == "maintenance"


def test_entry_defaults() -> None:
    instance = convert(entry(checks=[check()]))
    assert instance.address == "10.0.0.1"  # Node.Address: the service has none
    assert instance.port == 8080
    assert instance.protocol == "TCP"
    assert instance.health is Health.HEALTHY
    assert instance.weight == 1
    assert instance.datacenter == "dc1"  # from Node.Datacenter: none configured
    assert instance.labels == {}
    assert not instance.external


def test_service_address_wins_over_node_address() -> None:
    assert convert(entry(address="10.9.9.9")).address == "10.9.9.9"


def test_configured_datacenter_is_the_region() -> None:
    assert convert(entry(datacenter="dc9"), datacenter="eu-1").datacenter == "eu-1"


def test_dns_name_address_is_accepted_lower_cased() -> None:
    assert convert(entry(address="DB.Example.COM.")).address == "db.example.com"


def test_ipv6_address() -> None:
    assert convert(entry(address="fd00::1")).address == "fd00::1"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"port": 0}, "Service.Port is 0"),
        ({"port": "80"}, "is not a port number"),
        ({"port": True}, "is not a port number"),
        ({"port": None}, "no Service.Port: the instance has no port"),
        ({"port": 70000}, "out of range"),
        ({"node_address": "", "address": ""}, "no address"),
        ({"node_address": None, "address": None}, "no address"),
        ({"address": "not an address!"}, "neither an IP address nor a DNS name"),
        ({"address": 17}, "is not a string"),
        ({"meta": ["protocol", "http"]}, "Service.Meta"),
        ({"meta": {"protocol": 2}}, "Service.Meta"),
        ({"tags": "v1"}, "Service.Tags"),
        ({"tags": ["ok", 3]}, "Service.Tags"),
        ({"weights": {"Passing": -1}}, "Weights.Passing"),
        ({"weights": {"Passing": 0, "Warning": 1}}, "at least 1"),
        ({"weights": {"Passing": 1, "Warning": "1"}}, "Weights.Warning"),
        ({"weights": [1, 1]}, "Service.Weights"),
        ({"checks": "passing"}, "Checks"),
    ],
)
def test_malformed_entries(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(EntryError, match=message):
        convert(entry(**changes))


def test_an_instance_registered_without_a_port_has_none() -> None:
    """A real agent answers an instance registered without a port (or with port 0) with
    no ``Port`` field at all (``omitempty``): it has no port, not a malformed one."""
    raw = entry()
    del raw["Service"]["Port"]
    with pytest.raises(EntryError, match=r"^no Service.Port: the instance has no port$"):
        convert(raw)


@pytest.mark.parametrize(
    "raw",
    [None, "web", {"Node": None, "Service": {}}, {"Node": {}, "Service": "web"}],
)
def test_entries_that_are_not_objects(raw: Any) -> None:
    with pytest.raises(EntryError, match="not an object"):
        convert(raw)


@pytest.mark.parametrize(
    ("meta", "tags", "expected"),
    [
        ({"protocol": "http"}, None, "HTTP"),
        ({"protocol": "GRPC"}, None, "GRPC"),
        ({"protocol": "grpc-web"}, None, "GRPC-WEB"),
        (None, ["protocol|http2"], "HTTP2"),  # the tag of Istio's old adapter
        ({"protocol": "tcp"}, ["protocol|http"], "TCP"),  # meta wins
        (None, ["http"], "TCP"),  # a plain tag says nothing
        (None, None, "TCP"),
    ],
)
def test_protocol(meta: Any, tags: Any, expected: str) -> None:
    instance = convert(entry(meta=meta, tags=tags))
    assert instance.protocol == expected
    assert instance.notes == ()


def test_unknown_protocol_is_tcp_with_a_note() -> None:
    instance = convert(entry(meta={"protocol": "quic"}))
    assert instance.protocol == "TCP"
    assert instance.notes == ("web/web: unknown protocol 'quic', using TCP",)


def test_labels_from_tags_and_meta_meta_wins() -> None:
    instance = convert(
        entry(tags=["version|v1", "zone|a", "canary"], meta={"version": "v2", "team": "x"})
    )
    assert instance.labels == Labels({"version": "v2", "zone": "a", "team": "x"})


def test_external_meta_marks_the_service_external() -> None:
    assert convert(entry(meta={"external": "true"})).external
    assert not convert(entry(meta={"external": ""})).external


@pytest.mark.parametrize(
    ("statuses", "warning_is_healthy", "weights", "health", "weight"),
    [
        (["passing"], True, {"Passing": 5, "Warning": 2}, Health.HEALTHY, 5),
        (["warning"], True, {"Passing": 5, "Warning": 2}, Health.HEALTHY, 2),
        (["warning"], False, {"Passing": 5, "Warning": 2}, Health.UNHEALTHY, 5),
        (["warning"], True, {"Passing": 5, "Warning": 0}, Health.UNHEALTHY, 5),
        (["passing", "critical"], True, None, Health.UNHEALTHY, 1),
        (["passing", "unknown-status"], True, None, Health.UNHEALTHY, 1),
        ([], True, {"Passing": 3}, Health.HEALTHY, 3),
    ],
)
def test_health_and_weights(
    statuses: list[str],
    warning_is_healthy: bool,
    weights: Any,
    health: Health,
    weight: int,
) -> None:
    checks = [check(s, f"c{i}") for i, s in enumerate(statuses)]
    options = Options(warning_is_healthy=warning_is_healthy)
    instance = convert(entry(checks=checks, weights=weights), options=options)
    assert (instance.health, instance.weight) == (health, weight)


def test_maintenance_is_draining() -> None:
    instance = convert(entry(checks=[check(), check("critical", "_node_maintenance")]))
    assert instance.health is Health.DRAINING


def test_public_entry_drops_secrets_and_noise() -> None:
    raw = entry(checks=[check()])
    raw["Service"]["Proxy"] = {"Config": {"token": "x"}}
    public = public_entry(raw)
    assert public["Checks"] == [
        {"CheckID": "chk", "Name": "chk", "Status": "passing", "ServiceID": ""}
    ]
    assert "Proxy" not in public["Service"]
    assert "hunter2" not in repr(public) and "secret-output" not in repr(public)
    assert public_entry("junk") == "<malformed entry: str>"


def test_catalog_reply() -> None:
    assert catalog_names({"web": ["a"], "db": []}) == ["db", "web"]
    with pytest.raises(ValueError, match="expected an object"):
        catalog_names(["web"])


def test_health_reply() -> None:
    assert health_entries([]) == []
    with pytest.raises(ValueError, match="expected a list"):
        health_entries(None)


def test_service_kind() -> None:
    assert service_kind(entry()) == ""
    assert service_kind(proxy_entry(kind="mesh-gateway")) == "mesh-gateway"
    assert service_kind({"Service": None}) == "" and service_kind([]) == ""


def test_a_reply_at_the_index_held_is_not_decoded_again() -> None:
    """A reply at the index whose answer the caller holds is not parsed (its body is the
    one held: Consul moves a query's index with every change to its answer); any other
    index, or no index held, is parsed, and an error status still raises."""
    limits = JsonLimits()
    same = Response(200, {"X-Consul-Index": "42"}, "not json at all")
    reply = decode(same, limits, held=42)
    assert reply.unchanged and reply.index == 42 and reply.data is None
    with pytest.raises(ConsulError, match="Failed to decode JSON"):
        decode(same, limits, held=41)  # moved: decoded, and this body is not JSON
    with pytest.raises(ConsulError, match="Failed to decode JSON"):
        decode(same, limits)  # nothing held
    fresh = decode(Response(200, {"X-Consul-Index": "43"}, "[]"), limits, held=42)
    assert not fresh.unchanged and fresh.data == [] and fresh.index == 43
    with pytest.raises(ConsulException):
        decode(Response(500, {"X-Consul-Index": "42"}, "boom"), limits, held=42)
