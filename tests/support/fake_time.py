"""Time that moves only when a test moves it: a clock and a sleep to inject into the code
under test, so that rate limits, timeouts and backoffs are tested by the waits they ask
for, not by how long a test took.  The one fake clock of the test suite.

:class:`FakeTime` is both: ``fake()`` is the clock (seconds, like :func:`time.monotonic`,
or like :func:`time.time` when started there; :meth:`FakeTime.ns` reads it in integer
nanoseconds, like :func:`time.time_ns`) and ``fake.sleep`` the sleep.  A test moves the
clock with :meth:`FakeTime.advance` or by setting :attr:`FakeTime.now`; the readings
are counted (:attr:`FakeTime.reads`, safe from threads).  Every sleep is recorded in
:attr:`FakeTime.sleeps` (in the order asked), and the clock's time each is over in
:attr:`FakeTime.dues`.  Two modes:

* ``hold=False`` (the default): a sleep moves the clock to its end if it is not there
  yet, lets the loop turn once and returns: the code runs as if every wait had passed,
  at once.
* ``hold=True``: a sleep waits until the test moves the clock past its end
  (:meth:`FakeTime.advance`, :meth:`FakeTime.advance_to_next`): the test decides when
  each wait is over.

:meth:`FakeTime.slept` waits (on an event, not on time) until so many sleeps were asked.
"""

from __future__ import annotations

import asyncio
import threading


class FakeTime:
    """A clock (call it) and a sleep (:meth:`sleep`) that only the test moves."""

    def __init__(self, *, start: float = 1000.0, hold: bool = False) -> None:
        self.now = start
        self.hold = hold
        self.sleeps: list[float] = []
        self.dues: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._asked = asyncio.Event()
        self._lock = threading.Lock()  # code under test may read the clock from a thread
        self._reads = 0

    def __call__(self) -> float:
        with self._lock:
            self._reads += 1
        return self.now

    def ns(self) -> int:
        """The time in integer nanoseconds (a reading, like a call)."""
        return round(self() * 1_000_000_000)

    @property
    def reads(self) -> int:
        """How many times the clock was read (called, or :meth:`ns`), from any thread."""
        with self._lock:
            return self._reads

    async def sleep(self, delay: float) -> None:
        """Record ``delay``; return once the clock is at its end (see the module doc)."""
        due = self.now + max(delay, 0.0)
        self.sleeps.append(delay)
        self.dues.append(due)
        self._asked.set()
        if not self.hold:
            self.now = max(self.now, due)
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (due, waiter)
        self._sleepers.append(entry)
        try:
            await waiter
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        """Move the clock on; every held sleep that is over now returns."""
        self.now += seconds
        self._wake()

    def _wake(self) -> None:
        for due, waiter in list(self._sleepers):
            if due <= self.now and not waiter.done():
                waiter.set_result(None)

    def advance_to_next(self) -> float:
        """Move the clock to the end of the held sleep that is over first (it returns,
        with any other over by then); the new time."""
        self.now = max(self.now, min(d for d, waiter in self._sleepers if not waiter.done()))
        self._wake()
        return self.now

    @property
    def sleeping(self) -> int:
        """How many held sleeps are still waiting."""
        return sum(1 for _, waiter in self._sleepers if not waiter.done())

    async def slept(self, count: int, *, guard: float = 60.0) -> list[float]:
        """Wait until at least ``count`` sleeps were asked for; all sleeps so far.
        ``guard`` only stops a hung test: it is not what the test asserts."""
        async with asyncio.timeout(guard):
            while len(self.sleeps) < count:
                self._asked.clear()
                await self._asked.wait()
        return list(self.sleeps)
