"""How far each connected proxy is in sync, as ``istioctl proxy-status`` shows it: pure
functions of the JSON of ``/debug/syncz`` and ``/debug/config_dump``.

Per proxy and type (istiod pilot/pkg/xds/statusgen.go ``debugSyncStatus``, with
registryd's NACK rule):

* ``NACKED``: the proxy rejected the version it was last sent (the message is shown);
* ``NOT SENT``: nothing of that type was sent on this stream (also when the proxy did
  not subscribe to the type, as istioctl printed before it had ``IGNORED``);
* ``SYNCED``: the proxy ACKed the last response of that type;
* ``STALE``: a response was sent and not answered yet.

An istiod reading registryd over MCP (type ``istiod (MCP)``) subscribes to Istio config
types instead: their statuses are summed up in the ``MCP`` column (the worst of them:
NACKED, then STALE, then NOT SENT, else SYNCED; ``-`` for a client that asked none).

Per resource (``proxy-status PROXY_ID``), comparing the snapshot version in which its
served content last changed (its ``version_info`` in the config dump) with the versions
of that type last sent and ACKed: ``NOT SENT`` if newer than the last response of its
type (a push is on its way), ``SYNCED`` if not newer than the version the proxy ACKed,
``NACKED`` if the proxy rejected the last response and this content is newer than what
it accepted, else ``STALE``.  A resource the proxy subscribed to after the version it
ACKed, with content older than that, counts as SYNCED while its first response is in
flight: registryd keeps versions per type, not per resource.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from registryd.base.logs import escape
from registryd.tools.proxyconfig import dump_resources
from registryd.tools.tables import format_table

__all__ = [
    "NACKED",
    "NOT_SENT",
    "STALE",
    "SYNCED",
    "StatusRow",
    "detail",
    "detail_json",
    "render_detail",
    "render_status",
    "resource_status",
    "status_rows",
    "type_status",
]

JSON = Mapping[str, Any]
SYNCED, NOT_SENT, STALE, NACKED = "SYNCED", "NOT SENT", "STALE", "NACKED"
TYPES = ("cds", "lds", "eds", "rds")  # istioctl's column order
_DUMP_KINDS = {"cds": "clusters", "lds": "listeners", "eds": "endpoints", "rds": "routes"}
_STREAMS = {"sotw": "SotW", "delta": "Delta"}


def version_number(version: str) -> int | None:
    """The snapshot version in ``<prefix>-<n>`` (or Delta's ``<prefix>-<n>@<namespace>``);
    None for anything else (no version yet)."""
    head, _, _ = version.partition("@")
    _, _, tail = head.rpartition("-")
    return int(tail) if tail.isdigit() else None


def type_status(state: JSON | None) -> str:
    """The status of one type of one connection, from its ``/debug/syncz`` entry (None:
    the proxy did not subscribe to the type)."""
    if state is None:
        return NOT_SENT
    if state.get("nacked"):
        return NACKED
    if not state.get("nonceSent"):
        return NOT_SENT
    return SYNCED if state.get("acked") else STALE


def resource_status(version: str, state: JSON | None) -> str:
    """The status of one served resource whose content last changed in ``version``,
    given its type's ``/debug/syncz`` entry (see the module docstring)."""
    if state is None or not state.get("nonceSent"):
        return NOT_SENT
    served = version_number(version)
    sent = version_number(str(state.get("versionSent", "")))
    acked = version_number(str(state.get("versionAcked", "")))
    if served is None or sent is None or served > sent:
        return NOT_SENT
    if acked is not None and served <= acked:
        return SYNCED
    return NACKED if state.get("nacked") else STALE


def _one_line(text: str) -> str:
    """A NACK message on one line (registryd already escapes what clients send)."""
    return escape(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRow:
    """One connection of one proxy on one registryd instance."""

    proxy: str
    connection: str
    stream: str  # SotW or Delta
    statuses: tuple[str, ...]  # per :data:`TYPES`
    client: str = "proxy"  # proxy, proxyless gRPC, istiod (MCP)
    mcp: str = "-"  # the config types' status (see the module), "-": none asked
    version: str  # the newest version sent of any type ("" if none)
    server: str  # the registryd instance's debug URL
    nacks: tuple[tuple[str, str, str], ...] = ()  # (type, rejected version, message)

    def as_json(self) -> dict[str, Any]:
        return {
            "proxyID": self.proxy,
            "connectionID": self.connection,
            "type": self.client,
            "stream": self.stream,
            **{t: s for t, s in zip(TYPES, self.statuses, strict=True)},
            "mcp": self.mcp,
            "version": self.version,
            "server": self.server,
            "nacks": [{"type": t, "version": v, "message": m} for t, v, m in self.nacks],
        }


def _newest(versions: Iterable[str]) -> str:
    known = [(version_number(v), v) for v in versions]
    numbered = [(n, v) for n, v in known if n is not None]
    return max(numbered)[1] if numbered else ""


def status_row(server: str, entry: JSON) -> StatusRow:
    """The row of one ``/debug/syncz`` entry of the instance at ``server``."""
    types: JSON = entry.get("types", {})
    config = [t for t in types if t not in TYPES]
    nacks = tuple(
        (t, str(types[t].get("nackedVersion", "")), _one_line(str(types[t].get("lastNack", ""))))
        for t in (*TYPES, *config)
        if t in types and types[t].get("nacked")
    )
    return StatusRow(
        proxy=str(entry.get("proxyID", "")),
        connection=str(entry.get("connectionID", "")),
        stream=_STREAMS.get(str(entry.get("type", "")), str(entry.get("type", ""))),
        statuses=tuple(type_status(types.get(t)) for t in TYPES),
        client=str(entry.get("client", "proxy")),
        mcp=_worst([type_status(types[t]) for t in config]) if config else "-",
        version=_newest(str(s.get("versionSent", "")) for s in types.values()),
        server=server,
        nacks=nacks,
    )


def _worst(statuses: Sequence[str]) -> str:
    for status in (NACKED, STALE, NOT_SENT):
        if status in statuses:
            return status
    return SYNCED


def status_rows(entries: Iterable[tuple[str, JSON]]) -> list[StatusRow]:
    """Rows of ``(server, /debug/syncz entry)`` pairs, sorted by proxy id, then server."""
    rows = [status_row(server, entry) for server, entry in entries]
    return sorted(rows, key=lambda r: (r.proxy, r.server, r.connection))


_HEADER = ("NAME", "TYPE", "STREAM", *(t.upper() for t in TYPES), "MCP", "SERVER", "VERSION")


def render_status(rows: Sequence[StatusRow]) -> str:
    """The proxy-status table, then one line per NACK with the proxy's message."""
    table = format_table(
        _HEADER,
        [
            [r.proxy, r.client, r.stream, *r.statuses, r.mcp, r.server, r.version or "-"]
            for r in rows
        ],
    )
    nacks = [
        f"{r.proxy} {t.upper() if t in TYPES else t} NACKED {version or '-'}: {message}\n"
        for r in rows
        for t, version, message in r.nacks
    ]
    return table + ("\n" + "".join(nacks) if nacks else "")


def _type_line(kind: str, state: JSON | None) -> list[str]:
    if state is None:
        return [kind.upper(), NOT_SENT, "-", "-", "-", "0", "0"]
    return [
        kind.upper(),
        type_status(state),
        str(state.get("versionSent") or "-"),
        str(state.get("nonceSent") or "-"),
        str(state.get("versionAcked") or "-"),
        str(state.get("acks", 0)),
        str(state.get("nacks", 0)),
    ]


def detail(entry: JSON, dump: JSON) -> tuple[list[list[str]], list[list[str]]]:
    """Per type (sent, ACKed) and per served resource (version, status) of one proxy:
    its ``/debug/syncz`` entry and its ``/debug/config_dump``."""
    types: JSON = entry.get("types", {})
    per_type = [_type_line(t, types.get(t)) for t in TYPES]
    per_resource = []
    for kind in TYPES:
        for version, resource in dump_resources(dump, _DUMP_KINDS[kind]):
            name = str(resource.get("cluster_name") or resource.get("name", ""))
            status = resource_status(version, types.get(kind))
            per_resource.append([kind.upper(), name, version, status])
    return per_type, per_resource


def render_detail(server: str, entry: JSON, dump: JSON) -> str:
    """What one proxy was last sent vs what it ACKed, per type and per resource."""
    row = status_row(server, entry)
    per_type, per_resource = detail(entry, dump)
    head = f"Proxy:      {row.proxy}\nConnection: {row.connection} ({row.stream}) on {server}\n\n"
    types = format_table(("TYPE", "STATUS", "SENT", "NONCE", "ACKED", "ACKS", "NACKS"), per_type)
    nacks = "".join(
        f"{t.upper()} NACKED {version or '-'}: {message}\n" for t, version, message in row.nacks
    )
    resources = format_table(
        ("TYPE", "RESOURCE", "SERVED VERSION", "STATUS"),
        [[kind, name, version or "-", status] for kind, name, version, status in per_resource],
    )
    return head + types + ("\n" + nacks if nacks else "") + "\n" + resources


def detail_json(server: str, entry: JSON, dump: JSON) -> dict[str, Any]:
    """:func:`render_detail` as JSON."""
    types: JSON = entry.get("types", {})
    _, per_resource = detail(entry, dump)
    return {
        **status_row(server, entry).as_json(),
        "types": {
            t: {
                "status": type_status(types.get(t)),
                **{k: types[t].get(k) for k in _TYPE_FIELDS if t in types},
            }
            for t in TYPES
        },
        "resources": [
            {"type": kind.lower(), "name": name, "version": version, "status": status}
            for kind, name, version, status in per_resource
        ],
    }


_TYPE_FIELDS = ("versionSent", "nonceSent", "versionAcked", "acks", "nacks", "lastNack")
