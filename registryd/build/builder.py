"""From registry views to xDS snapshots: the "build resources" step of a push.

:class:`SnapshotBuilder` turns successive registry views into successive
:class:`~registryd.xds.snapshot.Snapshot` s incrementally: only the hostnames named by a
change are rebuilt, and a rebuilt resource whose bytes did not change keeps its old
version (no push for it).

Why a package of its own (``registryd/build/``), between :mod:`registryd.registry` and
:mod:`registryd.xds`: this is the one stage that knows both sides of the data path, the
registry's merged view (:class:`~registryd.registry.store.View`) and the xDS resources.
The serving side (snapshots, streams, server) never imports the registry or the
builders; the push (:mod:`registryd.daemon.push`) calls the builder and hands the
snapshot on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, MutableMapping
from types import MappingProxyType
from typing import Any, TypeVar

from envoy.config.cluster.v3 import cluster_pb2

from registryd.build import grpcgen, pieces
from registryd.build.clusters import (
    BuildOptions,
    blackhole_cluster,
    build_cla,
    build_cluster,
    passthrough_cluster,
)
from registryd.build.listeners import Conflict, Mode, build_listeners, virtual_outbound_listener
from registryd.build.mcptables import McpTables
from registryd.build.routes import build_route_config, build_service_route_config
from registryd.model import AUTO, Endpoint, Port, Resolution, Service
from registryd.registry.merge import MergedService
from registryd.registry.store import View
from registryd.xds import resources as res
from registryd.xds.resources import BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER, VIRTUAL_OUTBOUND
from registryd.xds.snapshot import (
    CDS,
    CDS_GRPC,
    EDS,
    EMPTY,
    HISTORY,
    LDS_GRPC,
    LDS_LOCAL,
    LDS_SIDECAR,
    RDS,
    TABLE_TYPES,
    Resource,
    Snapshot,
    scoped,
)

__all__ = ["SnapshotBuilder", "port_views", "visibility"]

log = logging.getLogger("registryd.push")

_MODES = ((LDS_SIDECAR, Mode.SIDECAR), (LDS_LOCAL, Mode.LOCAL))
_CONFLICTS_LOGGED = 10  # lines per port and change; the rest are counted in one line
_K = TypeVar("_K")
ByScope = dict[str, Any]  # one resource per scope that sees it


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
        """Set (or with ``None`` remove) one resource, a message or its serialized bytes;
        unchanged bytes keep their version."""
        current = self.writable.get(table)
        if current is None:
            current = self.writable[table] = dict(self.tables.get(table, {}))
            self.tables[table] = current
        if message is None:
            if current.pop(name, None) is not None:
                self.changes.setdefault(table, set()).add(name)
            return
        body = (
            message if isinstance(message, bytes) else message.SerializeToString(deterministic=True)
        )
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

    def place_group(
        self,
        table: str,
        wanted: Mapping[str, Mapping[str, Any]],
        known: MutableMapping[_K, frozenset[str]],
        key: _K,
    ) -> None:
        """Place every resource of ``wanted`` (by name, then scope) in ``table`` and
        remove those of the group ``known[key]`` that ``wanted`` no longer has; the group
        becomes ``wanted``'s names."""
        for name in known.get(key, frozenset()) - wanted.keys():
            self.place(table, name, {})
        for name, by_scope in wanted.items():
            self.place(table, name, by_scope)
        if wanted:
            known[key] = frozenset(wanted)
        else:
            known.pop(key, None)

    def snapshot(self, prev: Snapshot, mcp: bool) -> Snapshot:
        """The snapshot after ``prev`` with what was written (tables frozen, the change
        set appended to the last :data:`HISTORY` ones); ``mcp``: its MCP tables are
        built."""
        frozen_changes = {t: frozenset(n) for t, n in self.changes.items() if n}
        history = (*prev.history, (self.version, frozen_changes))[-HISTORY:]
        tables = {
            t: MappingProxyType(v) if t in self.writable else v for t, v in self.tables.items()
        }
        return Snapshot(self.version, MappingProxyType(tables), history, mcp=mcp)


