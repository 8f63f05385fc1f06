"""Merge rules: how the shards of several registries become one served service.

Pure functions only.  The rules, which the README documents and the debug port shows:

1. Every hostname is merged on its own.
2. The service attributes (ports, resolution, location, labels, namespace…) come from the
   shard with the highest precedence that defines the hostname.  Precedence is explicit:
   ``kubernetes`` first, then ``serviceentry``, ``consul``, ``etcd``, then any other
   provider; ties between instances of one provider go to the instance name that sorts
   first.  (Kubernetes first is Istio's rule: a VM joins a Kubernetes service, it does not
   redefine it.)
3. Endpoints of every shard that defines the hostname are combined; each endpoint keeps
   the shard it came from (``Endpoint.source``).
4. When two shards define the hostname with different attributes, the difference is
   recorded as a :class:`Conflict` naming the winner and the losers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from registryd.model import Endpoint, Service, ShardKey

__all__ = ["PROVIDER_PRECEDENCE", "Conflict", "MergedService", "merge_hostname", "precedence"]

PROVIDER_PRECEDENCE: tuple[str, ...] = ("kubernetes", "serviceentry", "consul", "etcd")


def precedence(key: ShardKey) -> tuple[int, str, str]:
    """Sort key: lower sorts first and wins."""
    try:
        rank = PROVIDER_PRECEDENCE.index(key.provider)
    except ValueError:
        rank = len(PROVIDER_PRECEDENCE)
    return (rank, key.provider, key.instance)


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflict:
    """The same hostname defined differently by several shards."""

    hostname: str
    winner: ShardKey
    losers: tuple[ShardKey, ...]
    fields: tuple[str, ...]  # attribute names that differ from the winner's
    rule: str = "attributes from the highest-precedence registry; endpoints combined"


@dataclass(frozen=True, slots=True, kw_only=True)
class MergedService:
    """One hostname as served: the winning service plus endpoints from every shard."""

    service: Service
    endpoints: tuple[Endpoint, ...]
    winner: ShardKey
    shards: tuple[ShardKey, ...]  # every shard that defines the hostname, winner first
    conflict: Conflict | None = None


_COMPARED = ("namespace", "ports", "resolution", "location", "addresses", "export_to")


def merge_hostname(
    hostname: str,
    contributions: Mapping[ShardKey, tuple[Service, tuple[Endpoint, ...]]],
) -> MergedService | None:
    """Merge what each shard says about ``hostname``; ``None`` when no shard has it."""
    if not contributions:
        return None
    order = sorted(contributions, key=precedence)
    winner = order[0]
    service = contributions[winner][0]
    endpoints: list[Endpoint] = []
    for key in order:
        endpoints.extend(contributions[key][1])
    conflict = None
    if len(order) > 1:
        differing: set[str] = set()
        losers = []
        for key in order[1:]:
            other = contributions[key][0]
            diff = [f for f in _COMPARED if getattr(other, f) != getattr(service, f)]
            if diff:
                losers.append(key)
                differing.update(diff)
        if losers:
            conflict = Conflict(
                hostname=hostname,
                winner=winner,
                losers=tuple(losers),
                fields=tuple(f for f in _COMPARED if f in differing),
            )
    return MergedService(
        service=service,
        endpoints=tuple(endpoints),
        winner=winner,
        shards=tuple(order),
        conflict=conflict,
    )
