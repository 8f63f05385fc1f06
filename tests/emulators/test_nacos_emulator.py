"""The Nacos emulator speaks the v1 Open API shapes (plain aiohttp against it) and Nacos
2.x's gRPC protocol (a bare grpc.aio client against it)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest

from registryd.adapters.nacos import wire
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


# -- gRPC (Nacos 2.x/3.x) ----------------------------------------------------------------


class Client:
    """A bare gRPC client of the emulator: unary requests and the bi-stream, as frames."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self.unary = self.channel.unary_unary(wire.REQUEST)
        self.stream: Any = None

    async def ask(
        self, kind: str, body: dict[str, Any] | None = None, **headers: str
    ) -> tuple[str, dict[str, Any]]:
        raw = await self.unary(wire.encode(kind, body or {}, headers=headers), timeout=5)
        frame = wire.decode(raw)
        return frame.type, json.loads(frame.body)

    async def setup(self) -> None:
        self.stream = self.channel.stream_stream(wire.BI_STREAM)()
        setup = {"clientVersion": "test", "labels": {"source": "sdk"}, "tenant": "public"}
        await self.stream.write(wire.encode("ConnectionSetupRequest", setup))
        for _ in range(100):  # until the server has registered the connection
            _, answer = await self.ask("HealthCheckRequest")
            if answer["resultCode"] == 200:
                return
            assert answer["errorCode"] == 301
            await asyncio.sleep(0.01)
        raise AssertionError("the connection was never registered")

    async def pushed(self) -> tuple[str, dict[str, Any]]:
        frame = wire.decode(await asyncio.wait_for(self.stream.read(), 5))
        return frame.type, json.loads(frame.body)

    async def close(self) -> None:
        if self.stream is not None:
            self.stream.cancel()
        await self.channel.close(None)


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        await client.close()


def subscribe(name: str, on: bool = True) -> dict[str, Any]:
    return {
        "namespace": "public",
        "groupName": "DEFAULT_GROUP",
        "serviceName": name,
        "subscribe": on,
    }


async def test_grpc_server_check_setup_and_the_unregistered_connection(
    clients: list[Client],
) -> None:
    async with NacosEmulator() as nacos:
        assert nacos.grpc_address == f"127.0.0.1:{nacos.port + 1000}"
        client = Client(nacos.grpc_address)
        clients.append(client)
        kind, check = await client.ask("ServerCheckRequest")
        assert kind == "ServerCheckResponse" and check["resultCode"] == 200
        assert isinstance(check["connectionId"], str) and check["connectionId"]
        kind, refused = await client.ask("SubscribeServiceRequest", subscribe("orders"))
        assert (kind, refused["errorCode"]) == ("ErrorResponse", 301)
        kind, unknown = await client.ask("NoSuchRequest")
        assert (kind, unknown["errorCode"]) == ("ErrorResponse", 302)
        await client.setup()
        grpc_types = [r.path for r in nacos.requests if r.method == "GRPC"]
        assert grpc_types[:4] == [
            "ServerCheckRequest",
            "SubscribeServiceRequest",
            "NoSuchRequest",
            "ConnectionSetupRequest",
        ]


async def test_grpc_subscribe_push_acknowledge_and_unsubscribe(clients: list[Client]) -> None:
    async with NacosEmulator() as nacos:
        nacos.register("orders", "10.0.0.1", 8080)
        client = Client(nacos.grpc_address)
        clients.append(client)
        await client.ask("ServerCheckRequest")
        await client.setup()
        kind, answer = await client.ask("SubscribeServiceRequest", subscribe("orders"))
        assert kind == "SubscribeServiceResponse" and answer["resultCode"] == 200
        info = answer["serviceInfo"]
        assert (info["name"], info["groupName"]) == ("orders", "DEFAULT_GROUP")
        assert [h["ip"] for h in info["hosts"]] == ["10.0.0.1"]
        assert nacos.subscribers("orders") == 1

        kind, first = await client.pushed()  # a new subscriber gets a push
        assert kind == "NotifySubscriberRequest"
        nacos.register("orders", "10.0.0.2", 8080)
        kind, push = await client.pushed()
        assert kind == "NotifySubscriberRequest" and push["requestId"] != first["requestId"]
        assert [h["ip"] for h in push["serviceInfo"]["hosts"]] == ["10.0.0.1", "10.0.0.2"]
        assert push["serviceInfo"]["lastRefTime"] > first["serviceInfo"]["lastRefTime"]
        ack = {"resultCode": 200, "errorCode": 0, "requestId": push["requestId"]}
        await client.stream.write(wire.encode("NotifySubscriberResponse", ack))
        for _ in range(500):  # until the server has read it (a hang guard)
            if nacos.acks:
                break
            await asyncio.sleep(0.01)
        assert nacos.acks == [ack]

        _, gone = await client.ask("SubscribeServiceRequest", subscribe("orders", False))
        assert gone["resultCode"] == 200 and nacos.subscribers("orders") == 0


async def test_grpc_service_list_query_and_auth(
    http: aiohttp.ClientSession, clients: list[Client]
) -> None:
    async with NacosEmulator(auth=("nacos", "pw")) as nacos:
        for name in ("c", "a", "b"):
            nacos.register(name, "10.0.0.1", 80)
        client = Client(nacos.grpc_address)
        clients.append(client)
        await client.ask("ServerCheckRequest")
        await client.setup()
        page = {"namespace": "public", "groupName": "DEFAULT_GROUP", "pageNo": 1, "pageSize": 2}
        kind, refused = await client.ask("ServiceListRequest", page)
        assert kind == "ServiceListResponse"
        assert (refused["resultCode"], refused["errorCode"]) == (500, 403)
        async with http.post(
            nacos.url + "/nacos/v1/auth/login", data={"username": "nacos", "password": "pw"}
        ) as response:
            token = (await response.json())["accessToken"]
        _, first = await client.ask("ServiceListRequest", page, accessToken=token)
        assert (first["count"], first["serviceNames"]) == (
            3,
            ["DEFAULT_GROUP@@a", "DEFAULT_GROUP@@b"],
        )
        _, second = await client.ask("ServiceListRequest", {**page, "pageNo": 2}, accessToken=token)
        assert second["serviceNames"] == ["DEFAULT_GROUP@@c"]
        query = {"namespace": "public", "groupName": "DEFAULT_GROUP", "serviceName": "a"}
        kind, found = await client.ask("ServiceQueryRequest", query, accessToken=token)
        assert (
            kind == "QueryServiceResponse" and found["serviceInfo"]["hosts"][0]["ip"] == "10.0.0.1"
        )
        nacos.expire_tokens()
        _, expired = await client.ask("ServiceListRequest", page, accessToken=token)
        assert (expired["errorCode"], expired["message"]) == (403, "token invalid!")


async def test_without_grpc_and_restarts_of_the_grpc_side(clients: list[Client]) -> None:
    async with NacosEmulator(grpc=False) as old:
        client = Client(old.grpc_address)
        clients.append(client)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.ask("ServerCheckRequest")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    async with NacosEmulator(grpc_port=0) as nacos:
        port = nacos.grpc_port
        assert port and nacos.grpc_address == f"127.0.0.1:{port}"
        client = Client(nacos.grpc_address)
        clients.append(client)
        await client.ask("ServerCheckRequest")
        await client.setup()
        await nacos.stop()
        with pytest.raises(grpc.aio.AioRpcError):
            await client.pushed()
        await nacos.start()
        assert nacos.grpc_port == port
        _, check = await client.ask("ServerCheckRequest")  # reconnects to the same port
        assert check["resultCode"] == 200
