"""registryd on etcd, Consul and Nacos, and a real istiod reading the same state from
registryd over MCP: every node is served the same by both (after the normalization
rules, the MCP ones included).  One comparison checks the MCP mapping (what istiod makes
of the exported ServiceEntries and WorkloadEntries) and registryd's own translation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.differential.compare import compare
from tests.differential.mcp import McpPair
from tests.differential.registry_states import STATES
from tests.differential.servers import NODES


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpPair]:
    servers = McpPair(Path(tmp_path_factory.mktemp("differential-mcp"))).start()
    try:
        yield servers
    finally:
        servers.stop()


async def test_istiod_fed_over_mcp_serves_what_registryd_serves(pair: McpPair) -> None:
    found, compared = [], []
    for state in STATES:
        async for node, istiod, ours in pair.serve(state):
            compared.append((state.name, node.kind))
            assert istiod.get("eds"), (state.name, node.kind)  # endpoints were compared
            found += [f"[{state.name} / {node.kind}] {d}" for d in compare(istiod, ours, mcp=True)]
    assert len(compared) == len(STATES) * len(NODES)
    assert found == [], "\n".join(found)
