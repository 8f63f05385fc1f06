"""What the debug endpoints show of xDS streams: pure functions from connections to
JSON-ready data (``/debug/connections``, ``adsz``, ``syncz``).

They run where the streams are: in the daemon's own process, or in each xDS worker,
whose answers the main process merges (:mod:`registryd.xds.streams`).  Times are RFC
3339 UTC strings; node metadata goes through :func:`registryd.settings.redact`, and
text a client sent is clipped (:func:`registryd.base.logs.clip`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format

from registryd.base.logs import clip
from registryd.settings import redact
from registryd.xds import resources as res
from registryd.xds.delta import DeltaTypeState
from registryd.xds.snapshot import Snapshot
from registryd.xds.stream import ORDER, Connection, TypeState

__all__ = [
    "CLIENT_TEXT",
    "adsz",
    "connections",
    "console",
    "rfc3339",
    "syncz",
    "tables",
    "versions",
]

JSON = dict[str, Any]
CLIENT_TEXT = 1024  # characters of client-supplied text (node fields, ids) shown


def rfc3339(wall: float | None) -> str | None:
    if not wall:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"


def _node(conn: Connection) -> JSON:
    node = conn.node
    if node is None:
        return {}
    data = json_format.MessageToDict(node, preserving_proto_field_name=True)
    return dict(redact(data, clip_at=CLIENT_TEXT))


def _subscriptions(conn: Connection) -> JSON:
    out: JSON = {}
    for type_url in conn.plan_order():
        state = conn.states.get(type_url)
        if state is not None and state.requested:
            out[res.short_type(type_url)] = ["*"] if state.wildcard else sorted(state.names)
    return out


def _matches(conn: Connection, proxy_id: str) -> bool:
    return not proxy_id or proxy_id in (conn.proxy_id, conn.id)


def _kind(conn: Connection) -> str:
    """The ADS method of the stream: ``delta`` or ``sotw`` (state-of-the-world)."""
    return "delta" if conn.delta else "sotw"


def connections(conns: Iterable[Connection], proxy_id: str = "") -> list[JSON]:
    """A light list of the connected clients, with the kind of their stream."""
    return [
        {
            "proxyID": clip(c.proxy_id, CLIENT_TEXT),
            "connectionID": c.id,
            "type": _kind(c),
            "delta": c.delta,
            "peer": c.peer,
            "connectedAt": rfc3339(c.connected_at),
        }
        for c in sorted(conns, key=lambda c: c.connected_at)
        if _matches(c, proxy_id)
    ]


def adsz(conns: Iterable[Connection], proxy_id: str = "", verbose: bool = False) -> list[JSON]:
    """Connected clients with their node, locality and subscriptions per type.  The
    node's ``extensions`` list (Envoy's every compiled-in extension: most of the answer)
    is left out unless ``verbose``; ``extensionsOmitted`` then says how many there were."""
    out = []
    for c, light in zip(
        (c for c in sorted(conns, key=lambda c: c.connected_at) if _matches(c, proxy_id)),
        connections(conns, proxy_id),
        strict=True,
    ):
        node = _node(c)
        omitted: JSON = {}
        if not verbose and "extensions" in node:
            omitted = {"extensionsOmitted": len(node.pop("extensions"))}
        out.append(
            {
                **light,
                "node": node,
                **omitted,
                "locality": node.get("locality", {}),
                "namespace": c.namespace,
                "generator": "api" if c.istiod else c.lds_table,
                "client": c.client_kind,
                "subscriptions": _subscriptions(c),
                "writtenVersion": c.written_version,
            }
        )
    return out


def _type_sync(state: TypeState, mono_to_wall: float) -> JSON:
    nacked = bool(state.last_nack) and state.nack_version == state.version_sent
    return {
        "versionSent": state.version_sent,
        "nonceSent": state.nonce,
        "versionAcked": state.acked_version,
        "acked": bool(state.version_sent) and state.acked_version == state.version_sent,
        "nacked": nacked,
        "lastNack": state.last_nack,
        "nackedVersion": state.nack_version,
        "lastNackAt": rfc3339(state.nacked_at + mono_to_wall) if state.nacked_at else None,
        "resourcesSent": len(state.sent_names),
        "acks": state.acks,
        "nacks": state.nacks,
        "expiredNonces": state.expired_nonces,
        **(_delta_sync(state) if isinstance(state, DeltaTypeState) else {}),
    }


def _delta_sync(state: DeltaTypeState) -> JSON:
    """What a Delta client holds, as far as the server knows, and the last removals."""
    return {
        "resourcesHeld": sum(1 for r in state.held.values() if r is not None),
        "removedSent": list(state.removed_sent),
    }


def syncz(conns: Iterable[Connection], proxy_id: str = "") -> list[JSON]:
    """Per client, per type: version and nonce sent, ACKed or not, the last NACK."""
    offset = time.time() - time.monotonic()
    out = []
    for c in sorted(conns, key=lambda c: c.connected_at):
        if not _matches(c, proxy_id):
            continue
        types = {
            res.short_type(t): _type_sync(c.states[t], offset)
            for t in c.plan_order()
            if t in c.states and c.states[t].requested
        }
        out.append(
            {
                "proxyID": clip(c.proxy_id, CLIENT_TEXT),
                "connectionID": c.id,
                "type": _kind(c),
                "delta": c.delta,
                "client": c.client_kind,
                "types": types,
            }
        )
    return out


def tables(conns: Iterable[Connection], proxy_id: str = "") -> list[JSON]:
    """Per client, the tables it reads for each Envoy type it asked for (full type URL
    to table names, :meth:`Connection.tables`): clients with equal ``tables`` see the
    same resources.  What a preview of a change compares (``/debug/preview``)."""
    return [
        {
            "proxyID": clip(c.proxy_id, CLIENT_TEXT),
            "connectionID": c.id,
            "client": c.client_kind,
            "namespace": c.namespace,
            "tables": {
                t: list(c.tables(t)) for t in ORDER if t in c.states and c.states[t].requested
            },
        }
        for c in sorted(conns, key=lambda c: c.connected_at)
        if _matches(c, proxy_id)
    ]


NACK_SHOWN = 512  # characters of a NACK's error text in the console's listing
_RANK = {t: i for i, t in enumerate(ORDER)}  # the xDS types first, in their order


def _kind_label(c: Connection) -> str:
    """What the client is, as the console names it."""
    kind = c.client_kind
    if kind == "proxy":
        return "Envoy Delta" if c.delta else "Envoy SotW"
    if kind == "istiod (MCP)":
        return "istiod over MCP"
    return kind


def _type_state(state: TypeState) -> JSON:
    """One type's state in three words: ``SYNCED`` (the version sent is ACKed),
    ``NACKED`` (it was rejected; ``error`` says why) or ``STALE`` (sent, no answer yet)."""
    if state.version_sent and state.acked_version == state.version_sent:
        return {"state": "SYNCED", "version": state.version_sent}
    if state.last_nack and state.nack_version == state.version_sent:
        return {
            "state": "NACKED",
            "version": state.version_sent,
            "error": clip(state.last_nack, NACK_SHOWN),
        }
    return {"state": "STALE", "version": state.version_sent}


def console(conns: Iterable[Connection], proxy_id: str = "") -> list[JSON]:
    """The console's light list of clients: id, kind, when connected, the newest snapshot
    version fully written to it, and per requested type ``SYNCED``/``STALE``/``NACKED``
    (with the NACK's text, clipped); ``state`` is the worst of its types."""
    out = []
    for c in sorted(conns, key=lambda c: c.connected_at):
        if not _matches(c, proxy_id):
            continue
        requested = [(t, s) for t, s in c.states.items() if s.requested]
        requested.sort(key=lambda pair: _RANK.get(pair[0], len(ORDER)))  # as plan_order()
        types = {res.short_type(t): _type_state(s) for t, s in requested}
        states = {t["state"] for t in types.values()}
        worst = next((s for s in ("NACKED", "STALE") if s in states), "SYNCED")
        out.append(
            {
                "proxyID": clip(c.proxy_id, CLIENT_TEXT),
                "connectionID": c.id,
                "kind": _kind_label(c),
                "connectedAt": rfc3339(c.connected_at),
                "version": c.written_version,
                "state": worst if types else "STALE",
                "types": types,
            }
        )
    return out


def _number(version_info: str) -> int | None:
    """The snapshot version of a ``<prefix>-<n>`` version; None for another."""
    _, _, tail = version_info.rpartition("-")
    return int(tail) if tail.isdigit() and len(tail) < 19 else None


def _expected(conn: Connection, snapshot: Snapshot | None) -> list[str]:
    """Types ``conn`` has yet to ask for although what it holds needs them: EDS, while it
    was sent clusters that take their endpoints from EDS (a client asks for them only
    after it read the clusters, and may ACK the clusters first)."""
    clusters = conn.states.get(res.CLUSTER_TYPE)
    endpoints = conn.states.get(res.ENDPOINT_TYPE)
    if snapshot is None or clusters is None or (endpoints is not None and endpoints.requested):
        return []
    eds = conn.visible(snapshot, res.ENDPOINT_TYPE)
    return ["eds"] if any(name in eds for name in clusters.sent_names) else []


def versions(
    conns: Iterable[Connection], proxy_id: str = "", snapshot: Snapshot | None = None
) -> list[JSON]:
    """Per client, per subscribed type, as snapshot version numbers (``registryd wait``
    reads them): ``planned`` (the newest snapshot planned for it), ``sent``, ``acked``
    and ``nacked`` (None: none), and the last NACK's ``error``; ``expected``: the types
    it must still ask for (given the ``snapshot`` it is served from)."""
    out = []
    for c in sorted(conns, key=lambda c: c.connected_at):
        if not _matches(c, proxy_id):
            continue
        types = {}
        for t in c.plan_order():
            state = c.states.get(t)
            if state is None or not state.requested:
                continue
            types[res.short_type(t)] = {
                "planned": state.synced_version,
                "sent": _number(state.version_sent),
                "acked": _number(state.acked_version),
                "nacked": _number(state.nack_version) if state.last_nack else None,
                "error": state.last_nack,
            }
        out.append({"proxyID": clip(c.proxy_id, CLIENT_TEXT), "connectionID": c.id, "types": types})
    return out
