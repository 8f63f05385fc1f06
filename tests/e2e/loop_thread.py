"""An asyncio event loop on a thread of its own, so synchronous end-to-end tests can run
asyncio servers (the Consul and Kubernetes emulators) beside real processes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a plain function on the loop's thread (for objects owned by the loop)."""

        async def wrapper() -> T:
            return fn(*args)

        return self.call(wrapper())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
