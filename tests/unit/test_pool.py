"""xDS worker pool: a worker that ends is counted and started again after the backoff
(jitter included), a start that fails is one more failure, and no counter goes down.

No processes (:func:`tests.support.fake_workers.started_pool`) and held fake time: each
backoff is a sleep the test sees asked for and then ends, so no test sleeps.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from registryd.workers.pool import WorkerPool
from tests.support.fake_time import FakeTime
from tests.support.fake_workers import started_pool
from tests.support.turns import until

JITTER = 0.75  # the jitter draw of these tests: every delay is scaled by 1.1


def running(pool: WorkerPool) -> dict[int, int | None]:
    """Worker index -> pid, for the workers up."""
    return {h.index: h.pid for h in pool._handles if h.up}


async def test_a_worker_that_ends_is_restarted_after_the_backoff_with_jitter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime(hold=True)
    pool, spawner = await started_pool(time, [[], []], backoff=(2, 4), jitter=lambda: JITTER)
    assert running(pool) == {1: 201, 2: 202}

    with caplog.at_level(logging.ERROR, "registryd.supervisor"):
        spawner.processes[0].exit(-9)  # killed
        assert await time.slept(1) == [pytest.approx(2.2)]  # 2 s, jittered
    assert pool.health.failures == {"xds-worker": 1}
    assert "xDS worker 1 (pid 201) ended (exit status -9)" in caplog.text
    assert running(pool) == {2: 202}  # the other worker is not touched
    assert len(spawner.processes) == 2  # no new one before the backoff is over

    assert time.advance_to_next() == pytest.approx(1000 + 2.2)
    await until(lambda: running(pool) == {1: 203, 2: 202})
    assert spawner.processes[1].returncode is None
    await pool.stop()


async def test_the_backoff_grows_while_workers_die_young_and_starts_over_after_a_minute_up() -> (
    None
):
    time = FakeTime(hold=True)
    pool, spawner = await started_pool(time, [[]], backoff=(2, 4, 8), jitter=lambda: JITTER)

    async def kill_and_restart(pid: int) -> None:
        spawner.processes[pid - 201].exit(-9)
        await time.slept(len(time.sleeps) + 1)
        time.advance_to_next()
        await until(lambda: running(pool) == {1: pid + 1})

    await kill_and_restart(201)
    await kill_and_restart(202)  # died as soon as it started: the next step
    time.advance(61)  # worker 203 serves for over a minute
    await kill_and_restart(203)
    assert time.sleeps == pytest.approx([2.2, 4.4, 2.2])
    assert pool.health.failures == {"xds-worker": 3}
    await pool.stop()


async def test_a_start_that_fails_is_one_more_failure_and_retried_later() -> None:
    time = FakeTime(hold=True)
    pool, spawner = await started_pool(time, [[]], backoff=(2, 4), jitter=lambda: JITTER)
    spawner.refuse = "cannot listen: address in use"
    spawner.processes[0].exit(1)
    await time.slept(1)
    time.advance_to_next()
    await time.slept(2)  # worker 202 refused to listen: the next step
    assert time.sleeps == pytest.approx([2.2, 4.4])
    assert pool.health.failures == {"xds-worker": 2}
    assert running(pool) == {}
    spawner.refuse = None
    time.advance_to_next()
    await until(lambda: running(pool) == {1: 203})
    await pool.stop()


async def test_stopping_the_pool_during_a_backoff_stops_the_restarts() -> None:
    time = FakeTime(hold=True)
    pool, spawner = await started_pool(time, [[]], jitter=lambda: JITTER)
    task = pool._handles[0].task
    spawner.processes[0].exit(-9)
    await time.slept(1)
    await pool.stop()
    assert task is not None and task.cancelled()
    assert time.sleeping == 0 and len(spawner.processes) == 1


def families(pushes: float) -> list[Any]:
    registry = CollectorRegistry(auto_describe=False)
    Counter("pushes", "p", registry=registry).inc(pushes)
    return list(registry.collect())


async def samples(pool: WorkerPool) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in await pool.metric_families()
        for s in f.samples
    }


async def test_counters_never_go_down_across_a_restart() -> None:
    time = FakeTime(hold=True)
    pool, spawner = await started_pool(time, [families(3), families(4)], jitter=lambda: JITTER)
    pushes = ("pushes_total", ())
    assert (await samples(pool))[pushes] == 7

    spawner.processes[0].exit(-9)
    await time.slept(1)
    while_down = await samples(pool)
    assert while_down[pushes] == 7  # what worker 1 had counted stays counted
    assert while_down[("registryd_xds_workers", (("state", "down"),))] == 1

    time.advance_to_next()
    await until(lambda: running(pool) == {1: 203, 2: 202})
    assert (await samples(pool))[pushes] == 7  # the new worker has counted nothing yet
    spawner.channels[2].answer = families(1)
    restarted = await samples(pool)
    assert restarted[pushes] == 8  # the dead worker's 3, the new one's 1, worker 2's 4
    assert restarted[("registryd_xds_workers", (("state", "up"),))] == 2
    await pool.stop()
