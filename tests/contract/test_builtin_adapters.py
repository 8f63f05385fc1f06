"""The adapter contract suite run against the built-in adapters, as a plugin author
would run it against theirs."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from registryd.adapter import Adapter, AdapterContext
from registryd.adapters.nacos import NacosAdapter
from registryd.adapters.serviceentry import ServiceEntryAdapter
from registryd.model import Endpoint, Port, Service
from registryd.testing import AdapterContract, MemoryAdapter
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
    factory = NacosAdapter

    async def setup_registry(self) -> None:
        self.nacos = NacosEmulator()
        await self.nacos.start()

    async def teardown_registry(self) -> None:
        await self.nacos.stop()

    async def create(self) -> Adapter:
        settings = {"server_addr": self.nacos.address, "poll_interval": 0.05}
        return NacosAdapter(name="contract", settings=settings, context=AdapterContext())

    async def add_service(self, name: str) -> str:
        self.nacos.register(name, "10.0.0.1", 8080)
        return f"{name}.default-group.public.nacos"

    async def remove_service(self, name: str) -> None:
        self.nacos.remove_service(name)

    async def break_registry(self) -> None:
        await self.nacos.stop()

    async def heal_registry(self) -> None:
        await self.nacos.start()

    def bad_settings(self) -> list[dict[str, object]]:
        return [
            {},
            {"server_addr": "nacos"},
            {"server_addr": "a:1", "groups": "DEFAULT_GROUP"},
            {"server_addr": "a:1", "password": "x"},
        ]
