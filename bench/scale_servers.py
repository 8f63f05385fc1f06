"""Registry servers holding N services x M instances, for :mod:`bench.registry_scale`.

Every server is on 127.0.0.1 and is driven the same way (:class:`Server`): what
registryd's ``registryd.yaml`` says to read it (:meth:`Server.registry`), a change of
one instance's address (:meth:`Server.change`), and how many requests it has served so
far (:meth:`Server.requests`, counted by the server itself).

* The emulators (Consul, Nacos, Kubernetes) run in a child process of their own
  (``python -m bench.scale_servers KIND ...``), so that serving registryd does not share
  an event loop (or the GIL) with the benchmark's ADS client.  The child loads the
  state in process (no HTTP), prints one JSON line (its address, and for Kubernetes its
  kubeconfig), then answers JSON lines on stdin, one at a time: ``{"op": "change",
  "service": i, "instance": j, "address": a}`` and ``{"op": "requests"}``.  It exits
  when stdin closes.  Requests are counted in the emulators' own request hook (every
  request they answer; for Nacos also every gRPC message it receives, unary or on the
  bi-stream, acknowledgements of its pushes included), and their request logs are
  emptied every second so that a long run does not grow them.
* etcd is the real server (:class:`~tests.support.etcd_server.EtcdServer`); requests
  are the gRPC messages it received (``grpc_server_msg_received_total`` on its
  ``/metrics``): unary calls and every message on a stream.

Instance ``j`` of service ``i`` starts at address :func:`address`; names are
``svc-<i>``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.client
import json
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from tests.support.emulators.base import LoopbackServer
from tests.support.emulators.consul import ConsulEmulator
from tests.support.emulators.kubernetes import KubeEmulator
from tests.support.emulators.nacos import NacosEmulator
from tests.support.etcd_server import EtcdServer

__all__ = [
    "EMULATED",
    "EmulatedServer",
    "EtcdBackend",
    "Server",
    "address",
    "hostname",
    "kube_service",
    "kube_slice",
]

EMULATED = ("consul", "nacos", "kubernetes")
SERVICE_PORT = 8080
ETCD_PREFIX = "/registryd/services/"
ETCD_SUFFIX = "bench.example"
NAMESPACE = "bench"
TXN_OPS = 128  # etcd's default --max-txn-ops


def address(service: int, instance: int) -> str:
    """The starting address of instance ``instance`` of service ``service`` (unique
    for up to 62,500 services of up to 250 instances)."""
    return f"10.{service // 250}.{service % 250}.{instance + 1}"


def hostname(kind: str, service: int) -> str:
    """The hostname registryd gives service ``service`` of a ``kind`` registry."""
    return {
        "consul": f"svc-{service}.service.consul",
        "nacos": f"svc-{service}.default-group.public.nacos",
        "kubernetes": f"svc-{service}.{NAMESPACE}.svc.cluster.local",
        "etcd": f"svc-{service}.{ETCD_SUFFIX}",
    }[kind]


class Server(Protocol):
    """A registry server the benchmark drives."""

    kind: str

    def registry(self) -> dict[str, Any]:
        """The registry's entry in registryd.yaml (name ``bench``)."""
        ...

    async def change(self, service: int, instance: int, new_address: str) -> None:
        """Move one instance to ``new_address``; returns once the server holds it."""
        ...

    async def change_many(self, changes: list[tuple[int, int, str]]) -> None:
        """:meth:`change` each (service, instance, new address), in this order (as few
        writes as the server allows)."""
        ...

    async def requests(self) -> int:
        """Requests the server has served so far."""
        ...

    async def close(self) -> None: ...


# -- emulators, in process (the child's side) -------------------------------------------


def consul_registration(service: int, instance: int, addr: str) -> dict[str, Any]:
    """The catalog registration of instance ``instance`` of service ``service`` at
    ``addr``, with a passing check (for the emulator and the real agent alike)."""
    sid = f"svc-{service}-{instance}"
    return {
        "Node": sid,
        "Address": address(service, instance),
        "Service": {
            "ID": sid,
            "Service": f"svc-{service}",
            "Address": addr,
            "Port": SERVICE_PORT,
            "Meta": {"protocol": "http"},
        },
        "Check": {
            "CheckID": f"service:{sid}",
            "Name": "health",
            "ServiceID": sid,
            "Status": "passing",
        },
    }


