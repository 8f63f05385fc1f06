"""Throttles of the xDS server, as istiod has them: concurrent pushes and new streams.

Why: a push to a thousand clients, or a thousand clients reconnecting at once, should
not turn the event loop into one long burst of xDS work.  With the throttles the work
is spread out and the debug port and ``/ready`` keep answering in between.

* :class:`PushSlots` (``--pushThrottle``, ``PILOT_PUSH_THROTTLE``): at most ``limit``
  connections are being written at once; the others wait for a slot, first come first
  served.  istiod: ``pilot/pkg/xds/discovery.go`` ``doSendPushes`` holds one place of the
  ``concurrentPushLimit`` semaphore per connection push.  Unlike istiod, a slot is given
  up after :data:`PUSH_LEASE` seconds even if the write is not done.
* :class:`NewStreams` (``--maxRequestsPerSecond``, ``PILOT_MAX_REQUESTS_PER_SECOND``): new
  streams are admitted at ``rate`` a second (burst ``burst``); the others wait in line.
  Nothing is refused.  istiod: ``pilot/pkg/xds/discovery.go`` ``WaitForRequestLimit``
  (a ``rate.Limiter`` with burst 1, waited on first thing in ``ads.go``
  ``StreamAggregatedResources``); istiod gives up after one second and ends the stream
  with ``RESOURCE_EXHAUSTED``, registryd keeps the stream waiting instead.
* Both default as istiod's: see :func:`registryd.daemon.config.auto_limit`.

Contract shared by both: waiting is FIFO; a waiter that is cancelled (the client went
away) leaves the line and gives its turn to the next; every wait (not the callers served
at once) is reported to ``observers`` as ``(limit, seconds)`` with ``limit`` ``"push"``
or ``"request"``, measured by the injected ``clock``.  Both belong to one event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from registryd.ratelimit import TokenBucket

__all__ = ["PUSH", "PUSH_LEASE", "REQUEST", "NewStreams", "PushSlots", "Throttle"]

PUSH, REQUEST = "push", "request"
Observer = Callable[[str, float], None]
_DUE = 1e-9  # seconds: a token this close is due (float rounding of the refill)
PUSH_LEASE = 5.0  # seconds a connection may hold a push slot


def _tell(observers: list[Observer], limit: str, seconds: float) -> None:
    for observer in observers:
        observer(limit, seconds)


class Cancellable(Protocol):
    def cancel(self) -> None: ...


def _call_later(delay: float, callback: Callable[[], None]) -> Cancellable:
    return asyncio.get_running_loop().call_later(delay, callback)


class PushSlots:
    """At most ``limit`` holders at once (None: no limit); the rest wait FIFO.
    ``in_flight`` counts holders, ``waiting`` the callers in line, ``waited`` every
    caller that had to wait.

    A slot is a lease of ``lease`` seconds (None: unbounded): a holder still busy then
    (a client that stopped reading, its writes stuck in flow control) goes on without
    it, counted in ``overtime``, and the slot passes to the next in line.  So clients
    that stop reading cannot take all the slots and stop pushes to everyone (istiod
    holds a slot for the whole send).  Leases end in the order they began (``clock`` is
    monotonic, ``lease`` fixed), so one timer (``call_later``) for the oldest serves
    them all: a push to a thousand connections does not arm a thousand timers."""

    def __init__(
        self,
        limit: int | None,
        *,
        lease: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        call_later: Callable[[float, Callable[[], None]], Cancellable] = _call_later,
        observers: list[Observer] | None = None,
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"push limit must be >= 1, got {limit!r}")
        self.limit = limit
        self.lease = lease
        self.clock = clock
        self.call_later = call_later
        self.observers = observers if observers is not None else []
        self.in_flight = 0
        self.waited = 0
        self.overtime = 0
        self._line: collections.deque[asyncio.Future[None]] = collections.deque()
        self._leases: dict[int, float] = {}  # lease -> when it ends, oldest first
        self._lease_ids = itertools.count()
        self._timer: Cancellable | None = None  # for the oldest lease

    @property
    def waiting(self) -> int:
        return sum(1 for turn in self._line if not turn.done())

    def hold(self) -> _Hold:
        """Hold a slot for the body of an ``async with`` (at most ``lease`` seconds)."""
        return _Hold(self)

    def _begin_lease(self) -> int:
        key = next(self._lease_ids)
        if self.lease is not None:
            self._leases[key] = self.clock() + self.lease
            if self._timer is None:
                self._timer = self.call_later(self.lease, self._expire)
        return key

    def _end_lease(self, key: int) -> None:
        if self.lease is None:
            self.release()
        elif self._leases.pop(key, None) is not None:  # not expired: give the slot back
            self.release()
            if not self._leases and self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _expire(self) -> None:
        """End every lease that is due; arm the timer for the next one."""
        self._timer = None
        now = self.clock()
        while self._leases:
            key, ends = next(iter(self._leases.items()))
            if ends > now:
                self._timer = self.call_later(ends - now, self._expire)
                return
            del self._leases[key]
            self.overtime += 1
            self.release()

    async def acquire(self) -> None:
        if not self._line and (self.limit is None or self.in_flight < self.limit):
            self.in_flight += 1
            return
        started = self.clock()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append(turn)
        try:
            await turn  # release() hands its slot over: in_flight stays as it is
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # the slot came as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # release() may have dropped it
                    self._line.remove(turn)
            raise
        self.waited += 1
        _tell(self.observers, PUSH, self.clock() - started)

    def release(self) -> None:
        while self._line:
            turn = self._line.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.in_flight -= 1


class _Hold:
    """``async with slots.hold():`` a slot for the body (see :class:`PushSlots`)."""

    __slots__ = ("_key", "_slots")

    def __init__(self, slots: PushSlots) -> None:
        self._slots = slots
        self._key = -1

    async def __aenter__(self) -> None:
        await self._slots.acquire()
        self._key = self._slots._begin_lease()

    async def __aexit__(self, *_: object) -> None:
        self._slots._end_lease(self._key)


class NewStreams:
    """Admits callers at ``rate`` a second with a burst of ``burst`` (None: no limit),
    in arrival order; ``waiting`` counts callers in line, ``waited`` every caller that
    had to wait.  The first in line sleeps (``sleep``) until a token is due; the others
    wait for their turn, so a caller that leaves takes no token with it."""

    def __init__(
        self,
        rate: float | None,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        observers: list[Observer] | None = None,
    ) -> None:
        self.bucket = None if rate is None else TokenBucket(rate, burst, clock=clock)
        self.clock = clock
        self.sleep = sleep
        self.observers = observers if observers is not None else []
        self.waited = 0
        self._line: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def rate(self) -> float | None:
        return None if self.bucket is None else self.bucket.rate

    @property
    def waiting(self) -> int:
        return len(self._line)

    def _take(self) -> float:
        """Take a token if one is due (0.0); else seconds until one is, none taken."""
        assert self.bucket is not None
        delay = self.bucket.reserve()
        if delay <= _DUE:
            return 0.0
        self.bucket.tokens += 1.0  # not due yet: give it back
        return delay

    async def admit(self) -> None:
        """Return when the caller may go on."""
        if self.bucket is None or (not self._line and self._take() == 0.0):
            return
        started = self.clock()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append(turn)
        try:
            if self._line[0] is not turn:
                await turn  # woken when it is first in line
            while (delay := self._take()) > 0.0:
                await self.sleep(delay)
        finally:
            self._line.remove(turn)
            if self._line and not self._line[0].done():
                self._line[0].set_result(None)
        self.waited += 1
        _tell(self.observers, REQUEST, self.clock() - started)


@dataclass(eq=False)
class Throttle:
    """Both throttles of one xDS server, sharing ``observers``; the default limits
    nothing (a server built without settings)."""

    pushes: PushSlots = field(default_factory=lambda: PushSlots(None))
    streams: NewStreams = field(default_factory=lambda: NewStreams(None))

    @classmethod
    def build(
        cls,
        *,
        push_limit: int | None,
        rate: float | None,
        burst: int = 1,
        lease: float | None = PUSH_LEASE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        call_later: Callable[[float, Callable[[], None]], Cancellable] = _call_later,
    ) -> Throttle:
        observers: list[Observer] = []
        return cls(
            PushSlots(
                push_limit, lease=lease, clock=clock, call_later=call_later, observers=observers
            ),
            NewStreams(rate, burst, clock=clock, sleep=sleep, observers=observers),
        )

    def observe(self, observer: Observer) -> None:
        """Tell ``observer`` about every wait of either throttle."""
        self.pushes.observers.append(observer)
        if self.streams.observers is not self.pushes.observers:
            self.streams.observers.append(observer)
