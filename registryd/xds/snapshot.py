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
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from registryd.model import Endpoint, Resolution, Service
from registryd.registry.merge import MergedService
from registryd.registry.store import View
from registryd.xds import grpcgen
from registryd.xds import resources as res
from registryd.xds.clusters import (
    BLACKHOLE_CLUSTER,
    PASSTHROUGH_CLUSTER,
    BuildOptions,
    blackhole_cluster,
    build_cla,
    build_cluster,
    passthrough_cluster,
)
from registryd.xds.listeners import (
    VIRTUAL_OUTBOUND,
    Conflict,
    Mode,
    build_listeners,
    virtual_outbound_listener,
)
from registryd.xds.routes import build_route_config

__all__ = [
    "CDS",
    "CDS_GRPC",
    "EDS",
    "LDS_GRPC",
    "LDS_LOCAL",
    "LDS_SIDECAR",
    "RDS",
    "STATIC_NAMES",
    "TABLE_TYPES",
    "Resource",
    "Snapshot",
    "SnapshotBuilder",
    "encode_field",
    "port_views",
]

CDS, CDS_GRPC, EDS, RDS = "cds", "cds/grpc", "eds", "rds"
LDS_SIDECAR, LDS_LOCAL, LDS_GRPC = "lds/sidecar", "lds/local", "lds/grpc"
TABLE_TYPES: Mapping[str, str] = MappingProxyType(
    {
        CDS: res.CLUSTER_TYPE,
        CDS_GRPC: res.CLUSTER_TYPE,
        EDS: res.ENDPOINT_TYPE,
        RDS: res.ROUTE_TYPE,
        LDS_SIDECAR: res.LISTENER_TYPE,
        LDS_LOCAL: res.LISTENER_TYPE,
        LDS_GRPC: res.LISTENER_TYPE,
    }
)
STATIC_NAMES = frozenset({PASSTHROUGH_CLUSTER, BLACKHOLE_CLUSTER, VIRTUAL_OUTBOUND})
"""Resources every snapshot has, whatever the registries hold (istiod sends them too)."""
HISTORY = 64  # how many versions of change sets a snapshot remembers
log = logging.getLogger("registryd.push")


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


class _Writer:
    """The tables of the snapshot being built, copied on first write."""

    def __init__(self, prev: Snapshot, placed: dict[tuple[str, str], frozenset[str]]) -> None:
        self.version = prev.version + 1
        self.tables: dict[str, Mapping[str, Resource]] = dict(prev.tables)
        self.writable: dict[str, dict[str, Resource]] = {}
        self.changes: dict[str, set[str]] = {}
        self._placed = placed

    def put(self, table: str, name: str, message: Any | None) -> None:
        """Set (or with ``None`` remove) one resource; unchanged bytes keep their version."""
        current = self.writable.get(table)
        if current is None:
            current = self.writable[table] = dict(self.tables.get(table, {}))
            self.tables[table] = current
        if message is None:
            if current.pop(name, None) is not None:
                self.changes.setdefault(table, set()).add(name)
            return
        body = message.SerializeToString(deterministic=True)
        old = current.get(name)
        if old is not None and old.body == body:
            return
        type_url = TABLE_TYPES[table.partition("@")[0]]
        current[name] = Resource.make(type_url, name, self.version, body)
        self.changes.setdefault(table, set()).add(name)

    def place(self, table: str, name: str, by_scope: Mapping[str, Any]) -> None:
        """Put ``name`` into the scopes given and take it out of the others."""
        old = self._placed.get((table, name), frozenset())
        for scope in old - by_scope.keys():
            self.put(scoped(table, scope), name, None)
        for scope, message in by_scope.items():
            self.put(scoped(table, scope), name, message)
        if by_scope:
            self._placed[(table, name)] = frozenset(by_scope)
        else:
            self._placed.pop((table, name), None)

    def snapshot(self, prev: Snapshot) -> Snapshot:
        frozen_changes = {t: frozenset(n) for t, n in self.changes.items() if n}
        history = (*prev.history, (self.version, frozen_changes))[-HISTORY:]
        tables = {
            t: MappingProxyType(v) if t in self.writable else v for t, v in self.tables.items()
        }
        return Snapshot(self.version, MappingProxyType(tables), history)


_MODES = ((LDS_SIDECAR, Mode.SIDECAR), (LDS_LOCAL, Mode.LOCAL))
_CONFLICTS_LOGGED = 10  # lines per port and change; the rest are counted in one line


