"""The Consul mapping, pure: health entries -> services, endpoints, problems and increments."""

from __future__ import annotations

from typing import Any

import pytest

from registryd.adapter import Delete, Upsert
from registryd.adapters.consul import state as consul_state
from registryd.adapters.consul.mapping import build_service
from registryd.adapters.consul.parse import (
    EntryError,
    Instance,
    Options,
    aggregate_status,
    catalog_names,
    convert_entry,
    health_entries,
    hostname_for,
    public_entry,
    service_kind,
    tag_labels,
)
from registryd.adapters.consul.state import ConsulState
from registryd.model import Health, Labels, Locality, Location, Resolution

OPTIONS = Options()


def check(status: str = "passing", check_id: str = "chk", service_id: str = "") -> dict[str, Any]:
    return {
        "Node": "n1",
        "CheckID": check_id,
        "Name": check_id,
        "Status": status,
        "ServiceID": service_id,
        "Output": "HTTP GET http://10.0.0.1/health: 200 OK secret-output",
        "Notes": "page the on-call",
        "Definition": {"HTTP": "http://x", "Header": {"Authorization": ["Bearer hunter2"]}},
    }


def entry(
    service: str = "web",
    service_id: str | None = None,
    *,
    node: str = "n1",
    node_address: Any = "10.0.0.1",
    address: Any = "",
    port: Any = 8080,
    tags: Any = None,
    meta: Any = None,
    weights: Any = None,
    checks: Any = (),
    datacenter: str = "dc1",
) -> dict[str, Any]:
    svc: dict[str, Any] = {
        "ID": service_id or service,
        "Service": service,
        "Tags": tags,
        "Address": address,
        "Meta": meta,
        "Port": port,
    }
    if weights is not None:
        svc["Weights"] = weights
    return {
        "Node": {"Node": node, "Address": node_address, "Datacenter": datacenter, "Meta": {}},
        "Service": svc,
        "Checks": list(checks),
    }


def convert(raw: Any, datacenter: str = "", options: Options = OPTIONS) -> Instance:
    return convert_entry(raw, service="web", datacenter=datacenter, options=options)


# -- hostnames, tags, status ------------------------------------------------------------


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


# -- one entry --------------------------------------------------------------------------


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
        ({"port": None}, "is not a port number"),
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


# -- one hostname ------------------------------------------------------------------------


def instances(*raws: dict[str, Any]) -> list[Instance]:
    return [convert(r) for r in raws]


def test_service_ports_from_all_instances() -> None:
    service, endpoints, notes = build_service(
        "web.service.consul",
        instances(
            entry(service_id="a", port=8080, meta={"protocol": "http"}),
            entry(service_id="b", port=9090, node_address="10.0.0.2", meta={"protocol": "grpc"}),
            entry(service_id="c", port=8080, node_address="10.0.0.3", meta={"protocol": "http"}),
        ),
        namespace="mesh",
    )
    assert [(p.number, p.name, p.protocol) for p in service.ports] == [
        (8080, "http-8080", "HTTP"),
        (9090, "grpc-9090", "GRPC"),
    ]
    assert service.namespace == "mesh"
    assert service.resolution is Resolution.STATIC
    assert service.location is Location.MESH_INTERNAL
    assert [(e.address, e.port, e.service_port) for e in endpoints] == [
        ("10.0.0.1", 8080, 8080),
        ("10.0.0.3", 8080, 8080),
        ("10.0.0.2", 9090, 9090),
    ]
    assert all(e.locality == Locality(region="dc1") for e in endpoints)
    assert notes == []


def test_conflicting_protocols_first_instance_wins() -> None:
    service, _, notes = build_service(
        "web.service.consul",
        instances(
            entry(service_id="a", meta={"protocol": "http"}),
            entry(service_id="b", node="n2", node_address="10.0.0.2"),
        ),
    )
    assert service.ports[0].protocol == "HTTP"
    assert notes == [
        "web.service.consul: port 8080 is HTTP on web/a (node n1 in dc1) but TCP on "
        "web/b (node n2 in dc1); using HTTP"
    ]


def test_same_address_and_port_is_one_endpoint() -> None:
    _, endpoints, notes = build_service(
        "web.service.consul", instances(entry(service_id="a"), entry(service_id="b"))
    )
    assert len(endpoints) == 1
    assert "both 10.0.0.1:8080; using web/a" in notes[0]


