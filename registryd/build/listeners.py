"""Outbound listeners for Envoy sidecars, as istiod builds them.

Two kinds of sidecar are served (see :class:`Mode`):

* ``SIDECAR`` — traffic captured by iptables, istiod's default: every outbound listener
  has ``bind_to_port: false`` and is reached through ``virtualOutbound`` on 15001, which
  hands each connection to the listener of its original destination
  (networking/core/listener_builder.go ``buildVirtualOutboundListener``);
* ``LOCAL`` — ``INTERCEPTION_MODE: NONE``: applications call the proxy on 127.0.0.1, so
  every listener binds ``127.0.0.1:<port>`` and there is no capture listener
  (listener.go ``buildSidecarOutboundListeners``, ``proxyNoneMode``).

Per port, the rules of listener.go ``buildSidecarOutboundListener`` and tls.go:

* HTTP services (HTTP, HTTP2, GRPC, GRPC-WEB) share the wildcard listener
  ``0.0.0.0_<port>`` and route ``<port>`` by Host header;
* TCP, TLS and auto-detected ports of a service with an IP address (a VIP) get that
  address's own listener ``<VIP>_<port>``; a CIDR address becomes a destination-range
  match on the wildcard listener; a passthrough service (``resolution: NONE``) with no
  address gets a listener per endpoint IP, as istiod does for headless services;
* TLS and HTTPS ports on the wildcard listener match their hostname by SNI (with the TLS
  inspector), one filter chain per host (tls.go ``buildSidecarOutboundTLSFilterChainOpts``);
* ports with no declared protocol get a TCP chain and an HTTP chain behind the HTTP
  inspector; so do HTTP and TCP services sharing a listener.  The HTTP chain takes route
  ``<hostname>:<port>`` (that service alone, for any Host) when its listener binds an
  address of its own and one auto-detected service is all the HTTP on it, else route
  ``<port>`` (``buildSidecarOutboundHTTPListenerOpts``);
* two chains with the same match conflict: the first service (by hostname) keeps it
  (listener.go ``mergeTCPFilterChains``); :func:`build_listeners` reports the others;
* a listener whose chains all match on something gets a default chain to
  ``PassthroughCluster`` (``buildListenerFromEntry``) — or, for ``LOCAL`` proxies, to
  ``BlackHoleCluster``, since the original destination is the proxy itself there;
* UDP ports and ALIAS services get no listener;
* an HTTP chain whose first service declares GRPC-WEB on the port gets the gRPC-Web
  filter before the router (listener_builder.go ``buildHTTPConnectionManager`` reads the
  protocol of the port it builds the chain for; the services after it share that chain).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.grpc_web.v3 import grpc_web_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.mongo_proxy.v3 import mongo_proxy_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from registryd.build.pieces import ads, pack, router_filter, socket
from registryd.model import AUTO, TLS_PROTOCOLS, Endpoint, Resolution, Service, is_http, is_ip
from registryd.xds.resources import (
    BLACKHOLE_CLUSTER,
    PASSTHROUGH_CLUSTER,
    VIRTUAL_OUTBOUND,
    cluster_name,
    listener_name,
)

__all__ = [
    "VIRTUAL_OUTBOUND_PORT",
    "Conflict",
    "Mode",
    "build_listeners",
    "virtual_outbound_listener",
]

VIRTUAL_OUTBOUND_PORT = 15001  # MeshConfig proxyListenPort
# listener.go plaintextHTTPALPNs, with PILOT_HTTP10 (features.HTTP10) off, its default
_HTTP_ALPNS = ("http/1.1", "h2c")
# listener.go gatewayTransportSocketConnectTimeout: on every outbound filter chain, against
# slow handshakes holding memory
_TRANSPORT_SOCKET_CONNECT_TIMEOUT = duration_pb2.Duration(seconds=15)
# listener_builder.go maxConnectionsToAcceptPerSocketEvent (its feature's default), on
# listeners that bind a port
_ACCEPT_PER_SOCKET_EVENT = wrappers_pb2.UInt32Value(value=1)
_RAW_BUFFER = "raw_buffer"
_NO_TIMEOUT = duration_pb2.Duration(seconds=0)


class Mode(Enum):
    SIDECAR = "0.0.0.0"  # iptables capture: listeners do not bind
    LOCAL = "127.0.0.1"  # INTERCEPTION_MODE NONE: listeners bind loopback

    @property
    def wildcard(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class _Chain:
    """One filter chain: its match, and where it sends traffic (a tcp_proxy cluster, or
    the HTTP connection manager when ``cluster`` is empty)."""

    hostname: str
    cluster: str = ""
    sni: tuple[str, ...] = ()
    cidrs: tuple[str, ...] = ()
    alpn: tuple[str, ...] = ()
    protocol: str = ""  # its first service's port's: MONGO (Mongo filter), GRPC-WEB

    def match_key(self) -> tuple[object, ...]:
        """What istiod's ``filterChainOpts.conflictsWith`` compares (``cidrs`` are
        normalized networks already, see :func:`_binds`)."""
        return (self.alpn, frozenset(self.sni), frozenset(self.cidrs))

    @property
    def matches_all(self) -> bool:
        return not (self.sni or self.cidrs or self.alpn)


@dataclass(frozen=True, slots=True)
class Conflict:
    """A service left out of a listener because an earlier one claimed the same match
    (istiod's ``pilot_conflict_outbound_listener_tcp_over_current_tcp``)."""

    listener: str
    hostname: str
    winner: str


# listener.go isConflictWithWellKnownPort: server-first protocols that share a listener
# with nothing else (an inspector would wait for a first byte that never comes)
_EXCLUSIVE = frozenset({"MONGO", "MYSQL"})
_SNIFFING = "SNIFFING"  # an entry's protocol once HTTP and TCP share it (istiod: Unsupported)


@dataclass(slots=True)
class _Entry:
    bind: str
    protocol: str  # the first service's (HTTP, AUTO, TCP, MYSQL…), or _SNIFFING
    owner: str  # the first service's hostname
    shared: bool = True  # istiod's wildcard, or loopback shared by several services
    chains: list[_Chain] = field(default_factory=list)
    declared_http: bool = False  # a service declares HTTP on the port
    sniffed: list[str] = field(default_factory=list)  # hostnames of auto-detected ports
    keys: dict[tuple[object, ...], str] = field(default_factory=dict)

    @property
    def http(self) -> bool:
        return self.declared_http or bool(self.sniffed)

    def route(self, port: int) -> str:
        """The route of the entry's HTTP chain: ``<hostname>:<port>``, a route of that
        service alone, when its one auto-detected service is all the HTTP there is and
        the listener binds an address of its own (a VIP, a pod, loopback without
        capture); else the port's shared route ``<port>`` (listener.go
        ``buildSidecarOutboundHTTPListenerOpts``: "for sniffed services, we have a
        unique listener and route just for that service")."""
        if len(self.sniffed) == 1 and not self.declared_http and not self.shared:
            return f"{self.sniffed[0]}:{port}"
        return str(port)

    def add(self, chain: _Chain, conflicts: list[Conflict], name: str) -> None:
        key = chain.match_key()
        winner = self.keys.get(key)
        if winner is not None:
            if winner != chain.hostname:
                conflicts.append(Conflict(name, chain.hostname, winner))
            return
        self.keys[key] = chain.hostname
        self.chains.append(chain)


_WILDCARD = "0.0.0.0"  # istiod's actualWildcard: a loopback bind (no capture) is not it


def _cidr(address: str) -> str | None:
    try:
        return str(ipaddress.ip_network(address, strict=False))
    except ValueError:
        return None


def _binds(
    service: Service, endpoints: Sequence[Endpoint], mode: Mode
) -> list[tuple[str, tuple[str, ...]]]:
    """Where a TCP/TLS/auto port of ``service`` listens: ``(bind, destination CIDRs)``."""
    if mode is Mode.LOCAL:
        return [(mode.wildcard, ())]
    vips = [a for a in service.addresses if "/" not in a and is_ip(a)]
    vips = [a for a in vips if not ipaddress.ip_address(a).is_unspecified]
    ranges = tuple(c for a in service.addresses if "/" in a and (c := _cidr(a)) is not None)
    if not service.addresses and service.resolution is Resolution.NONE:
        pods = sorted({e.address for e in endpoints if is_ip(e.address)})
        if pods:
            return [(pod, ()) for pod in pods]
    binds: list[tuple[str, tuple[str, ...]]] = [(vip, ()) for vip in vips]
    if ranges or not binds:
        binds.append((mode.wildcard, ranges))
    return binds


def _in_istiod_order(services: Iterable[Service]) -> list[Service]:
    """The order istiod meets a proxy's services in: those exported to some namespaces
    first, then the public ones (``PushContext.servicesExportedToNamespace``), each oldest
    first, then by hostname (``SortServicesByCreationTime``).  A service whose registry
    gives no creation time counts as new, as istiod stamps a file's configs when it reads
    them."""

    def key(s: Service) -> tuple[bool, float, str]:
        created = s.created if s.created is not None else float("inf")
        return (not s.export_to or "*" in s.export_to, created, s.hostname)

    return sorted(services, key=key)


def _matches_sni(service: Service, shared: bool, cidrs: tuple[str, ...]) -> bool:
    """Whether a TLS chain of ``service`` matches its hostname by SNI (tls.go
    ``buildSidecarOutboundTLSFilterChainOpts``): when it matches destination ranges, when
    the service's address is a range, or when it has none and the listener is shared
    (istiod's wildcard); a VIP of its own (or loopback for one service) needs no SNI."""
    address = service.addresses[0] if service.addresses else _WILDCARD
    return bool(cidrs) or "/" in address or (address == _WILDCARD and shared)


def _verdict(theirs: str, protocol: str) -> str:
    """What a service port of ``protocol`` does to a listener whose protocol is
    ``theirs`` (listener.go ``buildSidecarOutboundListener``'s conflict types):
    ``skip`` it, ``merge`` its chains, merge and ``sniff`` from now on, or ``replace`` the
    listener.  MongoDB and MySQL share a listener with their own protocol only
    (``isConflictWithWellKnownPort``: an inspector waits for a first byte such a server
    never sends).  TCP joins anything (an HTTP listener then sniffs); HTTP joins a TCP
    listener, which then sniffs; a sniffed port replaces an HTTP listener and joins a
    TCP one; a listener that sniffs already takes no more HTTP or sniffed ports (their
    virtual hosts are in route ``<port>`` anyway)."""
    if protocol != theirs and (protocol in _EXCLUSIVE or theirs in _EXCLUSIVE):
        return "skip"
    tcp = not is_http(theirs) and theirs != _SNIFFING
    if is_http(protocol):
        return "sniff" if tcp else "skip"
    if protocol == AUTO:
        return "replace" if is_http(theirs) else "sniff" if tcp else "skip"
    return "sniff" if is_http(theirs) else "merge"


def _plan(
    port: int,
    services: Iterable[Service],
    endpoints: Mapping[str, Sequence[Endpoint]],
    aliases: Mapping[str, Sequence[str]],
    mode: Mode,
) -> tuple[dict[str, _Entry], list[Conflict]]:
    """The listeners' entries by bind address, and the services left out: istiod's
    ``buildSidecarOutboundListener`` for each service in turn.

    A loopback listener (no capture) is its first service's in istiod.  When that would
    leave another service of the port unreachable, registryd builds it as istiod builds
    its wildcard listener for a captured sidecar (TLS hosts by SNI, HTTP and TCP told
    apart by the HTTP inspector, HTTP hosts by route ``<port>``), so that every one
    stays reachable (docs/xds.md: "Where registryd differs from istiod")."""
    members = [
        s
        for s in _in_istiod_order(services)
        if (p := s.port(port)) is not None
        and p.protocol != "UDP"
        and s.resolution is not Resolution.ALIAS
    ]
    entries, conflicts = _plan_once(port, members, endpoints, aliases, mode, False)
    loopback = entries.get(Mode.LOCAL.value)
    if mode is Mode.LOCAL and loopback is not None and _loses(loopback, members, port):
        entries, conflicts = _plan_once(port, members, endpoints, aliases, mode, True)
    return entries, conflicts


def _loses(entry: _Entry, members: list[Service], port: int) -> bool:
    """Whether a service of ``members`` has no way in through listener ``entry``: no
    chain of its own, and no HTTP route that has its virtual host (MongoDB and MySQL
    left out by a protocol of their own are left out either way)."""
    clusters = {c.cluster for c in entry.chains if c.cluster}
    route = entry.route(port) if entry.http else ""
    for service in members:
        p = service.port(port)
        assert p is not None
        if p.protocol != entry.protocol and _EXCLUSIVE & {p.protocol, entry.protocol}:
            continue
        if cluster_name(service.hostname, port) in clusters:
            continue
        if (is_http(p.protocol) or p.protocol == AUTO) and route in (
            str(port),
            f"{service.hostname}:{port}",
        ):
            continue
        return True
    return False


def _plan_once(
    port: int,
    members: list[Service],
    endpoints: Mapping[str, Sequence[Endpoint]],
    aliases: Mapping[str, Sequence[str]],
    mode: Mode,
    shared_loopback: bool,
) -> tuple[dict[str, _Entry], list[Conflict]]:
    entries: dict[str, _Entry] = {}
    conflicts: list[Conflict] = []
    for service in members:
        p = service.port(port)
        assert p is not None
        if is_http(p.protocol):
            binds: list[tuple[str, tuple[str, ...]]] = [(mode.wildcard, ())]
        else:
            binds = _binds(service, endpoints.get(service.hostname, ()), mode)
        for bind, cidrs in binds:
            name = listener_name(bind, port)
            shared = bind == _WILDCARD or shared_loopback
            current = entries.get(bind)
            verdict = "new" if current is None else _verdict(current.protocol, p.protocol)
            if current is not None and verdict == "skip":
                if _EXCLUSIVE & {p.protocol, current.protocol}:  # its traffic goes elsewhere
                    conflicts.append(Conflict(name, service.hostname, current.owner))
                continue
            if current is None or verdict == "replace":
                # an HTTP port on istiod's wildcard sniffs from the start (ALPN chain)
                sniffs = p.protocol == AUTO or (is_http(p.protocol) and shared)
                protocol = _SNIFFING if sniffs else p.protocol
                current = entries[bind] = _Entry(bind, protocol, service.hostname, shared)
            elif verdict == "sniff":
                current.protocol = _SNIFFING
            if not is_http(p.protocol):
                sni: tuple[str, ...] = ()
                if p.protocol in TLS_PROTOCOLS and _matches_sni(service, shared, cidrs):
                    sni = (service.hostname, *aliases.get(service.hostname, ()))
                cluster = cluster_name(service.hostname, port)
                chain = _Chain(service.hostname, cluster, sni, cidrs, protocol=p.protocol)
                current.add(chain, conflicts, name)
            if is_http(p.protocol) or p.protocol == AUTO:
                # the HTTP chain: behind the HTTP inspector (ALPN) for a sniffed port and on
                # istiod's wildcard; a plain chain on a listener of its own
                sniffed = p.protocol == AUTO or shared
                alpn = _HTTP_ALPNS if sniffed else ()
                http = _Chain(service.hostname, "", (), (), alpn, protocol=p.protocol)
                current.add(http, conflicts, name)
                if p.protocol == AUTO:
                    current.sniffed.append(service.hostname)
                else:
                    current.declared_http = True
    return entries, conflicts


def _tcp_proxy(stat_prefix: str, cluster: str) -> listener_components_pb2.Filter:
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, cluster=cluster)
    return listener_components_pb2.Filter(
        name="envoy.filters.network.tcp_proxy", typed_config=pack(proxy)
    )


