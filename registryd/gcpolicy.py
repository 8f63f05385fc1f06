"""Keeping Python's cyclic garbage collector off the push path.

A big snapshot (thousands of services) leaves hundreds of thousands of long-lived objects
behind.  Every full (generation 2) collection walks all of them, so once they have
piled up a collection costs a few hundred milliseconds, and it lands on whatever runs
then: usually a push fanning out to a thousand proxies.  These objects are not garbage
(the snapshot in use holds them), so after a large build they are moved out of the
collector's sight with :func:`gc.freeze`.  They are still freed by reference counting
when the next snapshot replaces them (snapshots hold no reference cycles); only cyclic
garbage that exists at the moment of freezing would stay, which is why a freeze happens
at most once per ``interval`` and only after a build that touched at least ``threshold``
hostnames (the first one always).

:class:`GcPauses` measures every collection (``gc.callbacks``) so the effect shows on
``/metrics`` as ``registryd_gc_pause_seconds{generation}``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

__all__ = ["FreezePolicy", "GcPauses"]

_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


class GcPauses:
    """Times every garbage collection into a histogram by generation.  Install once per
    daemon; :meth:`close` removes the callback."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.histogram = Histogram(
            "registryd_gc_pause_seconds",
            "Time Python's cyclic garbage collector held the daemon, by generation.",
            ("generation",),
            buckets=_BUCKETS,
            registry=registry,
        )
        self.longest = 0.0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.longest = max(self.longest, pause)
        self.histogram.labels(str(info.get("generation", "?"))).observe(pause)

    def close(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)


class FreezePolicy:
    """Decides after each build whether to :func:`gc.freeze` what is alive now."""

    def __init__(
        self,
        *,
        threshold: int = 500,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        freeze: Callable[[], None] = gc.freeze,
    ) -> None:
        self.threshold = threshold
        self.interval = interval
        self.frozen = 0  # how many times it froze
        self._clock = clock
        self._freeze = freeze
        self._last: float | None = None

    def after_build(self, hostnames: int, full: bool) -> bool:
        """Called after a snapshot was built from ``hostnames`` changed ones (``full``:
        everything); True if it froze."""
        now = self._clock()
        first = self._last is None
        if not first and (now - self._last < self.interval):  # type: ignore[operator]
            return False
        if not (first or full or hostnames >= self.threshold):
            return False
        self._freeze()
        self._last = now
        self.frozen += 1
        return True
