"""``/debug/waitz``: whether a change has reached the proxies (``registryd wait`` polls
it).  Pure functions from what the daemon holds to JSON-ready data.

A change is a snapshot version: ``push/<n>`` names it, ``hostname/<host>`` names the
newest version in which that hostname's resources changed (:func:`host_version`).  A
connection has it (:func:`judge`) when, for every type it subscribes to, it was planned
that version or a later one and

* ACKed that version or a later one (``acked``); or
* was sent nothing of that version or later, which means the change did not concern
  what it subscribes to (also ``acked``: nothing to wait for).

A type the connection has yet to ask for although what it holds needs it (EDS after
clusters that take their endpoints from EDS: ``expected`` in the listing) is pending.
It has ``nacked`` when a type NACKed that version or a later one that it has not ACKed
since; otherwise it is ``pending``.  Version numbers come from the ``versions`` listing
(:func:`registryd.xds.views.versions`), wherever the streams are served.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from registryd.base.logs import clip
from registryd.proxyids import select
from registryd.registry.store import View
from registryd.xds import resources as res
from registryd.xds.snapshot import CDS, CDS_GRPC, EDS, Snapshot
from registryd.xds.views import CLIENT_TEXT

__all__ = ["ACKED", "NACKED", "PENDING", "HostChanges", "host_version", "judge", "parse_target"]

JSON = dict[str, Any]
ACKED, NACKED, PENDING = "acked", "nacked", "pending"
_TABLES = (CDS, CDS_GRPC, EDS)
GLOB = frozenset("*?[")


class HostChanges(Protocol):
    def last_change(self, hostname: str) -> int | None:
        """The newest push known to have changed ``hostname``."""
        ...


def parse_target(text: str) -> tuple[str, str]:
    """``hostname/<host>`` or ``push/<n>`` as (kind, value); :class:`ValueError` with a
    one-line reason otherwise."""
    kind, slash, value = text.partition("/")
    if not slash or kind not in ("hostname", "push") or not value:
        raise ValueError(f"--for must be hostname/<host> or push/<id>, not {text[:80]!r}")
    if kind == "push" and not (value.isdigit() and len(value) < 19):
        raise ValueError(f"push/<id>: the id is a push version number, not {value[:80]!r}")
    return kind, value.lower() if kind == "hostname" else value


def host_version(
    hostname: str, view: View, snapshot: Snapshot, history: HostChanges | None
) -> int | None:
    """The newest snapshot version in which ``hostname``'s served resources changed:
    its clusters and ClusterLoadAssignments (one per port of its service in ``view``),
    or, for a hostname no longer served, the newest push the history says changed it.
    None when neither knows the hostname."""
    found: list[int] = []
    merged = view.services.get(hostname)
    if merged is not None:
        names = [res.cluster_name(hostname, p.number) for p in merged.service.ports]
        for table, resources in snapshot.tables.items():
            if table.partition("@")[0] in _TABLES:
                found.extend(r.version for n in names if (r := resources.get(n)) is not None)
    if history is not None:
        last = history.last_change(hostname)
        if last is not None:
            found.append(last)
    return max(found, default=None)


def selected(entries: Sequence[JSON], selectors: Sequence[str]) -> tuple[list[JSON], list[str]]:
    """The connections ``selectors`` name (all without one), and the selectors that
    name none: each selector is a glob (``*``, ``?``, ``[...]``) on the proxy or
    connection id, or a name as ``registryd proxy-status`` takes it
    (:func:`registryd.proxyids.select`)."""
    if not selectors:
        return list(entries), []
    ids = [(str(e.get("proxyID", "")), str(e.get("connectionID", ""))) for e in entries]
    chosen: set[int] = set()
    unmatched = []
    for selector in selectors:
        if GLOB & set(selector):
            found = [
                i
                for i, pair in enumerate(ids)
                if any(fnmatch.fnmatchcase(x, selector) for x in pair)
            ]
        else:
            found = select(selector, ids)
        chosen.update(found)
        if not found:
            unmatched.append(selector)
    return [entries[i] for i in sorted(chosen)], unmatched


def _state(
    version: int, types: Mapping[str, Mapping[str, Any]], expected: Sequence[str] = ()
) -> tuple[str, JSON]:
    pending: list[str] = [str(t) for t in expected]
    for name, t in sorted(types.items()):
        acked, nacked, sent = t.get("acked"), t.get("nacked"), t.get("sent")
        if t.get("planned", -1) < version:
            pending.append(name)
        elif acked is not None and acked >= version:
            continue
        elif nacked is not None and nacked >= version:
            return NACKED, {"type": name, "version": nacked, "error": t.get("error", "")}
        elif sent is not None and sent >= version:
            pending.append(name)
    if pending:
        return PENDING, {"types": pending}
    return ACKED, {}


def judge(
    version: int,
    current: int,
    entries: Iterable[JSON],
    selectors: Sequence[str] = (),
    unanswered: Sequence[str] = (),
) -> JSON:
    """Where change ``version`` is (``current``: the snapshot version served now) at the
    connections of the ``versions`` listing ``entries`` that ``selectors`` name.
    ``done`` once every one of them has ACKed it (see the module docstring) and every
    serving process answered (``unanswered`` lists those that did not)."""
    proxies = []
    counts = {ACKED: 0, NACKED: 0, PENDING: 0}
    chosen, unmatched = selected(list(entries), selectors)
    for entry in chosen:
        state, detail = _state(version, entry.get("types", {}), entry.get("expected", ()))
        counts[state] += 1
        proxies.append(
            {
                "proxyID": entry.get("proxyID", ""),
                "connectionID": entry.get("connectionID", ""),
                "state": state,
                **detail,
            }
        )
    return {
        "version": version,
        "currentVersion": current,
        "published": version <= current,
        "done": version <= current
        and not unmatched  # named proxies not (yet) connected
        and not unanswered
        and counts[ACKED] == len(proxies),
        "summary": {"proxies": len(proxies), **counts},
        "unanswered": list(unanswered),
        "unmatched": [clip(u, CLIENT_TEXT) for u in unmatched],
        "proxies": proxies,
    }
