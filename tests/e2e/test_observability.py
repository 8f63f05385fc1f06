"""The debug and metrics ports of a real registryd with a real Envoy connected: the
Envoy shows up in adsz/syncz, a file edit is followed in pushz until Envoy ACKs it, a
broken file shows in configz, push_status and the metrics, and log levels change live."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.admin import Admin
from tests.e2e.checks import LOCAL, use_api, wait_hosts
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_atomic, write_entries
from tests.support.procs import http_get, listener_port, poll

HOST = "observed.example"
ENVOY_ID = "sidecar~127.0.0.1~envoy-1.default~default.svc.cluster.local"  # the bootstrap's


def get_json(port: int, path: str) -> Any:
    status, body = http_get(port, path)
    assert status == 200, f"{path}: {status} {body}"
    return json.loads(body)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = http_get(port, "/metrics")
    assert status == 200, body
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def total(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in values.items() if n == name)


def test_debug_and_metrics_ports_follow_a_real_envoy(stack: Stack, api_type: str) -> None:
    backend = stack.http_backend("observed-a")
    second = stack.http_backend("observed-b")
    port = listener_port()
    cluster = f"outbound|{port}||{HOST}"
    path = stack.config_dir / "observed.yaml"
    write_entries(path, service_entry(HOST, port, [(LOCAL, backend.port)]))
    registryd = stack.start_registryd()
    envoy = stack.start_envoy(registryd, use_api(api_type))
    admin = Admin(envoy.admin_port)
    wait_hosts(admin, cluster, [(LOCAL, backend.port)], stack.logs)
    http, monitoring = registryd.http_port, registryd.monitoring_port

    # -- adsz lists the Envoy; syncz shows every type ACKed --------------------------------
    (client,) = get_json(http, "/debug/adsz")
    assert client["proxyID"] == ENVOY_ID
    assert client["node"]["metadata"]["INTERCEPTION_MODE"] == "NONE"
    assert client["subscriptions"]["eds"] == [cluster]

    def all_acked() -> Any:
        (row,) = get_json(http, f"/debug/syncz?proxyID={ENVOY_ID}")
        types = row["types"]
        return (
            types
            if set(types) == {"cds", "eds", "lds", "rds"}
            and all(t["acked"] for t in types.values())
            else None
        )

    types = poll(all_acked, "Envoy to ACK every type in syncz", details=stack.logs)
    assert types["eds"]["versionAcked"] == types["eds"]["versionSent"]
    assert get_json(monitoring, "/debug/syncz") == get_json(http, "/debug/syncz")  # mirrored

    values = scrape(monitoring)
    assert total(values, "pilot_xds") == 1
    assert values[("pilot_services", ())] == 1
    before_eds = values[("pilot_xds_pushes", (("type", "eds"),))]

    # -- a file edit is followed in pushz until Envoy ACKs it -----------------------------
    write_entries(path, service_entry(HOST, port, [(LOCAL, backend.port), (LOCAL, second.port)]))

    def acked_push() -> Any:
        for push in get_json(http, f"/debug/pushz?proxyID={ENVOY_ID}"):
            proxies = push.get("proxies", [])
            if push["trigger"]["kind"] == "endpoints" and proxies:
                if proxies[0]["state"] == "acked":
                    return push
        return None

    push = poll(acked_push, "pushz to show the edit ACKed by Envoy", details=stack.logs)
    assert push["trigger"]["registries"] == ["serviceentry/configDir"]
    assert push["trigger"]["sample"] == [HOST]
    (proxy,) = push["proxies"]
    assert proxy["types"]["eds"]["resources"] == 1
    assert 0 < proxy["ackedMs"] < 5000
    assert push["debounceMs"] >= 0 and push["summary"] == {
        "proxies": 1,
        "acked": 1,
        "nacked": 0,
        "pending": 0,
        "ackedMsP50": proxy["ackedMs"],
        "ackedMsMax": proxy["ackedMs"],
    }
    wait_hosts(admin, cluster, [(LOCAL, backend.port), (LOCAL, second.port)], stack.logs)
    values = scrape(monitoring)
    assert values[("pilot_xds_pushes", (("type", "eds"),))] > before_eds
    assert values[("pilot_proxy_convergence_time_count", ())] >= 1
    assert values[("pilot_debounce_time_count", ())] >= 1

    endpoints = get_json(http, f"/debug/endpointz?hostname={HOST}")
    shard = endpoints[HOST]["default"]["serviceentry/configDir"]
    assert len(shard["endpoints"]) == 2 and shard["attributes"]["winner"] is True

    # -- a broken edit: shown in configz, push_status and metrics; last good kept ----------
    write_atomic(path, "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nspec: [oops\n")

    def broken() -> Any:
        (config,) = get_json(http, "/debug/configz")
        return config if str(path) in config["errors"] else None

    config = poll(broken, "configz to show the broken file", details=stack.logs)
    assert "YAML" in config["errors"][str(path)] or "yaml" in config["errors"][str(path)]
    assert str(path) in config["sources"]  # the last good documents are still in use
    status = get_json(http, "/debug/push_status")
    assert str(path) in status["registryd_config_errors"]["serviceentry/configDir"]
    labels = (("provider", "serviceentry"), ("registry", "configDir"))
    assert scrape(monitoring)[("registryd_registry_config_errors", labels)] == 1
    assert [s["hostname"] for s in get_json(http, "/debug/registryz")] == [HOST]

    # -- config_dump for the Envoy -----------------------------------------------------------
    dump = get_json(http, f"/debug/config_dump?proxyID={ENVOY_ID}")
    clusters = dump["configs"][0]["dynamic_active_clusters"]
    assert [c["cluster"]["name"] for c in clusters] == [
        "BlackHoleCluster",
        "PassthroughCluster",
        cluster,
    ]

    # -- log levels change at runtime, from localhost -----------------------------------
    request = urllib.request.Request(
        f"http://127.0.0.1:{http}/debug/logging/push",
        data=json.dumps({"output_level": "debug"}).encode(),
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read())["output_level"] == "debug"
    assert get_json(monitoring, "/debug/logging/push")["output_level"] == "debug"
    write_entries(path, service_entry(HOST, port, [(LOCAL, second.port)]))
    poll(
        lambda: "\tdebug\tpush\t" in registryd.output() or None,
        "a push debug line after raising the push scope to debug",
        details=stack.logs,
    )