def test_dns_addresses_make_a_dns_service() -> None:
    service, endpoints, _ = build_service(
        "db.service.consul", instances(entry(address="db.example.com", meta={"external": "y"}))
    )
    assert service.resolution is Resolution.DNS
    assert service.location is Location.MESH_EXTERNAL
    assert endpoints[0].address == "db.example.com"


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


# -- replies ------------------------------------------------------------------------------


def test_catalog_reply() -> None:
    assert catalog_names({"web": ["a"], "db": []}) == ["db", "web"]
    with pytest.raises(ValueError, match="expected an object"):
        catalog_names(["web"])


def test_health_reply() -> None:
    assert health_entries([]) == []
    with pytest.raises(ValueError, match="expected a list"):
        health_entries(None)


# -- state --------------------------------------------------------------------------------


def web_entries(*addresses: str, status: str = "passing") -> list[dict[str, Any]]:
    return [
        entry(service_id=f"web{i}", node=f"n{i}", node_address=a, checks=[check(status)])
        for i, a in enumerate(addresses, 1)
    ]


def test_state_full_then_increments() -> None:
    state = ConsulState()
    assert state.catalog("", ["web", "db"]) == {"web", "db"}
    state.health("", "web", web_entries("10.0.0.1", "10.0.0.2"))
    state.health("", "db", [entry("db", port=5432)])
    full = state.replace()
    assert [s.hostname for s in full.services] == ["db.service.consul", "web.service.consul"]
    assert len(full.endpoints) == 3
    assert state.changes() == []

    state.health("", "web", web_entries("10.0.0.1", "10.0.0.2"))  # same reply again
    assert state.changes() == []

    state.health("", "web", web_entries("10.0.0.1", "10.0.0.2", status="critical"))
    (update,) = state.changes()
    assert isinstance(update, Upsert)
    assert {e.health for e in update.endpoints} == {Health.UNHEALTHY}

    assert state.catalog("", ["web"]) == {"web"}
    assert state.changes() == [Delete(hostname="db.service.consul")]


def test_state_any_exception_converting_one_entry_skips_that_entry_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a converter bug, or a shape no check foresaw, must not stop the watch
    real = consul_state.convert_entry

    def convert(raw: Any, **options: Any) -> Any:
        if raw["Node"]["Address"] == "10.0.0.2":
            raise TypeError("unhashable type: 'list'")
        return real(raw, **options)

    monkeypatch.setattr(consul_state, "convert_entry", convert)
    state = ConsulState()
    state.catalog("", ["web"])
    state.health("", "web", web_entries("10.0.0.1", "10.0.0.2"))
    assert [e.address for e in state.replace().endpoints] == ["10.0.0.1"]
    (message,) = state.problems().errors.values()
    assert message.endswith(": TypeError: unhashable type: 'list'; entry skipped")


def test_state_service_without_usable_instances_has_no_hostname() -> None:
    state = ConsulState()
    state.catalog("", ["web"])
    state.health("", "web", web_entries("10.0.0.1"))
    state.replace()
    state.health("", "web", [entry(port=0)])
    assert state.changes() == [Delete(hostname="web.service.consul")]
    state.health("", "web", [])
    assert state.changes() == []
    assert state.hostnames == []


def proxy_entry(service: str = "web-sidecar-proxy", kind: str = "connect-proxy") -> dict[str, Any]:
    raw = entry(service, port=21000)
    raw["Service"]["Kind"] = kind
    raw["Service"]["Proxy"] = {"DestinationServiceName": "web"}
    return raw


def test_service_kind() -> None:
    assert service_kind(entry()) == ""
    assert service_kind(proxy_entry(kind="mesh-gateway")) == "mesh-gateway"
    assert service_kind({"Service": None}) == "" and service_kind([]) == ""


def test_state_leaves_out_proxies_and_gateways_by_default() -> None:
    state = ConsulState()
    state.catalog("", ["web", "web-sidecar-proxy", "gateway"])
    state.health("", "web", [entry(), proxy_entry("web", kind="terminating-gateway")])
    state.health("", "web-sidecar-proxy", [proxy_entry()])
    state.health("", "gateway", [proxy_entry("gateway", kind="mesh-gateway")])
    full = state.replace()
    assert [s.hostname for s in full.services] == ["web.service.consul"]
    assert [e.port for e in full.endpoints] == [8080]
    problems = state.problems()
    assert problems.errors == {}
    assert len(problems.sources["web-sidecar-proxy"]) == 1  # still shown


