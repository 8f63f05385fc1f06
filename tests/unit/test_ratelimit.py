"""The token bucket adapters share (:mod:`registryd.ratelimit`)."""

from __future__ import annotations

import asyncio
import time

import pytest

from registryd.ratelimit import TokenBucket
from tests.support.fake_time import FakeTime


def test_burst_then_rate() -> None:
    clock = FakeTime()
    bucket = TokenBucket(1.0, 2, clock=clock)
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]  # the burst
    assert bucket.reserve() == pytest.approx(1.0)
    clock.now += 1.0
    assert bucket.reserve() == pytest.approx(1.0)  # the token slept for was taken
    clock.now += 10.0
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]  # refilled, up to the burst
    assert bucket.reserve() == pytest.approx(1.0)


def test_reservations_are_served_in_order() -> None:
    clock = FakeTime()
    bucket = TokenBucket(4.0, 1, clock=clock)
    assert bucket.reserve() == 0.0
    waits = [bucket.reserve() for _ in range(4)]  # all at once: one every 1/rate s
    assert waits == pytest.approx([0.25, 0.5, 0.75, 1.0])
    clock.now += 0.6  # part of the debt is paid: the next one is due after the others
    assert bucket.reserve() == pytest.approx(1.25 - 0.6)
    assert bucket.tokens == pytest.approx(-5.0 + 0.6 * 4.0)  # the debt, as of stamp
    assert bucket.stamp == clock.now


def test_partial_refill() -> None:
    clock = FakeTime()
    bucket = TokenBucket(2.0, 3, clock=clock)
    for _ in range(3):
        assert bucket.reserve() == 0.0
    clock.now += 0.75  # 1.5 tokens back
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.25)


def test_the_default_clock_is_monotonic() -> None:
    bucket = TokenBucket(1.0, 1)
    assert bucket.clock is time.monotonic
    assert (bucket.rate, bucket.burst, bucket.tokens) == (1.0, 1, 1.0)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (float("nan"), 1), (1.0, 0)])
def test_rate_and_burst_are_checked(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match=r"rate|burst"):
        TokenBucket(rate, burst)


async def test_acquire_waits_until_the_token_is_due() -> None:
    time_ = FakeTime()
    bucket = TokenBucket(20.0, 2, clock=time_, sleep=time_.sleep)
    await bucket.acquire()  # the burst: at once
    await bucket.acquire()
    assert time_.sleeps == []
    await bucket.acquire()  # due 1/rate = 50 ms later
    await bucket.acquire()  # the clock moved with the sleep: 50 ms again, not 100
    assert time_.sleeps == pytest.approx([0.05, 0.05])


async def test_acquire_waits_with_the_sleep_it_was_given() -> None:
    time_ = FakeTime(hold=True)
    bucket = TokenBucket(4.0, 1, clock=time_, sleep=time_.sleep)
    await bucket.acquire()
    waiting = [asyncio.create_task(bucket.acquire()) for _ in range(2)]
    assert await time_.slept(2) == pytest.approx([0.25, 0.5])  # in order, 1/rate apart
    time_.advance(0.25)
    await asyncio.wait_for(waiting[0], 60)  # a hang guard only
    assert not waiting[1].done()  # its sleep is not over: the clock has not moved enough
    time_.advance(0.25)
    await asyncio.wait_for(waiting[1], 60)


def test_the_default_sleep_is_asyncio_sleep() -> None:
    assert TokenBucket(1.0, 1).sleep is asyncio.sleep


async def test_a_cancelled_acquire_keeps_its_reservation() -> None:
    clock = FakeTime()
    bucket = TokenBucket(1.0, 1, clock=clock)
    assert bucket.reserve() == 0.0
    waiting = asyncio.create_task(bucket.acquire())  # reserves the token due in 1 s
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert bucket.reserve() == pytest.approx(2.0)  # not given back
