"""registryd against a real istiod on the same ServiceEntry files (the short profile of
the differential harness): what already agrees must keep agreeing.

Today that is everything (clusters, endpoints, listeners, routes) every node (a captured
sidecar, one with ``INTERCEPTION_MODE: NONE``, a proxyless gRPC client) gets for every
input of the corpus: Istio's own ServiceEntry test data (when the shared conformance data
is beside the project), the project's examples and test fixtures.  An input istiod
answers differently from push to push, or builds from several entries at once
(:func:`tests.differential.servers.ambiguity`: rows of docs/xds.md's table), is not
compared.
``python -m tests.differential <paths>`` prints every remaining difference.
"""

from __future__ import annotations

from pathlib import Path

from tests.differential.compare import compare
from tests.differential.servers import NODES, Ambiguous, IstiodRefused, Pair, istio_inputs

ROOT = Path(__file__).resolve().parents[2]
CORPUS = [ROOT.parent / "shared" / "conformance" / "istio", ROOT / "tests", ROOT / "examples"]


async def test_every_node_is_served_what_istiod_serves_on_every_input(pair: Pair) -> None:
    inputs = istio_inputs(c for c in CORPUS if c.exists())
    assert len(inputs) >= 10, inputs  # the examples and fixtures at least
    compared: set[str] = set()
    found = []
    for path in inputs:
        try:
            async for node, istiod, ours in pair.serve(path.read_text(), NODES):
                compared.add(str(path))
                found += [f"[{path.name} {node.kind}] {d}" for d in compare(istiod, ours)]
        except IstiodRefused:
            continue  # istiod keeps its previous state: nothing to compare
        except Ambiguous:
            continue  # a docs/xds.md row: istiod's answer is not one definition
    examples = {str(p) for p in istio_inputs([ROOT / "examples"])}
    assert examples and examples <= compared  # the examples at least were compared
    assert found == [], "\n".join(found)
