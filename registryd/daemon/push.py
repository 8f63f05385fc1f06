"""Debounced pushes: registry change events in, snapshots out.

Registry events are collected until the registry has been quiet for ``debounce_after``
(default 100 ms) or events have kept coming for ``debounce_max`` (default 10 s); then one
snapshot is built for everything collected and published.  An endpoints-only batch
rebuilds only ClusterLoadAssignments (and DNS clusters); any service change in a batch
makes the batch a full rebuild of the hostnames involved.  With ``eds_debounce`` off
(istiod's ``PILOT_ENABLE_EDS_DEBOUNCE=false``), endpoints-only events skip the debounce:
they are pushed on the next turn of the event loop, on their own, while service changes
keep being debounced.

A push that fails (a bug in a resource builder, say) is logged with its traceback and
counted (``registryd_task_failures_total{task="push"}``); the loop keeps running and the
next change is pushed as a full rebuild, so nothing the failed push carried is lost.

Every push is recorded in the change history, when one is given (``history``,
:mod:`registryd.daemon.history`): per registry, the hostnames it changed, what changed
(:class:`~registryd.registry.changes.ChangeSummary`, added up over its events) and the
newest revision its source reported.

Timing reads the injectable ``clock`` (monotonic seconds) and waits with the injectable
``sleep``, so tests drive the debounce with a fake clock instead of real time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from registryd.base.gcpolicy import FreezePolicy
from registryd.base.health import TaskHealth
from registryd.build.builder import SnapshotBuilder
from registryd.build.clusters import BuildOptions
from registryd.build.listeners import Conflict
from registryd.daemon.history import ChangeHistory
from registryd.registry.changes import SAMPLE as SUMMARY_SAMPLE
from registryd.registry.changes import ChangeSummary
from registryd.registry.store import ChangeEvent, RegistryStore
from registryd.xds.snapshot import Snapshot
from registryd.xds.tracking import PushRecord

__all__ = ["PushController"]

log = logging.getLogger("registryd.push")

HISTORY = 100  # push records kept
SAMPLE = 20  # hostnames named per record


@dataclass(slots=True)
class _ShardChanges:
    """One registry's events in a batch: hostnames, revision, summed summary."""

    hostnames: set[str] = field(default_factory=set)
    events: int = 0
    revision: str = ""
    summary: ChangeSummary = field(default_factory=ChangeSummary)

    def add(self, event: ChangeEvent) -> None:
        self.events += 1
        self.hostnames |= event.hostnames
        self.revision = event.revision or self.revision
        self.summary = _sum(self.summary, event.summary)


def _sum(a: ChangeSummary, b: ChangeSummary) -> ChangeSummary:
    def names(x: tuple[str, ...], y: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(x) | set(y))[:SUMMARY_SAMPLE])

    return ChangeSummary(
        services_added=a.services_added + b.services_added,
        services_removed=a.services_removed + b.services_removed,
        attributes_changed=a.attributes_changed + b.attributes_changed,
        endpoints_added=a.endpoints_added + b.endpoints_added,
        endpoints_removed=a.endpoints_removed + b.endpoints_removed,
        endpoints_changed=a.endpoints_changed + b.endpoints_changed,
        added=names(a.added, b.added),
        removed=names(a.removed, b.removed),
        changed=names(a.changed, b.changed),
    )


@dataclass(slots=True)
class _Batch:
    """Registry events collected for one push."""

    hostnames: set[str] = field(default_factory=set)
    endpoints_only: bool = True
    events: int = 0
    triggers: set[str] = field(default_factory=set)
    first_at: float = 0.0
    last_at: float = 0.0
    shards: dict[str, _ShardChanges] = field(default_factory=dict)

    def add(self, event: ChangeEvent, now: float) -> None:
        if not self.events:
            self.first_at = now
        self.events += 1
        self.last_at = now
        self.hostnames |= event.hostnames
        self.endpoints_only &= event.endpoints_only
        self.triggers.add(str(event.shard))
        self.shards.setdefault(str(event.shard), _ShardChanges()).add(event)


