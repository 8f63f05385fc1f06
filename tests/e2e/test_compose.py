"""The compose demo checked without Docker: its files parse and fit together, and the
registryd.yaml and Envoy bootstrap it mounts run for real -- registryd against the
Consul emulator loaded with the demo's services, Envoy routing to local backends.

Only addresses and ports are rewritten for loopback (and Envoy is told
``INTERCEPTION_MODE: NONE`` so its listener binds 127.0.0.1 instead of 0.0.0.0)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from registryd.daemon.plugins import available
from tests.e2e.admin import Admin
from tests.e2e.checks import LOCAL, wait_answers
from tests.e2e.conftest import Stack
from tests.e2e.loop_thread import LoopThread
from tests.support.emulators.consul import ConsulEmulator
from tests.support.procs import Envoy, free_port, http_get, listener_port, poll

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
DEMO_PORT = 5678  # the service port every demo service uses


def load(name: str) -> Any:
    text = (COMPOSE / name).read_text()
    return json.loads(text) if name.endswith(".json") else yaml.safe_load(text)


def test_compose_files_parse_and_fit_together() -> None:
    compose = load("docker-compose.yml")
    services = compose["services"]
    assert {"consul", "registryd", "envoy", "hello", "echo", "legacy-vm"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert (COMPOSE / source).exists(), f"{name} mounts missing {source}"
    build = services["registryd"]["build"]
    assert (COMPOSE / build["context"] / build["dockerfile"]).is_file()
    assert f"{DEMO_PORT}:{DEMO_PORT}" in services["envoy"]["ports"]

    # the addresses the demo's registries name are the containers' fixed addresses
    ips = {n: s["networks"]["mesh"]["ipv4_address"] for n, s in services.items()}
    consul_services = {s["name"]: s for s in load("consul/services.json")["services"]}
    assert consul_services["hello"]["address"] == ips["hello"]
    assert consul_services["echo"]["address"] == ips["echo"]
    (entry,) = yaml.safe_load_all((COMPOSE / "serviceentries/legacy.yaml").read_text())
    assert entry["spec"]["endpoints"][0]["address"] == ips["legacy-vm"]
    envoy = load("envoy.yaml")
    xds = envoy["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
    assert xds["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"] == (
        "registryd"
    )
    types = {r["type"] for r in load("registryd.yaml")["registries"]}
    assert types <= set(available())


@pytest.fixture
def consul() -> Iterator[tuple[LoopThread, ConsulEmulator]]:
    """The Consul emulator on a loop thread of its own."""
    thread = LoopThread()
    agent = ConsulEmulator()
    thread.call(agent.start())
    yield thread, agent
    thread.call(agent.stop())
    thread.close()


def registration(definition: dict[str, Any], address: str, port: int) -> dict[str, Any]:
    """An agent service definition from the demo as a catalog registration, moved to
    ``address:port``; its health check passes (the emulator runs no checks)."""
    service_id = definition["id"]
    return {
        "Node": "demo-node",
        "Address": address,
        "Service": {
            "ID": service_id,
            "Service": definition["name"],
            "Address": address,
            "Port": port,
            "Meta": definition.get("meta", {}),
        },
        "Check": {
            "CheckID": definition["check"]["id"],
            "Name": f"{definition['name']} http",
            "Status": "passing",
            "ServiceID": service_id,
        },
    }


def test_the_demo_config_routes_consul_and_vm_services_through_envoy(
    stack: Stack, consul: tuple[LoopThread, ConsulEmulator]
) -> None:
    loop, agent = consul
    # As in the demo, every service listens on one port, each on its own address
    # (here loopback ones), and Envoy serves all three on one listener, routed by Host.
    port = listener_port()
    hello = stack.http_backend("hello", "127.0.0.11", port)
    echo = stack.http_backend("echo", "127.0.0.12", port)
    stack.http_backend("legacy-vm", "127.0.0.21", port)

    definitions = {s["name"]: s for s in load("consul/services.json")["services"]}
    loop.run(agent.register, registration(definitions["hello"], "127.0.0.11", port))
    loop.run(agent.register, registration(definitions["echo"], "127.0.0.12", port))

    demo = stack.workdir / "demo"  # registryd.yaml and serviceentries/, as in compose/
    entries = demo / "serviceentries"
    entries.mkdir(parents=True)
    (entry,) = yaml.safe_load_all((COMPOSE / "serviceentries/legacy.yaml").read_text())
    entry["spec"]["ports"][0]["number"] = port
    entry["spec"]["endpoints"][0]["address"] = "127.0.0.21"
    (entries / "legacy.yaml").write_text(yaml.safe_dump(entry))

    # the demo's registryd.yaml, its Consul registry pointed at the emulator
    config = copy.deepcopy(load("registryd.yaml"))
    for registry in config["registries"]:
        if registry["type"] == "consul":
            registry["address"] = agent.address
    (demo / "registryd.yaml").write_text(yaml.safe_dump(config))
    registryd = stack.start_registryd(f"--config={demo / 'registryd.yaml'}")

    # the demo's Envoy bootstrap, pointed at this registryd, bound to loopback
    bootstrap = copy.deepcopy(load("envoy.yaml"))
    bootstrap["node"]["metadata"]["INTERCEPTION_MODE"] = "NONE"
    bootstrap["admin"]["address"]["socket_address"] = {"address": LOCAL, "port_value": free_port()}
    (cluster,) = bootstrap["static_resources"]["clusters"]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"]["socket_address"] = {"address": LOCAL, "port_value": registryd.grpc_port}
    envoy = Envoy(bootstrap, stack.workdir)
    stack.track(envoy)
    envoy.wait_live()

    for host, name in (
        ("hello.service.consul", "hello"),
        ("echo.service.consul", "echo"),
        ("legacy.vm.internal", "legacy-vm"),
    ):
        seen = wait_answers(port, host, {name}, details=stack.logs)
        assert set(seen) == {name}, seen

    # deregister hello in Consul: it leaves Envoy, the others stay
    loop.run(agent.deregister, {"Node": "demo-node", "ServiceID": "hello-1"})
    admin = Admin(envoy.admin_port)
    poll(
        lambda: not any("hello.service.consul" in c for c in admin.config().clusters) or None,
        "hello to leave Envoy's clusters",
        details=stack.logs,
    )
    poll(  # its virtual host leaves route <port> (any other Host passes through: allow_any)
        lambda: f"hello.service.consul:{port}" not in admin.route_domains(str(port)) or None,
        "hello's virtual host to leave Envoy's routes",
        details=stack.logs,
    )
    assert set(wait_answers(port, "echo.service.consul", {"echo"}, only=True)) == {"echo"}
    assert "hello.service.consul" in hello.hosts and "echo.service.consul" in echo.hosts
    registry = json.loads(http_get(registryd.http_port, "/debug/registryz")[1])
    assert sorted(s["hostname"] for s in registry) == ["echo.service.consul", "legacy.vm.internal"]