class SnapshotBuilder:
    """Builds successive snapshots from registry views (not thread-safe; one owner).

    Visibility (``exportTo``): resources of services exported to every namespace live in
    the plain tables (``cds``, ``rds``…); those of restricted services live in per-namespace
    overlay tables (``cds@team-a``…) that a proxy in that namespace reads on top of the
    plain ones.  A listener or route whose port has restricted services gets one version
    per namespace that sees them.  Proxyless gRPC clients read their own cluster table
    (``cds/grpc``) and listener table (``lds/grpc``, short names in the overlay of the
    service's namespace); their routes ``outbound|…`` share ``rds`` with Envoy's ``<port>``.

    What an istiod reads over MCP is built from the view's *exported* merge
    (:attr:`~registryd.registry.store.View.exported`) into the tables
    ``mcp/serviceentry`` and ``mcp/workloadentry`` (:mod:`registryd.build.mcp`,
    :mod:`registryd.build.mcptables`), but only once :meth:`want_mcp` was called (an
    istiod asked): until then nobody reads them and they would cost every push about
    as much as its EDS build.  The first build after it places every exported
    hostname; its snapshot and every later one say so (``Snapshot.mcp``).
    """

    def __init__(
        self,
        options: BuildOptions | None = None,
        clock: Callable[[], float] = time.time,
        *,
        log_conflicts: bool = True,
    ) -> None:
        """``options``: the daemon's (from its Settings); None: the defaults, istiod's.
        ``clock``: wall-clock seconds, for the creation time of MCP configs.
        ``log_conflicts``: log listener conflicts as they appear (off for a builder
        whose snapshots are not served: a preview's)."""
        self.snapshot = EMPTY
        self._log_conflicts = log_conflicts
        self._mcp = McpTables(clock)
        self._mcp_wanted = False  # want_mcp() was called
        self._mcp_built = False  # ... and a build placed every exported hostname since
        self.options = options if options is not None else BuildOptions()
        self.conflicts: dict[int, tuple[Conflict, ...]] = {}  # listener conflicts by port
        self._services: dict[str, Service] = {}
        self._port_hosts: dict[int, set[str]] = {}
        self._placed: dict[tuple[str, str], frozenset[str]] = {}
        self._aliases: dict[str, set[str]] = {}  # target hostname -> alias hostnames
        self._pods: dict[str, tuple[Endpoint, ...]] = {}  # passthrough services' endpoints
        self._grpc_names: dict[str, frozenset[str]] = {}  # hostname -> its gRPC listeners
        # hostname -> its short-name gRPC listeners, in its namespace's table: services of
        # one name in several namespaces each have their own `<name>:<port>`
        self._grpc_short_names: dict[str, frozenset[str]] = {}
        self._port_listeners: dict[tuple[str, int], frozenset[str]] = {}

    def want_mcp(self) -> None:
        """Build the MCP tables from the next build on (see the class)."""
        self._mcp_wanted = True

    @property
    def mcp_pending(self) -> bool:
        """MCP tables are wanted and not built yet: the next build places them."""
        return self._mcp_wanted and not self._mcp_built

    def build(
        self, view: View, hostnames: Iterable[str] | None = None, endpoints_only: bool = False
    ) -> Snapshot:
        """Next snapshot after ``hostnames`` changed (``None``: everything)."""
        prev = self.snapshot
        out = _Writer(prev, self._placed)
        if prev.version == 0:
            _static_resources(out)
        if hostnames is None:
            hostnames, endpoints_only = set(view.services) | set(self._services), False
            self._mcp.forget_built()  # a full rebuild places every config again
        elif not isinstance(hostnames, Collection):
            hostnames = set(hostnames)  # read twice: for Envoy's resources and istiod's
        for number in self._hostnames(out, view, hostnames, endpoints_only):
            self._port(out, number)
        if self._mcp_wanted:
            self._mcp_tables(out, view, hostnames)
        self.snapshot = out.snapshot(prev, self._mcp_built)
        return self.snapshot

    def _mcp_tables(self, out: _Writer, view: View, hostnames: Iterable[str]) -> None:
        """Place the exported configs of ``hostnames`` (of every exported hostname, the
        first time)."""
        if not self._mcp_built:
            self._mcp.forget_built()
            hostnames = view.exported.keys()
        for host in hostnames:
            self._mcp.place(out, host, view.exported.get(host))
        self._mcp_built = True

    def _hostnames(
        self, out: _Writer, view: View, hostnames: Iterable[str], endpoints_only: bool
    ) -> set[int]:
        """Rebuild what belongs to each of ``hostnames``; returns the ports whose
        listeners and routes must be rebuilt after them."""
        ports: set[int] = set()
        for host in hostnames:
            merged = view.services.get(host)
            old = self._services.get(host)
            if endpoints_only and merged is not None and old is not None:
                ports |= self._endpoints_changed(out, merged)
            else:
                ports |= self._service(out, host, old, merged)
        return ports

    # -- one service ----------------------------------------------------------------
    def _endpoints_changed(self, out: _Writer, merged: MergedService) -> set[int]:
        """Only the endpoints of a known service changed: rebuild its clusters and
        ClusterLoadAssignments; returns its ports when its listeners follow its
        endpoints (passthrough without addresses), else none."""
        self._endpoints(out, merged)
        if self._track_pods(merged):
            return {p.number for p in merged.service.ports}
        return set()

    def _service(
        self, out: _Writer, host: str, old: Service | None, merged: MergedService | None
    ) -> set[int]:
        """Rebuild everything of one service; returns the ports whose listeners and
        routes must be rebuilt."""
        service = merged.service if merged is not None else None
        touched = self._alias_change(old, service)
        touched |= self._drop_ports(out, host, old, service)
        if merged is None:
            self._forget(out, host)
            self._alias_targets(out, old, None)
            return touched
        self._services[host] = merged.service
        self._track_pods(merged)
        self._grpc(out, host, merged.service)
        self._endpoints(out, merged)
        self._alias_targets(out, old, merged.service)
        return touched

    def _grpc(self, out: _Writer, host: str, service: Service) -> None:
        public, own = self._routes(out, host, service)
        out.place_group(LDS_GRPC, public, self._grpc_names, host)
        out.place_group(_short_names_table(host), own, self._grpc_short_names, host)

    def _alias_targets(self, out: _Writer, old: Service | None, new: Service | None) -> None:
        """Rebuild the gRPC routes of the services whose aliases ``old`` -> ``new``
        changed: their virtual hosts take the aliases' names (the sidecars' routes
        ``<port>`` are rebuilt with the ports :meth:`_alias_change` returns)."""
        targets = {s.alias_for for s in (old, new) if s is not None and s.alias_for}
        for target in sorted(targets):
            found = self._services.get(target)
            if found is not None:
                self._grpc(out, target, found)

    def _drop_ports(
        self, out: _Writer, host: str, old: Service | None, new: Service | None
    ) -> set[int]:
        """Remove the per-port resources of the ports ``old`` had and ``new`` has not;
        returns the ports of both."""
        old_ports = {p.number for p in old.ports} if old else set()
        new_ports = {p.number for p in new.ports} if new else set()
        for number in old_ports - new_ports:
            name = res.cluster_name(host, number)
            out.place(CDS, name, {})
            out.place(CDS_GRPC, name, {})
            out.place(RDS, name, {})
            out.place(RDS, f"{host}:{number}", {})
            out.put(EDS, name, None)
            self._port_hosts.get(number, set()).discard(host)
        return old_ports | new_ports

    def _forget(self, out: _Writer, host: str) -> None:
        """The service left the registry: drop what is kept of it, and its gRPC
        listeners."""
        self._services.pop(host, None)
        self._pods.pop(host, None)
        out.place_group(LDS_GRPC, {}, self._grpc_names, host)
        out.place_group(_short_names_table(host), {}, self._grpc_short_names, host)

    def _routes(
        self, out: _Writer, host: str, service: Service
    ) -> tuple[dict[str, ByScope], dict[str, ByScope]]:
        """Index the service on each of its ports and place its gRPC routes
        (``outbound|…``); returns the gRPC listeners it wants by name: those of its
        hostname, and those of its short names (see :func:`_grpc_listeners`)."""
        scopes = _scopes(service)
        grpc: dict[str, ByScope] = {}
        short: dict[str, ByScope] = {}
        aliases = self._aliases_of([service]).get(host, [])
        for port in service.ports:
            self._index_port(host, service, port.number)
            route: ByScope = {}
            if grpcgen.serves(service, port):
                # clients of other namespaces get the public route; the service's own
                # namespace, when it has short names there, an overlay with them
                route = dict.fromkeys(scopes, grpcgen.build_route(service, port, "", aliases))
                home = pieces.kube_namespace(service.hostname)  # its clients use <name>
                if home and ("" in scopes or home in scopes):
                    route[home] = grpcgen.build_route(service, port, home, aliases)
                by_host, by_short_name = _grpc_listeners(service, port, scopes)
                grpc.update(by_host)
                short.update(by_short_name)
            out.place(RDS, res.cluster_name(host, port.number), route)
            # a listener of its own sends an auto-detected port's HTTP here (listeners.py)
            own: ByScope = {}
            if port.protocol == AUTO and service.resolution is not Resolution.ALIAS:
                own = dict.fromkeys(scopes, build_service_route_config(service, port.number))
            out.place(RDS, f"{host}:{port.number}", own)
        return grpc, short

    def _index_port(self, host: str, service: Service, number: int) -> None:
        """Count ``host`` among the services of port ``number`` (an alias is not: it
        has no listener of its own, it rides on its target's)."""
        hosts = self._port_hosts.setdefault(number, set())
        if service.resolution is Resolution.ALIAS:
            hosts.discard(host)
        else:
            hosts.add(host)

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

    def _endpoints(self, out: _Writer, merged: MergedService) -> None:
        """Clusters (DNS kinds carry endpoints) and ClusterLoadAssignments."""
        service = merged.service
        scopes = _scopes(service)
        for port in service.ports:
            name = res.cluster_name(service.hostname, port.number)
            endpoints = pieces.port_endpoints(port, merged.endpoints)
            envoy = build_cluster(service, port, endpoints, self.options)
            out.place(CDS, name, dict.fromkeys(scopes, envoy) if envoy else {})
            grpc = grpcgen.build_cluster(service, port, endpoints, self.options)
            out.place(CDS_GRPC, name, dict.fromkeys(scopes, grpc) if grpc else {})
            # an Envoy's EDS cluster, or a gRPC client's (a headless Service's pods)
            static = envoy is not None and service.resolution is Resolution.STATIC
            if static or (grpc is not None and grpcgen.eds(service)):
                out.put(EDS, name, build_cla(name, endpoints, self.options))
            elif grpc is not None and grpc.type == cluster_pb2.Cluster.EDS:
                out.put(EDS, name, build_cla(name, (), self.options))  # gRPC's, empty
            else:
                out.put(EDS, name, None)

    # -- one port -------------------------------------------------------------------
    def _port(self, out: _Writer, number: int) -> None:
        """Route ``<number>`` and the sidecar listeners on that port, per scope."""
        services = [self._services[h] for h in self._port_hosts.get(number, ())]
        if not services:
            self._port_hosts.pop(number, None)
        views = port_views(services)
        aliases = self._aliases_of(services)
        out.place(RDS, str(number), _route_views(number, views, services, aliases))
        alias_names = {h: [a.hostname for a in found] for h, found in aliases.items()}
        conflicts: set[Conflict] = set()
        for table, mode in _MODES:
            conflicts |= self._listeners(out, table, mode, number, views, alias_names)
        self._record_conflicts(number, conflicts)

    def _aliases_of(self, services: list[Service]) -> dict[str, list[Service]]:
        """The aliases of each of ``services`` that has some, sorted by hostname."""
        return {
            s.hostname: [self._services[a] for a in sorted(self._aliases.get(s.hostname, ()))]
            for s in services
            if s.hostname in self._aliases
        }

    def _listeners(
        self,
        out: _Writer,
        table: str,
        mode: Mode,
        number: int,
        views: dict[str, list[Service]],
        alias_names: Mapping[str, list[str]],
    ) -> set[Conflict]:
        """Place the listeners of one mode on port ``number`` in ``table``, per scope;
        returns the conflicts (services left out) found building them."""
        by_name: dict[str, ByScope] = {}
        conflicts: set[Conflict] = set()
        for scope, members in views.items():
            built, lost = build_listeners(number, members, mode, self._pods, alias_names)
            conflicts.update(lost)
            for name, listener in built.items():
                by_name.setdefault(name, {})[scope] = listener
        out.place_group(table, by_name, self._port_listeners, (table, number))
        return conflicts

    def _record_conflicts(self, number: int, conflicts: set[Conflict]) -> None:
        """Keep the listener conflicts of port ``number``; log them when they changed
        (at most :data:`_CONFLICTS_LOGGED` lines, the rest counted)."""
        found = tuple(sorted(conflicts, key=lambda c: (c.listener, c.hostname)))
        if self._log_conflicts and found and found != self.conflicts.get(number):
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


