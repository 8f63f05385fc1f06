"""The watched Consul state, converted incrementally (:class:`ConsulState`).  Pure: no
I/O.

Contract:

* :class:`ConsulState` holds what the watches last returned: the service names of each
  datacenter's ``/v1/catalog/services`` (:meth:`~ConsulState.catalog`) and each
  service's ``/v1/health/service/<name>`` entries (:meth:`~ConsulState.health`).  It
  converts only what changed and gives the full state (:meth:`~ConsulState.replace`),
  the increments since the last call (:meth:`~ConsulState.changes`: one ``Upsert`` per
  new or changed hostname, then one ``Delete`` per vanished one, each sorted), the
  per-entry problems with the raw entries for the debug port and the notes on conflicts
  (:attr:`~ConsulState.notes`) as warnings (:meth:`~ConsulState.problems`).
  Results are deterministic: instances are taken in (datacenter, node, service id) order.
* A malformed entry (bad port, no address, bad meta, tags or weights...; any exception
  while converting it counts) is skipped and reported under ``<service>/<service id>``
  (``<datacenter>/<service>/<service id>`` with several datacenters); a service name
  that gives no valid hostname is not watched and is reported under ``<service>``.
  The raw entries (``sources``) are keyed by ``<service>`` (or
  ``<datacenter>/<service>``) and keep only the fields that matter here: check output,
  notes and definitions (HTTP headers...) are dropped.
* A service whose health query failed (:meth:`~ConsulState.failed`) keeps its last
  entries; the failure is reported under ``<service>`` (or ``<datacenter>/<service>``)
  until its next reply (:meth:`~ConsulState.health`) or until the catalog drops it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from registryd.adapter import Delete, Problems, Published, Replace, Upsert, describe_error
from registryd.model import Endpoint, Service

from .mapping import build_service
from .parse import (
    SERVER_SERVICE,
    EntryError,
    Instance,
    Options,
    convert_entry,
    entry_names,
    hostname_for,
    public_entry,
    service_kind,
)

__all__ = ["ConsulState"]

Key = tuple[str, str]  # (datacenter, Consul service name); datacenter "" = the agent's


@dataclass(frozen=True, slots=True)
class _Group:
    """What one (datacenter, service name) contributes."""

    hostname: str
    instances: tuple[Instance, ...]
    errors: Mapping[str, str]
    sources: tuple[Any, ...]


@dataclass(slots=True)
class _Host:
    service: Service
    endpoints: tuple[Endpoint, ...]
    notes: list[str] = field(default_factory=list)


class ConsulState:
    """The watched Consul state, converted incrementally (see the module docstring)."""

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self._names: dict[str, set[str]] = {}  # datacenter -> names in its catalog
        self._rejected: dict[Key, str] = {}  # names that give no hostname
        self._failed: dict[Key, str] = {}  # services whose last health query failed
        self._groups: dict[Key, _Group] = {}
        self._raw: dict[Key, list[Any]] = {}
        self._by_host: dict[str, set[Key]] = {}
        self._hosts: dict[str, _Host] = {}
        self._dirty: set[str] = set()
        self._published: Published[str] = Published()  # what was last handed out
        self._problems: Problems | None = None

    # -- input ----------------------------------------------------------------------

    def catalog(self, datacenter: str, names: Iterable[str]) -> set[str]:
        """``datacenter``'s catalog lists ``names`` now; the names to watch (those that
        give a hostname, but never :data:`SERVER_SERVICE`).  Services no longer listed
        are dropped."""
        current = set(names) - {SERVER_SERVICE}
        previous = self._names.get(datacenter, set())
        for name in previous - current:
            key = (datacenter, name)
            self._rejected.pop(key, None)
            self._failed.pop(key, None)
            self._drop(key)
            self._problems = None
        self._names[datacenter] = current
        for name in current - previous:  # a name always gives the same hostname (or error)
            try:
                hostname_for(self.options.hostname, name, datacenter)
            except EntryError as exc:
                self._rejected[(datacenter, name)] = str(exc)
                self._problems = None
        return {name for name in current if (datacenter, name) not in self._rejected}

    def health(self, datacenter: str, name: str, entries: Sequence[Any]) -> None:
        """The current ``/v1/health/service/<name>`` entries of ``datacenter``."""
        key = (datacenter, name)
        if not self._listed(key):
            return  # a late reply of a watch that was stopped
        if self._failed.pop(key, None) is not None:
            self._problems = None
        if self._raw.get(key) == entries:
            return
        self._raw[key] = list(entries)
        group = self._convert(key, entries)
        self._groups[key] = group  # a name always gives the same hostname
        self._by_host.setdefault(group.hostname, set()).add(key)
        self._dirty.add(group.hostname)
        self._problems = None

    def failed(self, datacenter: str, name: str, error: str) -> None:
        """The last ``/v1/health/service/<name>`` query of ``datacenter`` failed with
        ``error``: the service keeps its last entries (none if it never had any) and
        the error shows under its source until :meth:`health` gets a reply."""
        key = (datacenter, name)
        if self._listed(key) and self._failed.get(key) != error:
            self._failed[key] = error
            self._problems = None

    def failing(self, datacenter: str, name: str) -> bool:
        """Whether the last health query of that service failed."""
        return (datacenter, name) in self._failed

    def _listed(self, key: Key) -> bool:
        datacenter, name = key
        return name in self._names.get(datacenter, ()) and key not in self._rejected

    # -- output ---------------------------------------------------------------------

    def replace(self) -> Replace:
        """The full state; what :meth:`changes` compares with from now on."""
        self._flush()
        return self._published.replace(self._hosts)

    def changes(self) -> list[Upsert | Delete]:
        """Upserts of new or changed hostnames, then Deletes, since the last call."""
        return self._published.changes(self._hosts, self._flush())

    def problems(self) -> Problems:
        """Per-entry errors, the raw entries in use and the notes of the services as last
        handed out (the same object until one of them may have changed)."""
        if self._problems is None:
            errors: dict[str, str] = {}
            for key, message in self._rejected.items():
                errors[self._source(key)] = f"{self._source(key)}: {message}; not watched"
            for key, message in self._failed.items():
                kept = "its last good endpoints" if key in self._groups else "no endpoints yet"
                errors[self._source(key)] = f"{self._source(key)}: {message}; serving {kept}"
            sources: dict[str, Any] = {}
            for key, group in self._groups.items():
                errors.update(group.errors)
                sources[self._source(key)] = list(group.sources)
            self._problems = Problems(
                errors=dict(sorted(errors.items())),
                sources=dict(sorted(sources.items())),
                warnings=self.notes,
            )
        return self._problems

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(sorted({n for h in self._hosts.values() for n in h.notes}))

    @property
    def hostnames(self) -> list[str]:
        return sorted(self._hosts)

    # -- internals ------------------------------------------------------------------

    def _source(self, key: Key) -> str:
        datacenter, name = key
        return f"{datacenter}/{name}" if self.options.prefix_datacenter else name

    def _convert(self, key: Key, entries: Sequence[Any]) -> _Group:
        datacenter, name = key
        options = self.options
        hostname = hostname_for(options.hostname, name, datacenter)
        instances: list[Instance] = []
        errors: dict[str, str] = {}
        for entry in entries:
            if service_kind(entry) not in options.kinds:
                continue
            try:
                instances.append(
                    convert_entry(entry, service=name, datacenter=datacenter, options=options)
                )
            except Exception as exc:  # EntryError, or what a stranger entry provokes
                service_id, node = entry_names(entry, "?")
                source = f"{self._source(key)}/{service_id}"
                on = f" on node {node}" if node else ""
                reason = describe_error(exc, own=(EntryError,))
                message = f"{source}{on}: {reason}; entry skipped"
                errors[source] = f"{errors[source]}; {message}" if source in errors else message
        instances.sort(key=lambda i: i.order)
        return _Group(hostname, tuple(instances), errors, tuple(public_entry(e) for e in entries))

    def _drop(self, key: Key) -> None:
        self._raw.pop(key, None)
        group = self._groups.pop(key, None)
        if group is None:
            return
        keys = self._by_host.get(group.hostname)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_host[group.hostname]
        self._dirty.add(group.hostname)

    def _flush(self) -> set[str]:
        """Rebuild the dirty hostnames; return them."""
        dirty, self._dirty = self._dirty, set()
        if dirty:
            self._problems = None  # the notes may have changed
        for hostname in dirty:
            keys = sorted(self._by_host.get(hostname, ()))
            instances = [i for k in keys for i in self._groups[k].instances]
            if not instances:
                self._hosts.pop(hostname, None)
                continue
            instances.sort(key=lambda i: (i.order, i.service))
            service, endpoints, notes = build_service(hostname, instances, self.options.namespace)
            self._hosts[hostname] = _Host(service, endpoints, notes)
        return dirty
