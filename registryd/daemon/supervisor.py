"""Keeps the daemon's long-lived tasks running, and says so when one cannot be.

:class:`Supervisor` runs one named, guarded task per configured registry instance.  Each
task iterates its adapter's ``watch()`` and applies the updates to the store.  When the
adapter raises, the error is recorded on the shard (which
keeps serving its last good state and shows as not synced), and ``watch()`` is started
again by :func:`registryd.base.restart.keep_running`: after a backoff taken from
:data:`BACKOFF` (the last value repeats), with +-20 % jitter and never more than
``max_delay``.  The backoff starts over only once a run has stayed up for
``stable_after`` seconds (default 60) after delivering its full state, so a registry
that fails right after each listing is not relisted every second forever.  Bugs in one
adapter never reach the others or the daemon.  Each failure is logged once, with the
delay before the retry: an expected one (:func:`expected_failure`: the registry cannot be
reached, a file is missing, a 5xx answer) as one warning line, with its traceback only
at debug level; anything else at error with its traceback.

A task may also be given a *creator* instead of an adapter: a callable that loads the
plugin and builds the adapter.  It is called inside the guarded loop, so a plugin that
fails to import or rejects its settings is one more failure retried with backoff.

:class:`TaskHealth` is where every long-lived task (the push loop, each xDS stream's
writer, each registry task, the HTTP handlers) reports an unexpected exception: it logs
it at error with its traceback and counts it per task (the metric
``registryd_task_failures_total{task=...}``).  A task that ends with an exception and is
not restarted (:meth:`TaskHealth.watch`) is *dead*; ``/healthz`` answers 503 naming it.
:func:`restarting` runs a coroutine function forever, reporting each failure to a
:class:`TaskHealth` and restarting it by the same rule as the registries.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from registryd.adapter import Adapter, RegistryUnavailable, Replace, describe_error
from registryd.base.health import TaskHealth
from registryd.base.restart import (
    BACKOFF,
    MAX_DELAY,
    STABLE_AFTER,
    Attempt,
    Backoff,
    Sleep,
    keep_running,
)
from registryd.model import ShardKey
from registryd.registry.store import RegistryStore

__all__ = ["BACKOFF", "Supervisor", "expected_failure", "restarting"]

log = logging.getLogger("registryd.supervisor")


def expected_failure(error: BaseException) -> bool:
    """Whether a registry's ``watch()`` failed as registries do (see
    :class:`~registryd.adapter.RegistryUnavailable`), rather than by a bug."""
    return isinstance(error, RegistryUnavailable | OSError | TimeoutError)


async def restarting(
    name: str,
    run: Callable[[], Awaitable[None]],
    health: TaskHealth,
    *,
    backoff: Sequence[float] = BACKOFF,
    sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    jitter: Callable[[], float] = random.random,
) -> None:
    """Await ``run()`` forever: each unexpected exception (or return) is reported to
    ``health`` as a failure of task ``name`` and ``run()`` starts again after the backoff
    (:func:`registryd.base.restart.keep_running`; a run counts as up from its start).  Ends
    only when cancelled."""

    async def once(attempt: Attempt) -> None:
        attempt.up()
        await run()
        raise RuntimeError(f"{name} ended without an error")

    await keep_running(
        once,
        lambda error, _delay: health.failed(name, error),
        backoff=Backoff(steps=tuple(backoff)),
        sleep=sleep,
        clock=clock,
        jitter=jitter,
    )


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
        self._backoff = Backoff(steps=tuple(backoff), cap=max_delay, stable_after=stable_after)
        self._sleep = sleep
        self._clock = clock
        self._wall = wall
        self._jitter = jitter
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

    async def _guard(self, key: ShardKey, source: Adapter | Callable[[], Adapter]) -> None:
        """Watch shard ``key`` until cancelled, restarting the watch after each failure.
        A run is up once it delivered its full state (a Replace)."""
        adapter = source if isinstance(source, Adapter) else None

        async def watch(attempt: Attempt) -> None:
            nonlocal adapter
            if adapter is None:
                assert callable(source)
                adapter = source()
            async for update in adapter.watch():
                self._store.apply(key, update)
                if isinstance(update, Replace):
                    attempt.up()
            raise RuntimeError("watch() ended without an error")

        await keep_running(
            watch,
            functools.partial(self._failed, key),
            backoff=self._backoff,
            sleep=functools.partial(self._wait, key),
            clock=self._clock,
            jitter=self._jitter,
        )

    def _failed(self, key: ShardKey, error: BaseException, delay: float) -> None:
        """Count, record on the shard and log a failure of ``key``'s watch."""
        self.restarts[key] = self.restarts.get(key, 0) + 1
        message = f"{type(error).__name__}: {error}"
        self._store.mark_failed(key, message)
        trace = (type(error), error, error.__traceback__)
        if expected_failure(error):
            line = " ".join(describe_error(error, 500).split())
            debug = log.isEnabledFor(logging.DEBUG)
            log.warning(
                "registry %s unavailable (%s); retrying in %.1fs",
                key,
                line,
                delay,
                exc_info=trace if debug else None,
            )
            return
        log.error("registry %s failed (%s); retrying in %.1fs", key, message, delay, exc_info=trace)

    async def _wait(self, key: ShardKey, delay: float) -> None:
        """Sleep ``delay`` before ``key``'s retry, with its time in :attr:`next_retry`."""
        self.next_retry[key] = self._wall() + delay
        try:
            await self._sleep(delay)
        finally:
            self.next_retry.pop(key, None)
