"""``/debug/adsz`` leaves out the node's ``extensions`` (Envoy lists every compiled-in
extension: most of the answer) unless ``?verbose=1``."""

from __future__ import annotations

from registryd.testing import AdsClient
from tests.support.harness import Harness
from tests.web.test_debug import get


async def test_adsz_leaves_out_node_extensions_unless_verbose(harness: Harness) -> None:
    client = AdsClient(harness.target, node_id="envoy-1")
    for index in range(3):
        extension = client.node.extensions.add()
        extension.name = f"envoy.filters.http.f{index}"
        extension.category = "envoy.filters.http"
    async with client:
        client.subscribe("cds")
        await client.next("cds")
        (short,) = await get(harness, "/debug/adsz")
        (full,) = await get(harness, "/debug/adsz?verbose=1")
        (other,) = await get(harness, "/debug/adsz?verbose=0&proxyID=envoy-1")
    assert "extensions" not in short["node"]
    assert short["extensionsOmitted"] == 3
    assert short["node"]["id"] == "envoy-1"
    assert [e["name"] for e in full["node"]["extensions"]] == [
        f"envoy.filters.http.f{i}" for i in range(3)
    ]
    assert "extensionsOmitted" not in full
    assert other["extensionsOmitted"] == 3 and "extensions" not in other["node"]


async def test_adsz_of_a_node_without_extensions_says_nothing_omitted(harness: Harness) -> None:
    async with AdsClient(harness.target, node_id="bare") as client:
        client.subscribe("cds")
        await client.next("cds")
        (entry,) = await get(harness, "/debug/adsz")
    assert "extensions" not in entry["node"] and "extensionsOmitted" not in entry
