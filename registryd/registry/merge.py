"""Merge rules: how the shards of several registries become one served service.

Pure functions only.  The rules, which docs/xds.md documents and the debug port shows:

1. Every hostname is merged on its own.
2. The service attributes (ports, resolution, location, labels, namespace…) come from the
   shard with the highest *priority* that defines the hostname.  Each registry instance has
   an integer priority (``priority:`` in registryd.yaml; higher wins); without one it gets
   its type's default, which the adapter declares (``default_priority``, see
   :class:`registryd.adapter.AdapterFactory`: ``kubernetes`` 400, ``serviceentry`` 300,
   ``consul`` 200, ``etcd`` 100, ``nacos`` 50, any other type 0 unless it says).  The
   store resolves it (:func:`registryd.daemon.plugins.adapter_type`); these functions take the
   priorities as given.  Equal priorities go to the registry name that sorts first (then
   the type, for shards that share a name).  Kubernetes first by default is istiod's rule
   (pilot/pkg/serviceregistry/aggregate/controller.go, ``addRegistry`` puts Kubernetes
   registries before the others and ``GetService`` takes the first registry that has the
   hostname): a VM joins a Kubernetes service, it does not redefine it.
3. Endpoints of every shard that defines the hostname are combined; each endpoint keeps
   the shard it came from (``Endpoint.source``).
4. When two shards define the hostname with different attributes, the difference is
   recorded as a :class:`Conflict` naming the winner and the losers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from registryd.model import Endpoint, Service, ShardKey

__all__ = [
    "Conflict",
    "MergedService",
    "merge_hostname",
    "precedence",
]


def precedence(key: ShardKey, priority: int) -> tuple[int, str, str]:
    """Sort key of shard ``key`` with ``priority``: lower sorts first and wins, so higher
    priority first, then registry name, then type."""
    return (-priority, key.instance, key.provider)


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflict:
    """The same hostname defined differently by several shards."""

    hostname: str
    winner: ShardKey
    losers: tuple[ShardKey, ...]
    fields: tuple[str, ...]  # attribute names that differ from the winner's
    rule: str = "attributes from the highest-priority registry; endpoints combined"


@dataclass(frozen=True, slots=True, kw_only=True)
class MergedService:
    """One hostname as served: the winning service plus endpoints from every shard."""

    service: Service
    endpoints: tuple[Endpoint, ...]
    winner: ShardKey
    shards: tuple[ShardKey, ...]  # every shard that defines the hostname, winner first
    priorities: tuple[int, ...]  # the priority of each of ``shards``, in that order
    conflict: Conflict | None = None

    def priority(self, key: ShardKey) -> int | None:
        """The priority shard ``key`` was merged with; None if it does not define the
        hostname."""
        try:
            return self.priorities[self.shards.index(key)]
        except ValueError:
            return None


_COMPARED = ("namespace", "ports", "resolution", "location", "addresses", "export_to")


def merge_hostname(
    hostname: str,
    contributions: Mapping[ShardKey, tuple[Service, tuple[Endpoint, ...]]],
    priorities: Mapping[ShardKey, int] = MappingProxyType({}),
) -> MergedService | None:
    """Merge what each shard says about ``hostname``; ``None`` when no shard has it.
    ``priorities`` gives shards their priority; a shard not in it has priority 0, that
    of a registry type that declares no default."""
    if not contributions:
        return None

    def rank(key: ShardKey) -> int:
        return priorities.get(key, 0)

    order = sorted(contributions, key=lambda key: precedence(key, rank(key)))
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
        priorities=tuple(rank(key) for key in order),
        conflict=conflict,
    )
