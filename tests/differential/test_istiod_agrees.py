"""registryd against a real istiod on the same ServiceEntry files (the short profile of
the differential harness): what already agrees must keep agreeing.

Today that is every listener a sidecar (captured, and ``INTERCEPTION_MODE: NONE``) gets
for every input of the corpus: Istio's own ServiceEntry test data (when the shared
conformance data is beside the project), the project's examples and test fixtures.
``python -m tests.differential <paths>`` prints every remaining difference.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.differential.compare import compare
from tests.differential.servers import NODES, IstiodRefused, Pair, istio_inputs

ROOT = Path(__file__).resolve().parents[2]
CORPUS = [ROOT.parent / "shared" / "conformance" / "istio", ROOT / "tests", ROOT / "examples"]
# the generated counterexamples: each shows a known difference (test_generated's corpus)
KNOWN_DIFFERENCES = Path(__file__).resolve().parent / "corpus"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    servers = Pair(tmp_path_factory.mktemp("differential"))
    try:
        yield servers
    finally:
        servers.stop()


async def test_sidecar_listeners_agree_with_istiod_on_every_input(pair: Pair) -> None:
    inputs = [
        p
        for p in istio_inputs(p for p in CORPUS if p.exists())
        if KNOWN_DIFFERENCES not in p.resolve().parents
    ]
    assert len(inputs) >= 10, inputs  # the examples and fixtures at least
    sidecars = [n for n in NODES if n.kind in ("sidecar", "local")]
    compared: set[str] = set()
    found = []
    for path in inputs:
        try:
            async for node, istiod, ours in pair.serve(path.read_text(), sidecars):
                compared.add(str(path))
                found += [
                    f"[{path.name} {node.kind}] {d}"
                    for d in compare(istiod, ours)
                    if d.kind == "lds"
                ]
        except IstiodRefused:
            continue  # istiod keeps its previous state: nothing to compare
    examples = {str(p) for p in istio_inputs([ROOT / "examples"])}
    assert examples and examples <= compared  # the examples at least were compared
    assert found == [], "\n".join(found)
