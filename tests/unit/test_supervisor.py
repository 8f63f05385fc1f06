"""Supervisor: restarts with backoff, last good state kept, clean cancellation."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from registryd.adapter import RegistryUnavailable, Replace, Update
from registryd.base.health import TaskHealth
from registryd.daemon.supervisor import BACKOFF, Supervisor, expected_failure, restarting
from registryd.model import ShardKey
from registryd.registry.store import RegistryStore
from registryd.testing import MemoryAdapter
from tests.support.fake_time import FakeTime
from tests.support.turns import until
from tests.unit.factories import ep, svc

KEY = ShardKey("memory", "mem")


def NO_JITTER() -> float:
    return 0.5  # the middle of [0, 1): a jitter factor of exactly 1


class FailingAdapter:
    """Raises at once ``failures`` times, then yields one Replace and waits forever."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.watches = 0

    async def watch(self) -> AsyncIterator[Update]:
        self.watches += 1
        if self.watches <= self.failures:
            raise ConnectionError(f"unreachable #{self.watches}")
        yield Replace(services=(svc("x.example"),))
        await asyncio.Event().wait()


class EndingAdapter:
    """A watch() that returns after its Replace instead of raising."""

    def __init__(self) -> None:
        self.watches = 0

    async def watch(self) -> AsyncIterator[Update]:
        self.watches += 1
        yield Replace(services=(svc("x.example"),))


async def test_failures_restart_with_the_backoff_sequence() -> None:
    store, sleep = RegistryStore(), FakeTime()
    adapter = FailingAdapter(failures=len(BACKOFF) + 2)
    sup = Supervisor(store, jitter=NO_JITTER, sleep=sleep.sleep)
    sup.start(KEY, adapter)
    await until(lambda: "x.example" in store.view.services)
    assert sleep.sleeps == [*BACKOFF, BACKOFF[-1], BACKOFF[-1]]  # last value repeats
    assert sup.restarts[KEY] == len(BACKOFF) + 2
    assert store.shards[KEY].synced
    await sup.stop()


async def test_failure_marks_failed_and_keeps_last_good_shard() -> None:
    store, sleep = RegistryStore(), FakeTime(hold=True)
    memory = MemoryAdapter()
    memory.set([svc("x.example")], [ep("x.example")])
    sup = Supervisor(store, jitter=NO_JITTER, backoff=(5, 7), sleep=sleep.sleep)
    sup.start(KEY, memory)
    await until(lambda: store.shards[KEY].synced)
    memory.fail(ConnectionError("registry gone"))
    await until(lambda: bool(sleep.sleeps))
    shard = store.shards[KEY]
    assert not shard.synced
    assert shard.last_error == "ConnectionError: registry gone"
    assert "x.example" in store.view.services
    assert len(store.view.services["x.example"].endpoints) == 1
    assert sleep.sleeps == [5]
    await sup.stop()


async def _fail_after_each_replace(
    sup: Supervisor, store: RegistryStore, memory: MemoryAdapter, sleep: FakeTime, between: Any
) -> None:
    sup.start(KEY, memory)
    for n in (1, 2, 3):
        await until(lambda: memory.watches == n and bool(memory._queues))  # noqa: B023
        await until(lambda: store.shards[KEY].synced)
        between()
        memory.fail(RuntimeError("boom"))
        await until(lambda: len(sleep.sleeps) == n)  # noqa: B023
    await sup.stop()


async def test_backoff_keeps_growing_when_runs_fail_right_after_their_full_state() -> None:
    store, sleep, clock = RegistryStore(), FakeTime(), FakeTime(start=100.0)
    memory = MemoryAdapter()
    sup = Supervisor(store, backoff=(1, 2, 3), sleep=sleep.sleep, clock=clock, jitter=NO_JITTER)
    await _fail_after_each_replace(sup, store, memory, sleep, lambda: None)
    assert sleep.sleeps == [1, 2, 3]  # a Replace alone does not reset it


async def test_backoff_resets_after_a_run_stayed_up_for_the_stable_period() -> None:
    store, sleep, clock = RegistryStore(), FakeTime(), FakeTime(start=100.0)
    memory = MemoryAdapter()
    sup = Supervisor(
        store, backoff=(1, 2, 3), sleep=sleep.sleep, clock=clock, jitter=NO_JITTER, stable_after=60
    )

    def stable() -> None:
        clock.now += 60

    await _fail_after_each_replace(sup, store, memory, sleep, stable)
    assert sleep.sleeps == [1, 1, 1]


