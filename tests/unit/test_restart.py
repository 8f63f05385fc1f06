"""The one restart rule: backoff as data, jitter within bounds, a cap, a fresh start only
after a stable run, cancellation that stops it, every failure reported.  On fake time:
no test sleeps."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from registryd.base.restart import BACKOFF, Attempt, Backoff, keep_running
from tests.support.fake_time import FakeTime

DEFAULT = Backoff()


def NONE() -> float:
    return 0.5  # the middle of [0, 1): a jitter factor of exactly 1


def draws(*values: float) -> Callable[[], float]:
    """A jitter source returning ``values`` in turn, over and over."""
    return itertools.cycle(values).__next__


class Failures:
    """The ``failed`` callback: what was reported, and how many sleeps came before."""

    def __init__(self, time: FakeTime) -> None:
        self.time = time
        self.errors: list[BaseException] = []
        self.delays: list[float] = []
        self.sleeps_before: list[int] = []

    def __call__(self, error: BaseException, delay: float) -> None:
        self.errors.append(error)
        self.delays.append(delay)
        self.sleeps_before.append(len(self.time.sleeps))


async def failing(attempt: Attempt) -> None:
    raise ConnectionError("unreachable")


async def ended(task: asyncio.Task[Any]) -> BaseException | None:
    """Wait for ``task`` (cancelled just before) to end; how it ended.  The timeout only
    stops a test whose task never ends: that is the failure."""
    async with asyncio.timeout(5):
        outcomes = await asyncio.gather(task, return_exceptions=True)
    return outcomes[0] if isinstance(outcomes[0], BaseException) else None


async def run_until_slept(
    count: int,
    run: Callable[[Attempt], Awaitable[object]],
    time: FakeTime,
    failed: Callable[[BaseException, float], object],
    *,
    backoff: Backoff = DEFAULT,
    jitter: Callable[[], float] = random.random,
) -> list[float]:
    """Run ``keep_running`` until it asked for ``count`` sleeps; those sleeps."""
    task = asyncio.create_task(
        keep_running(run, failed, backoff=backoff, sleep=time.sleep, clock=time, jitter=jitter)
    )
    try:
        return (await time.slept(count))[:count]
    finally:
        task.cancel()
        await ended(task)


async def test_delays_follow_the_backoff_sequence_and_the_last_step_repeats() -> None:
    time = FakeTime()
    delays = await run_until_slept(10, failing, time, Failures(time), jitter=NONE)
    assert delays == [*BACKOFF, BACKOFF[-1], BACKOFF[-1]]


async def test_jitter_scales_each_delay_within_20_percent() -> None:
    time = FakeTime()
    low_high = await run_until_slept(4, failing, time, Failures(time), jitter=draws(0.0, 0.75))
    assert low_high == pytest.approx([0.8, 1.1, 1.6, 3.3])  # 1, 1, 2, 3 scaled by .8 / 1.1

    time = FakeTime()
    seeded = random.Random(7).random
    delays = await run_until_slept(200, failing, time, Failures(time), jitter=seeded)
    steps = [*BACKOFF, *[BACKOFF[-1]] * 192]
    assert all(0.8 * s <= d < 1.2 * s for s, d in zip(steps, delays, strict=True))
    assert len({round(d / s, 6) for s, d in zip(steps, delays, strict=True)}) > 100


async def test_delays_never_exceed_the_cap() -> None:
    time = FakeTime()
    backoff = Backoff(steps=(10, 100), cap=50)
    delays = await run_until_slept(
        3, failing, time, Failures(time), backoff=backoff, jitter=draws(0.0, 0.999999, 0.0)
    )
    assert delays == pytest.approx([8.0, 50.0, 50.0])
    assert Backoff(steps=(25,), cap=26).delay(0, 0.999999) == 26  # jitter is capped too


def up_for(time: FakeTime, seconds: float) -> Callable[[Attempt], Awaitable[None]]:
    """A run that comes up, stays up ``seconds`` and fails."""

    async def run(attempt: Attempt) -> None:
        attempt.up()
        time.now += seconds
        raise ConnectionError("lost it")

    return run


async def test_the_backoff_starts_over_only_after_a_run_stayed_up_the_stable_period() -> None:
    time = FakeTime()
    backoff = Backoff(steps=(1, 2, 3), stable_after=60)
    stable = up_for(time, 60)
    delays = await run_until_slept(3, stable, time, Failures(time), backoff=backoff, jitter=NONE)
    assert delays == [1, 1, 1]

    time = FakeTime()
    brief = up_for(time, 59.9)
    delays = await run_until_slept(3, brief, time, Failures(time), backoff=backoff, jitter=NONE)
    assert delays == [1, 2, 3]


async def test_time_before_a_run_came_up_does_not_count_as_stable() -> None:
    time = FakeTime()

    async def slow_to_come_up(attempt: Attempt) -> None:
        time.now += 600  # never up: e.g. a registry that never delivered its full state
        raise ConnectionError("never listed")

    backoff = Backoff(steps=(1, 2, 3))
    delays = await run_until_slept(
        3, slow_to_come_up, time, Failures(time), backoff=backoff, jitter=NONE
    )
    assert delays == [1, 2, 3]


async def test_each_failure_is_reported_with_its_delay_before_the_sleep() -> None:
    time = FakeTime()
    failures = Failures(time)
    runs = 0

    async def run(attempt: Attempt) -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            return  # ending without an error is a failure too
        raise ValueError(f"bug #{runs}")

    slept = await run_until_slept(3, run, time, failures, jitter=draws(0.0))
    assert [str(e) for e in failures.errors] == [
        "bug #1",
        "the task ended without an error",
        "bug #3",
    ]
    assert isinstance(failures.errors[1], RuntimeError)
    assert failures.delays == slept == pytest.approx([0.8, 0.8, 1.6])
    assert failures.sleeps_before == [0, 1, 2]  # reported, then slept


async def test_a_stray_cancelled_error_from_the_run_is_a_failure() -> None:
    time = FakeTime()
    failures = Failures(time)

    async def run(attempt: Attempt) -> None:
        inner: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        inner.cancel()
        await inner  # a cancellation of its own, not of the restarting task

    await run_until_slept(2, run, time, failures)
    assert [type(e) for e in failures.errors] == [asyncio.CancelledError] * 2


async def test_cancelling_stops_it_in_the_run_and_in_the_sleep() -> None:
    time = FakeTime(hold=True)
    failures = Failures(time)
    running = asyncio.Event()
    released = False

    async def run(attempt: Attempt) -> None:
        nonlocal released
        running.set()
        try:
            await asyncio.Event().wait()
        finally:
            released = True

    in_run = asyncio.create_task(keep_running(run, failures, sleep=time.sleep, clock=time))
    await running.wait()
    in_run.cancel()
    await ended(in_run)
    assert in_run.cancelled() and released
    assert failures.errors == [] and time.sleeps == []

    in_sleep = asyncio.create_task(keep_running(failing, failures, sleep=time.sleep, clock=time))
    await time.slept(1)
    in_sleep.cancel()
    await ended(in_sleep)
    assert in_sleep.cancelled()
    assert len(failures.errors) == 1 and time.sleeping == 0


async def test_a_run_that_fails_on_its_way_out_of_a_cancellation_is_not_restarted() -> None:
    time = FakeTime(hold=True)
    failures = Failures(time)
    running = asyncio.Event()

    async def run(attempt: Attempt) -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise OSError("cleanup failed") from None

    task = asyncio.create_task(keep_running(run, failures, sleep=time.sleep, clock=time))
    await running.wait()
    task.cancel()
    outcome = await ended(task)
    assert isinstance(outcome, OSError)  # the task ends: nothing waits forever on stop
    assert failures.errors == [] and time.sleeps == []


def test_a_backoff_needs_steps_and_a_jitter_below_one() -> None:
    with pytest.raises(ValueError, match="steps"):
        Backoff(steps=())
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.0)
    assert Backoff().delay(0, 0.5) == 1.0
