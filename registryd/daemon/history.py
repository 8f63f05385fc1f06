"""The change history (``/debug/history``): what each registry changed, the push that
carried it, and what became of that push at the proxies.

One :class:`Entry` per push: per registry that contributed (:class:`Change`), what
changed (services added, removed or with changed attributes, endpoints added, removed
or changed, the source's revision where it reports one), and the push's outcome
(:class:`Outcome`): proxies reached, ACKed and NACKed, responses NACKed with a few of
the errors, and the time from the first registry event to the last ACK.  Outcomes are
recorded into the entry as the proxies answer (:meth:`ChangeHistory.outcome`, fed by
the serving wherever the proxies are, worker processes included), so they stay when a
worker that saw them restarts.

Bounded by bytes, not by count: every entry is charged an estimate of what it holds
(:func:`_cost`; its outcome is charged in full up front, so it never grows past its
charge) and the oldest entries are dropped while the total is over ``budget``.  Each
entry is small whatever the change: at most :data:`NAMED` hostnames are listed per
registry, and at most :data:`HASHED` are remembered (as 8-byte hashes) for the
``hostname`` filter; an entry with more says it may hold a hostname it cannot tell.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import time
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from registryd.base.logs import clip
from registryd.registry.changes import ChangeSummary
from registryd.xds import tracking
from registryd.xds.views import rfc3339

__all__ = ["BUDGET", "HASHED", "NAMED", "Change", "ChangeHistory", "Entry", "HistoryMetrics"]

BUDGET = 4 << 20  # bytes, by default
NAMED = 20  # hostnames listed per registry and push
HASHED = 4096  # hostnames remembered per push for the hostname filter
NACKS_KEPT = 3  # NACK errors kept per push
REVISION_KEPT = 128  # characters of a source's revision
_ENTRY = 600  # bytes charged per entry besides its strings and hashes
_CHANGE = 400  # bytes charged per registry of an entry besides its strings
_STRING = 60  # bytes charged per string besides its characters
_OUTCOME = _STRING * 2 + tracking.OUTCOME_TEXT * 2 + 100  # one kept NACK


def _hash(hostname: str) -> int:
    return int.from_bytes(hashlib.blake2b(hostname.encode(), digest_size=8).digest(), "big") >> 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """What one registry changed in one push."""

    registry: str
    events: int
    revision: str  # the newest revision the source reported in the push ("": none)
    hostnames: tuple[str, ...]  # at most NAMED, sorted
    hostnames_total: int
    summary: ChangeSummary


@dataclass(slots=True)
class Outcome:
    """What became of a push at the proxies, as they answered."""

    reached: int = 0
    acked: int = 0
    nacked: int = 0
    last_ack_seconds: float | None = None
    nacks: list[tuple[str, str]] = field(default_factory=list)  # (proxy, error), a few


@dataclass(slots=True)
class Entry:
    """One push and the registry changes it carried."""

    version: int
    at: float  # wall clock of the push
    endpoints_only: bool
    changes: tuple[Change, ...]
    hashes: array[int]  # sorted hashes of at most HASHED of its hostnames
    hostnames_total: int
    outcome: Outcome = field(default_factory=Outcome)
    cost: int = 0

    def may_hold(self, hostname: str) -> bool | None:
        """True if the push changed ``hostname``, False if not, None if it cannot tell
        (it changed more hostnames than it remembers)."""
        h = _hash(hostname)
        i = bisect.bisect_left(self.hashes, h)
        if i < len(self.hashes) and self.hashes[i] == h:
            return True
        return None if self.hostnames_total > len(self.hashes) else False


def _cost(changes: Iterable[Change], hashes: int) -> int:
    total = _ENTRY + 8 * hashes + _OUTCOME * NACKS_KEPT
    for change in changes:
        s = change.summary
        named = (*change.hostnames, *s.added, *s.removed, *s.changed)
        total += _CHANGE + len(change.registry) + len(change.revision) + 3 * _STRING
        total += sum(len(n) + _STRING for n in named)
    return total


class ChangeHistory:
    """The last pushes and their changes, within ``budget`` bytes (see the module
    docstring).  ``clock`` gives the wall time of each entry."""

    def __init__(self, budget: int = BUDGET, clock: Any = time.time) -> None:
        if budget <= 0:
            raise ValueError("the history budget must be positive")
        self.budget = budget
        self.size = 0  # bytes charged for the entries held
        self.dropped = 0  # entries dropped for the budget
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def add(
        self,
        version: int,
        changes: Iterable[tuple[str, int, str, set[str] | frozenset[str], ChangeSummary]],
        *,
        endpoints_only: bool,
    ) -> Entry:
        """Record push ``version``: per registry ``(name, events, revision, hostnames,
        summary)``."""
        kept: list[Change] = []
        every: set[str] = set()
        for registry, events, revision, hostnames, summary in sorted(changes):
            every |= hostnames
            kept.append(
                Change(
                    registry=registry,
                    events=events,
                    revision=clip(revision, REVISION_KEPT, escaped=False),
                    hostnames=tuple(heapq.nsmallest(NAMED, hostnames)),
                    hostnames_total=len(hostnames),
                    summary=summary,
                )
            )
        # which HASHED hostnames are remembered does not matter: more make it "possible"
        hashes = array("q", sorted({_hash(h) for h in itertools.islice(every, HASHED)}))
        entry = Entry(
            version=version,
            at=self._clock(),
            endpoints_only=endpoints_only,
            changes=tuple(kept),
            hashes=hashes,
            hostnames_total=len(every),
        )
        entry.cost = _cost(kept, len(hashes))
        old = self._entries.pop(version, None)
        if old is not None:
            self.size -= old.cost
        self._entries[version] = entry
        self.size += entry.cost
        while self.size > self.budget and len(self._entries) > 1:
            _, gone = self._entries.popitem(last=False)
            self.size -= gone.cost
            self.dropped += 1
        return entry

    def outcome(self, outcome: tracking.Outcome) -> None:
        """Record a push's outcome at one proxy (the serving tells, as it happens)."""
        entry = self._entries.get(outcome.version)
        if entry is None:
            return  # not a push held here (dropped, or before the history began)
        into = entry.outcome
        if outcome.kind == tracking.REACHED:
            into.reached += 1
        elif outcome.kind == tracking.ACKED:
            into.acked += 1
            last = into.last_ack_seconds
            into.last_ack_seconds = outcome.seconds if last is None else max(last, outcome.seconds)
        elif outcome.kind == tracking.NACKED:
            into.nacked += 1
            if len(into.nacks) < NACKS_KEPT:
                into.nacks.append((outcome.proxy, outcome.error))

    def entries(self) -> Iterator[Entry]:
        """The entries held, newest first."""
        return reversed(self._entries.values())

    def last_change(self, hostname: str) -> int | None:
        """The newest push held that changed ``hostname``, or may have (an entry with
        more hostnames than it remembers); None if none did."""
        for entry in self.entries():
            if entry.may_hold(hostname) is not False:
                return entry.version
        return None

    def render(
        self, hostname: str = "", registry: str = "", limit: int = 50
    ) -> list[dict[str, Any]]:
        """``/debug/history``: the newest ``limit`` entries that changed ``hostname``
        (or may have: ``"hostnameMatch": "possible"``) and in which ``registry``
        (``provider/instance`` or the instance name) changed something."""
        out: list[dict[str, Any]] = []
        for entry in self.entries():
            if len(out) >= limit:
                break
            changes = [c for c in entry.changes if not registry or _names(registry, c.registry)]
            if not changes:
                continue
            item = _entry(entry, changes)
            if hostname:
                held = entry.may_hold(hostname)
                if held is False:
                    continue
                item["hostnameMatch"] = "yes" if held else "possible"
            out.append(item)
        return out


