"""A hybrid service end to end: one Kubernetes hostname served by pods from two clusters
(two emulated API servers) and by a VM from a ServiceEntry file, merged by registryd and
routed by a real Envoy to all three."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.admin import Admin
from tests.e2e.checks import assert_accepted, use_api, wait_answers
from tests.e2e.conftest import Stack
from tests.e2e.loop_thread import LoopThread
from tests.support.emulators.kubernetes import KubeEmulator
from tests.support.procs import http_get, listener_ports

HOST = "web.shop.svc.cluster.local"


@pytest.fixture
def clusters() -> Iterator[tuple[LoopThread, list[KubeEmulator]]]:
    """Two emulated API servers (clusters ``east`` and ``west``) on a loop thread."""
    thread = LoopThread()
    # pods on loopback, which a real API server refuses in an EndpointSlice
    servers = [KubeEmulator(loopback_endpoints=True), KubeEmulator(loopback_endpoints=True)]
    for server in servers:
        thread.call(server.start())
    yield thread, servers
    for server in servers:
        thread.call(server.stop())
    thread.close()


def kube_objects(port: int, pod: str, target: int) -> list[dict[str, Any]]:
    """Service ``web`` in namespace ``shop`` on ``port`` and one ready pod ``pod``."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {
                "clusterIP": "10.96.0.10",
                "ports": [{"name": "http-web", "port": port, "targetPort": target}],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "web-abc",
                "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "web"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http-web", "port": target, "protocol": "TCP"}],
            "endpoints": [{"addresses": [pod], "conditions": {"ready": True}, "zone": "zone-a"}],
        },
    ]


def vm_entry(port: int, target: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "web-vm", "namespace": "shop"},
        "spec": {
            "hosts": [HOST],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": port, "name": "http-web", "protocol": "HTTP"}],
            "endpoints": [{"address": "127.0.0.21", "ports": {"http-web": target}}],
        },
    }


def test_one_hostname_from_two_clusters_and_a_vm(
    stack: Stack, clusters: tuple[LoopThread, list[KubeEmulator]], api_type: str
) -> None:
    loop, (east, west) = clusters
    port, target = listener_ports(2)
    stack.http_backend("pod-east", "127.0.0.11", target)
    stack.http_backend("pod-west", "127.0.0.12", target)
    stack.http_backend("vm", "127.0.0.21", target)
    for server, pod in ((east, "127.0.0.11"), (west, "127.0.0.12")):
        for obj in kube_objects(port, pod, target):
            loop.run(server.apply, obj)

    (stack.config_dir / "web-vm.yaml").write_text(yaml.safe_dump(vm_entry(port, target)))
    config = {
        "registries": [
            {"name": name, "type": "kubernetes", "cluster_id": name, "kubeconfig": str(path)}
            for name, path in (
                ("east", east.kubeconfig(stack.workdir / "east.kubeconfig")),
                ("west", west.kubeconfig(stack.workdir / "west.kubeconfig")),
            )
        ]
    }
    (stack.workdir / "registryd.yaml").write_text(yaml.safe_dump(config))
    registryd = stack.start_registryd(f"--config={stack.workdir / 'registryd.yaml'}")
    envoy = stack.start_envoy(registryd, use_api(api_type))

    # one listener, one hostname, three backends from three registries
    seen = wait_answers(port, HOST, {"pod-east", "pod-west", "vm"}, details=stack.logs)
    assert set(seen) == {"pod-east", "pod-west", "vm"}, seen
    short = wait_answers(port, "web.shop", {"pod-east", "pod-west", "vm"}, details=stack.logs)
    assert set(short) == {"pod-east", "pod-west", "vm"}  # Kubernetes short name
    assert_accepted(Admin(envoy.admin_port), registryd)

    # provenance: which registry each endpoint came from, and who decided the attributes
    status, body = http_get(registryd.http_port, f"/debug/endpointz?hostname={HOST}")
    assert status == 200, body
    shards = json.loads(body)[HOST]["shop"]
    assert set(shards) == {"kubernetes/east", "kubernetes/west", "serviceentry/configDir"}
    winners = {k for k, v in shards.items() if v["attributes"].get("winner")}
    assert winners == {"kubernetes/east"}  # Kubernetes first; ties by instance name
    cluster_ids = {
        e["address"]: e.get("clusterID") for v in shards.values() for e in v["endpoints"]
    }
    assert cluster_ids == {"127.0.0.11": "east", "127.0.0.12": "west", "127.0.0.21": ""}

    # the west pod goes away: traffic converges on east + vm
    loop.run(west.delete, "discovery.k8s.io/v1", "EndpointSlice", "shop", "web-abc")
    wait_answers(port, HOST, {"pod-east", "vm"}, only=True, details=stack.logs)
