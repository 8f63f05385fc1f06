"""A token bucket for adapters: at most so many requests a second to a registry.

Part of registryd's public API for adapter authors (beside :mod:`registryd.model` and
:mod:`registryd.adapter`): the built-in adapters use it and third-party ones may.

Contract of :class:`TokenBucket` (``rate`` tokens a second, at most ``burst`` kept):

* The bucket starts full (``burst`` tokens) and refills continuously at ``rate`` tokens a
  second, measured by ``clock`` (:func:`time.monotonic` unless given), up to ``burst``.
* :meth:`TokenBucket.reserve` takes one token at once and returns how many seconds the
  caller must wait before using it: ``0.0`` while tokens are left, else the time until
  the bucket has refilled what has been taken.  It never blocks and never refuses: taking
  more tokens than there are runs the bucket into debt, which later reservations wait
  out.  So reservations are served in the order they were made, the n-th one past the
  burst ``n / rate`` seconds after the bucket ran empty.
* :meth:`TokenBucket.acquire` reserves a token and waits until it is due, with ``sleep``
  (:func:`asyncio.sleep` unless given; a test gives a fake clock and sleep together).
  A reservation is kept even when the wait is cancelled: the token is not given back.
* ``rate`` must be > 0 and ``burst`` >= 1 (else :class:`ValueError`).  A bucket belongs to
  one event loop (or thread): it does no locking.

The state is in plain attributes (``rate``, ``burst``, ``clock``, ``sleep``; ``tokens``, negative
while in debt, as of ``stamp``, the clock's time of the last reservation), so that a
subclass can add its own rules on top of :meth:`~TokenBucket.reserve`, as the Consul
adapter does with its backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` kept (see the module
    docstring).  A request reserves a token, waiting until it is due; reservations are
    served in order."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0 tokens a second, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.sleep = sleep
        self.tokens = float(burst)
        self.stamp = clock()

    def reserve(self) -> float:
        """Take a token; return how many seconds to wait before using it."""
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1.0
        return max(0.0, -self.tokens / self.rate)

    async def acquire(self) -> None:
        """Take a token and wait until it is due."""
        delay = self.reserve()
        if delay > 0:
            await self.sleep(delay)
