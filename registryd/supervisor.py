"""Runs one named, guarded task per configured registry instance.

Each task iterates its adapter's ``watch()`` and applies the updates to the store.  When
the adapter raises, the error is logged and recorded on the shard (which keeps serving
its last good state and shows as not synced), and ``watch()`` is started again after a
backoff taken from :data:`BACKOFF` (the last value repeats).  A run that delivered a full
state resets the backoff.  Bugs in one adapter never reach the others or the daemon.

A task may also be given a *creator* instead of an adapter: a callable that loads the
plugin and builds the adapter.  It is called inside the guarded loop, so a plugin that
fails to import or rejects its settings is one more failure retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from registryd.adapter import Adapter, Replace
from registryd.model import ShardKey
from registryd.registry.store import RegistryStore

__all__ = ["BACKOFF", "Supervisor"]

log = logging.getLogger("registryd.supervisor")

BACKOFF: tuple[float, ...] = (1, 1, 2, 3, 5, 8, 13, 21)


@dataclass(frozen=True, slots=True)
class Instance:
    key: ShardKey
    adapter: Adapter


class Supervisor:
    def __init__(
        self,
        store: RegistryStore,
        *,
        backoff: Sequence[float] = BACKOFF,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._backoff = tuple(backoff)
        self._sleep = sleep
        self._tasks: dict[ShardKey, asyncio.Task[None]] = {}
        self.restarts: dict[ShardKey, int] = {}

    def start(self, key: ShardKey, adapter: Adapter | Callable[[], Adapter]) -> asyncio.Task[None]:
        """Run ``adapter`` (or the adapter ``adapter()`` creates) for shard ``key``."""
        self._store.expect(key)
        task = asyncio.create_task(self._guard(key, adapter), name=f"registry:{key}")
        self._tasks[key] = task
        return task

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    async def _guard(self, key: ShardKey, source: Adapter | Callable[[], Adapter]) -> None:
        failures = 0
        adapter = source if isinstance(source, Adapter) else None
        while True:
            try:
                if adapter is None:
                    assert callable(source)
                    adapter = source()
                async for update in adapter.watch():
                    self._store.apply(key, update)
                    if isinstance(update, Replace):
                        failures = 0
                raise RuntimeError("watch() ended without an error")
            except asyncio.CancelledError as exc:
                current = asyncio.current_task()
                if current is None or current.cancelling():
                    raise  # shutdown: stop() cancelled this task
                error: BaseException = exc  # the adapter's own CancelledError is a bug
            except Exception as exc:
                error = exc
            delay = self._backoff[min(failures, len(self._backoff) - 1)]
            failures += 1
            self.restarts[key] = self.restarts.get(key, 0) + 1
            message = f"{type(error).__name__}: {error}"
            self._store.mark_failed(key, message)
            log.error("registry %s failed (%s); retrying in %ss", key, message, delay)
            await self._sleep(delay)
