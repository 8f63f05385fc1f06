"""When the MCP tables (what an istiod reads) are built: once an istiod asked, and not
before every configured registry delivered its state once."""

from __future__ import annotations

from registryd.adapter import Replace
from registryd.daemon.push import PushController
from registryd.registry.store import RegistryStore
from registryd.xds.snapshot import MCP_SERVICE_ENTRIES, Snapshot
from tests.unit.factories import MEM, ep, svc


def controller(store: RegistryStore) -> tuple[PushController, list[Snapshot]]:
    published: list[Snapshot] = []
    return PushController(store, published.append), published


def test_nothing_is_built_for_istiod_until_one_asks() -> None:
    store = RegistryStore()
    store.expect(MEM)
    push, published = controller(store)
    store.apply(MEM, Replace(services=(svc("a.example"),), endpoints=(ep("a.example"),)))
    push.push_now()
    assert not published[-1].mcp and not published[-1].tables[MCP_SERVICE_ENTRIES]
    push.want_mcp()
    push.push_now()
    assert published[-1].mcp
    assert list(published[-1].tables[MCP_SERVICE_ENTRIES]) == ["default/a.example"]


def test_an_istiod_that_asks_before_the_registries_synced_waits_for_them() -> None:
    store = RegistryStore()
    store.expect(MEM)
    push, published = controller(store)
    push.want_mcp()  # registryd just started: the registry has not answered yet
    push.push_now()
    assert not published[-1].mcp  # an empty answer would delete istiod's configs
    store.apply(MEM, Replace(services=(svc("a.example"),)))
    push.push_now()
    assert published[-1].mcp
    assert list(published[-1].tables[MCP_SERVICE_ENTRIES]) == ["default/a.example"]


def test_a_registry_that_syncs_empty_still_lets_the_answer_go() -> None:
    store = RegistryStore()
    store.expect(MEM)
    push, published = controller(store)
    push.want_mcp()
    store.apply(MEM, Replace())  # nothing in it: no change event, but synced
    push.push_now()
    assert published[-1].mcp and not published[-1].tables[MCP_SERVICE_ENTRIES]
