"""registryd's adapter contract suite, run against this plugin and a small inventory
server -- the way any plugin author tests an adapter."""

from __future__ import annotations

import json

from aiohttp import web
from registryd_inventory import InventoryAdapter

from registryd.adapter import Adapter, AdapterContext
from registryd.testing import AdapterContract


class TestInventoryAdapter(AdapterContract):
    factory = InventoryAdapter

    async def setup_registry(self) -> None:
        self.services: dict[str, dict[str, object]] = {}
        self.port = 0
        await self.heal_registry()

    async def _serve(self, request: web.Request) -> web.Response:
        body = json.dumps({"services": list(self.services.values())}, sort_keys=True)
        etag = f'"{hash(body)}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304)
        return web.Response(text=body, headers={"ETag": etag}, content_type="application/json")

    async def teardown_registry(self) -> None:
        await self.runner.cleanup()

    async def create(self) -> Adapter:
        settings = {"url": f"http://127.0.0.1:{self.port}/services", "interval": 0.05}
        return InventoryAdapter(name="contract", settings=settings, context=AdapterContext())

    async def add_service(self, name: str) -> str:
        self.services[name] = {
            "name": name,
            "port": 8080,
            "protocol": "http",
            "instances": [{"host": "10.0.0.7", "zone": "z1"}],
        }
        return f"{name}.inventory.internal"

    async def remove_service(self, name: str) -> None:
        self.services.pop(name, None)

    async def break_registry(self) -> None:
        await self.runner.cleanup()  # closes the listener and every open connection

    async def heal_registry(self) -> None:
        """(Re)start the inventory server, on the same port once it has one."""
        app = web.Application()
        app.router.add_get("/services", self._serve)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def bad_settings(self) -> list[dict[str, object]]:
        return [
            {},
            {"url": "ftp://x"},
            {"url": "http://x", "interval": 0},
            {"url": "http://x", "x": 1},
        ]
