"""The token bucket adapters share (:mod:`registryd.ratelimit`)."""

from __future__ import annotations

import asyncio
import time

import pytest

from registryd.ratelimit import TokenBucket


class Clock:
    """A clock that moves only when told (``now``); the Consul limiter's tests use it too."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(1.0, 2, clock=clock)
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]  # the burst
    assert bucket.reserve() == pytest.approx(1.0)
    clock.now += 1.0
    assert bucket.reserve() == pytest.approx(1.0)  # the token slept for was taken
    clock.now += 10.0
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]  # refilled, up to the burst
    assert bucket.reserve() == pytest.approx(1.0)


def test_reservations_are_served_in_order() -> None:
    clock = Clock()
    bucket = TokenBucket(4.0, 1, clock=clock)
    assert bucket.reserve() == 0.0
    waits = [bucket.reserve() for _ in range(4)]  # all at once: one every 1/rate s
    assert waits == pytest.approx([0.25, 0.5, 0.75, 1.0])
    clock.now += 0.6  # part of the debt is paid: the next one is due after the others
    assert bucket.reserve() == pytest.approx(1.25 - 0.6)
    assert bucket.tokens == pytest.approx(-5.0 + 0.6 * 4.0)  # the debt, as of stamp
    assert bucket.stamp == clock.now


def test_partial_refill() -> None:
    clock = Clock()
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
    bucket = TokenBucket(20.0, 1)
    started = time.monotonic()
    await bucket.acquire()  # the burst: at once
    await bucket.acquire()
    assert time.monotonic() - started >= 0.045  # the second token is due 1/rate = 50 ms later


async def test_a_cancelled_acquire_keeps_its_reservation() -> None:
    clock = Clock()
    bucket = TokenBucket(1.0, 1, clock=clock)
    assert bucket.reserve() == 0.0
    waiting = asyncio.create_task(bucket.acquire())  # reserves the token due in 1 s
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert bucket.reserve() == pytest.approx(2.0)  # not given back
