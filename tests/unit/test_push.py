"""PushController: debounce, endpoints-only batches, history."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from registryd.adapter import Replace, Upsert
from registryd.model import Port, ShardKey
from registryd.push import PushController
from registryd.registry.store import RegistryStore
from registryd.xds.snapshot import CDS, EDS, STATIC_NAMES, Snapshot
from tests.unit.factories import ep, svc

KEY = ShardKey("memory", "mem")
AFTER, MAX = 0.02, 0.2


class Pushes:
    def __init__(self, store: RegistryStore, *, eds_debounce: bool = True) -> None:
        self.store = store
        self.published: list[Snapshot] = []
        self.controller = PushController(
            store,
            self.published.append,
            debounce_after=AFTER,
            debounce_max=MAX,
            eds_debounce=eds_debounce,
        )


@pytest.fixture
async def pushes() -> AsyncIterator[Pushes]:
    p = Pushes(RegistryStore())
    task = asyncio.create_task(p.controller.run())
    try:
        yield p
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def wait_for_pushes(p: Pushes, count: int, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while len(p.published) < count:
        assert time.monotonic() < deadline, f"only {len(p.published)} pushes"
        await asyncio.sleep(0.005)


async def test_quick_events_are_debounced_into_one_push(pushes: Pushes) -> None:
    for i in range(5):
        pushes.store.apply(KEY, Upsert(service=svc(f"h{i}.example")))
        await asyncio.sleep(0.002)
    await wait_for_pushes(pushes, 1)
    await asyncio.sleep(AFTER * 3)
    assert len(pushes.published) == 1
    (record,) = pushes.controller.history
    assert record.events == 5
    assert record.hostnames == 5
    assert not record.endpoints_only
    assert record.triggers == ("memory/mem",)
    assert record.version == pushes.published[0].version
    assert record.debounce_seconds >= AFTER
    names = set(pushes.published[0].tables[CDS]) - STATIC_NAMES
    assert names == {f"outbound|8080||h{i}.example" for i in range(5)}


async def test_endpoints_only_batch_is_flagged(pushes: Pushes) -> None:
    pushes.store.apply(KEY, Replace(services=(svc("a.example"),)))
    await wait_for_pushes(pushes, 1)
    first = pushes.published[0]
    pushes.store.apply(KEY, Upsert(service=svc("a.example"), endpoints=(ep(),)))
    pushes.store.apply(
        KEY, Upsert(service=svc("a.example"), endpoints=(ep(), ep(address="10.0.0.2")))
    )
    await wait_for_pushes(pushes, 2)
    record = pushes.controller.history[-1]
    assert record.endpoints_only
    assert record.events == 2
    second = pushes.published[1]
    cluster = second.tables[CDS]["outbound|8080||a.example"]
    assert cluster.version == first.version  # clusters untouched
    assert second.changed_since(CDS, first.version) == frozenset()
    assert second.tables[EDS]["outbound|8080||a.example"].version == second.version


async def test_mixed_batch_is_not_endpoints_only(pushes: Pushes) -> None:
    pushes.store.apply(KEY, Replace(services=(svc("a.example"),)))
    await wait_for_pushes(pushes, 1)
    pushes.store.apply(KEY, Upsert(service=svc("a.example"), endpoints=(ep(),)))
    pushes.store.apply(KEY, Upsert(service=svc("b.example")))
    await wait_for_pushes(pushes, 2)
    assert not pushes.controller.history[-1].endpoints_only


async def test_continuous_events_are_pushed_by_debounce_max(pushes: Pushes) -> None:
    started = time.monotonic()
    i = 0
    while not pushes.published:
        assert time.monotonic() - started < 2.0, "no push while events kept coming"
        pushes.store.apply(KEY, Upsert(service=svc(f"h{i}.example")))
        i += 1
        await asyncio.sleep(AFTER / 4)
    elapsed = time.monotonic() - started
    assert MAX * 0.9 <= elapsed < MAX * 5
    assert pushes.controller.history[0].events > 1


async def test_without_eds_debounce_endpoint_changes_skip_the_wait() -> None:
    p = Pushes(RegistryStore(), eds_debounce=False)
    task = asyncio.create_task(p.controller.run())
    try:
        p.store.apply(KEY, Replace(services=(svc("a.example"), svc("b.example"))))
        await wait_for_pushes(p, 1)
        first = p.published[0]
        # a service change (debounced) and, after it, an endpoint change (not debounced)
        p.store.apply(KEY, Upsert(service=svc("b.example", Port(number=9090, name="http"))))
        changed = time.monotonic()
        p.store.apply(KEY, Upsert(service=svc("a.example"), endpoints=(ep(),)))
        await wait_for_pushes(p, 2)
        assert time.monotonic() - changed < AFTER  # did not wait for quiet
        eds = p.controller.history[-1]
        assert (eds.endpoints_only, eds.events, eds.hostnames) == (True, 1, 1)
        assert eds.debounce_seconds < AFTER
        assert p.published[1].changed_since(CDS, first.version) == frozenset()
        await wait_for_pushes(p, 3)  # the service change, debounced as before
        full = p.controller.history[-1]
        assert not full.endpoints_only and full.debounce_seconds >= AFTER
        assert "outbound|9090||b.example" in p.published[2].tables[CDS]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_push_now_publishes_pending_without_waiting() -> None:
    p = Pushes(RegistryStore())  # no run() loop at all
    p.store.apply(KEY, Upsert(service=svc("a.example")))
    snapshot = p.controller.push_now()
    assert p.published == [snapshot]
    assert p.controller.snapshot is snapshot
    assert "outbound|8080||a.example" in snapshot.tables[CDS]
    record = p.controller.history[-1]
    assert (record.events, record.hostnames, record.version) == (1, 1, snapshot.version)
    again = p.controller.push_now()  # nothing pending: still publishes, nothing changes
    assert again.tables[CDS] is snapshot.tables[CDS]
    assert p.controller.history[-1].events == 0


async def test_push_now_clears_pending_so_the_loop_does_not_push_again(
    pushes: Pushes,
) -> None:
    pushes.store.apply(KEY, Upsert(service=svc("a.example")))
    pushes.controller.push_now()
    await asyncio.sleep(AFTER * 4)
    assert len(pushes.published) == 1


async def test_history_is_bounded() -> None:
    p = Pushes(RegistryStore())
    for _ in range(105):
        p.controller.push_now()
    assert len(p.controller.history) == 100
    assert p.controller.history[-1].version == p.published[-1].version