def _names(wanted: str, registry: str) -> bool:
    return wanted == registry or registry.partition("/")[2] == wanted


def _entry(entry: Entry, changes: list[Change]) -> dict[str, Any]:
    o = entry.outcome
    last = o.last_ack_seconds
    return {
        "version": entry.version,
        "at": rfc3339(entry.at),
        "kind": "endpoints" if entry.endpoints_only else "full",
        "hostnames": entry.hostnames_total,
        "changes": [_change(c) for c in changes],
        "outcome": {
            "proxiesReached": o.reached,
            "proxiesAcked": o.acked,
            "proxiesNacked": o.nacked,
            "pending": max(o.reached - o.acked - o.nacked, 0),
            "lastAckMs": None if last is None else round(last * 1000, 3),
            "nacks": [{"proxyID": p, "error": e} for p, e in o.nacks],
        },
    }


def _change(change: Change) -> dict[str, Any]:
    s = change.summary
    return {
        "registry": change.registry,
        "revision": change.revision or None,
        "events": change.events,
        "hostnames": list(change.hostnames),
        "hostnamesTotal": change.hostnames_total,
        "services": {
            "added": s.services_added,
            "removed": s.services_removed,
            "attributesChanged": s.attributes_changed,
            "addedSample": list(s.added),
            "removedSample": list(s.removed),
            "changedSample": list(s.changed),
        },
        "endpoints": {
            "added": s.endpoints_added,
            "removed": s.endpoints_removed,
            "changed": s.endpoints_changed,
        },
    }


class HistoryMetrics(Collector):
    """The history's size on ``/metrics``: ``registryd_push_history_bytes`` (bytes
    charged, against ``registryd_push_history_budget_bytes``) and
    ``registryd_push_history_entries``."""

    def __init__(self, history: ChangeHistory) -> None:
        self._history = history

    def collect(self) -> Iterator[Metric]:
        h = self._history
        for name, doc, value in (
            ("registryd_push_history_bytes", "Bytes held by the change history.", h.size),
            (
                "registryd_push_history_budget_bytes",
                "Bytes the change history may hold (--historyBytes).",
                h.budget,
            ),
            ("registryd_push_history_entries", "Pushes held by the change history.", len(h)),
        ):
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], value)
            yield family
