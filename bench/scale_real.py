"""The real Consul agent and kube-apiserver as :class:`bench.scale_servers.Server`\\ s,
for ``python -m bench.registry_scale --real``.

Both run as the tests run them (:mod:`tests.support.consul_agent`,
:mod:`tests.support.kube_apiserver`: built by ``scripts/build-servers``, on free ports
of 127.0.0.1) and hold the same services, instances and addresses as the emulators.
Requests are counted by the servers themselves:

* Consul: the agent's own HTTP request metric (``consul_api_http`` in its Prometheus
  output, turned on with ``telemetry { prometheus_retention_time }``), every method and
  path; the benchmark's own reads of it are left out.
* kube-apiserver: ``apiserver_request_total`` of the resources registryd reads
  (services, endpointslices, pods, nodes, namespaces), every verb; so the API server's
  requests to itself about other resources (leases, flow control) are not counted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import urllib.request
from pathlib import Path
from typing import Any

from bench.scale_servers import (
    NAMESPACE,
    address,
    consul_registration,
    kube_service,
    kube_slice,
)
from tests.support.consul_agent import ConsulAgent, consul_binary
from tests.support.kube_apiserver import KubeApiServer, start_kube_apiserver

__all__ = ["RealConsul", "RealKube"]

LOAD_WORKERS = 8
KUBE_RESOURCES = ("services", "endpointslices", "pods", "nodes", "namespaces")


class _OneByOne:
    """``change_many`` as one ``change`` after the other (a server without batches)."""

    async def change(self, service: int, instance: int, new_address: str) -> None:
        raise NotImplementedError

    async def change_many(self, changes: list[tuple[int, int, str]]) -> None:
        for service, instance, new_address in changes:
            await self.change(service, instance, new_address)


class RealConsul(_OneByOne):
    """A dev-mode Consul agent holding ``services`` x ``instances`` (catalog
    registrations, one node per instance, a passing check each)."""

    kind = "consul"

    def __init__(self, workdir: Path, conns: int | None = None) -> None:
        """``conns``: the agent's ``limits.http_max_conns_per_client`` (Consul's 200 if
        None)."""
        hcl = ['telemetry { prometheus_retention_time = "1h" disable_hostname = true }']
        if conns is not None:
            hcl.append(f"limits {{ http_max_conns_per_client = {conns} }}")
        self.agent = ConsulAgent(consul_binary(), workdir, workdir / "consul.log", hcl=tuple(hcl))
        self._own = 0  # metric reads by the benchmark

    def load(self, services: int, instances: int) -> None:
        """Wait for the agent, then register every instance (:data:`LOAD_WORKERS` at a
        time)."""
        self.agent.wait_ready()
        with concurrent.futures.ThreadPoolExecutor(LOAD_WORKERS) as pool:
            jobs = [
                pool.submit(
                    self.agent.put, "/v1/catalog/register", consul_registration(i, j, address(i, j))
                )
                for i in range(services)
                for j in range(instances)
            ]
            for job in jobs:
                job.result()

    def registry(self) -> dict[str, Any]:
        return {"name": "bench", "type": "consul", "address": self.agent.address}

    async def change(self, service: int, instance: int, new_address: str) -> None:
        body = consul_registration(service, instance, new_address)
        await asyncio.to_thread(self.agent.put, "/v1/catalog/register", body)

    def _count(self) -> int:
        url = f"http://{self.agent.address}/v1/agent/metrics?format=prometheus"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("consul_api_http_count"):
                total += float(line.rsplit(" ", 1)[1])
        counted, self._own = int(total) - self._own, self._own + 1
        return counted

    async def requests(self) -> int:
        return await asyncio.to_thread(self._count)

    async def close(self) -> None:
        await asyncio.to_thread(self.agent.stop)


class RealKube(_OneByOne):
    """A kube-apiserver (and its etcd) holding ``services`` Services and one
    EndpointSlice of ``instances`` endpoints each, in namespace ``bench``."""

    kind = "kubernetes"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server: KubeApiServer | None = None
        self.addresses: list[list[str]] = []

    def load(self, services: int, instances: int) -> None:
        self.server = start_kube_apiserver(self.workdir)
        self.server.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        self.addresses = [[address(i, j) for j in range(instances)] for i in range(services)]
        self.server.create_all([kube_service(i) for i in range(services)])
        self.server.create_all([kube_slice(i, self.addresses[i]) for i in range(services)])

    def registry(self) -> dict[str, Any]:
        assert self.server is not None
        kubeconfig = str(self.server.kubeconfig)
        return {
            "name": "bench",
            "type": "kubernetes",
            "kubeconfig": kubeconfig,
            "cluster_id": "bench",
        }

    async def change(self, service: int, instance: int, new_address: str) -> None:
        assert self.server is not None
        self.addresses[service][instance] = new_address
        await asyncio.to_thread(self.server.update, kube_slice(service, self.addresses[service]))

    def _count(self) -> int:
        assert self.server is not None
        status, text = self.server.request("GET", "/metrics")
        assert status == 200 and isinstance(text, str), f"/metrics: {status}"
        total = 0.0
        for line in text.splitlines():
            if line.startswith("apiserver_request_total{") and any(
                f'resource="{r}"' in line for r in KUBE_RESOURCES
            ):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    async def requests(self) -> int:
        return await asyncio.to_thread(self._count)

    async def close(self) -> None:
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
