"""Hung xDS workers: found by their heartbeat, killed, and never waited for.

The pool runs here without processes (:func:`tests.support.fake_workers.running_pool`):
each worker is a handle whose channel is a stub that answers (or not) as the test says,
on a fake clock, so no test sleeps.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from registryd.errors import ConfigError
from registryd.tools import cli
from registryd.workers.heartbeat import Heartbeat, watch
from tests.support.fake_time import FakeTime
from tests.support.fake_workers import running_pool


def test_a_worker_is_late_after_two_silent_pings_and_hung_after_the_timeout() -> None:
    beat = Heartbeat(5.0, heard=100.0)
    assert beat.interval == 1.0
    assert not beat.late(102.0)
    assert beat.late(102.1)
    assert not beat.hung(104.9)
    assert beat.hung(105.0)
    assert beat.silent(103.5) == 3.5
    beat.answered(104.0)
    assert not beat.late(105.0)
    beat.answered(90.0)  # an older time never moves it back
    assert beat.heard == 104.0


def test_a_worker_has_time_to_apply_what_was_shipped_to_it() -> None:
    beat = Heartbeat(5.0, heard=100.0)
    before = beat.ping()
    beat.ship(40 * 1024 * 1024)  # a whole snapshot of a large mesh: 10 s more
    after = beat.ping()
    assert beat.deadline == 15.0
    assert not beat.late(112.0) and beat.late(112.1)
    assert not beat.hung(114.9) and beat.hung(115.0)
    beat.answered(101.0, before)  # answered a ping sent before the snapshot: still busy
    assert beat.deadline == 15.0
    beat.answered(104.0, after)  # past the snapshot: the timeout alone again
    assert beat.deadline == 5.0
    assert beat.hung(109.0)
    assert not beat.pings  # answered pings are forgotten


def test_without_a_timeout_a_worker_is_never_late_nor_hung() -> None:
    beat = Heartbeat(None, heard=0.0)
    assert not beat.late(1e9)
    assert not beat.hung(1e9)


async def test_watch_pings_each_interval_and_returns_the_silence_once_hung() -> None:
    time = FakeTime()
    beat = Heartbeat(5.0, heard=time())
    pings: list[float] = []

    def ping(number: int) -> None:
        pings.append(time())
        if number <= 3:  # the worker answers its first three pings at once
            beat.answered(time(), number)

    silent = await asyncio.wait_for(watch(beat, ping, time, time.sleep), 5)
    assert silent == 5.0
    assert set(time.sleeps) == {1.0}
    # answered at 1, 2, 3 s; pinged in vain at 4..7 s; hung at 8 s, when it is not pinged
    assert [p - 1000.0 for p in pings] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]


async def test_watch_judges_nothing_in_a_round_where_this_process_was_late() -> None:
    time = FakeTime()
    beat = Heartbeat(5.0, heard=time())
    pings = 0

    async def stalled_sleep(delay: float) -> None:
        await time.sleep(delay)
        if len(time.sleeps) == 1:
            time.now += 10.0  # the main process' loop was held (a long build)

    def ping(_: int) -> None:
        nonlocal pings
        pings += 1

    silent = await asyncio.wait_for(watch(beat, ping, time, stalled_sleep), 5)
    assert pings == 1  # the stalled round pinged instead of killing
    assert silent == 12.0  # the next round, silent still: hung


def test_the_flag_sets_the_heartbeat_timeout() -> None:
    assert cli.parse_args(["discovery"], {}).xds_worker_heartbeat_timeout == 5.0
    flag = "--xdsWorkerHeartbeatTimeout"
    assert cli.parse_args(["discovery", f"{flag}=1500ms"], {}).xds_worker_heartbeat_timeout == 1.5
    assert cli.parse_args(["discovery", f"{flag}=0"], {}).xds_worker_heartbeat_timeout is None
    with pytest.raises(ConfigError, match=flag):
        cli.parse_args(["discovery", f"{flag}=soon"], {})


def connection(worker: int, at: float) -> tuple[float, dict[str, Any]]:
    return (at, {"connectionID": f"conn-w{worker}-1", "worker": worker})


async def test_a_late_worker_is_not_asked_and_is_named_as_unresponsive() -> None:
    time = FakeTime()
    pool, (one, two) = running_pool(time, [[connection(1, 1.0)], [connection(2, 2.0)]])
    time.now += 2.5
    one.handle.beat.answered(time())  # worker 2 has been silent for 2.5 s: late
    listing = await pool.listing("connections")
    assert [item for _, item in listing] == [{"connectionID": "conn-w1-1", "worker": 1}]
    assert not two.sent  # not asked: nothing waited for it
    assert pool.unresponsive() == [
        "xDS worker 2 (pid 102) has not answered for 2.5s (replaced after 5.0s)"
    ]


async def test_a_worker_that_just_stopped_is_waited_for_only_the_call_timeout() -> None:
    time = FakeTime()
    pool, (_, two) = running_pool(time, [[connection(1, 1.0)], [connection(2, 2.0)]])
    two.stopped = True
    listing = await asyncio.wait_for(pool.listing("syncz"), 5)
    assert [item["connectionID"] for _, item in listing] == ["conn-w1-1"]
    assert not two.handle.pending  # the call is forgotten
    assert pool.unresponsive() == []  # not late yet: /ready still says nothing


async def test_a_late_worker_counts_as_hung_and_with_its_last_counts() -> None:
    def families(pushes: float) -> list[Any]:
        registry = CollectorRegistry(auto_describe=False)
        Counter("pushes", "p", registry=registry).inc(pushes)
        return list(registry.collect())

    time = FakeTime()
    pool, (one, two) = running_pool(time, [families(3), families(4)])
    await pool.metric_families()  # both answer: their counts are kept
    time.now += 3.0
    one.handle.beat.answered(time())
    two.answer = families(100)  # never read: worker 2 is late
    merged = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in await pool.metric_families()
        for s in f.samples
    }
    assert merged[("pushes_total", ())] == 7  # worker 2 counts with its last answer
    assert merged[("registryd_xds_workers", (("state", "up"),))] == 1
    assert merged[("registryd_xds_workers", (("state", "hung"),))] == 1
    assert merged[("registryd_xds_workers", (("state", "down"),))] == 0


async def test_a_hung_worker_is_killed_and_pinged_until_then() -> None:
    time = FakeTime()
    pool, (one, _) = running_pool(time, [[], []])
    handle = one.handle
    await asyncio.wait_for(pool._heartbeat(handle), 5)
    assert handle.process is not None and handle.process.killed  # type: ignore[attr-defined]
    assert handle.hung_for == 5.0
    assert one.sent == [("ping", 1), ("ping", 2), ("ping", 3), ("ping", 4)]


async def test_a_worker_that_answers_its_pings_is_left_alone() -> None:
    time = FakeTime()
    pool, (one, _) = running_pool(time, [[], []])
    handle = one.handle
    write = one.write

    def answering(data: bytes) -> None:
        write(data)
        handle.beat.answered(time())  # the pong, at once

    one.write = answering  # type: ignore[method-assign]
    task = asyncio.create_task(pool._heartbeat(handle))
    await time.slept(50)
    assert not task.done()
    task.cancel()
    assert not handle.process.killed  # type: ignore[union-attr]
    assert len(one.sent) >= 49
