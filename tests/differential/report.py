"""What the command-line runners share: one input's differences keyed by node kind,
resource type and field path, and the printed summary of many inputs' differences."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tests.differential.collect import Node, Served
from tests.differential.compare import Difference, compare, field_path
from tests.differential.kube import KubePair
from tests.differential.kube_states import KubeState
from tests.differential.mcp import McpPair, RegistryState
from tests.differential.normalize import KubeFacts
from tests.differential.servers import NODES, Pair

__all__ = [
    "Outcome",
    "Tally",
    "differences",
    "group",
    "kube_differences",
    "mcp_differences",
    "print_groups",
]


def group(node: Node | str, difference: Difference) -> str:
    """The group a difference is counted in: ``<node kind> <type> <field path>``, the
    path ``(resource)`` for a resource only one side serves."""
    kind = node if isinstance(node, str) else node.kind
    return f"{kind} {difference.kind} {field_path(difference.path) or '(resource)'}"


@dataclass(slots=True)
class Outcome:
    """What comparing one input found."""

    views: int = 0  # node views compared
    resources: int = 0  # resources istiod served them
    found: list[tuple[str, Difference]] = field(default_factory=list)  # (group, difference)

    @property
    def groups(self) -> set[str]:
        return {key for key, _ in self.found}


@dataclass(slots=True)
class Tally:
    """The outcomes of many inputs added up: node views, istiod's resources, and each
    group's differences with the name of the input that showed it."""

    views: int = 0
    resources: int = 0
    by_group: dict[str, list[tuple[str, Difference]]] = field(default_factory=dict)

    def add(self, outcome: Outcome, name: str) -> None:
        self.views += outcome.views
        self.resources += outcome.resources
        for key, d in outcome.found:
            self.by_group.setdefault(key, []).append((name, d))


async def differences(pair: Pair, text: str, nodes: Iterable[Node] = NODES) -> Outcome:
    """Every difference ``pair`` shows for the input ``text`` on ``nodes``; raises
    :class:`~tests.differential.servers.IstiodRefused` and
    :class:`~tests.differential.servers.Ambiguous` as :meth:`Pair.serve` does."""
    return await _outcome(pair.serve(text, nodes), mcp=False)


async def mcp_differences(pair: McpPair, state: RegistryState) -> Outcome:
    """Every difference ``pair`` (istiod fed over MCP) shows for ``state``."""
    return await _outcome(pair.serve(state), mcp=True)


async def kube_differences(pair: KubePair, state: KubeState) -> Outcome:
    """Every difference ``pair`` (both reading one Kubernetes cluster) shows for
    ``state``."""
    return await _outcome(pair.serve(state), mcp=False, kube=state.facts())


async def _outcome(
    served: AsyncIterator[tuple[Node, Served, Served]], *, mcp: bool, kube: KubeFacts | None = None
) -> Outcome:
    out = Outcome()
    async for node, istiod, ours in served:
        out.views += 1
        out.resources += sum(len(v) for v in istiod.values())
        where = node.kind
        if mcp:
            where = f"{node.kind} (MCP)"
        elif kube:
            where = f"{node.kind}@{node.metadata.get('NAMESPACE')} (Kubernetes)"
        out.found += [(group(where, d), d) for d in compare(istiod, ours, mcp=mcp, kube=kube)]
    return out


def print_groups(by_group: Mapping[str, Sequence[tuple[str, Difference]]], show: int) -> int:
    """Print, per group, how many differences and ``show`` examples (each with the name
    of its input); the number of differences."""
    for key, found in sorted(by_group.items()):
        print(f"{len(found):5} {key}")
        for name, d in found[:show]:
            print(f"      [{name}] {d}".replace("\n", "\n      "))
    return sum(len(v) for v in by_group.values())
