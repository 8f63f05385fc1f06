"""Drive an adapter's ``watch()`` in a task and read its updates in order (shared by the
adapter tests).

Every wait here is a hang guard (:data:`HANG_GUARD`): it stops a hung test and is never
what a test asserts.  That nothing came of a change is shown by :meth:`Feed.nothing_before`:
the test makes a later change that does show, on the same ordered path, and asserts that
it is the first update to arrive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from registryd.adapter import Adapter, Problems, Update

T = TypeVar("T")

HANG_GUARD = 60.0  # seconds: only stops a hung test; never what a test asserts


class Feed:
    """Runs ``watch()`` in a task and hands out its updates (or its error) in order;
    ``within`` is the default hang guard of a wait for one update."""

    def __init__(self, adapter: Adapter, within: float = HANG_GUARD) -> None:
        self.within = within
        self.queue: asyncio.Queue[Update | BaseException] = asyncio.Queue()
        self.task = asyncio.create_task(self._pump(adapter))

    async def _pump(self, adapter: Adapter) -> None:
        try:
            async for update in adapter.watch():
                self.queue.put_nowait(update)
        except Exception as exc:
            self.queue.put_nowait(exc)

    async def next(self, timeout: float | None = None) -> Update:
        item = await asyncio.wait_for(self.queue.get(), timeout or self.within)
        if isinstance(item, BaseException):
            raise item
        return self.seen(item)

    def seen(self, update: Update) -> Update:
        """Hook for subclasses: look at every update handed out."""
        return update

    async def expect(self, kind: type[T], timeout: float | None = None) -> T:
        update = await self.next(timeout)
        assert isinstance(update, kind), update
        return update

    async def nothing_before(
        self, barrier: Callable[[Update], bool], *, problems: bool = False
    ) -> Update:
        """The first update that ``barrier`` accepts, failing the test if any other came
        before it (``Problems`` only with ``problems=True``, and then skipped).

        The test makes the change that must show nothing, then a later one that does show
        (the barrier) on the same ordered path: reaching the barrier means the adapter has
        handled the first change, and it showed nothing."""
        while True:
            update = await self.next()
            if barrier(update):
                return update
            if not (problems and isinstance(update, Problems)):
                raise AssertionError(f"unexpected update before the barrier: {update}")

    async def error(self, timeout: float | None = None) -> BaseException:
        """The error watch() raised, skipping updates delivered before it."""
        end = time.monotonic() + (timeout or self.within)
        for _ in range(1000):
            left = max(0.01, end - time.monotonic())
            item = await asyncio.wait_for(self.queue.get(), left)
            if isinstance(item, BaseException):
                return item
        raise AssertionError("watch() kept yielding instead of failing")

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.wait_for(asyncio.gather(self.task, return_exceptions=True), 5)
