"""Debug endpoints and metrics of an in-process registryd, driven by real ADS clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from registryd.adapter import Problems, Upsert
from registryd.build.builder import SnapshotBuilder
from registryd.daemon.plugins import adapter_type
from registryd.model import Endpoint, Port, Service, ShardKey
from registryd.registry.store import RegistryStore
from registryd.settings import REDACTED, TOO_DEEP, redact
from registryd.testing import AdsClient
from registryd.testing.ads import TYPES
from registryd.web import views
from tests.support.harness import Harness

HOST = "a.example"
CLUSTER = f"outbound|8080||{HOST}"
GOOD = "sidecar~127.0.0.1~good-1.default~default.svc.cluster.local"
PICKY = "sidecar~127.0.0.2~picky-1.default~default.svc.cluster.local"


def service(host: str = HOST) -> Service:
    return Service(hostname=host, ports=(Port(number=8080, name="http", protocol="HTTP"),))


def endpoints(*addresses: str, host: str = HOST) -> list[Endpoint]:
    return [Endpoint(hostname=host, address=a, port=9000, service_port=8080) for a in addresses]


async def get(harness: Harness, path: str, status: int = 200) -> Any:
    url = f"http://127.0.0.1:{harness.app.http_port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == status, await response.text()
        if response.content_type == "application/json":
            return await response.json()
        return await response.text()


async def metrics(harness: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = await get(harness, "/metrics")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def until(condition: Any, what: str, timeout: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await condition()
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def envoy_like(client: AdsClient) -> None:
    """Subscribe like an Envoy and wait until CDS, EDS, LDS and RDS have arrived."""
    client.subscribe("cds")
    cds = await client.next("cds")
    client.subscribe("eds", cds.eds_names)
    client.subscribe("lds")
    client.subscribe("rds", ["8080"])
    for kind in ("eds", "lds", "rds"):
        while TYPES[kind] not in client.last:
            await client.next()


async def test_syncz_pushz_and_metrics_follow_an_ack_and_a_nack(harness: Harness) -> None:
    harness.memory.set([service()], endpoints("10.0.0.1"))
    await until(lambda: _pushed(harness), "the first push")
    before = await metrics(harness)

    async with (
        AdsClient(harness.target, node_id=GOOD) as good,
        AdsClient(harness.target, node_id=PICKY) as picky,
    ):
        picky.reject[TYPES["eds"]] = "endpoint rejected by test"
        await envoy_like(good)
        await envoy_like(picky)

        # adsz and connections list both clients, with their subscriptions
        adsz = await get(harness, "/debug/adsz")
        by_id = {c["proxyID"]: c for c in adsz}
        assert set(by_id) == {GOOD, PICKY}
        assert by_id[GOOD]["subscriptions"]["cds"] == ["*"]
        assert by_id[GOOD]["subscriptions"]["eds"] == [CLUSTER]
        assert by_id[GOOD]["namespace"] == "default"
        assert by_id[GOOD]["node"]["id"] == GOOD
        light = await get(harness, f"/debug/connections?proxyID={PICKY}")
        assert [c["proxyID"] for c in light] == [PICKY]

        # syncz: the good client ACKed everything, the picky one NACKed EDS
        async def synced() -> Any:
            rows = {r["proxyID"]: r["types"] for r in await get(harness, "/debug/syncz")}
            ok = all(t["acked"] for t in rows.get(GOOD, {"x": {"acked": False}}).values())
            return rows if ok and rows.get(PICKY, {}).get("eds", {}).get("nacked") else None

        rows = await until(synced, "syncz to show the ACKs and the NACK")
        assert set(rows[GOOD]) == {"cds", "eds", "lds", "rds"}
        assert rows[GOOD]["eds"]["versionAcked"] == rows[GOOD]["eds"]["versionSent"]
        assert rows[PICKY]["eds"]["lastNack"] == "endpoint rejected by test"
        assert not rows[PICKY]["eds"]["acked"]
        assert rows[PICKY]["cds"]["acked"]

        # a registry change: pushz follows it to both clients
        harness.memory.set([service()], endpoints("10.0.0.1", "10.0.0.2"))

        async def traced() -> Any:
            for push in await get(harness, "/debug/pushz"):
                summary = push.get("summary", {})
                if push["trigger"]["kind"] == "endpoints" and summary.get("nacked") == 1:
                    if summary.get("acked") == 1:
                        return push
            return None

        push = await until(traced, "pushz to show the endpoint push ACKed and NACKed")
        assert push["trigger"]["registries"] == ["memory/mem"]
        assert push["trigger"]["sample"] == [HOST]
        proxies = {p["proxyID"]: p for p in push["proxies"]}
        assert proxies[GOOD]["state"] == "acked"
        assert set(proxies[GOOD]["types"]) == {"eds"}  # only the changed assignment
        assert proxies[GOOD]["types"]["eds"]["resources"] == 1
        assert proxies[GOOD]["ackedMs"] >= proxies[GOOD]["types"]["eds"]["sentMs"] >= 0
        assert proxies[PICKY]["state"] == "nacked"
        assert proxies[PICKY]["types"]["eds"]["error"] == "endpoint rejected by test"
        only = await get(harness, f"/debug/pushz?proxyID={GOOD}&limit=1")
        assert [p["proxyID"] for p in only[0]["proxies"]] == [GOOD]

        # metrics moved: connected clients, pushes per type, rejects, convergence
        after = await metrics(harness)
        clients = sum(v for (n, _), v in after.items() if n == "pilot_xds")
        assert clients == 2

        def delta(name: str, **labels: str) -> float:
            key = (name, tuple(sorted(labels.items())))
            return after.get(key, 0.0) - before.get(key, 0.0)

        assert delta("pilot_xds_pushes", type="cds") == 2  # one CDS response per client
        assert delta("pilot_xds_pushes", type="eds") >= 4  # initial + the change, twice
        assert delta("pilot_total_xds_rejects", type="eds") >= 2
        assert delta("pilot_proxy_convergence_time_count") == 2
        assert delta("pilot_push_triggers", type="endpoint") == 1
        assert delta("pilot_inbound_updates", type="eds") == 1
        assert delta("pilot_xds_config_size_bytes_count", type="eds") >= 4
        assert after[("pilot_services", ())] == 1

    async def gone() -> bool:
        return not await get(harness, "/debug/connections")

    await until(gone, "the connections to close")
    final = await metrics(harness)
    assert sum(v for (n, _), v in final.items() if n == "pilot_xds") == 0


async def _pushed(harness: Harness) -> bool:
    return bool(harness.app.push.history)


async def test_config_dump_is_what_the_proxy_gets(harness: Harness) -> None:
    harness.memory.set([service()], endpoints("10.0.0.1"))
    await until(lambda: _pushed(harness), "the first push")
    async with AdsClient(harness.target, node_id=GOOD) as good:
        await envoy_like(good)
        dump = await get(harness, f"/debug/config_dump?proxyID={GOOD}")
        kinds = [c["@type"].rsplit(".", 1)[-1] for c in dump["configs"]]
        assert kinds == [
            "ClustersConfigDump",
            "ListenersConfigDump",
            "RoutesConfigDump",
            "EndpointsConfigDump",
        ]
        clusters = dump["configs"][0]["dynamic_active_clusters"]
        names = [c["cluster"]["name"] for c in clusters]
        assert names == ["BlackHoleCluster", "PassthroughCluster", CLUSTER]
    missing = await get(harness, "/debug/config_dump?proxyID=nobody", status=404)
    assert "nobody" in missing["error"]
    await get(harness, "/debug/config_dump", status=400)


def served(dump: dict[str, Any]) -> list[dict[str, Any]]:
    """A config dump without what the proxy's ACKs change (each type's acked version)."""
    return [{k: v for k, v in c.items() if k != "version_info"} for c in dump["configs"]]


async def test_config_dump_accepts_the_names_proxy_status_accepts(harness: Harness) -> None:
    harness.memory.set([service()], endpoints("10.0.0.1"))
    await until(lambda: _pushed(harness), "the first push")
    other = "sidecar~127.0.0.2~good-1.other~other.svc.cluster.local"
    async with AdsClient(harness.target, node_id=GOOD) as good:
        await envoy_like(good)
        full = served(await get(harness, f"/debug/config_dump?proxyID={GOOD}"))
        for short in ("good-1.default", "good-1"):
            assert served(await get(harness, f"/debug/config_dump?proxyID={short}")) == full
        async with AdsClient(harness.target, node_id=other) as second:
            await envoy_like(second)
            dump = await get(harness, "/debug/config_dump?proxyID=good-1.default")
            assert served(dump) == full
            both = await get(harness, "/debug/config_dump?proxyID=good-1", status=400)
            assert both["error"] == (f"proxyID 'good-1' names several proxies: {GOOD}, {other}")


async def test_registry_views_show_provenance_and_problems(harness: Harness) -> None:
    harness.memory.set(
        [service(), service("empty.example")],
        endpoints("10.0.0.1", "10.0.0.2") + endpoints("vm-1.example.com", host="empty.example"),
    )
    await until(lambda: _pushed(harness), "the first push")
    registry = await get(harness, f"/debug/registryz?hostname={HOST}")
    assert [s["hostname"] for s in registry] == [HOST]
    assert registry[0]["registry"] == "memory/mem"
    assert registry[0]["priority"] == 0  # a plugin's default
    assert registry[0]["priorities"] == {"memory/mem": 0}
    assert registry[0]["ports"] == [{"name": "http", "port": 8080, "protocol": "HTTP"}]
    assert registry[0]["endpoints"] == 2

    shards = await get(harness, "/debug/endpointz")
    mine = shards[HOST]["default"]["memory/mem"]
    assert mine["attributes"]["winner"] is True
    assert sorted(e["address"] for e in mine["endpoints"]) == ["10.0.0.1", "10.0.0.2"]
    assert {e["registry"] for e in mine["endpoints"]} == {"memory/mem"}

    status = await get(harness, "/debug/push_status")
    # empty.example's one endpoint is a DNS name, which EDS cannot carry: no instances
    assert status["pilot_eds_no_instances"] == ["outbound|8080||empty.example"]
    assert status["registryd_endpoints_not_in_eds"] == {
        "empty.example": ["vm-1.example.com:9000 (memory/mem)"]
    }
    assert status["services"] == 2

    config = await get(harness, "/debug/configz?registry=mem")
    assert [c["registry"] for c in config] == ["memory/mem"]
    assert config[0]["synced"] is True

    index = await get(harness, "/debug")
    assert "/debug/pushz" in index and "/debug/syncz" in index
    listed = {e["path"] for e in await get(harness, "/debug/list")}
    assert {"/debug/adsz", "/debug/endpointz", "/debug/config_dump", "/metrics"} <= listed


async def test_registry_metrics_track_sync_and_failure(harness: Harness) -> None:
    harness.memory.set([service()], endpoints("10.0.0.1", "10.0.0.2"))
    await until(lambda: _pushed(harness), "the first push")
    labels = (("provider", "memory"), ("registry", "mem"))
    values = await metrics(harness)
    assert values[("registryd_registry_synced", labels)] == 1
    assert values[("registryd_registry_endpoints", labels)] == 2
    assert values[("registryd_registry_last_sync_timestamp_seconds", labels)] > 0
    harness.memory.fail(RuntimeError("registry went away"))

    async def failed() -> Any:
        v = await metrics(harness)
        return v if v[("registryd_registry_synced", labels)] == 0 else None

    values = await until(failed, "the registry to show as not synced")
    assert values[("registryd_registry_failures_total", labels)] == 1
    assert values[("registryd_registry_endpoints", labels)] == 2  # last good state kept
    config = await get(harness, "/debug/configz")
    assert "registry went away" in config[0]["lastError"]


async def test_problems_and_warnings_are_shown(harness: Harness) -> None:
    harness.memory.set([service()], endpoints("10.0.0.1"))
    await until(lambda: _pushed(harness), "the first push")
    labels = (("provider", "memory"), ("registry", "mem"))
    warning = f"host {HOST} is defined twice; the first definition is used"
    harness.memory.report(
        Problems(
            errors={"src": "src: broken"},
            sources={"src": {"k": 1}},
            warnings=(warning,),
            status={"mode": "poll", "why": "push refused"},
        )
    )

    async def reported() -> Any:
        v = await metrics(harness)
        return v if v[("registryd_registry_warnings", labels)] == 1 else None

    values = await until(reported, "the warning in the metrics")
    assert values[("registryd_registry_config_errors", labels)] == 1
    (config,) = await get(harness, "/debug/configz")
    assert (config["errors"], config["warnings"]) == ({"src": "src: broken"}, [warning])
    assert config["sources"] == {"src": {"k": 1}}
    assert config["status"] == {"mode": "poll", "why": "push refused"}
    status = await get(harness, "/debug/push_status")
    assert status["registryd_registry_warnings"] == {"memory/mem": [warning]}
    assert status["registryd_config_errors"] == {"memory/mem": {"src": "src: broken"}}

    harness.memory.report(Problems())
    await until(lambda: _cleared(harness, labels), "the warning to clear from the metrics")
    (config,) = await get(harness, "/debug/configz")
    assert (config["errors"], config["warnings"], config["status"]) == ({}, [], {})
    assert (await get(harness, "/debug/push_status"))["registryd_registry_warnings"] == {}


async def _cleared(harness: Harness, labels: Any) -> Any:
    v = await metrics(harness)
    return v if v[("registryd_registry_warnings", labels)] == 0 else None


def test_registry_views_show_merge_priorities() -> None:
    store = RegistryStore(adapter_type)
    inv, k8s = ShardKey("inventory", "inv"), ShardKey("kubernetes", "k")
    se_a, se_b = ShardKey("serviceentry", "se-a"), ShardKey("serviceentry", "se-b")
    store.expect(inv, 500)  # a plugin outranking Kubernetes
    store.apply(inv, Upsert(service=Service(hostname="a.example", ports=(Port(number=9090),))))
    store.apply(k8s, Upsert(service=Service(hostname="a.example", ports=(Port(number=80),))))
    for key in (se_b, se_a):  # a tie: the registry name decides
        store.apply(key, Upsert(service=Service(hostname="b.example")))

    a, b = views.registryz(store.view.services)
    assert (a["registry"], a["priority"]) == ("inventory/inv", 500)
    assert a["registries"] == ["inventory/inv", "kubernetes/k"]
    assert a["priorities"] == {"inventory/inv": 500, "kubernetes/k": 400}
    assert [p["port"] for p in a["ports"]] == [9090]
    assert (
        a["conflict"]["rule"] == "attributes from the highest-priority registry; endpoints combined"
    )
    assert b["priorities"] == {"serviceentry/se-a": 300, "serviceentry/se-b": 300}

    shown = views.endpointz(store)
    winner = shown["a.example"]["default"]["inventory/inv"]["attributes"]
    assert (winner["winner"], winner["priority"]) == (True, 500)
    loser = shown["a.example"]["default"]["kubernetes/k"]["attributes"]
    assert (loser["winner"], loser["priority"], loser["winnerPriority"]) == (False, 400, 500)
    assert loser["rule"] == "attributes from inventory/inv (priority 500 > 400); endpoints combined"
    assert loser["conflictingFields"] == ["ports"]
    tied = shown["b.example"]["default"]["serviceentry/se-b"]["attributes"]
    assert tied["rule"] == (
        "attributes from serviceentry/se-a (equal priority 300, its name sorts first); "
        "endpoints combined"
    )
    configured = views.configz(store, [(inv, {}), (k8s, {})], {})
    assert [c["priority"] for c in configured] == [500, 400]


def test_configz_never_shows_credentials() -> None:
    store = RegistryStore(adapter_type)
    key = ShardKey("consul", "dc1")
    store.expect(key)
    settings = {
        "address": "127.0.0.1:8500",
        "token": "s3cr3t",
        "tls": {"ca_file": "/ca.pem", "client_password": "hunter2"},
        "headers": [{"Authorization": "Bearer abc"}],
    }
    (shown,) = views.configz(store, [(key, settings)], {})
    text = str(shown)
    assert "s3cr3t" not in text and "hunter2" not in text and "Bearer abc" not in text
    assert shown["settings"]["token"] == REDACTED
    assert shown["settings"]["address"] == "127.0.0.1:8500"
    assert shown["settings"]["tls"]["ca_file"] == "/ca.pem"


def test_configz_hides_url_credentials_in_settings_and_errors() -> None:
    store = RegistryStore(adapter_type)
    key = ShardKey("consul", "dc1")
    store.expect(key)
    store.mark_failed(key, "cannot reach https://ops:hunter2@consul.internal:8501/v1")
    settings = {"address": "ops:hunter2@consul.internal:8500", "url": "http://a:b%40c@h/"}
    (shown,) = views.configz(store, [(key, settings)], {})
    assert "hunter2" not in str(shown) and "b%40c" not in str(shown)
    assert shown["settings"]["address"] == f"ops:{REDACTED}@consul.internal:8500"
    assert shown["settings"]["url"] == f"http://a:{REDACTED}@h/"
    assert shown["lastError"] == f"cannot reach https://ops:{REDACTED}@consul.internal:8501/v1"


def test_configz_shows_when_a_failed_registry_is_retried() -> None:
    store = RegistryStore(adapter_type)
    key = ShardKey("consul", "dc1")
    store.expect(key)
    (waiting,) = views.configz(store, [(key, {})], {key: 1}, next_retry={key: 1700000000.5})
    assert waiting["nextRetry"] == "2023-11-14T22:13:20.500Z"
    (running,) = views.configz(store, [(key, {})], {})
    assert running["nextRetry"] is None


@pytest.mark.parametrize(
    "key",
    ["api_key", "apiKey", "aws_access_key_id", "AWS_SECRET_ACCESS_KEY", "session-key", "Cookie"],
)
def test_secret_looking_keys_are_redacted(key: str) -> None:
    assert redact({key: "v4lue", "plain": "kept"}) == {key: REDACTED, "plain": "kept"}


def test_redaction_of_data_nested_past_the_limit_is_marked_not_an_error() -> None:
    deep: Any = "bottom"
    for _ in range(5000):
        deep = {"a": [deep]}
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    shown = redact({"deep": deep, "cyclic": cyclic})
    text = json.dumps(shown)  # renders, whatever the nesting
    assert TOO_DEEP in text and "bottom" not in text


async def test_configz_answers_on_deeply_nested_registry_config(harness: Harness) -> None:
    deep: Any = "x"
    for _ in range(900):
        deep = {"k": deep}
    key = harness.app._adapters[0][0]
    harness.app.store.apply(key, Problems(sources={"deep.yaml": deep}))
    body = await get(harness, "/debug/configz")
    assert TOO_DEEP in json.dumps(body)


async def test_adsz_redacts_secret_node_metadata(harness: Harness) -> None:
    metadata = {"api_key": "k-123456", "aws_access_key_id": "AKIA0000", "NAMESPACE": "default"}
    async with AdsClient(harness.target, node_id=GOOD, metadata=metadata) as client:
        client.subscribe("cds")
        await client.next("cds")
        (entry,) = await get(harness, "/debug/adsz")
    fields = entry["node"]["metadata"]
    assert fields["api_key"] == fields["aws_access_key_id"] == REDACTED
    assert fields["NAMESPACE"] == "default"
    assert "k-123456" not in json.dumps(entry)


async def test_a_failed_push_is_counted_and_the_next_change_is_pushed(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = SnapshotBuilder.build
    calls = {"n": 0}

    def failing_once(builder: SnapshotBuilder, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("injected builder failure")
        return real(builder, *args, **kwargs)

    monkeypatch.setattr(SnapshotBuilder, "build", failing_once)
    async with AdsClient(harness.target, node_id=GOOD) as client:
        client.subscribe("cds")
        await client.next("cds")  # the empty state
        harness.memory.set([service()], endpoints("10.0.0.1"))
        failures = ("registryd_task_failures_total", (("task", "push"),))
        await until(lambda: _value(harness, failures), "the failure to be counted")
        assert await get(harness, "/healthz") == "ok\n"  # restarted, not dead
        harness.memory.upsert(service("b.example"))
        cds = await client.next("cds")
        assert cds.registry_names == [CLUSTER, "outbound|8080||b.example"]


async def _value(harness: Harness, sample: Any) -> float | None:
    return (await metrics(harness)).get(sample)


async def test_healthz_names_a_task_that_died(harness: Harness) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(broken(), name="demo")
    harness.app.health.watch(task)
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)  # done callbacks run on the next turn
    text = await get(harness, "/healthz", status=503)
    assert "task demo died: RuntimeError: boom" in text
    assert ("registryd_task_failures_total", (("task", "demo"),)) in await metrics(harness)


async def test_a_handler_bug_answers_500_and_is_counted(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> Any:
        raise KeyError("bug")

    monkeypatch.setattr(views, "push_status", broken)
    body = await get(harness, "/debug/push_status", status=500)
    assert body == {"error": "internal error in /debug/push_status"}
    assert (await metrics(harness))[("registryd_task_failures_total", (("task", "http"),))] == 1


ISTIOD_METRICS = {
    "pilot_xds": "gauge",
    "pilot_services": "gauge",
    "pilot_xds_pushes": "unknown",
    "pilot_xds_push_time": "histogram",
    "pilot_proxy_convergence_time": "histogram",
    "pilot_debounce_time": "histogram",
    "pilot_push_triggers": "unknown",
    "pilot_inbound_updates": "unknown",
    "pilot_total_xds_rejects": "unknown",
    "pilot_xds_expired_nonce": "unknown",
    "pilot_xds_send_time": "histogram",
    "pilot_xds_config_size_bytes": "histogram",
}


async def test_every_istiod_metric_is_exposed_with_its_buckets(harness: Harness) -> None:
    harness.memory.set([service()], endpoints("10.0.0.1"))
    await until(lambda: _pushed(harness), "the first push")
    async with AdsClient(harness.target, node_id=GOOD) as good:
        await envoy_like(good)
        text = await get(harness, "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {n: families[n].type for n in ISTIOD_METRICS if n in families} == ISTIOD_METRICS
    # counters carry istiod's bare sample names, as dashboards query them
    assert 'pilot_xds_pushes{type="cds"} 1.0' in text
    buckets = {
        s.labels["le"]
        for s in families["pilot_proxy_convergence_time"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets == {"0.1", "0.5", "1.0", "3.0", "5.0", "10.0", "20.0", "30.0", "+Inf"}
