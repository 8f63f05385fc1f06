"""Merge rules: how the shards of several registries become one served service.

Pure functions only.  The rules, which the README documents and the debug port shows:

1. Every hostname is merged on its own.
2. The service attributes (ports, resolution, location, labels, namespace…) come from the
   shard with the highest *priority* that defines the hostname.  Each registry instance has
   an integer priority (``priority:`` in registryd.yaml; higher wins); without one it gets
   its type's default from :data:`DEFAULT_PRIORITIES` (``kubernetes`` 400,
   ``serviceentry`` 300, ``consul`` 200, ``etcd`` 100) or :data:`PLUGIN_PRIORITY` (0) for
   any other type.  Equal priorities go to the registry name that sorts first (then the
   type, for shards that share a name).  Kubernetes first by default is istiod's rule
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
    "DEFAULT_PRIORITIES",
    "PLUGIN_PRIORITY",
    "Conflict",
    "MergedService",
    "default_priority",
    "merge_hostname",
    "precedence",
]

DEFAULT_PRIORITIES: Mapping[str, int] = MappingProxyType(
    {"kubernetes": 400, "serviceentry": 300, "consul": 200, "etcd": 100}
)
PLUGIN_PRIORITY = 0  # the default of every registry type not in DEFAULT_PRIORITIES


def default_priority(provider: str) -> int:
    """The priority of a registry of type ``provider`` that does not set one."""
    return DEFAULT_PRIORITIES.get(provider, PLUGIN_PRIORITY)


def precedence(key: ShardKey, priority: int | None = None) -> tuple[int, str, str]:
    """Sort key of shard ``key`` with ``priority`` (its type's default when None): lower
    sorts first and wins, so higher priority first, then registry name, then type."""
    if priority is None:
        priority = default_priority(key.provider)
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
    ``priorities`` gives shards their priority; a shard not in it has its type's default
    (:func:`default_priority`)."""
    if not contributions:
        return None

    def rank(key: ShardKey) -> int:
        return priorities.get(key, default_priority(key.provider))

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
