"""Versioned, serialized xDS resources: what every connection is served from.

A :class:`Snapshot` is immutable.  It holds, per table, every resource already
serialized (the bytes are computed once per content change and shared by every
connection), each resource stamped with the snapshot version in which its content last
changed, and the names that changed in the last few versions so a connection that is
behind can work out what it is missing without comparing everything.

The :class:`SnapshotBuilder` turns registry views into snapshots incrementally: only the
hostnames named by a change are rebuilt, and a rebuilt resource whose bytes did not
change keeps its old version (no push for it).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from registryd.model import Resolution, Service
from registryd.registry.merge import MergedService
from registryd.registry.store import View
from registryd.xds import resources as res

__all__ = [
    "CDS",
    "EDS",
    "LDS_GRPC",
    "LDS_LOCAL",
    "LDS_SIDECAR",
    "RDS",
    "TABLE_TYPES",
    "Resource",
    "Snapshot",
    "SnapshotBuilder",
    "encode_field",
]

CDS, EDS, RDS = "cds", "eds", "rds"
LDS_SIDECAR, LDS_LOCAL, LDS_GRPC = "lds/sidecar", "lds/local", "lds/grpc"
TABLE_TYPES: Mapping[str, str] = MappingProxyType(
    {
        CDS: res.CLUSTER_TYPE,
        EDS: res.ENDPOINT_TYPE,
        RDS: res.ROUTE_TYPE,
        LDS_SIDECAR: res.LISTENER_TYPE,
        LDS_LOCAL: res.LISTENER_TYPE,
        LDS_GRPC: res.LISTENER_TYPE,
    }
)
HISTORY = 64  # how many versions of change sets a snapshot remembers


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def encode_field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (strings, bytes, messages)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


@dataclass(frozen=True, slots=True)
class Resource:
    """One serialized resource.  ``entry`` is ready to splice into a DiscoveryResponse
    as one element of its ``resources`` field (an ``Any``)."""

    name: str
    version: int
    body: bytes
    entry: bytes

    @classmethod
    def make(cls, type_url: str, name: str, version: int, body: bytes) -> Resource:
        packed = encode_field(1, type_url.encode()) + encode_field(2, body)
        return cls(name, version, body, encode_field(2, packed))


class ResponseCache:
    """Assembled responses of one snapshot, shared by the connections that need the same
    content.  Bounded by ``budget`` bytes, counting both the responses and their keys (a
    key names every resource it covers: it can be as large as the response): past it,
    responses are still built but no longer kept, so many distinct subscriptions cannot
    pin unbounded memory.  Entries live as long as their snapshot: until the next push."""

    def __init__(self, budget: int = 128 * 2**20) -> None:
        self._entries: dict[Any, tuple[bytes, str, tuple[str, ...]]] = {}
        self.size = 0
        self._budget = budget
        self._nonces = itertools.count(1)

    def get(self, key: Any) -> tuple[bytes, str, tuple[str, ...]] | None:
        return self._entries.get(key)

    def put(self, key: Any, value: tuple[bytes, str, tuple[str, ...]]) -> None:
        size = len(value[0]) + _key_size(key)
        if key not in self._entries and self.size + size <= self._budget:
            self._entries[key] = value
            self.size += size

    def next_nonce(self) -> int:
        """Unique per snapshot: with the version it makes nonces unique per stream."""
        return next(self._nonces)


def _key_size(key: Any) -> int:
    """Rough bytes a cache key holds: its strings, and 64 per element of a collection."""
    if isinstance(key, str | bytes):
        return len(key) + 49
    if isinstance(key, tuple | frozenset | set):
        return 64 + sum(_key_size(k) for k in key)
    return 64


@dataclass(frozen=True, slots=True, eq=False)
class Snapshot:
    version: int
    tables: Mapping[str, Mapping[str, Resource]]
    history: tuple[tuple[int, Mapping[str, frozenset[str]]], ...] = ()
    cache: ResponseCache = field(default_factory=lambda: ResponseCache(), repr=False)

    def changed_since(self, table: str, version: int) -> frozenset[str] | None:
        """Names in ``table`` added, changed or removed after ``version``; ``None`` if
        that is too far back to know (the caller must then resend everything)."""
        if version >= self.version:
            return frozenset()
        if not self.history or self.history[0][0] > version + 1:
            return None
        names: set[str] = set()
        for v, changes in self.history:
            if v > version:
                names |= changes.get(table, frozenset())
        return frozenset(names)


EMPTY = Snapshot(0, MappingProxyType({t: MappingProxyType({}) for t in TABLE_TYPES}))


def scoped(table: str, scope: str) -> str:
    """The table holding ``table``'s resources visible only to namespace ``scope``
    (``""``: visible to every proxy)."""
    return f"{table}@{scope}" if scope else table


def visibility(service: Service) -> frozenset[str] | None:
    """Namespaces a service is exported to; ``None`` means every namespace.

    Istio's ``exportTo``: empty or ``*`` → all, ``.`` → the service's own namespace,
    ``~`` → none, other entries are namespace names."""
    if not service.export_to or "*" in service.export_to:
        return None
    names = {service.namespace if n == "." else n for n in service.export_to if n != "~"}
    return frozenset(names)


class SnapshotBuilder:
    """Builds successive snapshots from registry views (not thread-safe; one owner).

    Visibility (``exportTo``): resources of services exported to every namespace live in
    the plain tables (``cds``, ``rds``…); those of restricted services live in per-namespace
    overlay tables (``cds@team-a``…) that a proxy in that namespace reads on top of the
    plain ones.  A listener or route whose port has restricted services gets one version
    per namespace that sees them.
    """

    def __init__(self) -> None:
        self.snapshot = EMPTY
        self._services: dict[str, Service] = {}
        self._port_hosts: dict[int, set[str]] = {}
        self._placed: dict[tuple[str, str], frozenset[str]] = {}

    def build(
        self, view: View, hostnames: Iterable[str] | None = None, endpoints_only: bool = False
    ) -> Snapshot:
        """Next snapshot after ``hostnames`` changed (``None``: everything)."""
        prev = self.snapshot
        version = prev.version + 1
        tables: dict[str, Mapping[str, Resource]] = dict(prev.tables)
        writable: dict[str, dict[str, Resource]] = {}
        changes: dict[str, set[str]] = {}

        def put(table: str, name: str, message: Any | None) -> None:
            current = writable.get(table)
            if current is None:
                current = writable[table] = dict(tables.get(table, {}))
                tables[table] = current
            if message is None:
                if current.pop(name, None) is not None:
                    changes.setdefault(table, set()).add(name)
                return
            body = message.SerializeToString(deterministic=True)
            old = current.get(name)
            if old is not None and old.body == body:
                return
            type_url = TABLE_TYPES[table.partition("@")[0]]
            current[name] = Resource.make(type_url, name, version, body)
            changes.setdefault(table, set()).add(name)

        def place(table: str, name: str, by_scope: Mapping[str, Any]) -> None:
            """Put ``name`` into the scopes given and take it out of the others."""
            old = self._placed.get((table, name), frozenset())
            for scope in old - by_scope.keys():
                put(scoped(table, scope), name, None)
            for scope, message in by_scope.items():
                put(scoped(table, scope), name, message)
            if by_scope:
                self._placed[(table, name)] = frozenset(by_scope)
            else:
                self._placed.pop((table, name), None)

        if hostnames is None:
            hostnames = set(view.services) | set(self._services)
            endpoints_only = False
        ports_touched: set[int] = set()
        for host in hostnames:
            merged = view.services.get(host)
            old = self._services.get(host)
            if endpoints_only and merged is not None and old is not None:
                self._endpoints(put, place, merged)
                continue
            old_ports = {p.number for p in old.ports} if old else set()
            new_ports = {p.number for p in merged.service.ports} if merged else set()
            for number in old_ports - new_ports:
                name = res.cluster_name(host, number)
                place(CDS, name, {})
                put(EDS, name, None)
                place(LDS_GRPC, res.grpc_listener_name(host, number), {})
                self._port_hosts.get(number, set()).discard(host)
            ports_touched |= old_ports | new_ports
            if merged is None:
                self._services.pop(host, None)
                continue
            service = merged.service
            self._services[host] = service
            for port in service.ports:
                self._port_hosts.setdefault(port.number, set()).add(host)
                listener = res.build_grpc_listener(service, port)
                place(
                    LDS_GRPC,
                    res.grpc_listener_name(host, port.number),
                    dict.fromkeys(_scopes(service), listener),
                )
            self._endpoints(put, place, merged)

        for number in ports_touched:
            services = [self._services[h] for h in self._port_hosts.get(number, ())]
            if not services:
                self._port_hosts.pop(number, None)
            views = _port_views(services)
            listener_name = res.sidecar_listener_name(number)
            place(RDS, str(number), _route_views(number, views, services))
            for table, bind in ((LDS_SIDECAR, "0.0.0.0"), (LDS_LOCAL, "127.0.0.1")):
                place(
                    table,
                    listener_name,
                    {s: res.build_sidecar_listener(number, v, bind) for s, v in views.items()},
                )

        frozen_changes = {t: frozenset(n) for t, n in changes.items() if n}
        history = (*prev.history, (version, frozen_changes))[-HISTORY:]
        self.snapshot = Snapshot(
            version,
            MappingProxyType(
                {t: MappingProxyType(v) if t in writable else v for t, v in tables.items()}
            ),
            history,
        )
        return self.snapshot

    @staticmethod
    def _endpoints(put: Any, place: Any, merged: MergedService) -> None:
        """Clusters (DNS kinds carry endpoints) and ClusterLoadAssignments."""
        service = merged.service
        scopes = _scopes(service)
        for port in service.ports:
            name = res.cluster_name(service.hostname, port.number)
            endpoints = res.port_endpoints(port, merged.endpoints)
            place(CDS, name, dict.fromkeys(scopes, res.build_cluster(service, port, endpoints)))
            if service.resolution is Resolution.STATIC:
                put(EDS, name, res.build_cla(name, endpoints))
            else:
                put(EDS, name, None)


def _scopes(service: Service) -> frozenset[str]:
    vis = visibility(service)
    return frozenset({""}) if vis is None else vis


def _route_views(
    number: int, views: dict[str, list[Service]], services: list[Service]
) -> dict[str, Any]:
    """Route ``<number>`` per scope: the scopes of :func:`_port_views`, plus every
    namespace of a Kubernetes service on the port, whose clients also reach it by its bare
    name (``<name>``), which nobody else may."""
    scopes = set(views) | {s.namespace for s in services if res.short_names(s, s.namespace)}
    public = views.get("", [])
    return {
        scope: res.build_route_config(number, views.get(scope, public), scope)
        for scope in scopes
        if views.get(scope, public)
    }


def _port_views(services: list[Service]) -> dict[str, list[Service]]:
    """Which services each scope sees on one port: ``""`` sees the public ones, each
    namespace a restricted service is exported to sees the public ones plus those."""
    public = [s for s in services if visibility(s) is None]
    views: dict[str, list[Service]] = {"": public} if public else {}
    for service in services:
        for namespace in visibility(service) or ():
            views.setdefault(namespace, list(public)).append(service)
    return views
