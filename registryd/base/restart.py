"""Restarting a long-lived task that fails, with backoff: one rule for the whole daemon.

A registry's watch, the push loop and each xDS worker process are meant to run for as
long as the daemon does.  When one fails, it is started again after a delay that grows
with each failure in a row, so a registry that is down is not hammered and a crash loop
does not eat a core.  The delays are data (:data:`BACKOFF`, the last one repeats), each
scaled by a random factor within +-:data:`JITTER` so that tasks failing together (every
registry behind one network partition, every worker killed at once) do not come back in
lock step, and never longer than :data:`MAX_DELAY`.  The sequence starts over only once
a run has stayed *up* for :data:`STABLE_AFTER` seconds; what "up" means is the task's
to say (a registry: after its full state; a worker: once it listens), so a task that
fails right after coming up keeps backing off instead of retrying every second forever.

:func:`keep_running` is the loop; :class:`Backoff` the policy.  Time and chance come in
as arguments (sleep, clock, jitter), so tests drive them without waiting.  Standard
library only: the registry supervisor and the xDS worker pool both use it, and neither
should have to import the other.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn

__all__ = [
    "BACKOFF",
    "JITTER",
    "MAX_DELAY",
    "STABLE_AFTER",
    "Attempt",
    "Backoff",
    "Sleep",
    "keep_running",
]

BACKOFF: tuple[float, ...] = (1, 1, 2, 3, 5, 8, 13, 21)  # seconds before each retry
JITTER = 0.2  # each delay is scaled by a factor in [1 - JITTER, 1 + JITTER)
MAX_DELAY = 30.0  # seconds: no delay is longer, jitter included
STABLE_AFTER = 60.0  # seconds up after which the backoff starts over

Sleep = Callable[[float], Awaitable[object]]
Clock = Callable[[], float]
Jitter = Callable[[], float]


@dataclass(frozen=True, kw_only=True, slots=True)
class Backoff:
    """How long to wait before each restart: ``steps`` (seconds; the last repeats), each
    scaled by a factor in ``[1 - jitter, 1 + jitter)``, at most ``cap``; the steps start
    over after a run that stayed up ``stable_after`` seconds."""

    steps: tuple[float, ...] = BACKOFF
    jitter: float = JITTER
    cap: float = MAX_DELAY
    stable_after: float = STABLE_AFTER

    def __post_init__(self) -> None:
        if not self.steps or min(self.steps) < 0:
            raise ValueError(f"backoff steps must be a non-empty list of seconds: {self.steps}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1): {self.jitter}")

    def delay(self, failures: int, draw: float) -> float:
        """The wait after ``failures`` earlier failures in a row (0 for the first), given
        ``draw`` in [0, 1) (0.5: no jitter)."""
        step = self.steps[min(failures, len(self.steps) - 1)]
        factor = 1 - self.jitter + 2 * self.jitter * draw
        return min(step * factor, self.cap)


class Attempt:
    """One run of a restarted task.  The run calls :meth:`up` once it is doing its job;
    only time after that counts towards starting the backoff over."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.since: float | None = None  # clock time the run came up

    def up(self) -> None:
        """The run is up now (later calls change nothing)."""
        if self.since is None:
            self.since = self._clock()

    def stayed_up(self, seconds: float) -> bool:
        """Whether the run, now over, was up for at least ``seconds``."""
        return self.since is not None and self._clock() - self.since >= seconds


async def keep_running(
    run: Callable[[Attempt], Awaitable[object]],
    failed: Callable[[BaseException, float], object],
    *,
    backoff: Backoff = Backoff(),
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
    jitter: Jitter = random.random,
) -> NoReturn:
    """Await ``run(attempt)`` again and again, until cancelled.

    Every end of a run is a failure: an exception, or returning (which
    :class:`RuntimeError` stands for; a run should raise to say why it ended).  Each
    failure is reported as ``failed(error, delay)``, before the ``sleep(delay)`` that
    precedes the next run; ``failed`` must not raise.  The delay is
    ``backoff.delay(n, jitter())``, where ``n`` counts the failures since the start or
    since the last run that stayed up ``backoff.stable_after`` seconds by ``clock``
    (see :class:`Attempt`).

    Cancelling the task that awaits this ends it, from the run or from the sleep: the
    :class:`asyncio.CancelledError` propagates.  A ``CancelledError`` that a run raises
    while nobody cancels this task (a bug in the run: it let out a cancellation of its
    own) is a failure like any other, so the task is not silently gone."""
    failures = 0
    while True:
        attempt = Attempt(clock)
        try:
            await run(attempt)
            raise RuntimeError("the task ended without an error")
        except asyncio.CancelledError as exc:
            if _cancelling():
                raise
            error: BaseException = exc
        except Exception as exc:
            if _cancelling():
                raise  # shutting down: the run failed on its way out, do not restart it
            error = exc
        if attempt.stayed_up(backoff.stable_after):
            failures = 0
        delay = backoff.delay(failures, jitter())
        failures += 1
        failed(error, delay)
        await sleep(delay)


def _cancelling() -> bool:
    """Whether the current task is being cancelled (a shutdown, not a stray error)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0