class SnapshotBuilder:
    """Builds successive snapshots from registry views (not thread-safe; one owner).

    Visibility (``exportTo``): resources of services exported to every namespace live in
    the plain tables (``cds``, ``rds``…); those of restricted services live in per-namespace
    overlay tables (``cds@team-a``…) that a proxy in that namespace reads on top of the
    plain ones.  A listener or route whose port has restricted services gets one version
    per namespace that sees them.  Proxyless gRPC clients read their own cluster table
    (``cds/grpc``) and listener table (``lds/grpc``, short names in the overlay of the
    service's namespace); their routes ``outbound|…`` share ``rds`` with Envoy's ``<port>``.
    """

    def __init__(self, options: BuildOptions | None = None) -> None:
        self.snapshot = EMPTY
        self.options = options if options is not None else BuildOptions.from_env()
        self.conflicts: dict[int, tuple[Conflict, ...]] = {}  # listener conflicts by port
        self._services: dict[str, Service] = {}
        self._port_hosts: dict[int, set[str]] = {}
        self._placed: dict[tuple[str, str], frozenset[str]] = {}
        self._aliases: dict[str, set[str]] = {}  # target hostname -> alias hostnames
        self._pods: dict[str, tuple[Endpoint, ...]] = {}  # passthrough services' endpoints
        self._grpc_names: dict[str, frozenset[str]] = {}  # hostname -> its gRPC listeners
        self._port_listeners: dict[tuple[str, int], frozenset[str]] = {}

    def build(
        self, view: View, hostnames: Iterable[str] | None = None, endpoints_only: bool = False
    ) -> Snapshot:
        """Next snapshot after ``hostnames`` changed (``None``: everything)."""
        prev = self.snapshot
        out = _Writer(prev, self._placed)
        if prev.version == 0:
            out.place(CDS, PASSTHROUGH_CLUSTER, {"": passthrough_cluster()})
            out.place(CDS, BLACKHOLE_CLUSTER, {"": blackhole_cluster()})
            out.place(LDS_SIDECAR, VIRTUAL_OUTBOUND, {"": virtual_outbound_listener()})
        if hostnames is None:
            hostnames = set(view.services) | set(self._services)
            endpoints_only = False
        ports_touched: set[int] = set()
        for host in hostnames:
            merged = view.services.get(host)
            old = self._services.get(host)
            if endpoints_only and merged is not None and old is not None:
                self._endpoints(out, merged)
                if self._track_pods(merged):
                    ports_touched |= {p.number for p in merged.service.ports}
                continue
            ports_touched |= self._service(out, host, old, merged)
        for number in ports_touched:
            self._port(out, number)
        self.snapshot = out.snapshot(prev)
        return self.snapshot

    # -- one service ----------------------------------------------------------------
    def _service(
        self, out: _Writer, host: str, old: Service | None, merged: MergedService | None
    ) -> set[int]:
        """Rebuild everything of one service; returns the ports whose listeners and
        routes must be rebuilt."""
        service = merged.service if merged is not None else None
        touched = self._alias_change(old, service)
        old_ports = {p.number for p in old.ports} if old else set()
        new_ports = {p.number for p in service.ports} if service else set()
        for number in old_ports - new_ports:
            name = res.cluster_name(host, number)
            out.place(CDS, name, {})
            out.place(CDS_GRPC, name, {})
            out.place(RDS, name, {})
            out.put(EDS, name, None)
            self._port_hosts.get(number, set()).discard(host)
        touched |= old_ports | new_ports
        if service is None or merged is None:
            self._services.pop(host, None)
            self._pods.pop(host, None)
            self._grpc_listeners(out, host, {})
            return touched
        self._services[host] = service
        self._track_pods(merged)
        scopes = _scopes(service)
        grpc: dict[str, dict[str, Any]] = {}
        for port in service.ports:
            hosts = self._port_hosts.setdefault(port.number, set())
            if service.resolution is Resolution.ALIAS:
                hosts.discard(host)
            else:
                hosts.add(host)
            route: dict[str, Any] = {}
            if grpcgen.serves(service, port):
                route = dict.fromkeys(scopes, grpcgen.build_route(service, port))
                for name, namespace in grpcgen.dial_names(service):
                    listener = grpcgen.build_listener(service, port, name)
                    where = scopes if not namespace else scopes & {"", namespace}
                    # a short name is for clients of the service's own namespace only
                    targets = {namespace} if namespace and where else set(where)
                    grpc[listener.name] = dict.fromkeys(targets, listener)
            out.place(RDS, res.cluster_name(host, port.number), route)
        self._grpc_listeners(out, host, grpc)
        self._endpoints(out, merged)
        return touched

    def _alias_change(self, old: Service | None, new: Service | None) -> set[int]:
        """Keep the alias index; the ports of a target whose aliases changed."""
        targets = set()
        if old is not None and old.resolution is Resolution.ALIAS:
            self._aliases.get(old.alias_for, set()).discard(old.hostname)
            targets.add(old.alias_for)
        if new is not None and new.resolution is Resolution.ALIAS:
            self._aliases.setdefault(new.alias_for, set()).add(new.hostname)
            targets.add(new.alias_for)
        ports: set[int] = set()
        for target in targets:
            if not self._aliases.get(target):
                self._aliases.pop(target, None)
            found = self._services.get(target)
            if found is not None:
                ports |= {p.number for p in found.ports}
        return ports

    def _track_pods(self, merged: MergedService) -> bool:
        """Remember the endpoints of a passthrough service without addresses (its
        listeners are per endpoint IP); True when its listeners must be rebuilt."""
        service = merged.service
        if service.resolution is not Resolution.NONE or service.addresses:
            return self._pods.pop(service.hostname, None) is not None
        endpoints = tuple(merged.endpoints)
        changed = self._pods.get(service.hostname) != endpoints
        self._pods[service.hostname] = endpoints
        return changed

    def _grpc_listeners(self, out: _Writer, host: str, wanted: Mapping[str, Any]) -> None:
        for name in self._grpc_names.get(host, frozenset()) - wanted.keys():
            out.place(LDS_GRPC, name, {})
        for name, by_scope in wanted.items():
            out.place(LDS_GRPC, name, by_scope)
        if wanted:
            self._grpc_names[host] = frozenset(wanted)
        else:
            self._grpc_names.pop(host, None)

    def _endpoints(self, out: _Writer, merged: MergedService) -> None:
        """Clusters (DNS kinds carry endpoints) and ClusterLoadAssignments."""
        service = merged.service
        scopes = _scopes(service)
        for port in service.ports:
            name = res.cluster_name(service.hostname, port.number)
            endpoints = res.port_endpoints(port, merged.endpoints)
            envoy = build_cluster(service, port, endpoints, self.options)
            out.place(CDS, name, dict.fromkeys(scopes, envoy) if envoy else {})
            grpc = grpcgen.build_cluster(service, port, endpoints, self.options)
            out.place(CDS_GRPC, name, dict.fromkeys(scopes, grpc) if grpc else {})
            if envoy is not None and service.resolution is Resolution.STATIC:
                out.put(EDS, name, build_cla(name, endpoints, self.options))
            else:
                out.put(EDS, name, None)

    # -- one port -------------------------------------------------------------------
    def _port(self, out: _Writer, number: int) -> None:
        """Route ``<number>`` and the sidecar listeners on that port, per scope."""
        services = [self._services[h] for h in self._port_hosts.get(number, ())]
        if not services:
            self._port_hosts.pop(number, None)
        views = port_views(services)
        aliases = {
            s.hostname: [self._services[a] for a in sorted(self._aliases.get(s.hostname, ()))]
            for s in services
            if s.hostname in self._aliases
        }
        out.place(RDS, str(number), _route_views(number, views, services, aliases))
        alias_names = {h: [a.hostname for a in found] for h, found in aliases.items()}
        conflicts: set[Conflict] = set()
        for table, mode in _MODES:
            by_name: dict[str, dict[str, Any]] = {}
            for scope, members in views.items():
                built, lost = build_listeners(number, members, mode, self._pods, alias_names)
                conflicts.update(lost)
                for name, listener in built.items():
                    by_name.setdefault(name, {})[scope] = listener
            for name in self._port_listeners.get((table, number), frozenset()) - by_name.keys():
                out.place(table, name, {})
            for name, by_scope in by_name.items():
                out.place(table, name, by_scope)
            if by_name:
                self._port_listeners[(table, number)] = frozenset(by_name)
            else:
                self._port_listeners.pop((table, number), None)
        found = tuple(sorted(conflicts, key=lambda c: (c.listener, c.hostname)))
        if found and found != self.conflicts.get(number):
            for c in found[:_CONFLICTS_LOGGED]:
                log.warning(
                    "listener %s: %s left out, %s already takes its traffic (conflict)",
                    c.listener,
                    c.hostname,
                    c.winner,
                )
            if len(found) > _CONFLICTS_LOGGED:
                log.warning(
                    "port %d: %d more conflicts on its listeners (services left out)",
                    number,
                    len(found) - _CONFLICTS_LOGGED,
                )
        if found:
            self.conflicts[number] = found
        else:
            self.conflicts.pop(number, None)


