"""registryd on registries other than files, istiod fed by registryd over MCP, and what
each serves the same nodes: one comparison checks both registryd's MCP mapping and its
own translation.

:class:`McpPair` starts etcd (a real server), the Consul and Nacos emulators (on a loop
thread of their own: registryd polls them while the harness waits), registryd on the
three of them plus a directory of ServiceEntry files, and istiod whose only config
source is registryd (``xds://``).  :meth:`McpPair.serve` replaces every registry's
content with one :class:`RegistryState`, waits until registryd's ``/debug/registryz``
shows it, then writes a sync marker ServiceEntry file: registryd's next MCP push
carries the whole state with the marker, so whoever serves the marker serves the state.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aetcd
import yaml

from tests.differential.collect import Node, Served, collect
from tests.differential.servers import NODES, marker_entry
from tests.e2e.loop_thread import LoopThread
from tests.support.emulators.consul import ConsulEmulator
from tests.support.emulators.nacos import NacosEmulator
from tests.support.etcd_server import EtcdServer
from tests.support.istiod import Istiod, istiod_binary, start_istiod
from tests.support.procs import Registryd, http_get, start_registryd

__all__ = ["DOMAIN", "ETCD_PREFIX", "McpPair", "NacosInstance", "RegistryState"]

ETCD_PREFIX = "/registryd/services/"
DOMAIN = "mesh.example"  # every registry's hostnames end with it: one name may be in several
SYNC_TIMEOUT = 30.0  # seconds: a hang guard for registryd to show a state


@dataclass(frozen=True, slots=True)
class NacosInstance:
    service: str
    ip: str
    port: int
    options: Mapping[str, Any] = field(default_factory=dict)  # NacosEmulator.register's


@dataclass(frozen=True, slots=True)
class RegistryState:
    """What every registry holds for one comparison, and what registryd must then show
    (hostname -> endpoint count on ``/debug/registryz``)."""

    name: str
    expect: Mapping[str, int]
    etcd: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # key -> value
    consul: tuple[Mapping[str, Any], ...] = ()  # catalog registrations
    nacos: tuple[NacosInstance, ...] = ()


class McpPair:
    """See the module.  Use :meth:`start` (it needs the running loop)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.dir = workdir / "entries"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._count = itertools.count(1)
        self._consul_nodes: set[tuple[str, str]] = set()  # (node, service id) registered
        self._nacos: set[str] = set()  # services registered
        self._etcd_keys: set[str] = set()  # keys put, after the prefix
        self._loop = LoopThread()
        self.consul = ConsulEmulator()
        self.nacos = NacosEmulator()
        (workdir / "etcd").mkdir(exist_ok=True)
        self.etcd = EtcdServer(workdir / "etcd")
        self.registryd: Registryd | None = None
        self.istiod: Istiod | None = None

    def start(self) -> McpPair:
        binary = istiod_binary()
        try:
            self._loop.call(self.consul.start())
            self._loop.call(self.nacos.start())
            self.etcd.start()
            config = self.workdir / "registryd.yaml"
            config.write_text(yaml.safe_dump({"registries": self._registries()}))
            self._write("marker.yaml", marker_entry(0)[1])
            self.registryd = start_registryd(
                self.dir, self.workdir / "registryd.log", f"--config={config}"
            )
            source = f"xds://127.0.0.1:{self.registryd.grpc_port}"
            self.istiod = start_istiod(
                self.workdir, self.workdir / "istiod.log", config_sources=[source], binary=binary
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _registries(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "etcd",
                "type": "etcd",
                "endpoints": [self.etcd.endpoint],
                "prefix": ETCD_PREFIX,
                "hostname_suffix": DOMAIN,
            },
            {
                "name": "consul",
                "type": "consul",
                "address": self.consul.address,
                "hostname": f"{{service}}.{DOMAIN}",
                "wait": "2s",
            },
            {
                "name": "nacos",
                "type": "nacos",
                "server_addr": self.nacos.address,
                "hostname_template": f"{{service}}.{DOMAIN}",
                "list_interval": 0.2,  # pushed; new and removed services by the listing
            },
        ]

    def _write(self, name: str, content: str) -> None:
        staging = self.workdir / f"{name}.tmp"
        staging.write_text(content)
        os.replace(staging, self.dir / name)

    async def serve(
        self, state: RegistryState, nodes: Iterable[Node] = NODES
    ) -> AsyncIterator[tuple[Node, Served, Served]]:
        """Load ``state`` into the registries, then per node what each server serves."""
        assert self.registryd is not None and self.istiod is not None
        await self._apply(state)
        await self._shown(state)
        marker, marker_doc = marker_entry(next(self._count))
        self._write("marker.yaml", marker_doc)
        for node in nodes:
            names = sorted(state.expect) if node.kind == "grpc" else []
            options = {"grpc_listeners": self._grpc_names(names)} if names else {}
            theirs = await collect(f"127.0.0.1:{self.istiod.grpc_port}", node, marker, **options)
            ours = await collect(f"127.0.0.1:{self.registryd.grpc_port}", node, marker, **options)
            yield node, theirs, ours

    def _grpc_names(self, hosts: list[str]) -> list[str]:
        assert self.registryd is not None
        out = []
        for host in hosts:
            status, body = http_get(self.registryd.http_port, f"/debug/registryz?hostname={host}")
            for service in json.loads(body) if status == 200 else ():
                out += [f"{host}:{p['port']}" for p in service.get("ports", ())]
        return sorted(out)

    async def _apply(self, state: RegistryState) -> None:
        async with aetcd.Client("127.0.0.1", self.etcd.client_port, timeout=5) as client:
            # one transaction (etcd refuses a put inside a deleted range in the same one)
            gone = self._etcd_keys - set(state.etcd)
            ops = [client.transactions.delete(f"{ETCD_PREFIX}{k}".encode()) for k in sorted(gone)]
            ops += [
                client.transactions.put(f"{ETCD_PREFIX}{k}".encode(), json.dumps(v).encode())
                for k, v in state.etcd.items()
            ]
            await client.transaction(compare=[], success=ops, failure=[])
        self._etcd_keys = set(state.etcd)
        self._loop.run(self._replace_consul, state.consul)
        self._loop.run(self._replace_nacos, state.nacos)

    def _replace_consul(self, registrations: tuple[Mapping[str, Any], ...]) -> None:
        for node, service_id in sorted(self._consul_nodes):
            self.consul.deregister({"Node": node, "ServiceID": service_id})
        self._consul_nodes = set()
        for payload in registrations:
            self.consul.register(payload)
            service = payload.get("Service") or {}
            self._consul_nodes.add(
                (payload["Node"], service.get("ID") or service.get("Service", ""))
            )

    def _replace_nacos(self, instances: tuple[NacosInstance, ...]) -> None:
        for service in sorted(self._nacos):
            self.nacos.remove_service(service)
        self._nacos = set()
        for i in instances:
            self.nacos.register(i.service, i.ip, i.port, **i.options)
            self._nacos.add(i.service)

    async def _shown(self, state: RegistryState) -> None:
        """Wait until registryd's merged view is ``state.expect`` (plus the marker)."""
        assert self.registryd is not None
        deadline = time.monotonic() + SYNC_TIMEOUT
        seen: dict[str, int] = {}
        while time.monotonic() < deadline:
            status, body = http_get(self.registryd.http_port, "/debug/registryz")
            if status == 200:
                seen = {
                    s["hostname"]: s["endpoints"]
                    for s in json.loads(body)
                    if not s["hostname"].endswith(".sync.registryd.test")
                }
                if seen == dict(state.expect):
                    return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{state.name}: registryd shows {seen}, not {dict(state.expect)}")

    def stop(self) -> None:
        for server in (self.istiod, self.registryd):
            if server is not None:
                server.stop()
        self.etcd.stop()
        for emulator in (self.consul, self.nacos):
            if emulator.running:
                self._loop.call(emulator.stop())
        self._loop.close()
