"""Resource-by-resource differences between what istiod and registryd serve one node,
after :mod:`tests.differential.normalize`: every field path whose value differs, and
every resource only one of them serves."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tests.differential.collect import Served
from tests.differential.normalize import (
    MCP_PAIR_RULES,
    MCP_RULES,
    PAIR_RULES,
    RULES,
    KubeFacts,
    PairRule,
    Rule,
    normalize_pair,
)

__all__ = ["ABSENT", "Difference", "compare", "field_path"]

ABSENT = "<absent>"
TYPES = ("cds", "eds", "lds", "rds")


@dataclass(frozen=True, slots=True)
class Difference:
    """One difference: resource ``kind``/``name`` at field ``path`` ("" for the whole
    resource), with each side's value (``ABSENT`` where a side has none)."""

    kind: str
    name: str
    path: str
    istiod: Any
    registryd: Any

    def __str__(self) -> str:
        show = lambda v: json.dumps(v, sort_keys=True)[:300]  # noqa: E731
        return (
            f"{self.kind} {self.name} {self.path or '(resource)'}\n"
            f"    istiod:    {show(self.istiod)}\n    registryd: {show(self.registryd)}"
        )


def field_path(path: str) -> str:
    """``path`` without list indices: the field it is, whatever the element."""
    return re.sub(r"\[\d+\]", "[]", path)


def _walk(kind: str, name: str, a: Any, b: Any, path: str, out: list[Difference]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            _walk(kind, name, a.get(key, ABSENT), b.get(key, ABSENT), f"{path}.{key}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _walk(kind, name, x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append(Difference(kind, name, path, a, b))


def compare(
    istiod: Served, registryd: Served, *, mcp: bool = False, kube: KubeFacts | None = None
) -> list[Difference]:
    """The differences between the two servers' answers, normalized; ``mcp``: istiod
    read registryd's state over MCP (the MCP rules apply too); ``kube``: both read one
    Kubernetes cluster in a state with these facts (the Kubernetes rules apply too)."""
    rules: tuple[Rule, ...] = (*RULES, *MCP_RULES) if mcp else RULES
    pair_rules: tuple[PairRule, ...] = (*PAIR_RULES, *MCP_PAIR_RULES) if mcp else PAIR_RULES
    a, b = normalize_pair(istiod, registryd, rules, pair_rules, kube)
    out: list[Difference] = []
    for kind in TYPES:
        left, right = a.get(kind, {}), b.get(kind, {})
        for name in sorted(set(left) | set(right)):
            if name not in right:
                out.append(Difference(kind, name, "", left[name], ABSENT))
            elif name not in left:
                out.append(Difference(kind, name, "", ABSENT, right[name]))
            else:
                _walk(kind, name, left[name], right[name], "", out)
    return out
