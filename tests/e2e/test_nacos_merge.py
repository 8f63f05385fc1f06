"""Nacos end to end: one hostname served by two instances registered in (an emulated)
Nacos and by a VM from a ServiceEntry file, merged by registryd and routed by a real
Envoy to all three; a deregistered or disabled instance stops getting traffic (pushed
over gRPC, as ``/debug/configz`` says)."""

from __future__ import annotations

import json

import yaml

from tests.e2e.admin import Admin
from tests.e2e.checks import assert_accepted, use_api, wait_answers
from tests.e2e.conftest import Stack
from tests.e2e.loop_thread import LoopThread
from tests.support.emulators.nacos import NacosEmulator
from tests.support.procs import http_get, listener_port

HOST = "orders.default-group.public.nacos"


def test_nacos_instances_merged_with_a_serviceentry_vm(
    stack: Stack, nacos: tuple[LoopThread, NacosEmulator], api_type: str
) -> None:
    loop, server = nacos
    port = listener_port()  # Nacos has no service port: the instances' port is the service's
    for name, ip in (("nacos-a", "127.0.0.11"), ("nacos-b", "127.0.0.12"), ("vm", "127.0.0.21")):
        stack.http_backend(name, ip, port)
    for ip in ("127.0.0.11", "127.0.0.12"):
        loop.run(lambda ip=ip: server.register("orders", ip, port, metadata={"protocol": "http"}))
    entry = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "orders-vm", "namespace": "public"},
        "spec": {
            "hosts": [HOST],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": port, "name": f"http-{port}", "protocol": "HTTP"}],
            "endpoints": [{"address": "127.0.0.21"}],
        },
    }
    (stack.config_dir / "orders-vm.yaml").write_text(yaml.safe_dump(entry))
    config = {
        "registries": [
            {"name": "nacos", "type": "nacos", "server_addr": server.address, "poll_interval": 0.2}
        ]
    }
    (stack.workdir / "registryd.yaml").write_text(yaml.safe_dump(config))
    registryd = stack.start_registryd(f"--config={stack.workdir / 'registryd.yaml'}")
    envoy = stack.start_envoy(registryd, use_api(api_type))

    names = {"nacos-a", "nacos-b", "vm"}
    assert set(wait_answers(port, HOST, names, details=stack.logs)) == names
    assert_accepted(Admin(envoy.admin_port), registryd)
    status, body = http_get(registryd.http_port, f"/debug/endpointz?hostname={HOST}")
    assert status == 200, body
    shards = json.loads(body)[HOST]["public"]
    assert set(shards) == {"nacos/nacos", "serviceentry/configDir"}
    status, body = http_get(registryd.http_port, "/debug/configz?registry=nacos")
    assert status == 200, body
    (registry,) = json.loads(body)  # the emulator speaks gRPC: pushed, not polled
    assert registry["status"] == {"mode": f"push (gRPC {server.grpc_address})"}

    loop.run(lambda: server.deregister("orders", "127.0.0.12", port))
    loop.run(
        lambda: server.register(
            "orders", "127.0.0.11", port, enabled=False, metadata={"protocol": "http"}
        )
    )
    wait_answers(port, HOST, {"vm"}, only=True, details=stack.logs)
