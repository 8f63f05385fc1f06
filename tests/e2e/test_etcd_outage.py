"""An etcd outage end to end, with real processes: etcd, registryd with one etcd registry
(and the always-present, here empty, ServiceEntry directory), a real Envoy and two real
HTTP backends.

While etcd is down, Envoy keeps its configuration and traffic keeps flowing, readiness
stays 200 (once reached it stays, as istiod's does), and the registry shows as not
synced with its last error in ``/debug/configz`` and ``registryd_registry_synced 0`` in
``/metrics``.  When etcd is back with a different state, registryd converges to exactly
that state: Envoy's cluster, the traffic and ``/debug/endpointz`` show only the new
backend, and the registry is synced again.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aetcd
import yaml
from prometheus_client.parser import text_string_to_metric_families

from registryd.daemon.plugins import available
from tests.e2e.admin import Admin
from tests.e2e.checks import (
    LOCAL,
    answers,
    assert_accepted,
    use_api,
    wait_answers,
    wait_hosts,
)
from tests.e2e.conftest import Stack
from tests.support.etcd_server import EtcdServer
from tests.support.procs import holding, http_get, listener_port, poll

REGISTRY = "etcd-main"
PREFIX = "/registryd/services/"
SUFFIX = "etcd.example"
HOST = f"web.{SUFFIX}"
RECONNECT = 30.0  # seconds: backoff (1, 1, 2, 3, 5 s…) plus the push, with room to spare


def instance(backend_port: int, service_port: int, health: str = "HEALTHY") -> bytes:
    return json.dumps(
        {
            "address": LOCAL,
            "port": backend_port,
            "servicePort": service_port,
            "protocol": "HTTP",
            "portName": "http",
            "health": health,
        }
    ).encode()


def etcd_txn(etcd: EtcdServer, *, put: dict[str, bytes], delete: tuple[str, ...] = ()) -> None:
    """Delete and put keys in one etcd transaction."""

    async def run() -> None:
        async with aetcd.Client("127.0.0.1", etcd.client_port, timeout=5) as client:
            ops = [client.transactions.delete(k.encode()) for k in delete]
            ops += [client.transactions.put(k.encode(), v) for k, v in put.items()]
            await client.transaction(compare=[], success=ops, failure=[])

    asyncio.run(asyncio.wait_for(run(), 10))


def etcd_registry(etcd: EtcdServer, path: Path) -> Path:
    """A registryd.yaml at ``path`` with one etcd registry, :data:`REGISTRY`, on ``etcd``
    (``web/<id>`` keys are instances of :data:`HOST`)."""
    registry = {
        "name": REGISTRY,
        "type": "etcd",
        "endpoints": [etcd.endpoint],
        "prefix": PREFIX,
        "hostname_suffix": SUFFIX,
        "timeout": 1,
    }
    path.write_text(yaml.safe_dump({"registries": [registry]}))
    return path


def get_json(port: int, path: str) -> Any:
    status, body = http_get(port, path)
    assert status == 200, f"{path}: {status} {body}"
    return json.loads(body)


def synced_metric(port: int) -> float | None:
    status, body = http_get(port, "/metrics")
    assert status == 200, body
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "registryd_registry_synced" and sample.labels == {
                "registry": REGISTRY,
                "provider": "etcd",
            }:
                return sample.value
    return None


def configz(port: int) -> dict[str, Any]:
    (config,) = get_json(port, f"/debug/configz?registry={REGISTRY}")
    assert isinstance(config, dict)
    return config


def etcd_endpoints(port: int) -> list[tuple[str, int]]:
    """The endpoints of HOST that the etcd registry holds, per /debug/endpointz."""
    shards = get_json(port, f"/debug/endpointz?hostname={HOST}").get(HOST, {})
    shard = shards.get("default", {}).get(f"etcd/{REGISTRY}", {"endpoints": []})
    return sorted((e["address"], e["port"]) for e in shard["endpoints"])


def test_etcd_outage_keeps_traffic_and_converges_to_the_new_state(
    stack: Stack, api_type: str
) -> None:
    assert "etcd" in available(), "the etcd adapter is not installed: run pip install -e ."
    (stack.workdir / "etcd").mkdir()
    etcd = EtcdServer(stack.workdir / "etcd")
    etcd.on_start.append(stack.track)  # every run is stopped at teardown, its log shown
    etcd.start()
    a = stack.http_backend("etcd-a")
    b = stack.http_backend("etcd-b")
    port = listener_port()
    cluster = f"outbound|{port}||{HOST}"
    key_a, key_b = f"{PREFIX}web/a", f"{PREFIX}web/b"
    etcd_txn(etcd, put={key_a: instance(a.port, port)})

    config = etcd_registry(etcd, stack.workdir / "registryd.yaml")
    registryd = stack.start_registryd(f"--config={config}")
    envoy = stack.start_envoy(registryd, use_api(api_type))
    pids = (registryd.pid, envoy.pid)
    admin = Admin(envoy.admin_port)
    http = registryd.http_port

    # -- etcd up: Envoy routes to A ------------------------------------------------------
    wait_hosts(admin, cluster, [(LOCAL, a.port)], stack.logs)
    wait_answers(port, HOST, {"etcd-a"}, only=True, details=stack.logs)
    assert synced_metric(registryd.monitoring_port) == 1
    assert configz(http)["synced"] is True
    assert etcd_endpoints(http) == [(LOCAL, a.port)]

    # -- etcd down: traffic and readiness stay, the registry shows not synced -------------
    etcd.stop()
    config_now = poll(
        lambda: (c := configz(http))["synced"] is False and c["lastError"] and c,
        "configz to show the etcd registry not synced",
        details=stack.logs,
    )
    assert "EtcdError" in config_now["lastError"], config_now
    assert etcd.endpoint in config_now["lastError"], config_now
    poll(
        lambda: synced_metric(registryd.monitoring_port) == 0,
        "registryd_registry_synced 0 for the etcd registry",
        details=stack.logs,
    )
    restarts = configz(http)["restarts"]

    def serving() -> None:
        assert answers(port, HOST, 2) == {"etcd-a": 2}
        assert http_get(http, "/ready")[0] == 200

    # the registry is restarted (with backoff) while etcd is away: through the next
    # restart, traffic and readiness hold
    holding(
        serving,
        lambda: configz(http)["restarts"] > restarts,
        "the etcd registry to be restarted again while etcd is down",
        details=stack.logs,
    )
    assert admin.hosts(cluster) == [(LOCAL, a.port)]  # the last good state is served
    assert etcd_endpoints(http) == [(LOCAL, a.port)]
    assert configz(http)["restarts"] >= 1
    assert synced_metric(registryd.monitoring_port) == 0

    # -- etcd back with a new state: exactly that state is served ---------------------
    etcd.start()
    etcd_txn(etcd, delete=(key_a,), put={key_b: instance(b.port, port)})
    poll(
        lambda: admin.hosts(cluster) == [(LOCAL, b.port)],
        f"Envoy's {cluster} to list only B",
        deadline=RECONNECT,
        details=lambda: f"now: {admin.hosts(cluster)}\n{stack.logs()}",
    )
    wait_answers(port, HOST, {"etcd-b"}, only=True, details=stack.logs)
    served_by_a = len(a.hosts)
    assert answers(port, HOST, 10) == {"etcd-b": 10}
    assert len(a.hosts) == served_by_a
    assert etcd_endpoints(http) == [(LOCAL, b.port)]
    config_now = configz(http)
    assert config_now["synced"] is True and config_now["lastError"] is None, config_now
    assert list(config_now["sources"]) == [key_b]
    assert synced_metric(registryd.monitoring_port) == 1
    assert [s["hostname"] for s in get_json(http, "/debug/registryz")] == [HOST]
    assert_accepted(admin, registryd)
    registryd.check_alive()
    envoy.check_alive()
    assert (registryd.pid, envoy.pid) == pids, "a process was restarted"
