"""What a client may make an xDS stream hold, and the refusal when it asks for more.

Everything a stream keeps on a client's behalf is bounded by bytes as well as by count:
a resource name longer than :data:`MAX_NAME` bytes is refused with ``INVALID_ARGUMENT``
(no name of ours comes near it), and per type the names a stream holds that the
snapshot does not have (subscribed, wildcard or not, state-of-the-world or Delta, still
waiting for an answer, or declared in Delta's ``initial_resource_versions``) may number
``--xdsMaxUnknownNames`` and total :data:`UNKNOWN_BYTES_PER_NAME` bytes per allowed
name; past either the stream ends with ``RESOURCE_EXHAUSTED``.  Checking is cheap in
the common case: sizes are kept by the Delta state and measured once per interned
state-of-the-world subscription.

Istio config types (MCP, :func:`registryd.xds.resources.is_config_type`) are for an
istiod only: on a stream whose client identity may not have them
(``Connection.config_denied``, set by the server from :func:`config_denial`: a client
certificate whose identity is outside the root namespace, as istiod's own
``apigen.go`` ``authorize``) asking for one ends the stream with
``PERMISSION_DENIED``; a stream may ask :data:`MAX_CONFIG_TYPES` config types (istiod
asks 16), past that ``RESOURCE_EXHAUSTED``.

Pure: the server turns :class:`Refused` into the stream's status.
"""

from __future__ import annotations

import functools
import weakref
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import grpc

from registryd.base.logs import clip
from registryd.xds import resources as res
from registryd.xds.delta import DeltaTypeState
from registryd.xds.snapshot import Snapshot
from registryd.xds.stream import Connection, TypeState

__all__ = [
    "MAX_CONFIG_TYPES",
    "MAX_NAME",
    "MAX_UNKNOWN_NAMES",
    "UNKNOWN_BYTES_PER_NAME",
    "Refused",
    "check_subscription",
    "config_denial",
]

# The longest resource name registryd makes is a cluster (or its endpoints)
# ``outbound|<port>|<subset>|<hostname>``: 9 + 5 (port) + 1 + 63 (subset, a DNS-1123
# label) + 1 + 253 (hostname, the DNS maximum) = 332 bytes; listener and route names are
# shorter (``<hostname>:<port>``, a port number, ``0.0.0.0_<port>``).  1,024 is three
# times that: no name of ours, nor any a client could mean, comes near it.
MAX_NAME = 1024  # bytes (UTF-8); a request naming a longer resource is refused

MAX_UNKNOWN_NAMES = 10000
# Bytes of unknown names allowed per unknown name the limit allows: the byte budget is
# ``max_unknown_names`` x this (2.56 MB at the default).  Real names average well under
# 100 bytes, so a real subscription meets the name limit long before this one; it stops
# a client that names few but long resources (or churns through them).
UNKNOWN_BYTES_PER_NAME = 256
# Config types one stream may ask for: istiod asks MeshConfig and the 15 types of
# collections.Pilot; four times that leaves room for what later releases add.
MAX_CONFIG_TYPES = 64


