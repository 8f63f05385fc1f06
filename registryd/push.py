"""Debounced pushes: registry change events in, snapshots out.

Registry events are collected until the registry has been quiet for ``debounce_after``
(default 100 ms) or events have kept coming for ``debounce_max`` (default 10 s); then one
snapshot is built for everything collected and published.  An endpoints-only batch
rebuilds only ClusterLoadAssignments (and DNS clusters); any service change in a batch
makes the batch a full rebuild of the hostnames involved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from registryd.registry.store import ChangeEvent, RegistryStore
from registryd.xds.snapshot import Snapshot, SnapshotBuilder

__all__ = ["PushController", "PushRecord"]

log = logging.getLogger("registryd.push")

HISTORY = 100  # push records kept
SAMPLE = 20  # hostnames named per record


@dataclass(frozen=True, slots=True, kw_only=True)
class PushRecord:
    """One push: what triggered it and how long it took.  ``started`` is the monotonic
    time of its first registry event, ``at`` the wall-clock time it was published."""

    version: int
    hostnames: int
    endpoints_only: bool
    events: int
    debounce_seconds: float
    build_seconds: float
    triggers: tuple[str, ...] = field(default=())
    sample: tuple[str, ...] = field(default=())  # some of the hostnames, sorted
    started: float = 0.0
    at: float = 0.0


class PushController:
    def __init__(
        self,
        store: RegistryStore,
        publish: Callable[[Snapshot], None],
        *,
        debounce_after: float = 0.1,
        debounce_max: float = 10.0,
        listeners: tuple[Callable[[PushRecord], None], ...] = (),
    ) -> None:
        self._store = store
        self._publish = publish
        self._builder = SnapshotBuilder()
        self.debounce_after = debounce_after
        self.debounce_max = debounce_max
        self._pending: set[str] = set()
        self._endpoints_only = True
        self._events = 0
        self._triggers: set[str] = set()
        self._first_at = 0.0
        self._last_at = 0.0
        self._signal = asyncio.Event()
        self.history: list[PushRecord] = []
        self.listeners = list(listeners)  # told of each push before its snapshot goes out
        store.subscribe(self._on_change)

    @property
    def snapshot(self) -> Snapshot:
        return self._builder.snapshot

    def _on_change(self, event: ChangeEvent) -> None:
        now = time.monotonic()
        if not self._events:
            self._first_at = now
        self._events += 1
        self._last_at = now
        self._pending |= event.hostnames
        self._endpoints_only &= event.endpoints_only
        self._triggers.add(str(event.shard))
        self._signal.set()

    def push_now(self) -> Snapshot:
        """Build and publish everything pending, without waiting."""
        view = self._store.view
        started = time.monotonic()
        hostnames, self._pending = self._pending, set()
        endpoints_only, self._endpoints_only = self._endpoints_only, True
        events, self._events = self._events, 0
        triggers, self._triggers = self._triggers, set()
        first_at = self._first_at if events else started
        snapshot = self._builder.build(view, hostnames, endpoints_only)
        built = time.monotonic()
        record = PushRecord(
            version=snapshot.version,
            hostnames=len(hostnames),
            endpoints_only=endpoints_only,
            events=events,
            debounce_seconds=started - first_at,
            build_seconds=built - started,
            triggers=tuple(sorted(triggers)),
            sample=tuple(sorted(hostnames)[:SAMPLE]),
            started=first_at,
            at=time.time(),
        )
        self.history = [*self.history[-(HISTORY - 1) :], record]
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:  # observers must not stop pushes
                log.exception("push listener failed")
        self._publish(snapshot)
        log.debug(
            "push v%d: %d hostnames (%s) from %d events, built in %.1f ms",
            snapshot.version,
            len(hostnames),
            "endpoints" if endpoints_only else "full",
            events,
            record.build_seconds * 1000,
        )
        return snapshot

    async def run(self) -> None:
        """Debounce loop; runs until cancelled."""
        while True:
            await self._signal.wait()
            self._signal.clear()
            while True:
                now = time.monotonic()
                quiet_left = self._last_at + self.debounce_after - now
                max_left = self._first_at + self.debounce_max - now
                wait = min(quiet_left, max_left)
                if wait <= 0:
                    break
                try:
                    await asyncio.wait_for(self._signal.wait(), timeout=wait)
                    self._signal.clear()
                except TimeoutError:
                    pass
            if self._events:
                self.push_now()