def _scopes(service: Service) -> frozenset[str]:
    vis = visibility(service)
    return frozenset({""}) if vis is None else vis


def _route_views(
    number: int,
    views: dict[str, list[Service]],
    services: list[Service],
    aliases: Mapping[str, list[Service]],
) -> dict[str, Any]:
    """Route ``<number>`` per scope: the scopes of :func:`_port_views`, plus every
    namespace of a Kubernetes service (or alias) on the port, whose clients also reach it
    by its bare name (``<name>``), which nobody else may."""
    named = [*services, *(a for found in aliases.values() for a in found)]
    scopes = set(views) | {s.namespace for s in named if res.short_names(s, s.namespace)}
    public = views.get("", [])
    return {
        scope: build_route_config(number, views.get(scope, public), scope, aliases)
        for scope in scopes
        if views.get(scope, public)
    }


def port_views(services: list[Service]) -> dict[str, list[Service]]:
    """Which services each scope sees on one port: ``""`` sees the public ones, each
    namespace a restricted service is exported to sees the public ones plus those."""
    public = [s for s in services if visibility(s) is None]
    views: dict[str, list[Service]] = {"": public} if public else {}
    for service in services:
        for namespace in visibility(service) or ():
            views.setdefault(namespace, list(public)).append(service)
    return views