def _static_resources(out: _Writer) -> None:
    """The resources every snapshot has (``STATIC_NAMES``), written into the first."""
    out.place(CDS, PASSTHROUGH_CLUSTER, {"": passthrough_cluster()})
    out.place(CDS, BLACKHOLE_CLUSTER, {"": blackhole_cluster()})
    out.place(LDS_SIDECAR, VIRTUAL_OUTBOUND, {"": virtual_outbound_listener()})


def _grpc_listeners(
    service: Service, port: Port, scopes: frozenset[str]
) -> tuple[dict[str, ByScope], dict[str, ByScope]]:
    """The proxyless gRPC listeners of one port of ``service``: those of its hostname by
    name, each with the scopes that see it; and those of its short names (clients of the
    service's own namespace only, when it is visible there), for the table of that
    namespace (:func:`_short_names_table`, scope ``""``)."""
    public: dict[str, ByScope] = {}
    own: dict[str, ByScope] = {}
    for name, namespace in grpcgen.dial_names(service):
        listener = grpcgen.build_listener(service, port, name)
        if not namespace:
            public[listener.name] = dict.fromkeys(scopes, listener)
        elif "" in scopes or namespace in scopes:
            own[listener.name] = {"": listener}
    return public, own


def _short_names_table(host: str) -> str:
    """The table of ``host``'s short-name gRPC listeners: its namespace's overlay (only
    a Kubernetes-style hostname has short names)."""
    return scoped(LDS_GRPC, pieces.kube_namespace(host))


def _scopes(service: Service) -> frozenset[str]:
    """The scopes (tables) ``service``'s resources go to: ``""`` or its namespaces."""
    vis = visibility(service)
    return frozenset({""}) if vis is None else vis


def _route_views(
    number: int,
    views: dict[str, list[Service]],
    services: list[Service],
    aliases: Mapping[str, list[Service]],
) -> dict[str, Any]:
    """Route ``<number>`` per scope: the scopes of :func:`port_views`, plus every
    namespace of a Kubernetes service (or alias) on the port, whose clients also reach it
    by its bare name (``<name>``), which nobody else may."""
    named = [*services, *(a for found in aliases.values() for a in found)]
    scopes = set(views) | {pieces.kube_namespace(s.hostname) for s in named} - {""}
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
