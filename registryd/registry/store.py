"""The registry store: one shard per registry instance, merged into the served view.

The store is the only place where registry state changes.  Adapters' updates go in
through :meth:`RegistryStore.apply` (the supervisor calls it); every change produces a
:class:`ChangeEvent` for the listeners (the push side) and a new immutable :class:`View`.
Readers (push, HTTP) take ``store.view`` and never see a half-applied update.

Contracts:

* Each shard has a priority for the merge (:mod:`registryd.registry.merge`): the one
  :meth:`RegistryStore.expect` declared, else its type's default, which the type's
  adapter declares (:class:`registryd.registry.types.AdapterType`, looked up once per shard).
  Declaring a different priority re-merges the shard's hostnames.
* A shard is replaced whole by ``Replace``; ``Upsert``/``Delete`` change one hostname.
* Endpoints are stamped with the shard they came from (``Endpoint.source``).
* A shard whose adapter fails keeps its last good state (``mark_failed`` only flips the
  synced flag and records the error).
* ``Problems`` replace the shard's errors, sources, warnings and status; errors that are new or
  changed and new warnings are logged as warnings, cleared errors at info, under the
  log scope the registry type's adapter declares (``serviceentry``, ``consul``...).
  Whatever an adapter (a plugin's too) reports is bounded here: at most ``MAX_ERRORS``
  errors (the first by source; a warning counts the rest) and ``MAX_WARNINGS``
  warnings, ``MAX_STATUS`` status entries, source names and status keys cut to
  ``MAX_SOURCE`` characters and messages and status values to ``MAX_MESSAGE``.
* Each shard is *exported* (to istiod, over MCP) or not: the one :meth:`RegistryStore.expect`
  declared, else its type's default.  ``View.exported`` is the merge of the exported
  shards alone, by the same rules (it is ``View.services`` itself while every shard is
  exported).
* Only hostnames whose merged result changed (in either merge) are reported;
  ``endpoints_only`` is true when no merged *service* changed, so the push side may skip
  clusters and listeners.
* An update costs in proportion to the hostnames it touches, not to the registry's size:
  the merged map is a persistent hash trie (``immutables.Map``), so each new ``View``
  shares every unchanged entry with the one before, and a ``View`` once taken never
  changes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import immutables

from registryd.adapter import Delete, Problems, Replace, Update, Upsert
from registryd.base.logs import clip
from registryd.model import Endpoint, Service, ShardKey
from registryd.registry.changes import ChangeSummary, summarize
from registryd.registry.merge import MergedService, merge_hostname
from registryd.registry.types import DEFAULT_PRIORITY, AdapterType, defaults

__all__ = ["ChangeEvent", "RegistryStore", "ShardState", "StoreCopy", "View", "bounded"]

log = logging.getLogger("registryd.registry")

MAX_ERRORS = 1000  # errors kept per registry
MAX_WARNINGS = 100  # warnings kept per registry
MAX_STATUS = 16  # status entries kept per registry
MAX_SOURCE = 512  # characters of a source name
MAX_MESSAGE = 2000  # characters of an error or a warning


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeEvent:
    """Which hostnames changed in the served view, and whether only endpoints did;
    ``summary``: what changed in the view served to proxies (:mod:`registryd.registry.changes`),
    ``revision``: the source's index/revision the update carried (``""``: none)."""

    hostnames: frozenset[str]
    endpoints_only: bool
    shard: ShardKey
    at: float = field(default_factory=time.monotonic)
    summary: ChangeSummary = field(default_factory=ChangeSummary)
    revision: str = ""


