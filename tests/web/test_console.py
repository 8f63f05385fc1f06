"""The web console's data (``/debug/console``) and files (``/ui``) of an in-process
registryd, driven by real ADS clients.  The page itself, in a real browser, is
``tests/e2e/test_console.py``."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from registryd.testing import AdsClient
from registryd.testing.ads import DeltaAdsClient
from registryd.web import views
from registryd.web.server import CONSOLE_FILES, CONSOLE_POLICY, Answer, Recent, console_files
from tests.support.harness import Harness
from tests.web.test_debug import (
    GOOD,
    HOST,
    PICKY,
    endpoints,
    envoy_like,
    get,
    service,
    until,
)


async def test_console_shows_registries_services_proxy_states_and_pushes(
    harness: Harness,
) -> None:
    harness.memory.set([service()], endpoints("10.0.0.1"))
    await until(lambda: _pushed(harness), "the first push")
    async with (
        AdsClient(harness.target, node_id=GOOD) as good,
        AdsClient(harness.target, node_id=PICKY) as picky,
    ):
        picky.reject["type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"] = (
            "endpoint <b>rejected</b> by test"
        )
        await envoy_like(good)
        await envoy_like(picky)

        async def settled() -> Any:
            data = await get(harness, "/debug/console")
            states = {p["proxyID"]: p["state"] for p in data["proxies"]}
            return data if states == {GOOD: "SYNCED", PICKY: "NACKED"} else None

        data = await until(settled, "one client SYNCED, the other NACKED")
        [registry] = data["registries"]
        assert registry["registry"] == "memory/mem"
        assert registry["synced"] and registry["lastSync"]
        assert (registry["services"], registry["endpoints"]) == (1, 1)
        [svc] = data["services"]
        assert svc["hostname"] == HOST and svc["ports"] == ["8080/HTTP"]
        assert svc["registry"] == "memory/mem" and svc["endpoints"] == 1
        proxies = {p["proxyID"]: p for p in data["proxies"]}
        assert proxies[GOOD]["kind"] == "Envoy SotW"
        assert proxies[GOOD]["connectedAt"]
        assert {t["state"] for t in proxies[GOOD]["types"].values()} == {"SYNCED"}
        assert proxies[PICKY]["types"]["eds"] == {
            "state": "NACKED",
            "version": proxies[PICKY]["types"]["eds"]["version"],
            "error": "endpoint <b>rejected</b> by test",  # as sent: the page escapes it
        }
        assert proxies[PICKY]["types"]["cds"]["state"] == "SYNCED"

        # a registry change: the push names its trigger, who ACKed and who NACKed
        harness.memory.set([service()], endpoints("10.0.0.1", "10.0.0.2"))

        async def traced() -> Any:
            for push in (await get(harness, "/debug/console"))["pushes"]:
                if push["kind"] == "endpoints" and push.get("acked") == 1 and push["nacked"]:
                    return push
            return None

        push = await until(traced, "the endpoint push ACKed by one, NACKed by the other")
        assert push["registries"] == ["memory/mem"] and push["sample"] == [HOST]
        assert push["proxies"] == 2 and push["pending"] == 0
        assert push["lastAckMs"] is not None
        assert push["nackedProxies"] == [
            {"proxyID": PICKY, "error": "endpoint <b>rejected</b> by test"}
        ]
        latest = await get(harness, "/debug/console")
        good_now = next(p for p in latest["proxies"] if p["proxyID"] == GOOD)
        assert good_now["version"] >= push["version"]


async def test_console_data_is_revalidated_with_an_etag_and_compressed(
    harness: Harness,
) -> None:
    harness.memory.set([service(f"s{i}.example") for i in range(50)], [])
    await until(lambda: _pushed(harness), "the first push")
    url = f"http://127.0.0.1:{harness.app.http_port}/debug/console"
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(url, headers={"Accept-Encoding": "gzip"}) as first:
            assert first.status == 200
            assert first.headers["Content-Encoding"] == "gzip"
            assert first.headers["Server-Timing"].startswith("app;dur=")
            tag = first.headers["ETag"]
        async with session.get(url, headers={"If-None-Match": tag}) as again:
            assert again.status == 304 and not await again.read()
        harness.memory.set([service(f"s{i}.example") for i in range(51)], [])
        await until(lambda: _changed(harness, url, tag), "a new ETag after a change")


async def test_ui_serves_its_files_under_a_strict_policy(harness: Harness) -> None:
    base = f"http://127.0.0.1:{harness.app.http_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/ui", allow_redirects=False) as bare:
            assert bare.status == 302 and bare.headers["Location"] == "ui/"
        for name, kind in CONSOLE_FILES.items():
            path = "/ui/" if name == "index.html" else f"/ui/{name}"
            async with session.get(base + path) as response:
                assert response.status == 200, path
                assert response.content_type == kind
                assert response.headers["Content-Security-Policy"] == CONSOLE_POLICY
                assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "/ui" in [e["path"] for e in await get(harness, "/debug/list")]


def test_console_files_are_small_self_contained_and_never_parse_data_as_html() -> None:
    files = console_files()
    assert sum(len(b) for b in files.values()) < 60 * 1024
    page = files["index.html"].decode()
    linked = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert not [u for u in linked if "//" in u], linked  # nothing from another origin
    loaded = set(re.findall(r'(?:<script src|rel="stylesheet" href)="([^"]*)"', page))
    assert loaded == {"console.js", "console.css"}
    assert not re.search(r"<script>[^<]", page)  # no inline script: the policy forbids it
    script = files["console.js"].decode()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "http://" not in script.replace("http://www.w3.org/2000/svg", "")


async def _pushed(harness: Harness) -> bool:
    return bool(harness.app.push.history)


async def _changed(harness: Harness, url: str, tag: str) -> bool:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"If-None-Match": tag}) as response,
    ):
        return response.status == 200 and response.headers["ETag"] != tag


async def test_service_rows_are_made_again_only_for_a_new_view(harness: Harness) -> None:
    harness.memory.set([service()], endpoints("10.0.0.1"))
    await until(lambda: _pushed(harness), "the first push")
    rows = views.ServiceRows()
    first = rows.rows(harness.app.store.view)
    assert rows.rows(harness.app.store.view) is first  # the same view: kept
    harness.memory.set([service(), service("b.example")], endpoints("10.0.0.1"))
    await until(lambda: _has(harness, "b.example"), "the second service")
    assert [r["hostname"] for r in rows.rows(harness.app.store.view)] == [HOST, "b.example"]


async def _has(harness: Harness, host: str) -> bool:
    return host in harness.app.store.view.services


def test_a_console_answer_is_reused_while_fresh_then_built_again() -> None:
    now = [100.0]
    recent = Recent(1.0, clock=lambda: now[0])
    assert recent.get() is None
    answer = Answer.of({"version": 1})
    recent.keep(answer)
    now[0] += 0.999
    assert recent.get() is answer
    now[0] += 0.001
    assert recent.get() is None  # as old as fresh: built again
    assert Answer.of({"version": 1}).etag == answer.etag != Answer.of({"version": 2}).etag


async def test_console_names_each_kind_of_client(harness: Harness) -> None:
    harness.memory.set([service()], endpoints("10.0.0.1"))
    await until(lambda: _pushed(harness), "the first push")
    grpc_node = "sidecar~127.0.0.3~grpc-1.default~default.svc.cluster.local"
    istiod_node = "istiod-1"
    async with (
        AdsClient(harness.target, node_id=GOOD) as sotw,
        DeltaAdsClient(harness.target, node_id=PICKY) as delta,
        AdsClient(harness.target, node_id=grpc_node, metadata={"GENERATOR": "grpc"}) as grpc,
        AdsClient(harness.target, node_id=istiod_node, metadata={"GENERATOR": "api"}) as mcp,
    ):
        for client in (sotw, delta, grpc):
            client.subscribe("cds")
        mcp.subscribe("networking.istio.io/v1/ServiceEntry")

        async def kinds() -> Any:
            proxies = (await get(harness, "/debug/console"))["proxies"]
            found = {p["proxyID"]: p["kind"] for p in proxies}
            return found if len(found) == 4 else None

        assert await until(kinds, "four clients") == {
            GOOD: "Envoy SotW",
            PICKY: "Envoy Delta",
            grpc_node: "proxyless gRPC",
            istiod_node: "istiod over MCP",
        }
