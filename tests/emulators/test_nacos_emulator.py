"""The Nacos emulator speaks the v1 Open API shapes: plain aiohttp against it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.emulators.nacos import NacosEmulator

NS = "/nacos/v1/ns"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, object]:
    async with http.get(url, params=params) as response:
        text = await response.text()
        return response.status, (await response.json() if response.status == 200 else text)


async def test_service_list_pages_by_group_and_namespace(http: aiohttp.ClientSession) -> None:
    async with NacosEmulator() as nacos:
        for name in ("c", "a", "b"):
            nacos.register(name, "10.0.0.1", 80)
        nacos.register("x", "10.0.0.1", 80, group="G")
        nacos.register("y", "10.0.0.1", 80, namespace="dev")
        url = nacos.url + NS + "/service/list"
        assert await get(http, url, pageNo="1", pageSize="2") == (
            200,
            {"count": 3, "doms": ["a", "b"]},
        )
        assert await get(http, url, pageNo="2", pageSize="2") == (200, {"count": 3, "doms": ["c"]})
        assert await get(http, url, pageNo="1", pageSize="9", groupName="G") == (
            200,
            {"count": 1, "doms": ["x"]},
        )
        assert await get(http, url, pageNo="1", pageSize="9", namespaceId="dev") == (
            200,
            {"count": 1, "doms": ["y"]},
        )
        status, _ = await get(http, url)
        assert status == 400


async def test_instance_list_shape_checksum_and_healthy_only(http: aiohttp.ClientSession) -> None:
    async with NacosEmulator() as nacos:
        nacos.register("orders", "10.0.0.1", 8080, weight=2.0, metadata={"k": "v"})
        nacos.register("orders", "10.0.0.2", 8080, healthy=False, cluster="c2")
        url = nacos.url + NS + "/instance/list"
        _, body = await get(http, url, serviceName="orders", healthyOnly="false")
        assert isinstance(body, dict) and body["name"] == "DEFAULT_GROUP@@orders"
        first = body["hosts"][0]
        assert {k: first[k] for k in ("ip", "port", "weight", "healthy", "enabled")} == {
            "ip": "10.0.0.1",
            "port": 8080,
            "weight": 2.0,
            "healthy": True,
            "enabled": True,
        }
        assert first["metadata"] == {"k": "v"} and body["hosts"][1]["clusterName"] == "c2"
        _, grouped = await get(http, url, serviceName="DEFAULT_GROUP@@orders", healthyOnly="true")
        assert isinstance(grouped, dict) and [h["ip"] for h in grouped["hosts"]] == ["10.0.0.1"]
        nacos.deregister("orders", "10.0.0.2", 8080, cluster="c2")
        _, after = await get(http, url, serviceName="orders")
        assert isinstance(after, dict) and after["checksum"] != body["checksum"]
        _, unknown = await get(http, url, serviceName="nope")
        assert isinstance(unknown, dict) and unknown["hosts"] == []


async def test_login_and_tokens(http: aiohttp.ClientSession) -> None:
    async with NacosEmulator(auth=("nacos", "pw")) as nacos:
        url = nacos.url + NS + "/service/list"
        assert await get(http, url, pageNo="1", pageSize="1") == (403, "user not found!")
        login = nacos.url + "/nacos/v1/auth/login"
        async with http.post(login, data={"username": "nacos", "password": "no"}) as refused:
            assert refused.status == 403
        async with http.post(login, data={"username": "nacos", "password": "pw"}) as response:
            token = (await response.json())["accessToken"]
        assert (await get(http, url, pageNo="1", pageSize="1", accessToken=token))[0] == 200
        nacos.expire_tokens()
        assert await get(http, url, pageNo="1", pageSize="1", accessToken=token) == (
            403,
            "token invalid!",
        )


async def test_a_failing_service_and_a_restart_on_the_same_port(
    http: aiohttp.ClientSession,
) -> None:
    async with NacosEmulator() as nacos:
        nacos.register("orders", "10.0.0.1", 80)
        nacos.fail_service("orders", 503)
        url = nacos.url + NS + "/instance/list"
        assert (await get(http, url, serviceName="orders"))[0] == 503
        nacos.fail_service("orders", None)
        await nacos.stop()
        with pytest.raises(aiohttp.ClientConnectionError):
            await get(http, url, serviceName="orders")
        await nacos.start()
        assert (await get(http, url, serviceName="orders"))[0] == 200
