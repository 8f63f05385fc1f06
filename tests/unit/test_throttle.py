"""The xDS throttles (:mod:`registryd.xds.throttle`), driven by a fake clock.

istiod: pilot/pkg/xds/discovery.go doSendPushes (concurrentPushLimit) and
WaitForRequestLimit (RequestRateLimit, burst 1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from registryd.xds.throttle import NewStreams, PushSlots, Throttle
from tests.support.fake_time import FakeTime
from tests.support.turns import until


class Holders:
    """Tasks that each hold a push slot until told to let go."""

    def __init__(self, slots: PushSlots) -> None:
        self.slots = slots
        self.order: list[int] = []
        self.most = 0
        self.release: dict[int, asyncio.Event] = {}

    async def hold(self, index: int) -> None:
        self.release[index] = asyncio.Event()
        async with self.slots.hold():
            self.order.append(index)
            self.most = max(self.most, self.slots.in_flight)
            await self.release[index].wait()


async def test_push_slots_never_exceed_the_limit_and_go_in_arrival_order() -> None:
    slots = PushSlots(2)
    holders = Holders(slots)
    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(holders.hold(i)))
        await until(lambda i=i: i in holders.release)  # arrive one after the other
    await until(lambda: slots.waiting == 4)
    assert holders.order == [0, 1]
    # let go in any order: the line still goes first come first
    for i, served in ((1, 3), (0, 4), (3, 5), (2, 6), (5, 6), (4, 6)):
        holders.release[i].set()
        await until(lambda served=served: len(holders.order) == served)
    await asyncio.gather(*tasks)
    assert holders.order == [0, 1, 2, 3, 4, 5]
    assert holders.most == 2
    assert (slots.in_flight, slots.waiting, slots.waited) == (0, 0, 4)


async def test_a_cancelled_waiter_leaves_the_line_and_the_next_gets_the_slot() -> None:
    slots = PushSlots(1)
    holders = Holders(slots)
    first = asyncio.create_task(holders.hold(0))
    await until(lambda: slots.in_flight == 1)
    gone = asyncio.create_task(holders.hold(1))
    await until(lambda: slots.waiting == 1)
    nxt = asyncio.create_task(holders.hold(2))
    await until(lambda: slots.waiting == 2)
    gone.cancel()
    holders.release[0].set()
    await until(lambda: holders.order == [0, 2])
    holders.release[2].set()
    await asyncio.gather(first, nxt)
    assert gone.cancelled()
    assert (slots.in_flight, slots.waiting) == (0, 0)


async def test_a_waiter_cancelled_as_its_turn_comes_passes_the_slot_on() -> None:
    slots = PushSlots(1)
    await slots.acquire()  # the test holds the only slot
    unlucky = asyncio.create_task(slots.acquire())
    await until(lambda: slots.waiting == 1)
    nxt = asyncio.create_task(slots.acquire())
    await until(lambda: slots.waiting == 2)
    slots.release()  # hands the slot to the first in line ...
    unlucky.cancel()  # ... which is cancelled before it runs
    await until(nxt.done)
    assert unlucky.cancelled()
    assert (slots.in_flight, slots.waiting) == (1, 0)  # the next one holds it
    slots.release()
    assert slots.in_flight == 0


async def test_push_waits_are_reported_with_the_clock() -> None:
    clock = FakeTime(hold=True)
    seen: list[tuple[str, float]] = []
    slots = PushSlots(1, clock=clock, observers=[lambda kind, s: seen.append((kind, s))])
    holders = Holders(slots)
    first = asyncio.create_task(holders.hold(0))
    await until(lambda: slots.in_flight == 1)
    second = asyncio.create_task(holders.hold(1))
    await until(lambda: slots.waiting == 1)
    clock.advance(2.5)
    holders.release[0].set()
    await until(lambda: holders.order == [0, 1])
    holders.release[1].set()
    await asyncio.gather(first, second)
    assert seen == [("push", 2.5)]  # the first did not wait: not reported


async def test_no_push_limit_counts_but_never_waits() -> None:
    slots = PushSlots(None)
    holders = Holders(slots)
    tasks = [asyncio.create_task(holders.hold(i)) for i in range(50)]
    await until(lambda: len(holders.order) == 50)
    assert (slots.in_flight, slots.waiting, holders.most) == (50, 0, 50)
    for event in holders.release.values():
        event.set()
    await asyncio.gather(*tasks)
    assert (slots.in_flight, slots.waited) == (0, 0)


class Timer:
    def __init__(self, timers: Timers, delay: float, callback: Callable[[], None]) -> None:
        self.timers, self.delay, self.callback = timers, delay, callback

    def cancel(self) -> None:
        self.timers.pending.remove(self)


class Timers:
    """``call_later`` for tests: timers fire when the test says."""

    def __init__(self) -> None:
        self.pending: list[Timer] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self, delay, callback)
        self.pending.append(timer)
        return timer

    def fire(self) -> None:
        """Run every pending timer (a fired timer is no longer pending)."""
        for timer in list(self.pending):
            self.pending.remove(timer)
            timer.callback()


async def test_a_holder_past_its_lease_gives_the_slot_to_the_next_and_goes_on() -> None:
    clock, timers = FakeTime(hold=True), Timers()
    slots = PushSlots(1, lease=5.0, clock=clock, call_later=timers)
    holders = Holders(slots)
    stuck = asyncio.create_task(holders.hold(0))
    await until(lambda: holders.order == [0])
    nxt = asyncio.create_task(holders.hold(1))
    await until(lambda: slots.waiting == 1)
    assert [timer.delay for timer in timers.pending] == [5.0]
    clock.advance(5.0)
    timers.fire()  # 0's lease ends while it is still busy
    await until(lambda: holders.order == [0, 1])
    assert (slots.in_flight, slots.overtime) == (1, 1)
    holders.release[0].set()  # the overdue holder finishes: nothing to give back
    await stuck
    assert slots.in_flight == 1
    holders.release[1].set()  # finished in time: its timer is cancelled
    await nxt
    assert (slots.in_flight, slots.overtime, timers.pending) == (0, 1, [])


async def test_leases_share_one_timer_armed_for_the_oldest() -> None:
    clock, timers = FakeTime(hold=True), Timers()
    slots = PushSlots(3, lease=5.0, clock=clock, call_later=timers)
    holders = Holders(slots)
    tasks = []
    for i in range(3):  # leases begin at 0, 1 and 2 s
        tasks.append(asyncio.create_task(holders.hold(i)))
        await until(lambda i=i: len(holders.order) == i + 1)
        clock.advance(1.0)
    assert [timer.delay for timer in timers.pending] == [5.0]  # one timer, not three
    clock.advance(2.0)  # 5 s: the first lease is due
    timers.fire()
    assert (slots.overtime, slots.in_flight) == (1, 2)
    assert [timer.delay for timer in timers.pending] == [1.0]  # the next ends at 6 s
    holders.release[1].set()  # ends in time
    await until(lambda: slots.in_flight == 1)
    assert [timer.delay for timer in timers.pending] == [1.0]  # still armed for lease 2
    clock.advance(1.0)
    timers.fire()  # 6 s: nothing due any more (lease 1 ended); re-armed for lease 2 at 7 s
    assert [timer.delay for timer in timers.pending] == [1.0]
    holders.release[2].set()
    await until(lambda: slots.in_flight == 0)
    assert timers.pending == []  # no lease left: the timer is gone
    holders.release[0].set()
    await asyncio.gather(*tasks)
    assert (slots.in_flight, slots.overtime) == (0, 1)


def test_push_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="push limit"):
        PushSlots(0)


class Arrivals:
    """Callers of :meth:`NewStreams.admit`, in order, and when each was let in."""

    def __init__(self, streams: NewStreams, clock: FakeTime) -> None:
        self.streams = streams
        self.clock = clock
        self.admitted: list[tuple[int, float]] = []

    async def arrive(self, index: int) -> None:
        await self.streams.admit()
        self.admitted.append((index, self.clock.now - 1000.0))

    async def start(self, count: int) -> list[asyncio.Task[None]]:
        tasks = []
        base = self.streams.waiting + len(self.admitted)
        for i in range(count):
            tasks.append(asyncio.create_task(self.arrive(base + i)))
            await until(lambda i=i: self.streams.waiting + len(self.admitted) == base + i + 1)
        return tasks


async def test_new_streams_beyond_the_rate_wait_and_are_all_admitted_in_order() -> None:
    clock = FakeTime(hold=True)
    streams = NewStreams(4.0, 1, clock=clock, sleep=clock.sleep)
    arrivals = Arrivals(streams, clock)
    tasks = await arrivals.start(5)
    assert arrivals.admitted == [(0, 0.0)]  # the burst
    assert streams.waiting == 4
    for step in range(1, 5):
        await until(lambda: clock.sleeping == 1)  # the first in line sleeps, no one else
        clock.advance(0.25)
        await until(lambda step=step: len(arrivals.admitted) == step + 1)
        assert streams.waiting == 4 - step
    await asyncio.gather(*tasks)
    assert arrivals.admitted == [(0, 0.0), (1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0)]
    assert streams.waited == 4


async def test_a_stream_that_leaves_while_waiting_takes_no_token_with_it() -> None:
    clock = FakeTime(hold=True)
    streams = NewStreams(2.0, 1, clock=clock, sleep=clock.sleep)
    arrivals = Arrivals(streams, clock)
    tasks = await arrivals.start(4)
    await until(lambda: clock.sleeping == 1)
    tasks[1].cancel()  # the first in line, asleep
    tasks[2].cancel()  # one behind it
    await until(lambda: streams.waiting == 1 and clock.sleeping == 1)
    clock.advance(0.5)
    await until(lambda: len(arrivals.admitted) == 2)
    assert arrivals.admitted == [(0, 0.0), (3, 0.5)]  # 3 got the token 1 would have had
    await asyncio.gather(tasks[3])
    assert streams.waiting == 0


async def test_the_bucket_refills_to_its_burst_while_idle() -> None:
    clock = FakeTime(hold=True)
    streams = NewStreams(1.0, 3, clock=clock, sleep=clock.sleep)
    arrivals = Arrivals(streams, clock)
    await asyncio.gather(*await arrivals.start(3))
    assert [at for _, at in arrivals.admitted] == [0.0, 0.0, 0.0]
    clock.advance(100.0)
    tasks = await arrivals.start(4)
    assert len(arrivals.admitted) == 6 and streams.waiting == 1  # 3 again, not 100
    await until(lambda: clock.sleeping == 1)
    clock.advance(1.0)
    await asyncio.gather(*tasks)


async def test_request_waits_are_reported_and_no_rate_admits_everyone_at_once() -> None:
    clock = FakeTime(hold=True)
    throttle = Throttle.build(push_limit=None, rate=1.0, clock=clock, sleep=clock.sleep)
    seen: list[tuple[str, float]] = []
    throttle.observe(lambda kind, s: seen.append((kind, s)))
    arrivals = Arrivals(throttle.streams, clock)
    tasks = await arrivals.start(2)
    await until(lambda: clock.sleeping == 1)
    clock.advance(1.0)
    await asyncio.gather(*tasks)
    assert seen == [("request", 1.0)]

    unlimited = Arrivals(NewStreams(None, clock=clock, sleep=clock.sleep), clock)
    await asyncio.gather(*await unlimited.start(100))
    assert len(unlimited.admitted) == 100 and unlimited.streams.waited == 0
