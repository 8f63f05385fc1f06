"""Nacos end to end against hostile answers: the daemon bounds every answer before it
parses it, a slow or oversized service is that service's error (the registry stays
synced, other services' changes arrive), and an endless service list is that registry's
error, logged, on /debug/configz and in the metrics, while the daemon stays healthy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import Stack
from tests.e2e.loop_thread import LoopThread
from tests.support.emulators.nacos import NacosEmulator
from tests.support.procs import Registryd, http_get, poll

ORDERS = "orders.default-group.public.nacos"
INSTANCES = "/nacos/v1/ns/instance/list"


def write_config(stack: Stack, **settings: Any) -> Path:
    # the Open API's answers are under test: polling, whatever the server speaks
    registry = {"name": "nacos", "type": "nacos", "poll_interval": 0.2, "mode": "poll"}
    registry.update(settings)
    path = stack.workdir / "registryd.yaml"
    path.write_text(yaml.safe_dump({"registries": [registry]}))
    return path


def configz(registryd: Registryd) -> dict[str, Any]:
    status, body = http_get(registryd.http_port, "/debug/configz?registry=nacos")
    assert status == 200, body
    (registry,) = json.loads(body)
    return dict(registry)


def metric(registryd: Registryd, name: str) -> float | None:
    _, text = http_get(registryd.monitoring_port, "/metrics")
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.startswith(name + "{") and 'registry="nacos"' in series:
            return float(value)
    return None


def test_oversized_and_slow_services_are_their_own_errors_and_others_keep_flowing(
    stack: Stack, nacos: tuple[LoopThread, NacosEmulator]
) -> None:
    loop, server = nacos
    for name, ip in (("orders", "10.0.0.1"), ("empty", "10.0.0.2"), ("slow", "10.0.0.3")):
        loop.run(server.register, name, ip, 8080)
    body = "[" + "{}," * 300_000 + "{}]"  # 900 KB of {}: under the byte limit
    loop.run(lambda: server.fail_service("empty", 200, body=body))
    loop.run(server.drip_service, "slow", 0.05)
    config = write_config(
        stack, server_addr=server.address, max_response_bytes=2**20, request_timeout=0.5
    )
    registryd = stack.start_registryd(f"--config={config}")  # ready: the registry synced

    def errors() -> dict[str, str] | None:
        shown = configz(registryd)["errors"]
        return shown if len(shown) == 2 else None

    assert poll(errors, "both services' errors on /debug/configz", details=stack.logs) == {
        "DEFAULT_GROUP@@empty": f"{INSTANCES}: the answer holds more than 65536 objects and "
        "arrays (300002) (max_response_bytes)",
        "DEFAULT_GROUP@@slow": f"{INSTANCES}: no whole answer within 0.5s (request_timeout)",
    }
    assert configz(registryd)["synced"] is True
    assert metric(registryd, "registryd_registry_config_errors") == 2.0
    assert http_get(registryd.http_port, "/healthz")[0] == 200

    loop.run(server.register, "orders", "10.0.0.4", 8080)

    def new_endpoint() -> bool:
        _, text = http_get(registryd.http_port, f"/debug/endpointz?hostname={ORDERS}")
        return "10.0.0.4" in text

    poll(new_endpoint, "the change to another service to arrive", details=stack.logs)
    assert configz(registryd)["restarts"] == 0


def test_an_endless_service_list_is_the_registrys_error_and_the_daemon_stays_healthy(
    stack: Stack, nacos: tuple[LoopThread, NacosEmulator]
) -> None:
    loop, server = nacos
    server.endless_list = True
    config = write_config(stack, server_addr=server.address, max_services=100, page_size=50)
    registryd = Registryd(stack.config_dir, stack.workdir / "registryd.log", f"--config={config}")
    stack.track(registryd)
    message = (
        "/nacos/v1/ns/service/list: the groups list 150 services (up to group "
        "'DEFAULT_GROUP'), more than max_services (100); listing stopped"
    )

    def failed() -> bool:
        registryd.check_alive()
        status, _ = http_get(registryd.http_port, "/healthz")
        return status == 200 and message in str(configz(registryd)["lastError"])

    poll(failed, "the registry's error on /debug/configz", details=stack.logs)
    status, text = http_get(registryd.http_port, "/ready")
    assert status == 503 and "nacos" in text
    poll(lambda: message in registryd.output(), "the error in the log", details=stack.logs)
    poll(
        lambda: (metric(registryd, "registryd_registry_failures_total") or 0) >= 1,
        "the failure counted in the metrics",
        details=stack.logs,
    )
    pages = [r for r in loop.run(list, server.requests) if r.path.endswith("/service/list")]
    assert {r.params["pageNo"] for r in pages} == {"1", "2"}  # paging stopped at the limit
