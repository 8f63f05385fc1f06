"""Per-connection Delta (incremental) ADS state: ``DeltaAggregatedResources``.

The protocol logic of Delta xDS and no I/O, the counterpart of :mod:`registryd.xds.stream`
for state-of-the-world: :meth:`DeltaConnection.on_request` digests a
DeltaDiscoveryRequest, :meth:`DeltaConnection.plan` decides what to send for a snapshot.
Identity (node id, namespace, ``GENERATOR=grpc``, ``INTERCEPTION_MODE=NONE``), the tables
a connection reads and the CDS, EDS, LDS, RDS order are those of state-of-the-world: a
Delta stream is served the same resources, from the same serialized bodies.

Rules implemented here (istiod: pilot/pkg/xds/delta.go; Envoy's xDS protocol):

* Each type keeps what the client holds, by name: the resource last sent (or declared in
  ``initial_resource_versions`` at the version the server has now), or "told it does not
  exist".  A response carries only resources whose content differs from what the client
  holds, each as ``Resource{name, version, resource}``; ``version`` is
  ``<prefix>-<n>``, the snapshot version in which the resource last changed (with
  ``@<namespace>`` for a namespace's own variant of it).
* Subscriptions: ``resource_names_subscribe`` adds names (a name the client subscribes to
  again is sent again: Envoy re-subscribes when it rebuilds a cluster or listener and
  waits for the resource), ``resource_names_unsubscribe`` drops them silently.  ``"*"``
  subscribes to every resource of the type, and so does a first CDS or LDS request that
  names nothing, unless it unsubscribes ``"*"`` (Envoy's legacy wildcard).  A name
  unsubscribed while the wildcard still covers it is sent again.
* ``removed_resources``: a resource the client holds through the wildcard or a
  subscription that no longer exists; a subscribed Cluster or Listener that does not exist
  (so the client stops waiting for it).  An unknown EDS or RDS name gets an empty
  ClusterLoadAssignment or RouteConfiguration instead, as in state-of-the-world.
* Nonces: every response has a new one; a request naming one of the recent nonces of its
  type ACKs (or with ``error_detail`` NACKs) that response and the ones before it.  Any
  other nonce is stale (``expired_nonces``), but its subscription changes still apply:
  they are increments, losing one would lose a resource.  A NACKed resource counts as
  held: it is not re-sent until its content changes.
* The first request of each type on a stream is always answered, with an empty response
  if the client already holds everything (its initial fetch must end).
* A Cluster sent also sends the ClusterLoadAssignment of the same name if the client
  subscribed to it, even unchanged: Envoy warms a changed cluster until its endpoints
  arrive (istiod: delta.go ``forceEDSPush``).

Memory contract, as for state-of-the-world: a response that carries a name the snapshot
does not have (the empty resource of an unknown EDS/RDS name, a removal of a name the
client made up or declared in ``initial_resource_versions``) is built for its stream only
and never put in the snapshot's response cache; unknown names are held by the stream's
own state, which goes with the stream.  How many names (and bytes of them) a stream may
subscribe to is the server's limit (:mod:`registryd.xds.server`), which counts the
names pending in ``forced`` and ``initial`` as well as the subscribed ones.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from envoy.service.discovery.v3 import discovery_pb2

from registryd.base.logs import clip
from registryd.xds import resources as res
from registryd.xds.snapshot import EDS, LDS_GRPC, LDS_SIDECAR, RDS, Resource, Snapshot, encode_field
from registryd.xds.stream import (
    ACK,
    EXPIRED,
    IGNORED,
    NACK,
    NACK_KEPT,
    REQUEST,
    Connection,
    Digest,
    Planned,
    TypeState,
    _empty,
)

__all__ = ["DeltaConnection", "DeltaPlanned", "DeltaTypeState", "resource_version"]

_WILDCARD_TYPES = frozenset({res.CLUSTER_TYPE, res.LISTENER_TYPE})
_EMPTY_FOR_UNKNOWN = {res.ENDPOINT_TYPE: EDS, res.ROUTE_TYPE: RDS}
NONCES_KEPT = 16  # recent nonces per type an ACK may name
# held markers: a version of the name the server cannot match (initial_resource_versions),
# and nothing known of the name at all
_STALE = Resource("", -1, b"", b"")
_MISSING = Resource("", -2, b"", b"")
_NO_RESOURCES: Mapping[str, Resource] = MappingProxyType({})


def resource_version(prefix: str, resource: Resource, table: str) -> str:
    """A resource's version on Delta streams: the snapshot version in which it last
    changed, and the namespace whose overlay ``table`` it comes from, if any."""
    _, _, scope = table.partition("@")
    return f"{prefix}-{resource.version}@{scope}" if scope else f"{prefix}-{resource.version}"


@dataclass(slots=True)
class DeltaTypeState(TypeState):
    """:class:`TypeState` plus what a Delta client holds.  ``names`` are the names
    subscribed explicitly, ``wildcard`` whether ``"*"`` is subscribed."""

    held: dict[str, Resource | None] = field(default_factory=dict)  # None: told it is absent
    initial: dict[str, str] = field(default_factory=dict)  # initial_resource_versions
    nonces: OrderedDict[str, str] = field(default_factory=OrderedDict)  # nonce -> version
    answer_owed: bool = False  # the first request is answered even with nothing new
    removed_sent: tuple[str, ...] = ()
    # kept up as ``names`` change, so the server's limits cost O(change), not O(names):
    name_chars: int = 0  # characters of ``names`` in all
    longest: int = 0  # characters of the longest name ever in ``names``

    def resize(self, grown: Iterable[str], gone: Iterable[str] = ()) -> None:
        """``grown`` were added to ``names``, ``gone`` removed from them."""
        sizes = list(map(len, grown))
        self.name_chars += sum(sizes) - sum(map(len, gone))
        self.longest = max(self.longest, max(sizes, default=0))


@dataclass(frozen=True, slots=True)
class DeltaPlanned(Planned):
    """A planned DeltaDiscoveryResponse; ``names`` are the resources it carries."""

    removed: tuple[str, ...] = ()


class DeltaConnection(Connection):
    """One ``DeltaAggregatedResources`` stream."""

    delta = True

    # -- requests ----------------------------------------------------------------
    def on_raw(self, raw: bytes) -> tuple[Digest, discovery_pb2.DeltaDiscoveryRequest]:  # type: ignore[override]
        """:meth:`on_request` for a serialized request (decoded whole: a Delta ACK carries
        no names to recognise), and the request."""
        request = discovery_pb2.DeltaDiscoveryRequest.FromString(raw)
        return self.on_request(request), request

    def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> Digest:  # type: ignore[override]
        """Digest one request: what it was and whether the writer should plan again."""
        state = self._state_of(request, DeltaTypeState)
        if state is None:
            return Digest(False, IGNORED, None)
        kind = REQUEST
        if request.response_nonce and state.requested:
            kind = self._answer(state, request)
        return Digest(self._apply_subscription(state, request), kind, state)

    def _answer(self, state: DeltaTypeState, request: discovery_pb2.DeltaDiscoveryRequest) -> str:
        """Record the ACK or NACK of a response; ``expired`` for a nonce not recent."""
        version = state.nonces.get(request.response_nonce)
        if version is None:
            state.expired_nonces += 1
            return EXPIRED
        while state.nonces:  # this response answers the ones sent before it too
            if state.nonces.popitem(last=False)[0] == request.response_nonce:
                break
        if request.HasField("error_detail"):
            state.nacks += 1
            state.last_nack = clip(request.error_detail.message or "rejected", NACK_KEPT)
            state.nack_version = version
            state.nacked_at = time.monotonic()
            return NACK
        state.acks += 1
        state.acked_version = version
        state.acked_at = time.monotonic()
        return ACK

    def _apply_subscription(
        self, state: DeltaTypeState, request: discovery_pb2.DeltaDiscoveryRequest
    ) -> bool:
        added = set(request.resource_names_subscribe)
        dropped = set(request.resource_names_unsubscribe)
        if not state.requested:
            state.requested = state.answer_owed = state.force_all = True
            # Envoy's legacy wildcard: a first CDS/LDS request naming nothing means "*"
            # (and, as in state-of-the-world, for config types: wildcard only)
            legacy = not added and (
                state.type_url in _WILDCARD_TYPES or res.is_config_type(state.type_url)
            )
            state.wildcard = ("*" in added or legacy) and "*" not in dropped
            state.names = frozenset(added - dropped - {"*"})
            state.resize(state.names)
            state.initial = dict(request.initial_resource_versions)
            self._detect_proxyless(state)
            return True
        if not added and not dropped:
            return False
        if "*" in added or "*" in dropped:
            state.wildcard = "*" in added and "*" not in dropped
            state.force_all = True
        added.discard("*")
        dropped.discard("*")
        old = state.names
        state.names = (old | added) - dropped
        state.resize((n for n in added if n not in old and n not in dropped), old & dropped)
        for name in added | dropped:
            state.held.pop(name, None)  # sent again, or dropped by the client
        state.forced |= added | dropped
        self._detect_proxyless(state)
        return True

    def _detect_proxyless(self, state: DeltaTypeState) -> None:
        """As state-of-the-world: ``host:port`` listener names mean a gRPC client."""
        if (
            self.lds_table == LDS_SIDECAR
            and state.type_url == res.LISTENER_TYPE
            and any(":" in n for n in state.names)
        ):
            self.lds_table = LDS_GRPC

    # -- responses ---------------------------------------------------------------
    def plan(self, snapshot: Snapshot) -> list[Planned]:
        """Responses to send now, in CDS, EDS, LDS, RDS order; state is updated as if
        they were sent."""
        out: list[Planned] = []
        clusters_sent: tuple[str, ...] = ()
        for type_url in self.plan_order(snapshot):
            state = self.states.get(type_url)
            if not isinstance(state, DeltaTypeState) or not state.requested:
                continue
            if type_url == res.ENDPOINT_TYPE and clusters_sent:
                rewarm = state.names.intersection(clusters_sent)
                for name in rewarm:
                    state.held.pop(name, None)
                state.forced |= rewarm
            planned = self._plan_delta(snapshot, state)
            state.synced_version = snapshot.version
            if planned is not None:
                out.append(planned)
                if type_url == res.CLUSTER_TYPE:
                    clusters_sent = planned.names
        return out

    def _lookup(
        self, snapshot: Snapshot, tables: tuple[str, ...], name: str
    ) -> tuple[Resource, str] | None:
        """The resource named ``name`` this connection sees, and its table."""
        return _find(_overlays(snapshot, tables), name)

    def version_of(self, snapshot: Snapshot, type_url: str, name: str) -> str:
        """The version ``name`` of ``type_url`` is sent with from ``snapshot`` ("" if this
        connection sees no such resource)."""
        found = self._lookup(snapshot, self.tables(type_url), name)
        return resource_version(self._prefix, *found) if found is not None else ""

    def _candidates(
        self, snapshot: Snapshot, tables: tuple[str, ...], state: DeltaTypeState
    ) -> Iterable[str]:
        changed = None if state.force_all else self._changed(snapshot, tables, state.synced_version)
        if changed is None:
            found = set(state.names) | state.held.keys() | state.forced | state.initial.keys()
            if state.wildcard:
                found |= self.visible(snapshot, state.type_url).keys()
            return sorted(found)
        if state.wildcard:
            return sorted(changed | state.forced)
        # only what it holds or asked for (changed is usually small, the subscription not)
        names, held = state.names, state.held
        return sorted({n for n in changed if n in names or n in held} | state.forced)

    def _plan_delta(self, snapshot: Snapshot, state: DeltaTypeState) -> DeltaPlanned | None:
        tables = self.tables(state.type_url)
        if state.initial:
            self._take_initial(snapshot, tables, state)
        candidates = self._candidates(snapshot, tables, state)
        state.force_all = False
        state.forced.clear()
        sent: list[tuple[str, Resource, str]] = []
        removed: list[str] = []
        invented = False  # a name the snapshot lacks, chosen by the client, is in the answer
        empty_table = _EMPTY_FOR_UNKNOWN.get(state.type_url)
        overlays = _overlays(snapshot, tables)  # once: the loop runs per name
        for name in candidates:
            explicit = name in state.names
            found = _find(overlays, name)
            if found is None and explicit and empty_table is not None:
                found = (_empty(empty_table, name), empty_table)
                invented = True
            held = state.held.get(name, _MISSING)
            if found is None:
                if explicit:
                    if held is not None:  # tell the client once that it does not exist
                        removed.append(name)
                        state.held[name] = None
                        invented = True
                elif state.wildcard and held is not None and held is not _MISSING:
                    removed.append(name)  # held through the wildcard, now gone
                    invented |= held is _STALE  # declared by the client, maybe never ours
                    del state.held[name]
                else:
                    state.held.pop(name, None)
                continue
            if not explicit and not state.wildcard:
                state.held.pop(name, None)  # not subscribed: the client dropped it
                continue
            resource, table = found
            if held is resource or (
                held is not None and held.version >= 0 and held.body == resource.body
            ):
                continue
            state.held[name] = resource
            sent.append((name, resource, table))
        if not sent and not removed and not state.answer_owed:
            return None
        state.answer_owed = False
        return self._respond(snapshot, tables, state, sent, removed, shared=not invented)

    def _take_initial(
        self, snapshot: Snapshot, tables: tuple[str, ...], state: DeltaTypeState
    ) -> None:
        """What a reconnecting client holds: the resources whose version it names are
        current count as held; any other name is held at a version to replace."""
        for name, version in state.initial.items():
            found = self._lookup(snapshot, tables, name)
            if found is not None and resource_version(self._prefix, *found) == version:
                state.held[name] = found[0]
            else:
                state.held[name] = _STALE
        state.initial = {}

    def _respond(
        self,
        snapshot: Snapshot,
        tables: tuple[str, ...],
        state: DeltaTypeState,
        sent: list[tuple[str, Resource, str]],
        removed: list[str],
        *,
        shared: bool,
    ) -> DeltaPlanned:
        """The response, from the snapshot's cache if another stream needed the same
        one; ``shared``: it names only the snapshot's resources, so it may be cached."""
        if not shared:
            return self._sent(
                snapshot, state, self._encode(snapshot, state, sent, removed), removed
            )
        key = ("delta", state.type_url, tables, tuple(n for n, _, _ in sent), tuple(removed))
        cached = snapshot.cache.get(key)
        if cached is None:
            cached = self._encode(snapshot, state, sent, removed)
            snapshot.cache.put(key, cached)
        return self._sent(snapshot, state, cached, removed)

    def _sent(
        self,
        snapshot: Snapshot,
        state: DeltaTypeState,
        cached: tuple[bytes, str, tuple[str, ...]],
        removed: list[str],
    ) -> DeltaPlanned:
        """Record ``cached`` as the response sent for ``state``."""
        payload, nonce, names = cached
        state.nonce = nonce
        state.version_sent = f"{self._prefix}-{snapshot.version}"
        state.nonces[nonce] = state.version_sent
        while len(state.nonces) > NONCES_KEPT:
            state.nonces.popitem(last=False)
        state.sent_at = time.monotonic()
        state.sent_names = names
        state.removed_sent = tuple(removed)
        return DeltaPlanned(
            state.type_url, payload, state.version_sent, nonce, names, tuple(removed)
        )

    def _encode(
        self,
        snapshot: Snapshot,
        state: DeltaTypeState,
        sent: list[tuple[str, Resource, str]],
        removed: list[str],
    ) -> tuple[bytes, str, tuple[str, ...]]:
        """A DeltaDiscoveryResponse spliced from the resources' serialized bodies."""
        body = encode_field(1, f"{self._prefix}-{snapshot.version}".encode())
        body += b"".join(
            encode_field(
                2,
                encode_field(3, name.encode())
                + encode_field(1, resource_version(self._prefix, resource, table).encode())
                + resource.entry,
            )
            for name, resource, table in sent
        )
        body += encode_field(4, state.type_url.encode())
        nonce = f"{snapshot.version}-{snapshot.cache.next_nonce()}"
        body += encode_field(5, nonce.encode())
        body += b"".join(encode_field(6, name.encode()) for name in removed)
        return body, nonce, tuple(name for name, _, _ in sent)


_Overlays = list[tuple[Mapping[str, Resource], str]]


def _overlays(snapshot: Snapshot, tables: tuple[str, ...]) -> _Overlays:
    """The resources of each of ``tables`` in ``snapshot`` with its name, in the order
    they are consulted (the namespace overlay, last in ``tables``, wins)."""
    return [(snapshot.tables.get(t, _NO_RESOURCES), t) for t in reversed(tables)]


def _find(overlays: _Overlays, name: str) -> tuple[Resource, str] | None:
    """The resource named ``name`` in the first of ``overlays`` that has it, and its table."""
    for resources, table in overlays:
        found = resources.get(name)
        if found is not None:
            return found, table
    return None
