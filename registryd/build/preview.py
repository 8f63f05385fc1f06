"""What a change would do to every connected client, before it is made.  Pure.

:func:`preview` builds the snapshot a candidate view would be served as, with a builder
of its own (the daemon's is not touched), and compares it with the snapshot being
served, once per group of clients that read the same tables (the function the server
decides what a client sees with: :meth:`registryd.xds.stream.Connection.tables` and
:func:`registryd.xds.stream.layered`), so a thousand sidecars of two namespaces cost two
comparisons.  Groups whose results are equal are then joined.

Contract of the answer (plain JSON-ready data):

* ``groups``: one per distinct result, each with its ``proxies`` (``count`` and the first
  :attr:`Limits.ids` ids) and, per resource type that changes for them (``cds``,
  ``eds``, ``lds``, ``rds``), the names ``added``, ``removed`` and ``changed``; the first
  :attr:`Limits.diffs` changed resources of a type come with a field-level ``diff``:
  ``{"path", "old", "new"}`` entries, paths as ``load_assignment.endpoints[0]...``
  (protobuf field names), of the decoded resources, at most :attr:`Limits.paths` per
  resource, values cut to :attr:`Limits.value` characters.  Name lists stop at
  :attr:`Limits.names` (``more`` counts the rest).
* ``groupsLeftOut``: how many groups (and proxies in them) are not shown: at most
  :attr:`Limits.groups` groups are, the largest.
* ``warnings``: a hostname that has endpoints now and would have none ("host X would
  lose all endpoints"); a listener conflict the candidate would have and the live
  build has not ("listener conflict on port P: ...").  At most :attr:`Limits.warnings`.

Every resource is compared by its serialized bytes (what a client would receive);
versions are not compared.  Istio config served to an istiod (MCP) is not previewed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from registryd.base.logs import clip
from registryd.build.builder import SnapshotBuilder
from registryd.build.clusters import BuildOptions
from registryd.build.listeners import Conflict
from registryd.registry.store import View
from registryd.xds import resources as res
from registryd.xds.snapshot import Resource, Snapshot
from registryd.xds.stream import layered

__all__ = ["Client", "Limits", "compare", "field_diff", "preview", "warnings"]

JSON = dict[str, Any]

_MESSAGES: Mapping[str, type[Message]] = {
    res.CLUSTER_TYPE: cluster_pb2.Cluster,
    res.ENDPOINT_TYPE: endpoint_pb2.ClusterLoadAssignment,
    res.LISTENER_TYPE: listener_pb2.Listener,
    res.ROUTE_TYPE: route_pb2.RouteConfiguration,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """How much one answer holds (it must stay small with any change and any mesh)."""

    ids: int = 20  # proxy ids listed per group
    names: int = 1000  # names per added/removed/changed list
    diffs: int = 50  # changed resources of one type with a field-level diff, per group
    paths: int = 50  # differing fields shown per resource
    value: int = 300  # characters of one old/new value
    warnings: int = 100
    groups: int = 50  # groups shown (the largest); the others are counted


@dataclass(frozen=True, slots=True, kw_only=True)
class Client:
    """A connected client as the preview groups it: what it reads, per type URL."""

    proxy_id: str
    tables: Mapping[str, tuple[str, ...]]


def _decode(type_url: str, body: bytes) -> Any:
    message = _MESSAGES[type_url].FromString(body)
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _shown(value: Any, limits: Limits) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return clip(value, limits.value, escaped=False)
    text = json.dumps(value, sort_keys=True)
    return value if len(text) <= limits.value else clip(text, limits.value, escaped=False)


def field_diff(old: Any, new: Any, limits: Limits = Limits()) -> list[JSON]:
    """The fields of two decoded resources (JSON-like values) that differ, as ``{"path",
    "old", "new"}`` (``None``: absent on that side), depth first, at most
    ``limits.paths`` of them (then one ``{"path": "...", "more": N}``)."""
    out: list[JSON] = []
    more = 0

    def walk(a: Any, b: Any, path: str) -> None:
        nonlocal more
        if a == b:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(a.keys() | b.keys()):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else key)
            return
        if isinstance(a, list) and isinstance(b, list):
            for i in range(max(len(a), len(b))):
                walk(a[i] if i < len(a) else None, b[i] if i < len(b) else None, f"{path}[{i}]")
            return
        if len(out) < limits.paths:
            out.append({"path": path, "old": _shown(a, limits), "new": _shown(b, limits)})
        else:
            more += 1

    walk(old, new, "")
    if more:
        out.append({"path": "...", "more": more})
    return out


def _names(names: Sequence[str], limits: Limits) -> JSON:
    found: JSON = {"names": list(names[: limits.names])}
    if len(names) > limits.names:
        found["more"] = len(names) - limits.names
    return found


def _type_changes(
    type_url: str, live: Mapping[str, Resource], candidate: Mapping[str, Resource], limits: Limits
) -> JSON | None:
    """What changes in one type for one group, or None when nothing does."""
    added = sorted(candidate.keys() - live.keys())
    removed = sorted(live.keys() - candidate.keys())
    changed = sorted(n for n in live.keys() & candidate.keys() if live[n].body != candidate[n].body)
    if not (added or removed or changed):
        return None
    diffs = []
    for name in changed[: limits.diffs]:
        try:
            old = _decode(type_url, live[name].body)
            new = _decode(type_url, candidate[name].body)
            diffs.append({"name": name, "diff": field_diff(old, new, limits)})
        except Exception as exc:  # an Any whose type is not known here: still changed
            diffs.append({"name": name, "diff": [], "undecoded": type(exc).__name__})
    return {
        "added": _names(added, limits),
        "removed": _names(removed, limits),
        "changed": {**_names(changed, limits), "diffs": diffs},
    }


def compare(
    live: Snapshot, candidate: Snapshot, clients: Iterable[Client], limits: Limits = Limits()
) -> list[JSON]:
    """The ``groups`` of the answer (see the module docstring): clients that read the
    same tables are compared once; groups with equal results are joined.  Groups come
    largest first."""
    by_tables: dict[tuple[tuple[str, tuple[str, ...]], ...], list[str]] = {}
    for client in clients:
        key = tuple(sorted((t, tuple(names)) for t, names in client.tables.items()))
        by_tables.setdefault(key, []).append(client.proxy_id)
    by_result: dict[str, tuple[JSON, list[str]]] = {}
    for key, proxies in by_tables.items():
        types: JSON = {}
        for type_url, tables in key:
            found = _type_changes(
                type_url, layered(live, tables), layered(candidate, tables), limits
            )
            if found is not None:
                types[res.short_type(type_url)] = found
        result = dict(sorted(types.items()))
        same = json.dumps(result, sort_keys=True)
        by_result.setdefault(same, (result, []))[1].extend(proxies)
    groups = []
    for result, proxies in by_result.values():
        ids = sorted(proxies)
        groups.append(
            {
                "proxies": {"count": len(ids), "ids": ids[: limits.ids]},
                "changes": result,
                "unchanged": not result,
            }
        )
    return sorted(groups, key=lambda g: (-g["proxies"]["count"], g["proxies"]["ids"]))


def _conflict_text(port: int, c: Conflict) -> str:
    return (
        f"listener conflict on port {port}: listener {c.listener}: {c.hostname} would be "
        f"left out, {c.winner} already takes its traffic"
    )


def warnings(
    live: View,
    candidate: View,
    live_conflicts: Mapping[int, tuple[Conflict, ...]],
    candidate_conflicts: Mapping[int, tuple[Conflict, ...]],
    hostnames: Iterable[str],
    limits: Limits = Limits(),
) -> list[str]:
    """The ``warnings`` of the answer for a candidate view that differs from the live
    one at most in ``hostnames`` (see the module docstring)."""
    out = []
    for host in sorted(hostnames):
        before = live.services.get(host)
        after = candidate.services.get(host)
        had = len(before.endpoints) if before is not None else 0
        if had and (after is None or not after.endpoints):
            gone = " (the host would be removed)" if after is None else ""
            out.append(f"host {host} would lose all endpoints ({had} now){gone}")
    for port in sorted(candidate_conflicts):
        known = set(live_conflicts.get(port, ()))
        out.extend(_conflict_text(port, c) for c in candidate_conflicts[port] if c not in known)
    if len(out) > limits.warnings:
        out = [*out[: limits.warnings], f"{len(out) - limits.warnings} more warnings"]
    return out


def preview(
    *,
    live_view: View,
    candidate_view: View,
    hostnames: Iterable[str],
    live: Snapshot,
    live_conflicts: Mapping[int, tuple[Conflict, ...]],
    options: BuildOptions,
    clients: Iterable[Client],
    limits: Limits = Limits(),
) -> JSON:
    """``{"groups", "groupsLeftOut", "warnings"}`` for ``candidate_view`` against what is served now
    (``live``, built by a builder with ``options`` that found ``live_conflicts``).
    ``hostnames``: where the two views may differ.  CPU-heavy (a full build): callers
    on an event loop run it in a thread."""
    builder = SnapshotBuilder(options, log_conflicts=False)
    candidate = builder.build(candidate_view)
    groups = compare(live, candidate, clients, limits)
    left_out = groups[limits.groups :]
    return {
        "groups": groups[: limits.groups],
        "groupsLeftOut": {
            "groups": len(left_out),
            "proxies": sum(g["proxies"]["count"] for g in left_out),
        },
        "warnings": warnings(
            live_view, candidate_view, live_conflicts, builder.conflicts, hostnames, limits
        ),
    }
