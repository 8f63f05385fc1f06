"""What is taken out of both servers' answers before they are compared: a short list of
rules, each naming what it removes or rewrites and why, and each one a row of the
README's "Where registryd differs from istiod" table (``row``: the text its first cell
starts with; a test checks the table has it).  Nothing else is normalized away: any
other difference fails the comparison.

A rule is a pure function of one side's served resources (a deep copy of them) and of
which side it is: it may drop resources or rewrite fields, in place.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from tests.differential.collect import Served

__all__ = ["MARKER_PORT", "RULES", "Rule", "normalize"]

MARKER_PORT = 1  # the harness's sync marker ServiceEntry listens here (never an input's)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    what: str  # what it removes or rewrites
    why: str
    row: str  # the README row it corresponds to ("" only for the harness's own marker)
    apply: Callable[[Served, str], None]


def _marker(served: Served, side: str) -> None:
    """The harness's own sync marker (a ServiceEntry on port 1) and what it makes."""
    suffix = f"|{MARKER_PORT}||"
    for kind in ("cds", "eds"):
        for name in [n for n in served.get(kind, {}) if suffix in n]:
            del served[kind][name]
    listeners = served.get("lds", {})
    for name in [
        n for n in listeners if n.endswith(f"_{MARKER_PORT}") or n.endswith(f":{MARKER_PORT}")
    ]:
        del listeners[name]
    routes = served.get("rds", {})
    for name in [n for n in routes if n == str(MARKER_PORT) or suffix in n]:
        del routes[name]


def _inbound(served: Served, side: str) -> None:
    """istiod's inbound side: what it builds from the proxy's own workload."""
    clusters = served.get("cds", {})
    for name in [
        n for n in clusters if n.startswith("inbound|") or n == "InboundPassthroughCluster"
    ]:
        del clusters[name]
    for name in [n for n in served.get("eds", {}) if n.startswith("inbound|")]:
        del served["eds"][name]
    served.get("lds", {}).pop("virtualInbound", None)
    for name in [n for n in served.get("rds", {}) if n.startswith("inbound|")]:
        del served["rds"][name]


RULES: tuple[Rule, ...] = (
    Rule(
        "marker",
        "the cluster, endpoints, listener and route of the harness's sync marker (port 1)",
        "the harness writes it with each input to know both servers read the input",
        "",
        _marker,
    ),
    Rule(
        "inbound",
        "istiod's `inbound|…` clusters, `InboundPassthroughCluster` and `virtualInbound`",
        "built from the proxy's own workload; registryd serves outbound discovery only",
        "no `virtualInbound` (15006), no inbound listeners or clusters",
        _inbound,
    ),
)


def normalize(served: Served, side: str, rules: tuple[Rule, ...] = RULES) -> Served:
    """A normalized copy of ``served`` (``side``: ``istiod`` or ``registryd``)."""
    out = copy.deepcopy(served)
    for rule in rules:
        rule.apply(out, side)
    return out