def _consul_register(emulator: ConsulEmulator, service: int, instance: int, addr: str) -> None:
    emulator.register(consul_registration(service, instance, addr))


def kube_service(service: int) -> dict[str, Any]:
    ip = service + 10  # clear of 10.96.0.1, the kubernetes Service of a real server
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"svc-{service}", "namespace": NAMESPACE},
        "spec": {
            "clusterIP": f"10.96.{ip // 250}.{ip % 250 + 1}",
            "ports": [{"name": "http", "port": 80, "targetPort": SERVICE_PORT, "protocol": "TCP"}],
        },
    }


def kube_slice(service: int, addresses: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"svc-{service}-a",
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": f"svc-{service}"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": SERVICE_PORT, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
    }


class _Emulation:
    """One emulator loaded with ``services`` x ``instances`` (the child's side)."""

    def __init__(self, kind: str, services: int, instances: int) -> None:
        self.kind = kind
        self.instances = instances
        self.served = 0
        self.addresses = [
            [address(i, j) for j in range(instances)] for i in range(services)
        ]  # what the server holds now
        server: LoopbackServer
        if kind == "consul":
            consul = ConsulEmulator(server_service=False)
            for i in range(services):
                for j in range(instances):
                    _consul_register(consul, i, j, self.addresses[i][j])
            server = consul
        elif kind == "nacos":
            nacos = NacosEmulator()
            for i in range(services):
                for j in range(instances):
                    nacos.register(f"svc-{i}", self.addresses[i][j], SERVICE_PORT)
            server = nacos
        elif kind == "kubernetes":
            kube = KubeEmulator()
            kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
            for i in range(services):
                kube.apply(kube_service(i))
                kube.apply(kube_slice(i, self.addresses[i]))
            server = kube
        else:
            raise ValueError(f"no emulator for {kind}")
        self.server = server

    def _log(self) -> list[Any]:
        log: list[Any] = getattr(self.server, "requests")  # noqa: B009 - each has its own type
        return log

    def count(self) -> int:
        """Requests served so far (the emulator's log is emptied into the count)."""
        log = self._log()
        self.served += len(log)
        log.clear()
        return self.served

    def change(self, service: int, instance: int, new_address: str) -> None:
        old = self.addresses[service][instance]
        self.addresses[service][instance] = new_address
        if isinstance(self.server, ConsulEmulator):
            _consul_register(self.server, service, instance, new_address)
        elif isinstance(self.server, NacosEmulator):
            self.server.deregister(f"svc-{service}", old, SERVICE_PORT)
            self.server.register(f"svc-{service}", new_address, SERVICE_PORT)
        elif isinstance(self.server, KubeEmulator):
            self.server.apply(kube_slice(service, self.addresses[service]))


