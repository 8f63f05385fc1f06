"""Is an xDS worker process still answering?  Pings on its channel, and what silence means.

A worker that is stopped (SIGSTOP, a debugger), deadlocked or stuck in a loop keeps its
channel and its listening socket open, so nothing ends: its clients are not served, the
kernel still hands it new connections, and every question to it waits.  Only silence
shows it.  So the pool (:mod:`registryd.workers.pool`) pings each worker every
:attr:`Heartbeat.interval` on its channel; the worker answers each ping in turn with
the rest of its messages, so an answer proves that its event loop runs and reads the
channel.  Any message from the worker counts as a sign of life.

Silence is judged in two steps: a worker silent for longer than two ping intervals is
*late*: it is not asked questions (the debug endpoints and ``/metrics`` answer without
it, marking it) and ``/ready`` says so; a worker silent for :attr:`Heartbeat.timeout`
is *hung*: the pool kills it and starts another.

A worker applying a large snapshot is busy, not hung: applying the whole snapshot of
50,000 services (58 MB shipped) took 2.7 s on an idle core.  So each worker is allowed,
on top of both limits, a second per :data:`APPLY_RATE` bytes shipped to it that it has
not yet answered past (the pong of a ping sent after them), and a large mesh is not
killed over and over at every start.

Pure apart from :func:`watch`, which takes its clock and sleep from the caller.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["APPLY_RATE", "HEARTBEAT_TIMEOUT", "PINGS_PER_TIMEOUT", "Heartbeat", "watch"]

HEARTBEAT_TIMEOUT = 5.0  # seconds of silence after which a worker is hung (the default)
PINGS_PER_TIMEOUT = 5  # pings sent within one timeout
LATE_PINGS = 2  # pings unanswered before a worker is late
APPLY_RATE = 4 * 1024 * 1024  # bytes a second a worker applies at least (5x slower than seen)


@dataclass(slots=True)
class Heartbeat:
    """When one worker process was last heard from, and what it has yet to work through.
    ``timeout``: seconds of silence after which it is hung (None: never; it is then
    never late either)."""

    timeout: float | None
    heard: float = 0.0  # clock time of the worker's last message
    shipped: int = 0  # bytes of snapshots shipped to it
    applied: int = 0  # of those, the bytes it has answered past
    pings: dict[int, int] = field(default_factory=dict)  # ping unanswered -> shipped then
    numbered: int = 0  # pings sent

    @property
    def interval(self) -> float:
        """Seconds between pings (a fifth of the timeout)."""
        return (self.timeout or 0.0) / PINGS_PER_TIMEOUT

    @property
    def allowance(self) -> float:
        """Seconds of silence allowed on top of the limits: the work shipped to it that
        it has not answered past (at :data:`APPLY_RATE`)."""
        return (self.shipped - self.applied) / APPLY_RATE

    @property
    def deadline(self) -> float:
        """Seconds of silence after which it is hung (infinite without a timeout)."""
        return math.inf if self.timeout is None else self.timeout + self.allowance

    def ship(self, size: int) -> None:
        """A message of ``size`` bytes (a snapshot) was sent to the worker."""
        self.shipped += size

    def ping(self) -> int:
        """The number of a ping about to be sent."""
        self.numbered += 1
        self.pings[self.numbered] = self.shipped
        return self.numbered

    def answered(self, now: float, ping: int | None = None) -> None:
        """The worker sent something at ``now`` (``ping``: the answer to that ping, so
        it has handled everything shipped before it)."""
        self.heard = max(self.heard, now)
        if ping is not None and ping in self.pings:
            self.applied = max(self.applied, self.pings[ping])
            self.pings = {n: size for n, size in self.pings.items() if n > ping}

    def silent(self, now: float) -> float:
        """Seconds since the worker's last message."""
        return max(0.0, now - self.heard)

    def late(self, now: float) -> bool:
        """Silent long enough to leave it out of questions (not killed yet)."""
        late_after = self.interval * LATE_PINGS + self.allowance
        return self.timeout is not None and self.silent(now) > late_after

    def hung(self, now: float) -> bool:
        """Silent for the whole timeout (and allowance): to be killed."""
        return self.silent(now) >= self.deadline


async def watch(
    heartbeat: Heartbeat,
    ping: Callable[[int], object],
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[object]],
) -> float:
    """Send a ping (``ping(number)``) every ``heartbeat.interval`` until the worker is
    hung; how long it was silent then.  ``heartbeat`` must have a timeout.

    A round in which this process was itself late (its sleep overran by more than an
    interval: a long build or collection held its event loop) judges nothing: the
    worker's answers may be waiting unread on the channel."""
    if heartbeat.timeout is None:
        raise ValueError("a heartbeat without a timeout is not watched")
    interval = heartbeat.interval
    while True:
        before = clock()
        await sleep(interval)
        now = clock()
        if now - before <= 2 * interval and heartbeat.hung(now):
            return heartbeat.silent(now)
        ping(heartbeat.ping())