async def test_delays_are_jittered_by_20_percent_and_capped() -> None:
    store, sleep = RegistryStore(), FakeTime()
    draws = iter([0.0, 0.999999, 0.0])
    sup = Supervisor(
        store, backoff=(10, 40), jitter=draws.__next__, max_delay=45, sleep=sleep.sleep
    )
    sup.start(KEY, FailingAdapter(failures=3))
    await until(lambda: store.shards[KEY].synced)
    assert sleep.sleeps == pytest.approx([8.0, 45.0, 32.0])  # 10 * 0.8, 48 capped, 40 * 0.8
    await sup.stop()


async def test_next_retry_time_is_known_while_waiting() -> None:
    store, sleep = RegistryStore(), FakeTime(hold=True)
    sup = Supervisor(
        store, backoff=(7,), sleep=sleep.sleep, wall=FakeTime(start=1000.0), jitter=NO_JITTER
    )
    sup.start(KEY, FailingAdapter(failures=100))
    await until(lambda: bool(sleep.sleeps))
    assert sup.next_retry == {KEY: 1007.0}
    await sup.stop()
    assert sup.next_retry == {}


async def test_watch_that_ends_without_error_is_restarted() -> None:
    store, sleep = RegistryStore(), FakeTime()
    adapter = EndingAdapter()
    sup = Supervisor(store, jitter=NO_JITTER, backoff=(4,), sleep=sleep.sleep)
    sup.start(KEY, adapter)
    await until(lambda: adapter.watches >= 3)
    assert sleep.sleeps[:2] == [4, 4]
    assert "ended without an error" in (store.shards[KEY].last_error or "")
    await sup.stop()


async def test_stop_cancels_cleanly_and_releases_the_watch() -> None:
    store = RegistryStore()
    memory = MemoryAdapter()
    sup = Supervisor(store, jitter=NO_JITTER, sleep=FakeTime().sleep)
    task = sup.start(KEY, memory)
    await until(lambda: bool(memory._queues))
    assert store.not_synced() == []
    await sup.stop()
    assert task.cancelled()
    assert memory._queues == []  # watch()'s finally ran
    assert KEY not in sup.restarts


async def test_stop_during_backoff_sleep() -> None:
    store, sleep = RegistryStore(), FakeTime(hold=True)
    sup = Supervisor(store, jitter=NO_JITTER, backoff=(20,), sleep=sleep.sleep)
    task = sup.start(KEY, FailingAdapter(failures=100))
    await until(lambda: bool(sleep.sleeps))
    await sup.stop()
    assert task.cancelled()
    assert sleep.sleeps == [20]


async def test_start_declares_the_shard_expected() -> None:
    store = RegistryStore()
    sup = Supervisor(store, jitter=NO_JITTER, sleep=FakeTime(hold=True).sleep)
    sup.start(KEY, FailingAdapter(failures=100))
    assert store.not_synced() == [KEY]
    await sup.stop()


class StrayCancelAdapter:
    """An adapter bug: its watch() lets a CancelledError of its own escape."""

    def __init__(self) -> None:
        self.watches = 0

    async def watch(self) -> AsyncIterator[Update]:
        self.watches += 1
        yield Replace(services=(svc("x.example"),))
        inner: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        inner.cancel()
        await inner  # raises CancelledError although nobody cancelled the registry task


async def test_stray_cancelled_error_from_an_adapter_is_a_failure_not_a_shutdown() -> None:
    store, sleep = RegistryStore(), FakeTime()
    adapter = StrayCancelAdapter()
    sup = Supervisor(store, jitter=NO_JITTER, backoff=(2,), sleep=sleep.sleep)
    task = sup.start(KEY, adapter)
    await until(lambda: adapter.watches >= 2 or task.done())
    assert not task.done(), "registry task died: the shard is never restarted"
    assert sleep.sleeps[0] == 2
    assert "CancelledError" in (store.shards[KEY].last_error or "")
    await sup.stop()
    assert task.cancelled()