async def _child(kind: str, services: int, instances: int, workdir: Path) -> None:
    emulation = _Emulation(kind, services, instances)
    server = emulation.server
    await server.start()
    hello: dict[str, Any] = {"address": server.address, "url": server.url}
    if isinstance(server, KubeEmulator):
        hello["kubeconfig"] = str(server.kubeconfig(workdir / "kubeconfig"))
    print(json.dumps(hello), flush=True)

    async def trim() -> None:
        while True:
            await asyncio.sleep(1.0)
            emulation.count()

    trimmer = asyncio.create_task(trim())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            command = json.loads(line)
            if command["op"] == "change":
                emulation.change(command["service"], command["instance"], command["address"])
                answer: dict[str, Any] = {"ok": True}
            elif command["op"] == "changes":
                for service, instance, new_address in command["changes"]:
                    emulation.change(service, instance, new_address)
                answer = {"ok": True}
            else:
                answer = {"requests": emulation.count()}
            print(json.dumps(answer), flush=True)
    finally:
        trimmer.cancel()
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.scale_servers KIND --services N --instances M``: serve until
    stdin closes (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale_servers")
    parser.add_argument("kind", choices=EMULATED)
    parser.add_argument("--services", type=int, required=True)
    parser.add_argument("--instances", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scale-server-") as tmp:
        asyncio.run(_child(args.kind, args.services, args.instances, Path(tmp)))


# -- the benchmark's side -----------------------------------------------------------------


class EmulatedServer:
    """An emulator in a child process (see the module docstring)."""

    def __init__(self, kind: str, proc: asyncio.subprocess.Process, hello: dict[str, Any]):
        self.kind = kind
        self._proc = proc
        self._hello = hello
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, kind: str, services: int, instances: int) -> EmulatedServer:
        """The emulator of ``kind`` holding ``services`` x ``instances``, listening."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.scale_servers",
            kind,
            f"--services={services}",
            f"--instances={instances}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 900)
        if not line:
            await proc.wait()
            raise RuntimeError(f"the {kind} emulator exited with status {proc.returncode}")
        return cls(kind, proc, json.loads(line))

    def registry(self) -> dict[str, Any]:
        if self.kind == "consul":
            return {"name": "bench", "type": "consul", "address": self._hello["address"]}
        if self.kind == "nacos":
            return {"name": "bench", "type": "nacos", "server_addr": self._hello["address"]}
        return {
            "name": "bench",
            "type": "kubernetes",
            "kubeconfig": self._hello["kubeconfig"],
            "cluster_id": "bench",
        }

    async def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        async with self._lock:
            self._proc.stdin.write(json.dumps(command).encode() + b"\n")
            await self._proc.stdin.drain()
            line = await asyncio.wait_for(self._proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"the {self.kind} emulator exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def change(self, service: int, instance: int, new_address: str) -> None:
        op = {"op": "change", "service": service, "instance": instance, "address": new_address}
        await self._ask(op)

    async def change_many(self, changes: list[tuple[int, int, str]]) -> None:
        await self._ask({"op": "changes", "changes": changes})

    async def requests(self) -> int:
        return int((await self._ask({"op": "requests"}))["requests"])

    async def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 10)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()


def _etcd_value(addr: str) -> bytes:
    value = {"address": addr, "port": SERVICE_PORT, "servicePort": 80, "protocol": "HTTP"}
    return json.dumps(value).encode()


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


class EtcdBackend:
    """A real etcd member holding ``services`` x ``instances`` keys (``<prefix>svc-<i>/
    <j>``, registryd's JSON format)."""

    kind = "etcd"

    def __init__(self, workdir: Path) -> None:
        self.etcd = EtcdServer(workdir)

    def load(self, services: int, instances: int) -> None:
        """Start etcd and write every instance (transactions of :data:`TXN_OPS` puts)."""
        self.etcd.start()
        keys = [
            (f"{ETCD_PREFIX}svc-{i}/{j}", _etcd_value(address(i, j)))
            for i in range(services)
            for j in range(instances)
        ]
        for start in range(0, len(keys), TXN_OPS):
            ops = [
                {"request_put": {"key": _b64(k), "value": _b64(v)}}
                for k, v in keys[start : start + TXN_OPS]
            ]
            self.etcd.call("/v3/kv/txn", {"success": ops})

    def registry(self) -> dict[str, Any]:
        return {
            "name": "bench",
            "type": "etcd",
            "endpoints": [self.etcd.endpoint],
            "prefix": ETCD_PREFIX,
            "hostname_suffix": ETCD_SUFFIX,
        }

    async def change(self, service: int, instance: int, new_address: str) -> None:
        body = {"key": _b64(f"{ETCD_PREFIX}svc-{service}/{instance}")}
        body["value"] = _b64(_etcd_value(new_address))
        await asyncio.to_thread(self.etcd.call, "/v3/kv/put", body)

    async def change_many(self, changes: list[tuple[int, int, str]]) -> None:
        """Transactions of :data:`TXN_OPS` puts; a key changed twice is written once,
        with its last address (etcd refuses a key twice in one transaction)."""
        last = {f"{ETCD_PREFIX}svc-{i}/{j}": addr for i, j, addr in changes}
        keys = list(last.items())
        for start in range(0, len(keys), TXN_OPS):
            ops = [
                {"request_put": {"key": _b64(k), "value": _b64(_etcd_value(v))}}
                for k, v in keys[start : start + TXN_OPS]
            ]
            await asyncio.to_thread(self.etcd.call, "/v3/kv/txn", {"success": ops})

    def _metrics(self) -> int:
        url = f"http://{self.etcd.endpoint}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("grpc_server_msg_received_total"):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    async def requests(self) -> int:
        return await asyncio.to_thread(self._metrics)

    async def close(self) -> None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            self.etcd.stop()


if __name__ == "__main__":
    main()