def _http_manager(name: str, route: str, protocol: str = "") -> listener_components_pb2.Filter:
    """The outbound HTTP connection manager with istiod's defaults
    (listener_builder.go ``buildHTTPConnectionManager``; connection_settings.go for the
    mesh's connection settings as istiod's own defaults leave them): paths normalized,
    escaped slashes kept, ``100-continue`` proxied, no stream idle timeout, WebSocket
    upgrades, the client address not taken for the remote one; for a GRPC-WEB
    ``protocol``, the gRPC-Web filter before the router."""
    filters = [router_filter()]
    if protocol == "GRPC-WEB":
        grpc_web = pack(grpc_web_pb2.GrpcWeb())
        filters.insert(
            0, hcm_pb2.HttpFilter(name="envoy.filters.http.grpc_web", typed_config=grpc_web)
        )
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"outbound_{name}",
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=route),
        http_filters=filters,
        normalize_path=wrappers_pb2.BoolValue(value=True),
        path_with_escaped_slashes_action=hcm_pb2.HttpConnectionManager.KEEP_UNCHANGED,
        proxy_100_continue=True,
        stream_idle_timeout=duration_pb2.Duration(),
        upgrade_configs=[hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
        use_remote_address=wrappers_pb2.BoolValue(value=False),
    )
    return listener_components_pb2.Filter(
        name="envoy.filters.network.http_connection_manager", typed_config=pack(manager)
    )


