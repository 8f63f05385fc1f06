"""Keeps the daemon's long-lived tasks running, and says so when one cannot be.

:class:`Supervisor` runs one named, guarded task per configured registry instance.  Each
task iterates its adapter's ``watch()`` and applies the updates to the store.  When the
adapter raises, the error is logged with its traceback and recorded on the shard (which
keeps serving its last good state and shows as not synced), and ``watch()`` is started
again after a backoff taken from :data:`BACKOFF` (the last value repeats), with +-20 %
jitter and never more than ``max_delay``.  The backoff starts over only once a run has
stayed up for ``stable_after`` seconds (default 60) after delivering its full state, so
a registry that fails right after each listing is not relisted every second forever.
Bugs in one adapter never reach the others or the daemon.

A task may also be given a *creator* instead of an adapter: a callable that loads the
plugin and builds the adapter.  It is called inside the guarded loop, so a plugin that
fails to import or rejects its settings is one more failure retried with backoff.

:class:`TaskHealth` is where every long-lived task (the push loop, each xDS stream's
writer, each registry task, the HTTP handlers) reports an unexpected exception: it logs
it at error with its traceback and counts it per task (the metric
``registryd_task_failures_total{task=...}``).  A task that ends with an exception and is
not restarted (:meth:`TaskHealth.watch`) is *dead*; ``/healthz`` answers 503 naming it.
:func:`restarting` runs a coroutine function forever, restarting it with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from registryd.adapter import Adapter, Replace
from registryd.model import ShardKey
from registryd.registry.store import RegistryStore

__all__ = ["BACKOFF", "Supervisor", "TaskHealth", "restarting"]

log = logging.getLogger("registryd.supervisor")

BACKOFF: tuple[float, ...] = (1, 1, 2, 3, 5, 8, 13, 21)
JITTER = 0.2  # each delay is scaled by a factor in [1 - JITTER, 1 + JITTER]
MAX_DELAY = 30.0
STABLE_AFTER = 60.0

Sleep = Callable[[float], Awaitable[object]]


class TaskHealth:
    """Unexpected failures of long-lived tasks, counted per task name (see the module
    docstring).  Task names are fixed words (``push``, ``xds-writer``, ``http``) or
    ``registry:<provider>/<instance>``, so the metric's label set stays small."""

    def __init__(self) -> None:
        self.failures: dict[str, int] = {}
        self.dead: dict[str, str] = {}  # task name -> why it ended

    def failed(self, task: str, error: BaseException) -> None:
        """Log ``error`` (with its traceback) as a failure of ``task`` and count it."""
        self.failures[task] = self.failures.get(task, 0) + 1
        log.error(
            "task %s failed: %s: %s",
            task,
            type(error).__name__,
            error,
            exc_info=(type(error), error, error.__traceback__),
        )

    def watch(self, task: asyncio.Task[None], name: str | None = None) -> None:
        """Report ``task`` as dead if it ever ends with an exception (cancellation is a
        normal end)."""
        label = name or task.get_name()

        def done(finished: asyncio.Task[None]) -> None:
            if finished.cancelled():
                return
            error = finished.exception()
            if error is not None:
                self.dead[label] = f"{type(error).__name__}: {error}"
                self.failed(label, error)

        task.add_done_callback(done)


async def restarting(
    name: str,
    run: Callable[[], Awaitable[None]],
    health: TaskHealth,
    *,
    backoff: Sequence[float] = BACKOFF,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Await ``run()`` forever: each unexpected exception is reported to ``health`` and
    ``run()`` starts again after the next backoff delay.  Ends only when cancelled."""
    failures = 0
    while True:
        try:
            await run()
            raise RuntimeError(f"{name} ended without an error")
        except Exception as exc:
            health.failed(name, exc)
        await sleep(backoff[min(failures, len(backoff) - 1)])
        failures += 1


class Supervisor:
    def __init__(
        self,
        store: RegistryStore,
        *,
        backoff: Sequence[float] = BACKOFF,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        stable_after: float = STABLE_AFTER,
        max_delay: float = MAX_DELAY,
        health: TaskHealth | None = None,
    ) -> None:
        """``clock`` (monotonic) times how long a run stayed up, ``wall`` stamps
        :attr:`next_retry`, ``jitter`` returns a number in [0, 1) that picks the jitter
        factor (``lambda: 0.5`` means none)."""
        self._store = store
        self._backoff = tuple(backoff)
        self._sleep = sleep
        self._clock = clock
        self._wall = wall
        self._jitter = jitter
        self._stable_after = stable_after
        self._max_delay = max_delay
        self.health = health or TaskHealth()
        self._tasks: dict[ShardKey, asyncio.Task[None]] = {}
        self.restarts: dict[ShardKey, int] = {}
        self.next_retry: dict[ShardKey, float] = {}  # wall time of a pending retry

    def start(self, key: ShardKey, adapter: Adapter | Callable[[], Adapter]) -> asyncio.Task[None]:
        """Run ``adapter`` (or the adapter ``adapter()`` creates) for shard ``key``."""
        self._store.expect(key)
        name = f"registry:{key}"
        task = asyncio.create_task(self._guard(key, adapter), name=name)
        self.health.watch(task, name)
        self._tasks[key] = task
        return task

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    def delay(self, failures: int) -> float:
        """The wait before retry number ``failures + 1``: the backoff step, jittered,
        capped at ``max_delay``."""
        step = self._backoff[min(failures, len(self._backoff) - 1)]
        factor = 1 - JITTER + 2 * JITTER * self._jitter()
        return min(step * factor, self._max_delay)

    async def _guard(self, key: ShardKey, source: Adapter | Callable[[], Adapter]) -> None:
        failures = 0
        adapter = source if isinstance(source, Adapter) else None
        while True:
            synced_at: float | None = None
            try:
                if adapter is None:
                    assert callable(source)
                    adapter = source()
                async for update in adapter.watch():
                    self._store.apply(key, update)
                    if isinstance(update, Replace) and synced_at is None:
                        synced_at = self._clock()
                raise RuntimeError("watch() ended without an error")
            except asyncio.CancelledError as exc:
                current = asyncio.current_task()
                if current is None or current.cancelling():
                    raise  # shutdown: stop() cancelled this task
                error: BaseException = exc  # the adapter's own CancelledError is a bug
            except Exception as exc:
                error = exc
            if synced_at is not None and self._clock() - synced_at >= self._stable_after:
                failures = 0  # the run was stable: start the backoff over
            delay = self.delay(failures)
            failures += 1
            self.restarts[key] = self.restarts.get(key, 0) + 1
            message = f"{type(error).__name__}: {error}"
            self._store.mark_failed(key, message)
            log.error(
                "registry %s failed (%s); retrying in %.1fs",
                key,
                message,
                delay,
                exc_info=(type(error), error, error.__traceback__),
            )
            self.next_retry[key] = self._wall() + delay
            try:
                await self._sleep(delay)
            finally:
                self.next_retry.pop(key, None)
