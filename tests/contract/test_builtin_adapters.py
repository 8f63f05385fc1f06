"""The adapter contract suite run against the built-in adapters, as a plugin author
would run it against theirs."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from registryd.adapter import Adapter, AdapterContext
from registryd.adapters.nacos import NacosAdapter
from registryd.adapters.serviceentry import ServiceEntryAdapter
from registryd.model import Endpoint, Port, Service
from registryd.testing import AdapterContract, MemoryAdapter
from tests.e2e.loop_thread import LoopThread
from tests.support.emulators.nacos import NacosEmulator
from tests.support.yaml_docs import entry


class TestMemoryAdapter(AdapterContract):
    factory = MemoryAdapter

    async def setup_registry(self) -> None:
        self.memory = MemoryAdapter()

    async def create(self) -> Adapter:
        return self.memory

    async def add_service(self, name: str) -> str:
        host = f"{name}.memory"
        service = Service(hostname=host, ports=(Port(number=80, name="http"),))
        endpoint = Endpoint(hostname=host, address="10.0.0.1", port=8080, service_port=80)
        self.memory.upsert(service, [endpoint])
        return host

    async def remove_service(self, name: str) -> None:
        self.memory.delete(f"{name}.memory")

    async def break_registry(self) -> None:
        self.memory.fail(ConnectionError("the in-memory registry went away"))

    async def heal_registry(self) -> None:
        pass  # the next watch() works again

    def bad_settings(self) -> list[dict[str, object]]:
        return [{"path": "/x"}]


class TestServiceEntryAdapter(AdapterContract):
    factory = ServiceEntryAdapter

    async def setup_registry(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="contract-"))
        self.root = self.base / "entries"
        self.root.mkdir()

    async def teardown_registry(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    async def create(self) -> Adapter:
        settings = {"path": str(self.root)}
        return ServiceEntryAdapter(name="contract", settings=settings, context=AdapterContext())

    async def add_service(self, name: str) -> str:
        host = f"{name}.example"
        (self.root / f"{name}.yaml").write_text(entry(host, "10.0.0.1"))
        return host

    async def remove_service(self, name: str) -> None:
        (self.root / f"{name}.yaml").unlink(missing_ok=True)

    async def break_registry(self) -> None:
        self.root.rename(self.base / "away")

    async def heal_registry(self) -> None:
        (self.base / "away").rename(self.root)

    def bad_settings(self) -> list[dict[str, object]]:
        return [
            {},
            {"path": ""},
            {"path": "/x", "force_polling": "yes"},
            {"path": "/x", "bogus": 1},
        ]


class TestNacosAdapter(AdapterContract):
    """Push over gRPC (the default ``mode: auto`` against a server that has it).  The
    emulator runs on a loop of its own, so that its gRPC server's tasks are not taken
    for the adapter's."""

    factory = NacosAdapter
    settings: dict[str, object] = {"list_interval": 0.05}

    async def _server(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` (a coroutine's result is awaited) on the emulator's loop."""

        async def call() -> Any:
            result = fn()
            return await result if asyncio.iscoroutine(result) else result

        future = asyncio.run_coroutine_threadsafe(call(), self.thread.loop)
        return await asyncio.wrap_future(future)

    async def setup_registry(self) -> None:
        self.thread = LoopThread()
        self.nacos = NacosEmulator()
        await self._server(self.nacos.start)

    async def teardown_registry(self) -> None:
        await self._server(self.nacos.stop)
        self.thread.close()

    async def create(self) -> Adapter:
        settings = {"server_addr": self.nacos.address, **self.settings}
        return NacosAdapter(name="contract", settings=settings, context=AdapterContext())

    async def add_service(self, name: str) -> str:
        await self._server(lambda: self.nacos.register(name, "10.0.0.1", 8080))
        return f"{name}.default-group.public.nacos"

    async def remove_service(self, name: str) -> None:
        await self._server(lambda: self.nacos.remove_service(name))

    async def break_registry(self) -> None:
        await self._server(self.nacos.stop)

    async def heal_registry(self) -> None:
        await self._server(self.nacos.start)

    def bad_settings(self) -> list[dict[str, object]]:
        return [
            {},
            {"server_addr": "nacos"},
            {"server_addr": "a:1", "groups": "DEFAULT_GROUP"},
            {"server_addr": "a:1", "password": "x"},
            {"server_addr": "a:1", "mode": "push"},
            {"server_addr": "a:1", "grpc_port": 70000},
        ]


class TestNacosPollAdapter(TestNacosAdapter):
    """Polling the Open API (``mode: poll``)."""

    settings = {"mode": "poll", "poll_interval": 0.05}
