"""Broken plugins: one that cannot be imported, one whose watch() raises and one given
bad settings.  Each is reported under its registry instance and retried with backoff,
while the daemon and the healthy registry keep serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from registryd.daemon.app import App
from registryd.daemon.config import RegistryConfig
from registryd.daemon.supervisor import Supervisor
from registryd.model import Port, Service
from registryd.testing import AdsClient, MemoryAdapter
from tests.support.harness import loopback_settings
from tests.support.plugins import install

PLUGINS = {
    "brokenplug.py": 'raise ImportError("libinventory.so: cannot open shared object file")\n',
    "angryplug.py": (
        "class Angry:\n"
        "    def __init__(self, *, name, settings, context):\n"
        "        pass\n"
        "    async def watch(self):\n"
        "        raise RuntimeError('inventory API answered 500')\n"
        "        yield\n"
    ),
    "fakeplugins-0.dist-info/METADATA": "Metadata-Version: 2.1\nName: fakeplugins\nVersion: 0\n",
    "fakeplugins-0.dist-info/entry_points.txt": (
        "[registryd.adapters]\nbroken = brokenplug:Factory\nangry = angryplug:Angry\n"
    ),
}


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two third-party plugins installed the way pip would (a dist-info on sys.path)."""
    return install(PLUGINS, tmp_path, monkeypatch)


@pytest.fixture
async def app(plugins: Path) -> AsyncIterator[App]:
    registries = (
        RegistryConfig(name="mem", type="memory", settings={}),
        RegistryConfig(name="cmdb", type="broken", settings={}),
        RegistryConfig(name="inventory", type="angry", settings={}),
        RegistryConfig(name="files", type="serviceentry", settings={"path": 42}),
    )
    daemon = App(loopback_settings(registries=registries))
    daemon.supervisor = Supervisor(daemon.store, backoff=(0.05, 0.1))
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


async def test_broken_plugins_are_retried_and_the_rest_keeps_serving(app: App) -> None:
    memory = app._adapters[0][1]
    assert isinstance(memory, MemoryAdapter)
    memory.set([Service(hostname="ok.example", ports=(Port(number=80, name="http"),))])
    broken = ("cmdb", "inventory", "files")

    async def retried() -> bool:
        restarts = {k.instance: n for k, n in app.supervisor.restarts.items()}
        return all(restarts.get(name, 0) >= 3 for name in broken)

    for _ in range(200):
        if await retried():
            break
        await asyncio.sleep(0.02)
    assert await retried(), f"not retried: {app.supervisor.restarts}"
    assert app.supervisor.restarts.get(app._adapters[0][0], 0) == 0

    base = f"http://127.0.0.1:{app.http_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/debug/configz") as response:
            errors = {c["name"]: c["lastError"] for c in await response.json()}
        async with session.get(f"{base}/ready") as response:
            ready = (response.status, await response.text())
    assert "registry 'cmdb'" in errors["cmdb"] and "libinventory.so" in errors["cmdb"]
    assert "inventory API answered 500" in errors["inventory"]
    assert "registry 'files'" in errors["files"] and "path" in errors["files"]
    assert errors["mem"] is None
    assert ready[0] == 503
    assert all(f"/{name} has not synced" in ready[1] for name in broken), ready[1]

    app.push.push_now()
    async with AdsClient(f"127.0.0.1:{app.grpc_port}") as client:
        client.subscribe("cds")
        cds = await client.next("cds")
        assert cds.registry_names == ["outbound|80||ok.example"]