class Refused(Exception):
    """End the stream with ``code`` and ``details`` (the client broke a limit)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def check_subscription(
    conn: Connection, state: TypeState, snapshot: Snapshot, *, max_names: int, max_bytes: int
) -> None:
    """:class:`Refused` when ``state`` (of ``conn``) names a resource longer than
    :data:`MAX_NAME` bytes, or holds more than ``max_names`` names (or ``max_bytes`` bytes
    of names) that ``snapshot`` does not have for ``conn`` (``max_names`` 0: no limit
    on either), or asks for a config type it may not have (see the module)."""
    if res.is_config_type(state.type_url):
        _check_config(conn, state)
    held = _held_names(state)
    sizes = _sizes_of(state, held)
    too_long = _too_long(held) if max(s.longest for s in sizes) * 4 > MAX_NAME else None
    if too_long is not None:  # (4 bytes per character at most: only then look)
        raise Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{res.short_type(state.type_url)} resource name of {len(too_long.encode())} "
            f"bytes (limit {MAX_NAME}): {clip(too_long, 64)}",
        )
    limit, budget = max_names, max_bytes
    if not limit:
        return
    count = sum(len(names) for names in held)
    if count <= limit and sum(s.chars for s in sizes) <= budget:
        return  # the common case, without a lookup per name
    known = conn.visible(snapshot, state.type_url)
    unknown = {n for names in held for n in names if n not in known}
    size = sum(map(len, unknown))
    if len(unknown) > limit or size > budget:
        raise Refused(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"{len(unknown)} {res.short_type(state.type_url)} resource names unknown to "
            f"this server, {size} bytes (limit {limit} names, {budget} bytes: "
            f"--xdsMaxUnknownNames)",
        )


def config_denial(auth: Mapping[str, Sequence[bytes]], root_namespace: str) -> str:
    """Why a stream whose gRPC ``auth_context()`` is ``auth`` may not have config types
    ("": it may).  A client with a certificate (mutual TLS) may only if its SPIFFE
    identity (``spiffe://<trust domain>/ns/<namespace>/sa/<account>``) is in
    ``root_namespace``, as istiod's ``apigen.go`` ``authorize`` allows only the root
    namespace.  A client without one (plaintext, or TLS that asks for no client
    certificate) is unauthenticated, and allowed as it is for every other type: istiod
    itself can only be such a client (its config sources speak plaintext or server-only
    TLS: ``configcontroller.go`` ``getTransportCredentials`` implements ``SIMPLE``
    alone), and the daemon warns at start when such a port is not on loopback."""
    if auth.get("transport_security_type") != [b"ssl"] or "x509_pem_cert" not in auth:
        return ""
    spiffe = b"".join(auth.get("peer_spiffe_id", [])[:1]).decode(errors="replace")
    parts = spiffe.removeprefix("spiffe://").split("/")
    # istio pkg/spiffe ParseIdentity: exactly <trust domain>/ns/<namespace>/sa/<account>
    well_formed = len(parts) == 5 and parts[1] == "ns" and parts[3] == "sa" and all(parts)
    if not spiffe.startswith("spiffe://") or not well_formed:
        return (
            "Istio config types need a client certificate with a SPIFFE identity in the "
            f"root namespace {root_namespace!r}"
        )
    if parts[2] != root_namespace:
        return (
            f"Istio config types are served only to the root namespace {root_namespace!r}, "
            f"not to {clip(spiffe, 256)}"
        )
    return ""


def _check_config(conn: Connection, state: TypeState) -> None:
    if conn.config_denied:
        raise Refused(grpc.StatusCode.PERMISSION_DENIED, conn.config_denied)
    asked = len(conn.config_types())
    if asked > MAX_CONFIG_TYPES:
        raise Refused(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"{asked} config types asked on one stream (limit {MAX_CONFIG_TYPES})",
        )


def _held_names(state: TypeState) -> tuple[Collection[str], ...]:
    """Every name a type's state holds from the client: subscribed, still to be answered
    (``forced``: a client churning names faster than it reads keeps adding to it) and,
    on a Delta stream, declared in ``initial_resource_versions``."""
    if isinstance(state, DeltaTypeState):
        return state.names, state.forced, state.initial.keys()
    return state.names, state.forced


def _sizes_of(state: TypeState, held: tuple[Collection[str], ...]) -> list[_Sizes]:
    """The :class:`_Sizes` of each of ``held`` (:func:`_held_names`): a Delta state keeps
    those of its names up to date, a state-of-the-world one's are measured once per
    interned set; what is pending is usually small."""
    if isinstance(state, DeltaTypeState):
        return [_Sizes(state.longest, state.name_chars), *map(_measure, held[1:])]
    return [_sizes(held[0]), *map(_measure, held[1:])]


def _too_long(held: tuple[Collection[str], ...]) -> str | None:
    """A name of more than ``MAX_NAME`` bytes in ``held``, if any."""
    for names in held:
        for name in names:
            if len(name) * 4 > MAX_NAME and len(name.encode()) > MAX_NAME:
                return name
    return None


@dataclass(frozen=True, slots=True)
class _Sizes:
    """Of a set of names: the longest's characters, and all their characters."""

    longest: int
    chars: int


class _SizeMemo:
    """:class:`_Sizes` of name sets, computed once per set for the ``kept`` latest big
    ones: a state-of-the-world subscription is one interned set shared by every stream
    that subscribes alike (a thousand Envoys changing their EDS subscription on a push
    are measured once).  Holds the sets weakly, so it keeps no subscription alive."""

    def __init__(self, kept: int = 64, smallest: int = 256) -> None:
        self._kept, self._smallest = kept, smallest
        self._entries: OrderedDict[int, tuple[weakref.ref[frozenset[str]], _Sizes]] = OrderedDict()

    def __call__(self, names: Collection[str]) -> _Sizes:
        if not isinstance(names, frozenset) or len(names) < self._smallest:
            return _measure(names)
        found = self._entries.get(id(names))
        if found is not None and found[0]() is names:
            return found[1]
        sizes = _measure(names)
        ref = weakref.ref(names, functools.partial(self._drop, id(names)))
        self._entries[id(names)] = (ref, sizes)
        while len(self._entries) > self._kept:
            self._entries.popitem(last=False)
        return sizes

    def _drop(self, key: int, ref: weakref.ref[frozenset[str]]) -> None:
        found = self._entries.get(key)
        if found is not None and found[0] is ref:
            del self._entries[key]


def _measure(names: Collection[str]) -> _Sizes:
    lengths = list(map(len, names))
    return _Sizes(max(lengths, default=0), sum(lengths))


_sizes = _SizeMemo()
