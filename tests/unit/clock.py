"""A fake monotonic clock with a sleep that returns only when the test advances time."""

from __future__ import annotations

import asyncio


class FakeClock:
    """``clock()`` reads the fake time; ``await clock.sleep(d)`` returns once
    :meth:`advance` has moved the time ``d`` seconds on."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + delay, future))
        await future

    @property
    def sleeping(self) -> int:
        """Sleepers not yet woken (and not cancelled)."""
        return sum(1 for _, f in self._sleepers if not f.done())

    def advance(self, seconds: float) -> None:
        """Move time on and wake every sleeper that is due."""
        self.now += seconds
        due = [(t, f) for t, f in self._sleepers if t <= self.now]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self.now and not f.done()]
        for _, future in due:
            if not future.done():
                future.set_result(None)
