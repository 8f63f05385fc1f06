"""Delta streams in every debug view and metric: adsz, syncz, connections, config_dump,
pushz, pilot_xds*, rejects, convergence, with the kind of stream shown."""

from __future__ import annotations

from typing import Any

from registryd.testing import AdsClient, DeltaAdsClient
from registryd.testing.ads import TYPES
from tests.support.harness import Harness
from tests.web.test_debug import _pushed, endpoints, get, metrics, service, until
from tests.web.test_debug import envoy_like as sotw_like
from tests.xds.test_server_delta import envoy_like

DELTA = "sidecar~127.0.0.3~delta-1.default~default.svc.cluster.local"
PICKY = "sidecar~127.0.0.4~picky-1.default~default.svc.cluster.local"
SOTW = "sidecar~127.0.0.5~sotw-1.default~default.svc.cluster.local"
CLUSTER = "outbound|8080||a.example"


async def test_delta_streams_in_debug_views_pushz_and_metrics(harness: Harness) -> None:
    harness.memory.set([service()], endpoints("10.0.0.1"))
    await until(lambda: _pushed(harness), "the first push")
    before = await metrics(harness)
    async with (
        DeltaAdsClient(harness.target, node_id=DELTA) as good,
        DeltaAdsClient(harness.target, node_id=PICKY) as picky,
        AdsClient(harness.target, node_id=SOTW) as sotw,
    ):
        picky.reject[TYPES["eds"]] = "endpoint rejected by test"
        await envoy_like(good)
        await envoy_like(picky)
        await sotw_like(sotw)

        adsz = {c["proxyID"]: c for c in await get(harness, "/debug/adsz")}
        assert {p: (c["type"], c["delta"]) for p, c in adsz.items()} == {
            DELTA: ("delta", True),
            PICKY: ("delta", True),
            SOTW: ("sotw", False),
        }
        assert adsz[DELTA]["subscriptions"] == {
            "cds": ["*"],
            "eds": [CLUSTER],
            "lds": ["*"],
            "rds": ["8080"],
        }
        light = await get(harness, f"/debug/connections?proxyID={DELTA}")
        assert [(c["proxyID"], c["type"]) for c in light] == [(DELTA, "delta")]

        async def synced() -> Any:
            rows = {r["proxyID"]: r for r in await get(harness, "/debug/syncz")}
            good_row, picky_row = rows.get(DELTA), rows.get(PICKY)
            if good_row is None or picky_row is None:
                return None
            ok = all(t["acked"] for t in good_row["types"].values())
            return rows if ok and picky_row["types"]["eds"]["nacked"] else None

        rows = await until(synced, "syncz to show the Delta ACKs and NACK")
        assert rows[DELTA]["type"] == "delta" and rows[SOTW]["type"] == "sotw"
        eds = rows[DELTA]["types"]["eds"]
        assert eds["versionAcked"] == eds["versionSent"]
        assert eds["resourcesHeld"] == 1 and eds["removedSent"] == []
        assert rows[PICKY]["types"]["eds"]["lastNack"] == "endpoint rejected by test"
        assert "resourcesHeld" not in rows[SOTW]["types"]["eds"]

        dump = await get(harness, f"/debug/config_dump?proxyID={DELTA}")
        clusters = next(c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump"))
        by_name = {c["cluster"]["name"]: c for c in clusters["dynamic_active_clusters"]}
        assert by_name[CLUSTER]["version_info"] == good.held[TYPES["cds"]][CLUSTER].version

        harness.memory.set([service()], endpoints("10.0.0.1", "10.0.0.2"))

        async def traced() -> Any:
            for push in await get(harness, "/debug/pushz"):
                summary = push.get("summary", {})
                if push["trigger"]["kind"] == "endpoints" and summary.get("acked") == 2:
                    if summary.get("nacked") == 1:
                        return push
            return None

        push = await until(traced, "pushz to follow the push to every stream")
        proxies = {p["proxyID"]: p for p in push["proxies"]}
        assert {p: e["type"] for p, e in proxies.items()} == {
            DELTA: "delta",
            PICKY: "delta",
            SOTW: "sotw",
        }
        assert proxies[DELTA]["state"] == "acked"
        assert proxies[DELTA]["types"]["eds"]["resources"] == 1
        assert proxies[PICKY]["state"] == "nacked"
        assert proxies[PICKY]["types"]["eds"]["error"] == "endpoint rejected by test"

        after = await metrics(harness)

        def moved(name: str, **labels: str) -> float:
            key = (name, tuple(sorted(labels.items())))
            return after.get(key, 0.0) - before.get(key, 0.0)

        assert sum(v for (n, _), v in after.items() if n == "pilot_xds") == 3
        assert after[("registryd_xds_streams", (("type", "delta"),))] == 2
        assert after[("registryd_xds_streams", (("type", "sotw"),))] == 1
        assert moved("pilot_xds_pushes", type="cds") == 3  # one CDS response per client
        assert moved("pilot_total_xds_rejects", type="eds") >= 2  # the picky one, twice
        assert moved("pilot_proxy_convergence_time_count") == 3