def test_state_takes_the_kinds_it_is_given() -> None:
    state = ConsulState(Options(kinds=frozenset({"", "connect-proxy"})))
    state.catalog("", ["web", "web-sidecar-proxy"])
    state.health("", "web", [entry()])
    state.health("", "web-sidecar-proxy", [proxy_entry()])
    hosts = [s.hostname for s in state.replace().services]
    assert hosts == ["web-sidecar-proxy.service.consul", "web.service.consul"]


def test_the_consul_servers_own_service_is_neither_watched_nor_served() -> None:
    state = ConsulState()
    assert state.catalog("", ["consul", "web"]) == {"web"}
    state.health("", "consul", [entry("consul")])  # a reply nobody asked for: ignored
    state.health("", "web", [entry("web")])
    assert [s.hostname for s in state.replace().services] == ["web.service.consul"]
    assert state.problems().errors == {}


def test_state_ignores_replies_for_services_not_in_the_catalog() -> None:
    state = ConsulState()
    state.catalog("", ["web"])
    state.health("", "gone", [entry("gone")])
    assert state.replace().services == ()


def test_state_problems_keys_messages_and_sources() -> None:
    state = ConsulState()
    assert state.catalog("", ["web", "bad_name"]) == {"web"}
    state.health(
        "",
        "web",
        [
            entry(service_id="ok", checks=[check()]),
            entry(service_id="web-2", node="n2", port=0),
            entry(service_id="web-3", node="n3", node_address=""),
            entry(service_id="web-3", node="n4", meta={"a": 1}),
        ],
    )
    full = state.replace()
    assert [e.address for e in full.endpoints] == ["10.0.0.1"]
    problems = state.problems()
    assert problems.errors == {
        "bad_name": "bad_name: service name 'bad_name' gives hostname "
        "'bad_name.service.consul', which is not a DNS name; not watched",
        "web/web-2": "web/web-2 on node n2: Service.Port is 0: the instance has no port; "
        "entry skipped",
        "web/web-3": "web/web-3 on node n3: no address: Service.Address and Node.Address are "
        "both empty; entry skipped; web/web-3 on node n4: Service.Meta must map non-empty "
        "strings to strings; entry skipped",
    }
    assert list(problems.sources) == ["web"]
    assert len(problems.sources["web"]) == 4
    assert "hunter2" not in repr(problems) and "secret-output" not in repr(problems)
    assert state.problems() is problems  # unchanged: the same object
    state.health("", "web", [entry(service_id="ok", checks=[check()])])
    assert state.problems().errors == {"bad_name": problems.errors["bad_name"]}
    state.catalog("", ["web"])
    assert state.problems().errors == {}


def test_state_notes() -> None:
    state = ConsulState()
    state.catalog("", ["web"])
    state.health("", "web", [entry(meta={"protocol": "carrier-pigeon"})])
    state.problems()  # cached before the state was flushed: must not go stale
    state.replace()
    assert state.notes == ("web/web: unknown protocol 'carrier-pigeon', using TCP",)
    assert state.problems().warnings == state.notes
    state.health("", "web", [entry(meta={"protocol": "http"})])
    state.changes()
    assert state.notes == () and state.problems().warnings == ()


def test_state_several_datacenters_one_hostname_combines_endpoints() -> None:
    state = ConsulState(Options(prefix_datacenter=True))
    for dc, address in (("dc1", "10.0.0.1"), ("dc2", "10.1.0.1")):
        state.catalog(dc, ["web"])
        state.health(dc, "web", [entry(node_address=address, datacenter=dc)])
    full = state.replace()
    assert [s.hostname for s in full.services] == ["web.service.consul"]
    assert [(e.address, e.locality.region) for e in full.endpoints] == [
        ("10.0.0.1", "dc1"),
        ("10.1.0.1", "dc2"),
    ]
    assert list(state.problems().sources) == ["dc1/web", "dc2/web"]
    state.catalog("dc2", [])
    (update,) = state.changes()
    assert isinstance(update, Upsert)
    assert [e.address for e in update.endpoints] == ["10.0.0.1"]


def test_state_several_datacenters_template_with_datacenter() -> None:
    options = Options(hostname="{service}.service.{datacenter}.consul", prefix_datacenter=True)
    state = ConsulState(options)
    for dc in ("dc1", "dc2"):
        state.catalog(dc, ["web"])
        state.health(dc, "web", [entry(datacenter=dc, port=0 if dc == "dc2" else 8080)])
    full = state.replace()
    assert [s.hostname for s in full.services] == ["web.service.dc1.consul"]
    assert list(state.problems().errors) == ["dc2/web/web"]