@dataclass(slots=True)
class ShardState:
    """What one registry instance currently contributes (mutable, owned by the store)."""

    key: ShardKey
    priority: int | None = None  # None: its type's default (see ``effective_priority``)
    export: bool | None = None  # None: its type's default (see ``exported``)
    kind: AdapterType | None = None  # its registry type as installed; None: the defaults
    services: dict[str, Service] = field(default_factory=dict)
    endpoints: dict[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    synced: bool = False
    ever_synced: bool = False
    last_sync: float | None = None  # wall clock of the last Replace
    last_error: str | None = None
    problems: Mapping[str, str] = field(default_factory=dict)
    sources: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    status: Mapping[str, str] = field(default_factory=dict)
    events: int = 0

    @property
    def effective_priority(self) -> int:
        """The priority this shard is merged with."""
        if self.priority is not None:
            return self.priority
        return DEFAULT_PRIORITY if self.kind is None else self.kind.default_priority

    @property
    def exported(self) -> bool:
        """Whether this shard is part of what is served to istiod over MCP."""
        if self.export is not None:
            return self.export
        return True if self.kind is None else self.kind.default_export

    @property
    def log_scope(self) -> str:
        """The log scope of its registry type (its type name when unknown)."""
        return self.key.provider if self.kind is None else self.kind.log_scope


@dataclass(frozen=True, slots=True)
class View:
    """An immutable picture of the merged registry at one version: later updates make
    new views (sharing what did not change with this one) and leave this one as it is."""

    version: int
    services: Mapping[str, MergedService]
    exported: Mapping[str, MergedService]  # the merge of the exported shards only

    @property
    def hostnames(self) -> Iterable[str]:
        return self.services.keys()


class RegistryStore:
    def __init__(self, types: Callable[[str], AdapterType] = defaults) -> None:
        """``types`` gives a registry type's defaults: the daemon passes
        :func:`registryd.daemon.plugins.adapter_type` (what each installed adapter declares);
        without it every type has the defaults of an adapter that declares nothing."""
        self._types = types
        self._shards: dict[ShardKey, ShardState] = {}
        self._expected: set[ShardKey] = set()
        self._merged: immutables.Map[str, MergedService] = immutables.Map()
        self._exported: immutables.Map[str, MergedService] = immutables.Map()
        self._view = View(0, self._merged, self._exported)
        self._listeners: list[Callable[[ChangeEvent], None]] = []
        self._synced_listeners: list[Callable[[], None]] = []

    def _shard(self, key: ShardKey) -> ShardState:
        """Shard ``key``, created (with its type's defaults) on first use."""
        shard = self._shards.get(key)
        if shard is None:
            shard = self._shards[key] = ShardState(key, kind=self._types(key.provider))
        return shard

    # -- reading -------------------------------------------------------------------
    @property
    def view(self) -> View:
        return self._view

    @property
    def shards(self) -> Mapping[ShardKey, ShardState]:
        return MappingProxyType(self._shards)

    def expect(
        self, key: ShardKey, priority: int | None = None, export: bool | None = None
    ) -> ChangeEvent | None:
        """Declare a configured registry instance; readiness waits for its first sync.
        With ``priority`` the shard is merged with it, with ``export`` it is exported or
        not (without, an earlier declaration or the type's default stays); a change of
        either re-merges what the shard holds and returns that change."""
        self._expected.add(key)
        shard = self._shard(key)
        changed = False
        if priority is not None and priority != shard.priority:
            shard.priority, changed = priority, True
        if export is not None and export != shard.export:
            shard.export, changed = export, True
        return self._remerge(key, set(shard.services)) if changed else None

    def not_synced(self) -> list[ShardKey]:
        """Configured shards that have never delivered a full state."""
        return sorted(k for k in self._expected if not self._shards[k].ever_synced)

    def subscribe(self, listener: Callable[[ChangeEvent], None]) -> None:
        self._listeners.append(listener)

    def on_synced(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when the last configured shard that never delivered a full
        state delivers one (:meth:`not_synced` becomes empty), change or no change."""
        self._synced_listeners.append(listener)

    # -- writing -------------------------------------------------------------------
    def apply(self, key: ShardKey, update: Update) -> ChangeEvent | None:
        """Apply one adapter update to shard ``key``; return the change it made, if any."""
        shard = self._shard(key)
        shard.events += 1
        if isinstance(update, Problems):
            update = bounded(update)
            _log_problems(shard, update)
            shard.problems = dict(update.errors)
            shard.sources = dict(update.sources)
            shard.warnings = tuple(update.warnings)
            shard.status = dict(update.status)
            return None
        all_synced = False  # this update is the last configured shard's first full state
        if isinstance(update, Replace):
            touched = set(shard.services) | set(shard.endpoints)
            shard.services = {s.hostname: s for s in update.services}
            shard.endpoints = _group(key, update.endpoints)
            touched |= set(shard.services) | set(shard.endpoints)
            first = not shard.ever_synced
            shard.synced = shard.ever_synced = True
            all_synced = first and not self.not_synced()
            shard.last_sync = time.time()
            shard.last_error = None
        elif isinstance(update, Upsert):
            host = update.service.hostname
            bad = [e for e in update.endpoints if e.hostname != host]
            if bad:
                raise ValueError(f"Upsert of {host} carries endpoints of {bad[0].hostname}")
            shard.services[host] = update.service
            shard.endpoints[host] = _stamp(key, update.endpoints)
            touched = {host}
        elif isinstance(update, Delete):
            shard.services.pop(update.hostname, None)
            shard.endpoints.pop(update.hostname, None)
            touched = {update.hostname}
        else:  # pragma: no cover - guarded by the type checker
            raise TypeError(f"unknown update {update!r}")
        event = self._remerge(key, touched, update.revision)
        if all_synced:
            self._tell_synced()
        return event

    def _tell_synced(self) -> None:
        for listener in self._synced_listeners:
            try:
                listener()
            except Exception:  # a listener bug must not break the registry
                log.exception("synced listener failed")

    def mark_failed(self, key: ShardKey, error: str) -> None:
        """The adapter of ``key`` failed: keep serving its state, flag it as not synced."""
        shard = self._shard(key)
        shard.synced = False
        shard.last_error = error

    def remove_shard(self, key: ShardKey) -> ChangeEvent | None:
        shard = self._shards.pop(key, None)
        self._expected.discard(key)
        if shard is None:
            return None
        return self._remerge(key, set(shard.services) | set(shard.endpoints))

    # -- internals -----------------------------------------------------------------
    def _remerge(
        self, key: ShardKey, hostnames: set[str], revision: str = ""
    ) -> ChangeEvent | None:
        changes, exported = self._merge(hostnames)
        if not changes and not exported:
            return None
        summary = summarize(self._merged, changes)
        services_changed = _services_changed(self._merged, changes)
        services_changed |= _services_changed(self._exported, exported)
        self._merged = _apply(self._merged, changes)
        if all(s.exported for s in self._shards.values()):
            self._exported = self._merged  # the same merge: share it
        else:
            self._exported = _apply(self._exported, exported)
        self._view = View(self._view.version + 1, self._merged, self._exported)
        event = ChangeEvent(
            hostnames=frozenset(changes) | frozenset(exported),
            endpoints_only=not services_changed,
            shard=key,
            summary=summary,
            revision=revision,
        )
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener bug must not break the registry
                log.exception("change listener failed")
        return event

    def _merge(self, hostnames: set[str]) -> tuple[_Changes, _Changes]:
        """The new merged result of each of ``hostnames`` whose result changed (``None``:
        no shard defines it any more), in the merge of all shards and in that of the
        exported ones."""
        return _merge_hosts(
            hostnames,
            {k: (s.services, s.endpoints) for k, s in self._shards.items()},
            {k: s.effective_priority for k, s in self._shards.items()},
            {k for k, s in self._shards.items() if s.exported},
            (self._merged, self._exported),
        )

    def copy(self) -> StoreCopy:
        """What the merge reads of every shard as of now, with the current view: a
        value that any thread may merge again (:meth:`StoreCopy.with_shard`) while this
        store goes on changing.  Costs a shallow copy of each shard's two dicts."""
        return StoreCopy(
            view=self._view,
            shards={
                k: (MappingProxyType(dict(s.services)), MappingProxyType(dict(s.endpoints)))
                for k, s in self._shards.items()
            },
            priorities={k: s.effective_priority for k, s in self._shards.items()},
            exported=frozenset(k for k, s in self._shards.items() if s.exported),
        )


_Contribution = tuple[Mapping[str, Service], Mapping[str, tuple[Endpoint, ...]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreCopy:
    """The store's shards and view at one moment (:meth:`RegistryStore.copy`), never
    changed: enough to answer "what would be served if this shard held that" without
    touching the store."""

    view: View
    shards: Mapping[ShardKey, _Contribution]
    priorities: Mapping[ShardKey, int]
    exported: frozenset[ShardKey]

    def with_shard(self, key: ShardKey, update: Replace) -> View:
        """The view as it would be if shard ``key`` received ``update`` (by the store's
        rules: endpoints stamped with ``key``, the same merge); its version is the
        current one.  Costs in proportion to the hostnames the shard holds now and in
        ``update``.  ``key`` must be a shard of the copy (its priority is needed)."""
        return self.with_shards({key: update})[0]

    def with_shards(
        self,
        changes: Mapping[ShardKey, Replace | None],
        *,
        priorities: Mapping[ShardKey, int] = MappingProxyType({}),
        exported: Mapping[ShardKey, bool] = MappingProxyType({}),
    ) -> tuple[View, frozenset[str]]:
        """The view as it would be if each shard of ``changes`` received its ``Replace``
        (a shard not in the copy is added) or was removed (``None``), and the shards of
        ``priorities`` and ``exported`` were merged with that priority and exported or
        not; with the hostnames where it may differ from the current one.  By the
        store's rules (endpoints stamped with their shard, the same merge); its version
        is the current one.  Costs in proportion to the hostnames those shards hold now
        and in ``changes``.  A shard added needs its priority in ``priorities``; one
        without an ``exported`` entry is exported."""
        shards = dict(self.shards)
        touched: set[str] = set()
        for key in {*changes, *priorities, *exported}:
            old_services, old_endpoints = shards.get(key, ({}, {}))
            touched.update(old_services, old_endpoints)
        for key, update in changes.items():
            if update is None:
                shards.pop(key, None)
                continue
            services = {s.hostname: s for s in update.services}
            endpoints = _group(key, update.endpoints)
            touched.update(services, endpoints)
            shards[key] = (services, endpoints)
        merged_priorities = {**self.priorities, **priorities}
        missing = [k for k in shards if k not in merged_priorities]
        if missing:
            raise KeyError(f"no priority for shard {missing[0]}")
        exported_keys = {
            k for k in shards if exported.get(k, k in self.exported or k not in self.shards)
        }
        merged, exported_view = self.view.services, self.view.exported
        changes_all, exported_changes = _merge_hosts(
            touched, shards, merged_priorities, exported_keys, (merged, exported_view)
        )
        new_merged = _apply(_persistent(merged), changes_all)
        if len(exported_keys) == len(shards):  # every shard exported: the same merge
            return View(self.view.version, new_merged, new_merged), frozenset(touched)
        new_exported = _apply(_persistent(exported_view), exported_changes)
        return View(self.view.version, new_merged, new_exported), frozenset(touched)


def _merge_hosts(
    hostnames: Iterable[str],
    shards: Mapping[ShardKey, _Contribution],
    priorities: Mapping[ShardKey, int],
    exported_shards: Set[ShardKey],
    current: tuple[Mapping[str, MergedService], Mapping[str, MergedService]],
) -> tuple[_Changes, _Changes]:
    """The merged result of each of ``hostnames`` that differs from ``current`` (the
    merge of every shard, and that of the ``exported_shards``); ``None``: no shard
    defines it any more."""
    changes: _Changes = {}
    exported: _Changes = {}
    merged, merged_exported = current
    for host in hostnames:
        contributions = {
            k: (services[host], endpoints.get(host, ()))
            for k, (services, endpoints) in shards.items()
            if host in services
        }
        new = merge_hostname(host, contributions, priorities)
        if new != merged.get(host):
            changes[host] = new
        mine = {k: c for k, c in contributions.items() if k in exported_shards}
        if len(mine) != len(contributions):
            new = merge_hostname(host, mine, priorities)
        if new != merged_exported.get(host):
            exported[host] = new
    return changes, exported


_Changes = dict[str, MergedService | None]


def _services_changed(merged: Mapping[str, MergedService], changes: _Changes) -> bool:
    """Whether ``changes`` change a service of ``merged`` (not only its endpoints)."""
    for host, new in changes.items():
        old = merged.get(host)
        if old is None or new is None or old.service != new.service:
            return True
    return False


def _persistent(merged: Mapping[str, MergedService]) -> immutables.Map[str, MergedService]:
    """``merged`` as the persistent map views hold (itself, when it is one)."""
    return merged if isinstance(merged, immutables.Map) else immutables.Map(merged)


def _apply(
    merged: immutables.Map[str, MergedService], changes: _Changes
) -> immutables.Map[str, MergedService]:
    """``merged`` with ``changes`` applied."""
    if not changes:
        return merged
    mutation = merged.mutate()
    for host, new in changes.items():
        if new is None:
            del mutation[host]
        else:
            mutation[host] = new
    return mutation.finish()


def bounded(problems: Problems) -> Problems:
    """``problems`` within the store's limits (see the module docstring); the same object
    when it is within them already."""
    errors, warnings, removed = problems.errors, problems.warnings, problems.removed
    status = problems.status
    if (
        len(status) <= MAX_STATUS
        and all(len(k) <= MAX_SOURCE and len(v) <= MAX_MESSAGE for k, v in status.items())
        and len(errors) <= MAX_ERRORS
        and len(warnings) <= MAX_WARNINGS
        and all(len(s) <= MAX_SOURCE and len(m) <= MAX_MESSAGE for s, m in errors.items())
        and all(len(w) <= MAX_MESSAGE for w in warnings)
        and all(len(s) <= MAX_SOURCE for s in removed)
    ):
        return problems
    sources = sorted(errors)
    notes = [clip(w, MAX_MESSAGE, escaped=False) for w in warnings[:MAX_WARNINGS]]
    if len(warnings) > MAX_WARNINGS:
        notes.append(f"{len(warnings) - MAX_WARNINGS} more warnings not shown")
    if len(sources) > MAX_ERRORS:
        notes.append(f"{len(sources) - MAX_ERRORS} more errors not shown (of {len(sources)})")
    return dataclasses.replace(
        problems,
        errors={
            clip(s, MAX_SOURCE, escaped=False): clip(errors[s], MAX_MESSAGE, escaped=False)
            for s in sources[:MAX_ERRORS]
        },
        warnings=tuple(notes),
        removed=tuple(clip(s, MAX_SOURCE, escaped=False) for s in removed),
        status={
            clip(k, MAX_SOURCE, escaped=False): clip(status[k], MAX_MESSAGE, escaped=False)
            for k in sorted(status)[:MAX_STATUS]
        },
    )


def _log_problems(shard: ShardState, update: Problems) -> None:
    """Log what ``update`` changes in ``shard``'s problems (see the module docstring)."""
    scope = logging.getLogger(f"registryd.{shard.log_scope}")
    for source, message in update.errors.items():
        if shard.problems.get(source) != message:
            scope.warning("registry %s: %s", shard.key, message)
    removed = set(update.removed)
    for source in sorted(set(shard.problems) - set(update.errors)):
        if source in removed:
            scope.info("registry %s: %s was removed (its error with it)", shard.key, source)
        else:
            scope.info("registry %s: %s is fine again", shard.key, source)
    known = set(shard.warnings)
    for warning in update.warnings:
        if warning not in known:
            scope.warning("registry %s: %s", shard.key, warning)


def _stamp(key: ShardKey, endpoints: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    return tuple(e if e.source == key else dataclasses.replace(e, source=key) for e in endpoints)


def _group(key: ShardKey, endpoints: Iterable[Endpoint]) -> dict[str, tuple[Endpoint, ...]]:
    grouped: dict[str, list[Endpoint]] = {}
    for e in endpoints:
        grouped.setdefault(e.hostname, []).append(e)
    return {h: _stamp(key, eps) for h, eps in grouped.items()}