async def test_restarting_reports_each_failure_and_runs_again() -> None:
    health, sleep = TaskHealth(), FakeTime()
    runs = 0
    forever = asyncio.Event()

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise ValueError(f"bug #{runs}")
        await forever.wait()

    task = asyncio.create_task(
        restarting("push", run, health, backoff=(1, 2), sleep=sleep.sleep, jitter=NO_JITTER)
    )
    await until(lambda: runs == 3)
    assert health.failures == {"push": 2}
    assert sleep.sleeps == [1, 2]
    assert health.dead == {}  # restarted, so not dead
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def test_a_watched_task_that_dies_is_dead_and_counted() -> None:
    health = TaskHealth()

    async def broken() -> None:
        raise RuntimeError("gone")

    task = asyncio.create_task(broken(), name="web")
    health.watch(task)
    await asyncio.gather(task, return_exceptions=True)
    assert health.dead == {"web": "RuntimeError: gone"}
    assert health.failures == {"web": 1}
    cancelled = asyncio.create_task(asyncio.Event().wait(), name="quiet")
    health.watch(cancelled)
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert "quiet" not in health.dead


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        FileNotFoundError(2, "No such file or directory", "/srv/entries"),
        RegistryUnavailable("consul http://127.0.0.1:8500: 503 Service Unavailable"),
    ],
    ids=["refused", "missing-file", "5xx"],
)
async def test_an_expected_failure_is_one_warning_line_with_the_next_delay(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    store, sleep = RegistryStore(), FakeTime(hold=True)
    memory = MemoryAdapter()
    sup = Supervisor(store, jitter=NO_JITTER, backoff=(5,), sleep=sleep.sleep)
    caplog.set_level(logging.INFO, logger="registryd.supervisor")
    sup.start(KEY, memory)
    await until(lambda: store.shards[KEY].synced)
    memory.fail(error)
    await until(lambda: bool(sleep.sleeps))
    (record,) = [r for r in caplog.records if r.name == "registryd.supervisor"]
    assert record.levelno == logging.WARNING and record.exc_info is None
    message = record.getMessage()
    assert "\n" not in message and message.endswith("; retrying in 5.0s")
    assert str(error.args[-1]) in message
    await sup.stop()


async def test_an_expected_failure_has_its_traceback_at_debug_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, sleep = RegistryStore(), FakeTime(hold=True)
    memory = MemoryAdapter()
    sup = Supervisor(store, jitter=NO_JITTER, backoff=(5,), sleep=sleep.sleep)
    caplog.set_level(logging.DEBUG, logger="registryd.supervisor")
    sup.start(KEY, memory)
    await until(lambda: store.shards[KEY].synced)
    memory.fail(ConnectionRefusedError(111, "Connection refused"))
    await until(lambda: bool(sleep.sleeps))
    (record,) = [r for r in caplog.records if r.name == "registryd.supervisor"]
    assert record.levelno == logging.WARNING and record.exc_info is not None
    await sup.stop()


async def test_an_unexpected_exception_is_an_error_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, sleep = RegistryStore(), FakeTime(hold=True)
    memory = MemoryAdapter()
    sup = Supervisor(store, jitter=NO_JITTER, backoff=(5,), sleep=sleep.sleep)
    caplog.set_level(logging.INFO, logger="registryd.supervisor")
    sup.start(KEY, memory)
    await until(lambda: store.shards[KEY].synced)
    memory.fail(KeyError("spec"))
    await until(lambda: bool(sleep.sleeps))
    (record,) = [r for r in caplog.records if r.name == "registryd.supervisor"]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert record.getMessage().endswith("; retrying in 5.0s")
    await sup.stop()


@pytest.mark.parametrize(
    "error_type",
    [
        "adapters.consul.faults:ConsulError",
        "adapters.etcd.adapter:EtcdError",
        "adapters.kubernetes.client:KubernetesError",
        "adapters.nacos.client:NacosError",
        "adapters.nacos.client:QueryError",
    ],
)
def test_the_built_in_adapters_failures_to_reach_their_registry_are_expected(
    error_type: str,
) -> None:
    module, _, name = error_type.partition(":")
    error = getattr(importlib.import_module(module), name)("down")
    assert expected_failure(error)
