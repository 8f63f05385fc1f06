"""Versioned, serialized xDS resources: what every connection is served from.

A :class:`Snapshot` is immutable.  It holds, per table, every resource already
serialized (the bytes are computed once per content change and shared by every
connection), each resource stamped with the snapshot version in which its content last
changed, and the names that changed in the last few versions so a connection that is
behind can work out what it is missing without comparing everything.

Snapshots are made by :class:`registryd.build.builder.SnapshotBuilder` (the push side); this
module knows resources and versions only, nothing of the registry, so the xDS server
that serves snapshots depends on it alone.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from registryd.xds import resources as res
from registryd.xds.resources import BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER, VIRTUAL_OUTBOUND

__all__ = [
    "CDS",
    "CDS_GRPC",
    "EDS",
    "EMPTY",
    "HISTORY",
    "LDS_GRPC",
    "LDS_LOCAL",
    "LDS_SIDECAR",
    "MCP_NONE",
    "MCP_SERVICE_ENTRIES",
    "MCP_WORKLOAD_ENTRIES",
    "RDS",
    "STATIC_NAMES",
    "TABLE_TYPES",
    "Resource",
    "ResponseCache",
    "Snapshot",
    "config_table",
    "encode_field",
    "scoped",
]

CDS, CDS_GRPC, EDS, RDS = "cds", "cds/grpc", "eds", "rds"
LDS_SIDECAR, LDS_LOCAL, LDS_GRPC = "lds/sidecar", "lds/local", "lds/grpc"
MCP_SERVICE_ENTRIES, MCP_WORKLOAD_ENTRIES = "mcp/serviceentry", "mcp/workloadentry"
MCP_NONE = "mcp/none"  # every other config type: always empty
TABLE_TYPES: Mapping[str, str] = MappingProxyType(
    {
        CDS: res.CLUSTER_TYPE,
        CDS_GRPC: res.CLUSTER_TYPE,
        EDS: res.ENDPOINT_TYPE,
        RDS: res.ROUTE_TYPE,
        LDS_SIDECAR: res.LISTENER_TYPE,
        LDS_LOCAL: res.LISTENER_TYPE,
        LDS_GRPC: res.LISTENER_TYPE,
        MCP_SERVICE_ENTRIES: res.MCP_RESOURCE_TYPE,
        MCP_WORKLOAD_ENTRIES: res.MCP_RESOURCE_TYPE,
        MCP_NONE: res.MCP_RESOURCE_TYPE,
    }
)
_CONFIG_TABLES = {
    res.SERVICE_ENTRY_KIND: MCP_SERVICE_ENTRIES,
    res.WORKLOAD_ENTRY_KIND: MCP_WORKLOAD_ENTRIES,
}
STATIC_NAMES = frozenset({PASSTHROUGH_CLUSTER, BLACKHOLE_CLUSTER, VIRTUAL_OUTBOUND})
"""Resources every snapshot has, whatever the registries hold (istiod sends them too)."""
HISTORY = 64  # how many versions of change sets a snapshot remembers


_SMALL_VARINTS = tuple(bytes((n,)) for n in range(0x80))


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL_VARINTS[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
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
        packed = _type_url_field(type_url) + encode_field(2, body)
        return cls(name, version, body, encode_field(2, packed))


@functools.lru_cache(maxsize=64)
def _type_url_field(type_url: str) -> bytes:
    """An ``Any``'s ``type_url`` field; there are a handful of type URLs."""
    return encode_field(1, type_url.encode())


class ResponseCache:
    """Assembled responses of one snapshot, shared by the connections that need the same
    content.  Bounded by ``budget`` bytes, counting both the responses and their keys (a
    key names every resource it covers: it can be as large as the response): past it,
    responses are still built but no longer kept, so many distinct subscriptions cannot
    pin unbounded memory.  Entries live as long as their snapshot: until the next push.

    Only responses made of the snapshot's own resources are put here (the planners in
    :mod:`registryd.xds.stream` and :mod:`registryd.xds.delta` build a response naming
    anything else for its stream alone): a key never holds a name a client made up, so
    what a client invents never outlives its stream here."""

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
    # whether the MCP tables (what an istiod reads) are built: they are from the first
    # push after an istiod first asked (registryd.build.builder); before that, config
    # types are not answered, rather than answered empty (which would delete them)
    mcp: bool = False

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


def config_table(type_url: str) -> str:
    """The table a config type (:func:`registryd.xds.resources.is_config_type`) is
    served from: ServiceEntries and WorkloadEntries in any version, every other type
    (and MeshConfig) from the always empty ``MCP_NONE``: registryd has none of them, and
    an istiod is not ready until it had an answer for every type it asked."""
    return _CONFIG_TABLES.get(res.config_kind(type_url), MCP_NONE)


def scoped(table: str, scope: str) -> str:
    """The table holding ``table``'s resources visible only to namespace ``scope``
    (``""``: visible to every proxy)."""
    return f"{table}@{scope}" if scope else table