class PushController:
    def __init__(
        self,
        store: RegistryStore,
        publish: Callable[[Snapshot], None],
        *,
        debounce_after: float = 0.1,
        debounce_max: float = 10.0,
        eds_debounce: bool = True,
        listeners: tuple[Callable[[PushRecord], None], ...] = (),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        health: TaskHealth | None = None,
        gc_policy: FreezePolicy | None = None,
        build_options: BuildOptions | None = None,
        history: ChangeHistory | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._sleep = sleep
        self.health = health or TaskHealth()
        self._rebuild_all = False  # a push failed: the next one rebuilds everything
        self._publish = publish
        self._builder = SnapshotBuilder(build_options)
        self.gc = gc_policy  # the daemon's garbage collector policy (tests: none)
        self.debounce_after = debounce_after
        self.debounce_max = debounce_max
        self.eds_debounce = eds_debounce
        self._pending = _Batch()  # debounced
        self._immediate = _Batch()  # endpoints-only events, with eds_debounce off
        self._signal = asyncio.Event()
        self.idle = asyncio.Event()  # set while run() waits with nothing pending
        self.history: list[PushRecord] = []
        self.changes = history  # the change history (/debug/history), if kept
        self.listeners = list(listeners)  # told of each push before its snapshot goes out
        self._mcp_wished = False  # an istiod asked for config (want_mcp)
        store.subscribe(self._on_change)
        store.on_synced(self._synced)

    @property
    def snapshot(self) -> Snapshot:
        return self._builder.snapshot

    @property
    def conflicts(self) -> Mapping[int, tuple[Conflict, ...]]:
        """The listener conflicts of the last build, by port (read-only)."""
        return MappingProxyType(self._builder.conflicts)

    @property
    def build_options(self) -> BuildOptions:
        return self._builder.options

    def _on_change(self, event: ChangeEvent) -> None:
        batch = self._pending
        if not self.eds_debounce and event.endpoints_only:
            batch = self._immediate
        batch.add(event, self._clock())
        self.idle.clear()
        self._signal.set()

    def push_now(self) -> Snapshot:
        """Build and publish everything pending, without waiting.  Raises what the
        build raises (the next push is then a full rebuild)."""
        self._flush_immediate()
        batch, self._pending = self._pending, _Batch()
        return self._push(batch)

    def want_mcp(self) -> None:
        """An istiod asked for config (the serving says so): build the MCP tables from
        now on, the first time for every exported hostname, in a push of its own right
        away (the istiod waits for it: config types are not answered before) -- but not
        before every configured registry delivered its state once: an istiod holds
        exactly what it was last sent, so a first answer without a registry that is
        still connecting (registryd just restarted, say) would delete that registry's
        config in istiod and its endpoints in every Envoy."""
        self._mcp_wished = True
        if self._store.not_synced() or self._builder.snapshot.mcp:
            return  # _synced() grants it; or granted already
        if not self._builder.mcp_pending:
            self._builder.want_mcp()
        self.idle.clear()
        self._signal.set()

    def _synced(self) -> None:
        """Every configured registry has delivered its state once."""
        if self._mcp_wished:
            self.want_mcp()

    def _flush_immediate(self) -> None:
        if self._immediate.events:
            batch, self._immediate = self._immediate, _Batch()
            self._push(batch)
        if self._builder.mcp_pending:
            self._push(_Batch())  # the MCP tables, for the istiod that asked

    def _push(self, batch: _Batch) -> Snapshot:
        view = self._store.view
        started = self._clock()
        first_at = batch.first_at if batch.events else started
        rebuild_all, self._rebuild_all = self._rebuild_all, True
        if rebuild_all:
            snapshot = self._builder.build(view)
        else:
            snapshot = self._builder.build(view, batch.hostnames, batch.endpoints_only)
        self._rebuild_all = False
        built = self._clock()
        record = PushRecord(
            version=snapshot.version,
            hostnames=len(batch.hostnames),
            endpoints_only=batch.endpoints_only,
            events=batch.events,
            debounce_seconds=started - first_at,
            build_seconds=built - started,
            triggers=tuple(sorted(batch.triggers)),
            sample=tuple(sorted(batch.hostnames)[:SAMPLE]),
            started=first_at,
            at=time.time(),
        )
        self.history = [*self.history[-(HISTORY - 1) :], record]
        if self.changes is not None and batch.events:
            self.changes.add(
                snapshot.version,
                [
                    (name, c.events, c.revision, c.hostnames, c.summary)
                    for name, c in batch.shards.items()
                ],
                endpoints_only=batch.endpoints_only,
            )
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:  # observers must not stop pushes
                log.exception("push listener failed")
        self._publish(snapshot)
        if self.gc is not None:
            self.gc.after_build(len(batch.hostnames), rebuild_all)
        log.debug(
            "push v%d: %d hostnames (%s) from %d events, built in %.1f ms",
            snapshot.version,
            len(batch.hostnames),
            "endpoints" if batch.endpoints_only else "full",
            batch.events,
            record.build_seconds * 1000,
        )
        return snapshot

    def _push_guarded(self, pending: bool) -> None:
        """Push (the pending batch, or the immediate one); a failure is reported, not
        raised, so the loop lives on."""
        try:
            if pending:
                self.push_now()
            else:
                self._flush_immediate()
        except Exception as exc:
            self.health.failed("push", exc)

    async def _wait(self, timeout: float) -> None:
        """Until a registry event arrives or ``timeout`` seconds pass (``sleep``)."""
        signal = asyncio.ensure_future(self._signal.wait())
        timer = asyncio.ensure_future(self._sleep(timeout))
        try:
            await asyncio.wait((signal, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            signal.cancel()
            timer.cancel()
        self._signal.clear()

    async def run(self) -> None:
        """Debounce loop; runs until cancelled."""
        while True:
            if not self._signal.is_set():
                self.idle.set()
            await self._signal.wait()
            self._signal.clear()
            self._push_guarded(pending=False)
            while self._pending.events:
                now = self._clock()
                quiet_left = self._pending.last_at + self.debounce_after - now
                max_left = self._pending.first_at + self.debounce_max - now
                wait = min(quiet_left, max_left)
                if wait <= 0:
                    self._push_guarded(pending=True)
                    break
                await self._wait(wait)
                self._push_guarded(pending=False)