def _filter_chain(chain: _Chain, name: str, route: str) -> listener_components_pb2.FilterChain:
    """One filter chain of listener ``name``; an HTTP one takes route ``route``."""
    out = listener_components_pb2.FilterChain(
        transport_socket_connect_timeout=_TRANSPORT_SOCKET_CONNECT_TIMEOUT
    )
    if chain.cluster:
        if chain.protocol == "MONGO":  # networkfilter.go buildNetworkFiltersStack
            mongo = mongo_proxy_pb2.MongoProxy(stat_prefix=chain.cluster)
            out.filters.add(name="envoy.filters.network.mongo_proxy", typed_config=pack(mongo))
        out.filters.append(_tcp_proxy(chain.cluster, chain.cluster))
    else:
        out.filters.append(_http_manager(name, route, chain.protocol))
    if not chain.matches_all:
        match = out.filter_chain_match
        match.server_names.extend(sorted(chain.sni))
        match.application_protocols.extend(chain.alpn)
        if chain.alpn:
            match.transport_protocol = _RAW_BUFFER
        for cidr in sorted(chain.cidrs):
            network = ipaddress.ip_network(cidr, strict=False)
            match.prefix_ranges.add(
                address_prefix=str(network.network_address),
                prefix_len=wrappers_pb2.UInt32Value(value=network.prefixlen),
            )
    return out


