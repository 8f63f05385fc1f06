"""Keeping Python's cyclic garbage collector off the push path.

A big snapshot (thousands of services) leaves hundreds of thousands of long-lived objects
behind.  Every full (generation 2) collection walks all of them, so once they have
piled up a collection costs a few hundred milliseconds, and it lands on whatever runs
then: usually a push fanning out to a thousand proxies.  These objects are not garbage
(the snapshot in use holds them), so after a large build they are moved out of the
collector's sight with :func:`gc.freeze`.  They are still freed by reference counting
when the next snapshot replaces them (snapshots hold no reference cycles); only cyclic
garbage that exists at the moment of freezing would stay, which is why a freeze happens
at most once per ``interval``, after a build that touched at least ``threshold``
hostnames (the first one always), or after any build once a full collection has run
since the last freeze (what proxies connecting since then left behind: their streams'
state).  Before freezing, the young generations are collected (cheap), so that what is
frozen is what survived.

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


def _collect_young_and_freeze() -> None:
    """Collect the young generations (milliseconds: they are small), so that their
    cyclic garbage is not frozen with the survivors, then freeze."""
    gc.collect(1)
    gc.freeze()


class FreezePolicy:
    """Decides after each build whether to :func:`gc.freeze` what is alive now."""

    def __init__(
        self,
        *,
        threshold: int = 500,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        freeze: Callable[[], None] = _collect_young_and_freeze,
        full_collections: Callable[[], int] = lambda: int(gc.get_stats()[2]["collections"]),
    ) -> None:
        self.threshold = threshold
        self.interval = interval
        self.frozen = 0  # how many times it froze
        self._clock = clock
        self._freeze = freeze
        self._full_collections = full_collections
        self._last: float | None = None
        self._collections_then = 0

    def after_build(self, hostnames: int, full: bool) -> bool:
        """Called after a snapshot was built from ``hostnames`` changed ones (``full``:
        everything); True if it froze."""
        now = self._clock()
        first = self._last is None
        if not first and (now - self._last < self.interval):  # type: ignore[operator]
            return False
        collections = self._full_collections()
        collected = collections != self._collections_then
        if not (first or full or collected or hostnames >= self.threshold):
            return False
        self._freeze()
        self._last = now
        self._collections_then = collections
        self.frozen += 1
        return True
