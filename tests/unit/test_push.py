"""PushController: debounce, endpoints-only batches, history, failures.

Time is a :class:`FakeTime`: the debounce waits only when the test advances it, so no
test depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from registryd.adapter import Replace, Upsert
from registryd.build.builder import SnapshotBuilder
from registryd.daemon.push import PushController
from registryd.model import Port, ShardKey
from registryd.registry.store import RegistryStore
from registryd.xds.snapshot import CDS, EDS, STATIC_NAMES, Snapshot
from tests.support.fake_time import FakeTime
from tests.support.turns import until
from tests.unit.factories import ep, svc

KEY = ShardKey("memory", "mem")
AFTER, MAX = 0.02, 0.2


class Pushes:
    def __init__(self, store: RegistryStore, *, eds_debounce: bool = True) -> None:
        self.store = store
        self.clock = FakeTime(hold=True)
        self.published: list[Snapshot] = []
        self.controller = PushController(
            store,
            self.published.append,
            debounce_after=AFTER,
            debounce_max=MAX,
            eds_debounce=eds_debounce,
            clock=self.clock,
            sleep=self.clock.sleep,
        )

    async def idle(self) -> None:
        """Until the loop waits for events with nothing pending."""
        await asyncio.wait_for(self.controller.idle.wait(), 5)

    async def waiting(self) -> None:
        """Until the loop is parked in a debounce wait (or idle)."""
        await until(lambda: self.clock.sleeping > 0 or self.controller.idle.is_set())


@pytest.fixture
async def pushes() -> AsyncIterator[Pushes]:
    p = Pushes(RegistryStore())
    task = asyncio.create_task(p.controller.run())
    try:
        await p.idle()
        yield p
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_quick_events_are_debounced_into_one_push(pushes: Pushes) -> None:
    for i in range(5):
        pushes.store.apply(KEY, Upsert(service=svc(f"h{i}.example")))
        await pushes.waiting()
        pushes.clock.advance(AFTER / 4)  # never quiet for AFTER
    assert pushes.published == []
    pushes.clock.advance(AFTER)
    await pushes.idle()
    assert len(pushes.published) == 1
    (record,) = pushes.controller.history
    assert record.events == 5
    assert record.hostnames == 5
    assert not record.endpoints_only
    assert record.triggers == ("memory/mem",)
    assert record.version == pushes.published[0].version
    assert record.debounce_seconds == pytest.approx(5 * AFTER / 4 + AFTER)
    names = set(pushes.published[0].tables[CDS]) - STATIC_NAMES
    assert names == {f"outbound|8080||h{i}.example" for i in range(5)}


async def push_after_quiet(p: Pushes, count: int) -> None:
    await p.waiting()
    p.clock.advance(AFTER)
    await until(lambda: len(p.published) >= count)


async def test_endpoints_only_batch_is_flagged(pushes: Pushes) -> None:
    pushes.store.apply(KEY, Replace(services=(svc("a.example"),)))
    await push_after_quiet(pushes, 1)
    first = pushes.published[0]
    pushes.store.apply(KEY, Upsert(service=svc("a.example"), endpoints=(ep(),)))
    pushes.store.apply(
        KEY, Upsert(service=svc("a.example"), endpoints=(ep(), ep(address="10.0.0.2")))
    )
    await push_after_quiet(pushes, 2)
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
    await push_after_quiet(pushes, 1)
    pushes.store.apply(KEY, Upsert(service=svc("a.example"), endpoints=(ep(),)))
    pushes.store.apply(KEY, Upsert(service=svc("b.example")))
    await push_after_quiet(pushes, 2)
    assert not pushes.controller.history[-1].endpoints_only


async def test_continuous_events_are_pushed_by_debounce_max(pushes: Pushes) -> None:
    step = AFTER / 4
    sent = 0
    while not pushes.published:
        assert sent < 1000, "no push while events kept coming"
        pushes.store.apply(KEY, Upsert(service=svc(f"h{sent}.example")))
        sent += 1
        await pushes.waiting()
        pushes.clock.advance(step)
        await asyncio.sleep(0)
    await pushes.idle()
    (record,) = pushes.controller.history
    assert record.debounce_seconds >= MAX
    assert record.debounce_seconds < MAX + 2 * step
    assert record.events == sent > 1


async def test_without_eds_debounce_endpoint_changes_skip_the_wait() -> None:
    p = Pushes(RegistryStore(), eds_debounce=False)
    task = asyncio.create_task(p.controller.run())
    try:
        p.store.apply(KEY, Replace(services=(svc("a.example"), svc("b.example"))))
        await push_after_quiet(p, 1)
        first = p.published[0]
        # a service change (debounced) and, after it, an endpoint change (not debounced)
        p.store.apply(KEY, Upsert(service=svc("b.example", Port(number=9090, name="http"))))
        p.store.apply(KEY, Upsert(service=svc("a.example"), endpoints=(ep(),)))
        await until(lambda: len(p.published) == 2)  # without any time passing
        eds = p.controller.history[-1]
        assert (eds.endpoints_only, eds.events, eds.hostnames) == (True, 1, 1)
        assert eds.debounce_seconds == 0
        assert p.published[1].changed_since(CDS, first.version) == frozenset()
        await p.waiting()
        assert len(p.published) == 2  # the service change still waits for quiet
        p.clock.advance(AFTER)
        await p.idle()
        full = p.controller.history[-1]
        assert not full.endpoints_only
        assert full.debounce_seconds == pytest.approx(AFTER)
        assert "outbound|9090||b.example" in p.published[2].tables[CDS]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class FailOnce:
    """Makes the next ``SnapshotBuilder.build`` raise once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = True
        real = SnapshotBuilder.build

        def build(builder: SnapshotBuilder, *args: Any, **kwargs: Any) -> Snapshot:
            if self.armed:
                self.armed = False
                raise ValueError("builder bug")
            return real(builder, *args, **kwargs)

        monkeypatch.setattr(SnapshotBuilder, "build", build)


async def test_a_failed_push_is_logged_counted_and_the_next_change_is_pushed(
    pushes: Pushes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    FailOnce(monkeypatch)
    pushes.store.apply(KEY, Upsert(service=svc("a.example")))
    with caplog.at_level(logging.ERROR, logger="registryd"):
        await push_after_quiet(pushes, 0)
        await pushes.idle()
    assert pushes.published == []
    assert pushes.controller.health.failures == {"push": 1}
    (failure,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "push" in failure.getMessage() and "builder bug" in failure.getMessage()
    assert failure.exc_info is not None  # with its traceback
    pushes.store.apply(KEY, Upsert(service=svc("b.example")))
    await push_after_quiet(pushes, 1)
    # the next push also carries what the failed one should have
    assert set(pushes.published[0].tables[CDS]) - STATIC_NAMES == {
        "outbound|8080||a.example",
        "outbound|8080||b.example",
    }


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
    await pushes.idle()  # the loop saw the event, found nothing pending and went back
    pushes.clock.advance(MAX * 2)
    await pushes.idle()
    assert len(pushes.published) == 1
    assert pushes.clock.sleeping == 0  # no debounce timer left behind


async def test_history_is_bounded() -> None:
    p = Pushes(RegistryStore())
    for _ in range(105):
        p.controller.push_now()
    assert len(p.controller.history) == 100
    assert p.controller.history[-1].version == p.published[-1].version