def _listener(entry: _Entry, port: int, mode: Mode) -> listener_pb2.Listener:
    name = listener_name(entry.bind, port)
    chains = entry.chains
    listener = listener_pb2.Listener(
        name=name,
        address=socket(entry.bind, port),
        traffic_direction=base_pb2.OUTBOUND,
        continue_on_listener_filters_timeout=True,
    )
    if mode is Mode.SIDECAR:
        listener.bind_to_port.value = False
    if any(c.sni for c in chains):
        # xds/filters/filters.go TLSInspector: a 512-byte first read (Envoy's default is
        # 64 KiB), enough for a ClientHello's SNI
        inspector = tls_inspector_pb2.TlsInspector(
            initial_read_buffer_size=wrappers_pb2.UInt32Value(value=512)
        )
        listener.listener_filters.add(
            name="envoy.filters.listener.tls_inspector", typed_config=pack(inspector)
        )
    if any(c.alpn for c in chains):
        listener.listener_filters.add(
            name="envoy.filters.listener.http_inspector",
            typed_config=pack(http_inspector_pb2.HttpInspector()),
        )
    listener.listener_filters_timeout.CopyFrom(_NO_TIMEOUT)
    catch_all = [c for c in chains if c.matches_all]
    route = entry.route(port)
    for chain in chains:
        if not chain.matches_all:
            listener.filter_chains.append(_filter_chain(chain, name, route))
    if catch_all and not listener.filter_chains:
        listener.filter_chains.append(_filter_chain(catch_all[0], name, route))
    elif catch_all:
        listener.default_filter_chain.CopyFrom(_filter_chain(catch_all[0], name, route))
    else:
        fallback = PASSTHROUGH_CLUSTER if mode is Mode.SIDECAR else BLACKHOLE_CLUSTER
        listener.default_filter_chain.CopyFrom(
            listener_components_pb2.FilterChain(
                name="PassthroughFilterChain",
                filter_chain_match=listener_components_pb2.FilterChainMatch(),
                filters=[_tcp_proxy(fallback, fallback)],
            )
        )
    if mode is not Mode.SIDECAR:  # it binds its port
        listener.max_connections_to_accept_per_socket_event.CopyFrom(_ACCEPT_PER_SOCKET_EVENT)
    return listener


