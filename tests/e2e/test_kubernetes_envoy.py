"""Envoy fed by registryd from one Kubernetes cluster, the same test on two API servers:
the emulator and a real kube-apiserver (one fixture, :func:`cluster`).

A real API server refuses EndpointSlice addresses in the loopback range (422), so the pods
here are documentation addresses nothing answers on: the test reads what Envoy was sent
(its ``/clusters``), not traffic.  Routing traffic to pods is tested on the emulator
(test_kubernetes_merge.py), which takes loopback pods.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import pytest
import yaml

from tests.e2e.admin import Admin
from tests.e2e.checks import assert_accepted, wait_hosts
from tests.e2e.conftest import Stack
from tests.e2e.loop_thread import LoopThread
from tests.e2e.test_kubernetes_merge import kube_objects
from tests.support.emulators.kubernetes import KubeEmulator
from tests.support.kube_apiserver import (
    KubeApiServer,
    kube_apiserver_binary,
    start_kube_apiserver,
)
from tests.support.procs import listener_ports

HOST = "web.shop.svc.cluster.local"
PODS = ("192.0.2.10", "192.0.2.11")  # documentation range: only data


class Cluster(Protocol):
    """What the test does to a Kubernetes API server."""

    kubeconfig: str

    def create(self, obj: dict[str, Any]) -> None: ...

    def update(self, obj: dict[str, Any]) -> None: ...


class _Emulated:
    def __init__(self, loop: LoopThread, server: KubeEmulator, kubeconfig: str) -> None:
        self.loop, self.server, self.kubeconfig = loop, server, kubeconfig

    def create(self, obj: dict[str, Any]) -> None:
        self.loop.run(self.server.apply, obj)

    update = create


class _Real:
    def __init__(self, server: KubeApiServer) -> None:
        self.server = server
        self.kubeconfig = str(server.kubeconfig)

    def create(self, obj: dict[str, Any]) -> None:
        self.server.create(obj)

    def update(self, obj: dict[str, Any]) -> None:
        self.server.update(obj)


@pytest.fixture(params=["emulator", "kube-apiserver"])
def cluster(request: pytest.FixtureRequest, stack: Stack) -> Iterator[Cluster]:
    """An API server with nothing in it: the emulator, or a real kube-apiserver (skipped
    without its binary)."""
    if request.param == "emulator":
        loop = LoopThread()
        emulator = KubeEmulator()
        loop.call(emulator.start())
        try:
            yield _Emulated(loop, emulator, str(emulator.kubeconfig(stack.workdir / "kubeconfig")))
        finally:
            loop.call(emulator.stop())
            loop.close()
        return
    binary = kube_apiserver_binary()  # skips (or fails under CI) before anything starts
    server = start_kube_apiserver(stack.workdir, binary=binary)
    assert server.proc is not None and server.etcd.proc is not None
    # Stopped by the stack after registryd and Envoy (started later), so no watch keeps
    # the API server's shutdown waiting; the API server before its etcd.
    stack.track(server.etcd.proc)
    stack.track(server.proc)
    yield _Real(server)


def test_envoy_gets_the_endpoints_of_a_kubernetes_service(stack: Stack, cluster: Cluster) -> None:
    (port,) = listener_ports(1)
    namespace, service, endpoints = kube_objects(port, PODS[0], 8080)
    endpoints["endpoints"].append({"addresses": [PODS[1]], "conditions": {"ready": True}})
    for obj in (namespace, service, endpoints):
        cluster.create(obj)
    config = stack.workdir / "registryd.yaml"
    registry = {"name": "east", "type": "kubernetes", "kubeconfig": cluster.kubeconfig}
    config.write_text(yaml.safe_dump({"registries": [registry]}))
    registryd = stack.start_registryd(f"--config={config}")
    envoy = stack.start_envoy(registryd)
    admin = Admin(envoy.admin_port)

    name = f"outbound|{port}||{HOST}"
    wait_hosts(admin, name, [(pod, 8080) for pod in PODS], stack.logs)
    endpoints["endpoints"] = endpoints["endpoints"][1:]  # one pod goes away
    cluster.update(endpoints)
    wait_hosts(admin, name, [(PODS[1], 8080)], stack.logs)
    assert_accepted(admin, registryd)
