"""The Consul state (:mod:`registryd.adapters.consul.state`), pure: replies -> services,
problems and increments."""

from __future__ import annotations

from typing import Any

import pytest

from registryd.adapter import Delete, Upsert
from registryd.adapters.consul import state as consul_state
from registryd.adapters.consul.parse import Options
from registryd.adapters.consul.state import ConsulState
from registryd.model import Health
from tests.adapters.consul_entries import check, entry, proxy_entry


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
