"""Per-connection ADS state: subscriptions, what was sent, ACKs and NACKs.

This module holds the protocol logic of state-of-the-world ADS and no I/O:
:meth:`Connection.on_request` digests a DiscoveryRequest, :meth:`Connection.plan`
decides what to send next for a snapshot.  The server does the reading and writing.

Rules implemented here:

* CDS and LDS are full-state types: every response carries every subscribed resource
  (all of them for a wildcard subscription, an empty name list or ``"*"``), and is sent
  when any of them changed.  EDS and RDS responses carry only the resources that changed
  or were newly subscribed; an unknown EDS/RDS name gets an empty resource so the client
  never waits for it.
* A request whose ``response_nonce`` matches the last response of its type is an ACK,
  or a NACK when it has ``error_detail``.  A NACKed version is not re-sent: the
  connection counts it as delivered until the content changes again.  Requests with an
  older nonce are stale and ignored (counted in ``expired_nonces``).
* The first request of each type on a stream is always answered, whatever version or
  nonce it claims (a reconnecting Envoy sends what it had from another server).
* Types are planned in the order CDS, EDS, LDS, RDS so Envoy never warms a cluster
  without its endpoints or a listener without its route.
* Istio config types (``networking.istio.io/v1/ServiceEntry``…, what an istiod asks a
  ``configSources`` server for; :func:`registryd.xds.resources.is_config_type`) are
  full-state types like CDS, always wildcard, planned after the Envoy types in the order
  first asked, each answered with the type URL it was asked by (an older istiod asks
  ``v1alpha3``).  ServiceEntries and WorkloadEntries come from the snapshot's MCP
  tables, every other config type is answered empty (an istiod is not ready before it
  had an answer for each).  No config type is answered from a snapshot without MCP
  tables (``Snapshot.mcp``: they are built from the first push after an istiod asked):
  an empty answer would make the istiod delete what it holds.  Whether this stream may
  have them at all, and how many config types it may ask, the server checks
  (:mod:`registryd.xds.limits`).

Memory contract: nothing here keeps what a client invented once its connection is gone.
Names are interned weakly (:class:`Interner`); the empty resource of an unknown name is
built when needed, never cached; a response that names anything the snapshot does not
have is not put in the snapshot's :class:`~registryd.xds.snapshot.ResponseCache` (only
responses made of the snapshot's own resources are shared); the memo of subscription
differences holds its sets weakly.  How much a live stream may hold is the server's
limit (:mod:`registryd.xds.server`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2

from registryd.base.logs import clip
from registryd.xds import interning
from registryd.xds import resources as res
from registryd.xds.interning import NAME_TAG, Interner, names_start
from registryd.xds.snapshot import (
    CDS,
    CDS_GRPC,
    EDS,
    LDS_GRPC,
    LDS_LOCAL,
    LDS_SIDECAR,
    RDS,
    Resource,
    Snapshot,
    config_table,
    encode_field,
    scoped,
)

__all__ = ["ORDER", "Connection", "Digest", "Interner", "Planned", "TypeState", "layered"]


ORDER = (res.CLUSTER_TYPE, res.ENDPOINT_TYPE, res.LISTENER_TYPE, res.ROUTE_TYPE)
_FULL_STATE = frozenset({res.CLUSTER_TYPE, res.LISTENER_TYPE})
_ids = itertools.count(1)


NACK_KEPT = 1024  # characters of a NACK's error message kept per type (and shown)


@dataclass(slots=True)
class TypeState:
    """What one connection asked for and got, for one resource type."""

    type_url: str
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    names_key: bytes | None = None  # interned serialized form of ``names``
    requested: bool = False
    synced_version: int = -1  # snapshot version last planned for this type
    forced: set[str] = field(default_factory=set)  # newly subscribed, send regardless
    force_all: bool = True
    nonce: str = ""
    version_sent: str = ""
    sent_at: float = 0.0
    sent_names: tuple[str, ...] = ()
    acked_version: str = ""
    acked_at: float = 0.0
    last_nack: str = ""
    nack_version: str = ""
    nacked_at: float = 0.0
    nacks: int = 0
    acks: int = 0
    expired_nonces: int = 0


_State = TypeVar("_State", bound="TypeState")
_AnyRequest: TypeAlias = discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest

ACK, NACK, EXPIRED, REQUEST, IGNORED = "ack", "nack", "expired", "request", "ignored"


@dataclass(frozen=True, slots=True)
class Digest:
    """What one request was: an ``ack`` or ``nack`` of the last response of its type, a
    stale one (``expired`` nonce), a new ``request`` (first or changed subscription), or
    ``ignored`` (a type this server does not serve)."""

    replan: bool
    kind: str
    state: TypeState | None


@dataclass(frozen=True, slots=True)
class Planned:
    type_url: str
    payload: bytes
    version: str
    nonce: str
    names: tuple[str, ...]


def full_state(type_url: str) -> bool:
    """Whether every response of ``type_url`` carries every subscribed resource."""
    return type_url in _FULL_STATE or res.is_config_type(type_url)


def _empty(table: str, name: str) -> Resource:
    """An empty ClusterLoadAssignment or RouteConfiguration named ``name``.  Not cached:
    ``name`` is one the snapshot does not have, so the client chose it (and may have
    chosen a million of them)."""
    if table == EDS:
        body = endpoint_pb2.ClusterLoadAssignment(cluster_name=name).SerializeToString()
        return Resource.make(res.ENDPOINT_TYPE, name, 0, body)
    body = route_pb2.RouteConfiguration(name=name).SerializeToString()
    return Resource.make(res.ROUTE_TYPE, name, 0, body)


def layered(snapshot: Snapshot, tables: tuple[str, ...]) -> Mapping[str, Resource]:
    """``tables`` of ``snapshot`` merged by name, later tables winning."""
    present = [snapshot.tables[t] for t in tables if t in snapshot.tables]
    if len(present) == 1:
        return present[0]
    merged: dict[str, Resource] = {}
    for layer in present:
        merged.update(layer)
    return merged


def _namespace_from_id(node_id: str) -> str:
    """Istio ids: ``<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>``."""
    parts = node_id.split("~")
    if len(parts) == 4 and parts[3]:
        return parts[3].split(".", 1)[0]
    if len(parts) >= 3 and "." in parts[2]:
        return parts[2].split(".", 1)[1]
    return ""


def _meta(node: base_pb2.Node, key: str) -> str:
    value = node.metadata.fields.get(key)
    return value.string_value if value is not None else ""


class Connection:
    """One ADS stream."""

    delta = False  # True for DeltaAggregatedResources (registryd.xds.delta)

    def __init__(
        self,
        *,
        peer: str,
        version_prefix: str,
        interner: Interner | None = None,
        id_prefix: str = "conn-",
    ) -> None:
        self.id = f"{id_prefix}{next(_ids)}"  # unique per process; id_prefix: per worker
        self.peer = peer
        self.connected_at = time.time()
        self.connected_mono = time.monotonic()
        self.node: base_pb2.Node | None = None
        self.lds_table = LDS_SIDECAR
        self.namespace = ""
        self.states: dict[str, TypeState] = {}
        self.written_version = 0  # newest snapshot fully written to the stream
        self.config_denied = ""  # why this stream may not have config types ("": it may)
        self._prefix = version_prefix
        self._intern = interner or Interner()

    # -- identity ----------------------------------------------------------------
    @property
    def proxy_id(self) -> str:
        return self.node.id if self.node is not None and self.node.id else self.id

    @property
    def istiod(self) -> bool:
        """Whether the client is an istiod reading config (node metadata ``GENERATOR:
        api``, as ``configcontroller.go`` sets it) rather than a proxy."""
        return self.node is not None and _meta(self.node, "GENERATOR") == "api"

    @property
    def client_kind(self) -> str:
        """``istiod (MCP)``, ``proxyless gRPC`` or ``proxy`` (Envoy)."""
        if self.istiod:
            return "istiod (MCP)"
        return "proxyless gRPC" if self.lds_table == LDS_GRPC else "proxy"

    def config_types(self) -> list[str]:
        """The config types this stream asked for, in the order first asked."""
        return [t for t in self.states if res.is_config_type(t)]

    def plan_order(self, snapshot: Snapshot | None = None) -> list[str]:
        """Every type this stream may be answered for, in the order responses go out:
        CDS, EDS, LDS, RDS, then config types -- with ``snapshot``, those it can answer
        from it: no config type from a snapshot without MCP tables (an empty answer
        would make the istiod delete what it holds; it is answered once one has them)."""
        if snapshot is not None and not snapshot.mcp:
            return list(ORDER)
        return [*ORDER, *self.config_types()]

    def _identify(self, node: base_pb2.Node) -> None:
        self.node = node
        self.namespace = _meta(node, "NAMESPACE") or _namespace_from_id(node.id)
        if _meta(node, "GENERATOR") == "grpc":
            self.lds_table = LDS_GRPC
        elif _meta(node, "INTERCEPTION_MODE").upper() == "NONE":
            self.lds_table = LDS_LOCAL

    # -- requests ----------------------------------------------------------------
    def on_raw(self, raw: bytes) -> tuple[Digest, discovery_pb2.DiscoveryRequest]:
        """:meth:`on_request` for a serialized request, and the request as decoded.

        The common request is an ACK repeating the subscription it acknowledges (an
        Envoy's EDS ACK lists every cluster again).  When the request's bytes hold
        exactly the interned names of one of this stream's subscriptions (see
        :func:`_names_start`), only the few bytes around them are decoded, and the names
        are neither decoded nor compared again; the returned request then has no
        ``resource_names``.  Anything else is decoded whole and digested as usual."""
        start = names_start(raw)
        if start is not None:
            for state in self.states.values():
                key = state.names_key
                if key is None:
                    continue
                end = start + len(key)
                if raw[end : end + 1] == NAME_TAG or raw[start:end] != key:
                    continue
                light = discovery_pb2.DiscoveryRequest.FromString(raw[:start] + raw[end:])
                if light.type_url == state.type_url and not light.resource_names:
                    return self.on_request(light, same_names=True), light
        request = discovery_pb2.DiscoveryRequest.FromString(raw)
        interned = self._intern.known(raw, start, request) if start is not None else None
        return self.on_request(request, interned=interned), request

    def on_request(
        self,
        request: discovery_pb2.DiscoveryRequest,
        *,
        same_names: bool = False,
        interned: tuple[bytes, frozenset[str], bool] | None = None,
    ) -> Digest:
        """Digest one request: what it was and whether the writer should plan again.
        ``same_names``: the request subscribes exactly what its type's state already
        holds (its own ``resource_names`` are then not read); ``interned``: what the
        interner holds for its names, when already known."""
        state = self._state_of(request, TypeState)
        if state is None:
            return Digest(False, IGNORED, None)
        kind = REQUEST
        # The first request of a type on this stream is answered whatever nonce it
        # carries: a nonce from another server is no reason to stay silent (istiod:
        # pkg/xds/server.go ShouldRespond, "INIT/RECONNECT" when previousInfo is nil).
        if request.response_nonce and state.requested:
            if request.response_nonce != state.nonce:
                state.expired_nonces += 1
                return Digest(False, EXPIRED, state)
            if request.HasField("error_detail"):
                kind = NACK
                state.nacks += 1
                state.last_nack = clip(request.error_detail.message or "rejected", NACK_KEPT)
                state.nack_version = state.version_sent
                state.nacked_at = time.monotonic()
            else:
                kind = ACK
                state.acks += 1
                state.acked_version = request.version_info
                state.acked_at = time.monotonic()
        if same_names and state.requested:
            return Digest(False, kind, state)
        return Digest(self._subscribe(state, request, interned), kind, state)

    def _state_of(self, request: _AnyRequest, kind: type[_State]) -> _State | None:
        """The state of the request's type (made on its first request), or None for a
        type this server does not serve; the node is identified from the first request
        that carries it.  Shared by state-of-the-world and Delta streams."""
        if self.node is None and request.HasField("node"):
            self._identify(request.node)
        if request.type_url not in ORDER and not res.is_config_type(request.type_url):
            return None
        state = self.states.get(request.type_url)
        if not isinstance(state, kind):
            state = kind(request.type_url)
            self.states[request.type_url] = state
        return state

    def _subscribe(
        self,
        state: TypeState,
        request: discovery_pb2.DiscoveryRequest,
        interned: tuple[bytes, frozenset[str], bool] | None = None,
    ) -> bool:
        key, subscribed, star = interned or self._intern(request)
        if key is state.names_key:
            return False  # the common ACK: same subscription as before
        state.names_key = key
        wildcard = star or (not subscribed and full_state(state.type_url))
        first = not state.requested
        state.requested = True
        if (
            self.lds_table == LDS_SIDECAR
            and state.type_url == res.LISTENER_TYPE
            and any(":" in n for n in subscribed)
        ):
            self.lds_table = LDS_GRPC  # a proxyless client that sent no GENERATOR
        if first:
            state.wildcard, state.names, state.force_all = wildcard, subscribed, True
            return True
        if wildcard == state.wildcard and subscribed == state.names:
            return False
        added = interning.added(subscribed, state.names)
        state.wildcard, state.names = wildcard, subscribed
        if full_state(state.type_url):
            state.force_all = True  # the answer must list the new set
        else:
            state.forced |= added
        return True

    # -- responses ---------------------------------------------------------------
    def plan(self, snapshot: Snapshot) -> list[Planned]:
        """Responses to send now, in :meth:`plan_order`; state is updated as if they
        were sent."""
        out = []
        for type_url in self.plan_order(snapshot):
            state = self.states.get(type_url)
            if state is None or not state.requested:
                continue
            planned = self._plan_type(snapshot, state)
            state.synced_version = snapshot.version
            if planned is not None:
                out.append(planned)
        return out

    def tables(self, type_url: str) -> tuple[str, ...]:
        """The tables this connection reads for a type: the plain one, then the overlay
        of its namespace (services exported only to some namespaces).  Connections that
        read the same tables see the same resources (:func:`layered`)."""
        if type_url == res.ENDPOINT_TYPE:
            return (EDS,)
        if res.is_config_type(type_url):
            return (config_table(type_url),)  # istiod wants every namespace's
        if type_url == res.CLUSTER_TYPE:
            base = CDS_GRPC if self.lds_table == LDS_GRPC else CDS
        elif type_url == res.ROUTE_TYPE:
            base = RDS
        else:
            base = self.lds_table
        return (base, scoped(base, self.namespace)) if self.namespace else (base,)

    def visible(self, snapshot: Snapshot, type_url: str) -> Mapping[str, Resource]:
        """Every resource of ``type_url`` in ``snapshot`` this connection can see, by
        name (its namespace overlay over the plain table), whatever it subscribed to."""
        return layered(snapshot, self.tables(type_url))

    def _changed(
        self, snapshot: Snapshot, tables: tuple[str, ...], since: int
    ) -> frozenset[str] | None:
        result: frozenset[str] = frozenset()
        for table in tables:
            changed = snapshot.changed_since(table, since)
            if changed is None:
                return None
            result |= changed
        return result

    def _plan_type(self, snapshot: Snapshot, state: TypeState) -> Planned | None:
        tables = self.tables(state.type_url)
        changed = None if state.force_all else self._changed(snapshot, tables, state.synced_version)
        key: tuple[object, ...]
        if full_state(state.type_url):
            if changed is not None:
                relevant = changed if state.wildcard else changed & state.names
                if not relevant:
                    return None
            # a wildcard subscription gets the whole table, named ones what exists;
            # the type URL is part of the key: the response names it (config types
            # share tables across versions and kinds)
            key = (tables, "*" if state.wildcard else state.names, state.type_url)
        else:
            if changed is None:
                wanted = state.names
            else:
                wanted = (changed | state.forced) & state.names
            state.forced.clear()
            if not wanted:
                return None
            key = (tables, wanted)
        state.force_all = False
        state.forced.clear()
        cached = snapshot.cache.get(key)
        if cached is None:
            cached, shared = self._assemble(snapshot, tables, state, key)
            if shared:
                snapshot.cache.put(key, cached)
        payload, nonce, names = cached
        state.nonce = nonce
        state.version_sent = f"{self._prefix}-{snapshot.version}"
        state.sent_at = time.monotonic()
        state.sent_names = names
        return Planned(state.type_url, payload, state.version_sent, nonce, names)

    def _assemble(
        self, snapshot: Snapshot, tables: tuple[str, ...], state: TypeState, key: tuple[object, ...]
    ) -> tuple[tuple[bytes, str, tuple[str, ...]], bool]:
        """The whole response for ``key``, and whether it may be shared via the snapshot
        by every connection that needs it: only if every name in ``key`` is one of the
        snapshot's (a name it lacks is the client's text, kept by nobody but its
        stream).  Its nonce is unique per snapshot and response content, so it is
        unique on every stream (a stream never gets the same content twice in a row from
        one snapshot unless it re-subscribed, and then the repeat is harmless)."""
        resources = layered(snapshot, tables)
        table = tables[0]
        wanted = key[1]
        chosen: list[Resource]
        if wanted == "*":
            chosen = [resources[n] for n in sorted(resources)]
            shared = True
        elif full_state(state.type_url):
            assert isinstance(wanted, frozenset)
            chosen = [resources[n] for n in sorted(wanted) if n in resources]
            shared = len(chosen) == len(wanted)
        else:
            assert isinstance(wanted, frozenset)
            found = [(n, resources.get(n)) for n in sorted(wanted)]
            chosen = [r or _empty(table, n) for n, r in found]
            shared = all(r is not None for _, r in found)
        version = f"{self._prefix}-{snapshot.version}"
        body = encode_field(1, version.encode()) + b"".join(r.entry for r in chosen)
        body += encode_field(4, state.type_url.encode())
        nonce = f"{snapshot.version}-{snapshot.cache.next_nonce()}"
        body += encode_field(5, nonce.encode())
        return (body, nonce, tuple(r.name for r in chosen)), shared
