"""Drive an adapter's ``watch()`` in a task and read its updates in order (shared by the
adapter tests)."""

from __future__ import annotations

import asyncio
import time
from typing import TypeVar

import pytest

from registryd.adapter import Adapter, Update

T = TypeVar("T")


class Feed:
    """Runs ``watch()`` in a task and hands out its updates (or its error) in order;
    ``within`` is the default wait for one update."""

    def __init__(self, adapter: Adapter, within: float = 5.0) -> None:
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

    async def quiet(self, seconds: float = 0.5) -> None:
        """Nothing arrives for ``seconds``."""
        with pytest.raises(TimeoutError):
            update = await self.next(seconds)
            raise AssertionError(f"unexpected update {update}")

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
