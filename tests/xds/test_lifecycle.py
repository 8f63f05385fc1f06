"""Connection lifecycle: max connection age (GOAWAY) and readiness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest

from registryd.adapter import Replace, Update
from registryd.daemon.app import App
from registryd.daemon.config import RegistryConfig
from registryd.testing import AdsClient
from tests.support.harness import loopback_settings

HANG_GUARD = 60.0  # seconds: only stops a hung test; never what a test asserts


async def test_max_connection_age_closes_streams_and_clients_reconnect() -> None:
    app = App(loopback_settings(max_connection_age=0.5, max_connection_age_grace=0.5))
    await app.start()
    try:
        client = AdsClient(f"127.0.0.1:{app.grpc_port}")
        await client.connect()
        client.subscribe("cds")
        await client.next("cds")
        assert len(app.serving.xds.connections) == 1
        assert client._reader is not None
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(asyncio.shield(client._reader), timeout=5)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        deadline = time.monotonic() + HANG_GUARD
        while app.serving.xds.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert app.serving.xds.connections == {}
        await client.close()
        async with AdsClient(f"127.0.0.1:{app.grpc_port}") as again:
            again.subscribe("cds")
            await again.next("cds")
    finally:
        await app.stop()


class GatedAdapter:
    """Delivers its full state only when ``gate`` is set."""

    def __init__(self, **_: object) -> None:
        self.gate = asyncio.Event()

    async def watch(self) -> AsyncIterator[Update]:
        await self.gate.wait()
        yield Replace()
        await asyncio.Event().wait()


async def test_ready_is_503_until_every_registry_synced() -> None:
    app = App(
        loopback_settings(registries=(RegistryConfig(name="mem", type="memory", settings={}),))
    )
    gated = GatedAdapter()
    app._adapters.append((app._adapters[0][0]._replace(instance="slow"), gated))
    await app.start()
    try:
        url = f"http://127.0.0.1:{app.http_port}/ready"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                assert response.status == 503
                assert "memory/slow" in await response.text()
            gated.gate.set()
            deadline = time.monotonic() + HANG_GUARD
            status = 0
            while time.monotonic() < deadline:
                async with session.get(url) as response:
                    status = response.status
                if status == 200:
                    break
                await asyncio.sleep(0.02)
            assert status == 200
    finally:
        await app.stop()
