"""What one registry update changed in the served view, summarized small.

The store (:mod:`registryd.registry.store`) knows, for each hostname an update touched,
the merged result before and after; :func:`summarize` turns that into a
:class:`ChangeSummary`: services added, removed or with changed attributes, and
endpoints added, removed or changed (same address and ports, other attributes), as
counts with at most :data:`SAMPLE` hostnames of each kind named.  It costs in
proportion to the endpoints of the hostnames touched, as the merge itself does, and
its result stays small however large the update was.  Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from registryd.model import Endpoint
from registryd.registry.merge import MergedService

__all__ = ["SAMPLE", "ChangeSummary", "summarize"]

SAMPLE = 10  # hostnames named per kind of change


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeSummary:
    """Counts of what changed, with a sorted sample of the hostnames of each kind."""

    services_added: int = 0
    services_removed: int = 0
    attributes_changed: int = 0  # hostnames whose served service changed
    endpoints_added: int = 0
    endpoints_removed: int = 0
    endpoints_changed: int = 0  # same address and ports, other attributes
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()


def _key(endpoint: Endpoint) -> tuple[str, int, int, str]:
    return (endpoint.address, endpoint.port, endpoint.service_port, str(endpoint.source))


def _endpoint_diff(old: Iterable[Endpoint], new: Iterable[Endpoint]) -> tuple[int, int, int]:
    """(added, removed, changed) between two endpoint lists, by address and ports."""
    before = {_key(e): e for e in old}
    after = {_key(e): e for e in new}
    added = sum(1 for k in after if k not in before)
    removed = sum(1 for k in before if k not in after)
    changed = sum(1 for k, e in after.items() if k in before and before[k] != e)
    return added, removed, changed


def summarize(
    before: Mapping[str, MergedService], changes: Mapping[str, MergedService | None]
) -> ChangeSummary:
    """What ``changes`` (hostname -> its new merged result, None: gone) change in
    ``before`` (the merged view they apply to)."""
    added: list[str] = []
    removed: list[str] = []
    changed: list[str] = []
    eps = [0, 0, 0]
    for host, new in changes.items():
        old = before.get(host)
        if old is None and new is None:
            continue
        if old is None:
            added.append(host)
        elif new is None:
            removed.append(host)
        elif old.service != new.service:
            changed.append(host)
        diff = _endpoint_diff(old.endpoints if old else (), new.endpoints if new else ())
        for i, n in enumerate(diff):
            eps[i] += n
    return ChangeSummary(
        services_added=len(added),
        services_removed=len(removed),
        attributes_changed=len(changed),
        endpoints_added=eps[0],
        endpoints_removed=eps[1],
        endpoints_changed=eps[2],
        added=tuple(sorted(added)[:SAMPLE]),
        removed=tuple(sorted(removed)[:SAMPLE]),
        changed=tuple(sorted(changed)[:SAMPLE]),
    )
