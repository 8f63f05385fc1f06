"""registryd and a real istiod reading the same Kubernetes cluster (one kube-apiserver):
every node is served the same by both for every hand-written state of
:mod:`tests.differential.kube_states` (after the normalization rules)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.differential.compare import compare
from tests.differential.kube import KUBE_NODES, KubePair, grpc_names
from tests.differential.kube_states import STATES


@pytest.fixture(scope="module")
def kube_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubePair]:
    servers = KubePair(Path(tmp_path_factory.mktemp("differential-kube"))).start()
    try:
        yield servers
    finally:
        servers.stop()


async def test_istiod_on_the_same_cluster_serves_what_registryd_serves(
    kube_pair: KubePair,
) -> None:
    found, compared = [], []
    for state in STATES:
        async for node, istiod, ours in kube_pair.serve(state):
            where = f"{state.name} / {node.kind}@{node.metadata['NAMESPACE']}"
            compared.append(where)
            assert istiod.get("eds"), where  # endpoints were compared
            if node.kind == "sidecar":  # istiod read the state: some Service of it is there
                hosts = {h.split(":")[0] for h in grpc_names(state)}
                assert {n.rsplit("|", 1)[-1] for n in istiod["cds"]} & hosts, state.name
            differences = compare(istiod, ours, kube=state.facts())
            found += [f"[{where}] {d}" for d in differences]
    assert len(compared) == len(STATES) * len(KUBE_NODES)
    assert found == [], "\n".join(found)