def build_listeners(
    port: int,
    services: Iterable[Service],
    mode: Mode,
    endpoints: Mapping[str, Sequence[Endpoint]] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict[str, listener_pb2.Listener], list[Conflict]]:
    """Every outbound listener on ``port`` for ``services``, by name, and the services
    left out by a conflict.  ``endpoints`` (by hostname) matter only for passthrough
    services without an address; ``aliases`` maps a hostname to the names that alias it
    (they are SNI names of its TLS chain too)."""
    entries, conflicts = _plan(port, services, endpoints or {}, aliases or {}, mode)
    built = {listener_name(bind, port): _listener(e, port, mode) for bind, e in entries.items()}
    return built, conflicts


def virtual_outbound_listener() -> listener_pb2.Listener:
    """``virtualOutbound`` on 0.0.0.0:15001: where iptables sends outbound connections; it
    hands each to the listener of its original destination, and sends the rest to
    ``PassthroughCluster`` (and its own port to ``BlackHoleCluster``, against loops)."""
    loop_guard = listener_components_pb2.FilterChain(
        name="virtualOutbound-blackhole",  # model.VirtualOutboundBlackholeFilterChainName
        filter_chain_match=listener_components_pb2.FilterChainMatch(
            destination_port=wrappers_pb2.UInt32Value(value=VIRTUAL_OUTBOUND_PORT)
        ),
        filters=[_tcp_proxy(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER)],
    )
    catch_all = listener_components_pb2.FilterChain(
        name="virtualOutbound-catchall-tcp",
        filters=[_tcp_proxy(PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER)],
    )
    return listener_pb2.Listener(
        name=VIRTUAL_OUTBOUND,
        address=socket("0.0.0.0", VIRTUAL_OUTBOUND_PORT),
        use_original_dst=wrappers_pb2.BoolValue(value=True),
        traffic_direction=base_pb2.OUTBOUND,
        filter_chains=[loop_guard, catch_all],
        max_connections_to_accept_per_socket_event=_ACCEPT_PER_SOCKET_EVENT,
    )
