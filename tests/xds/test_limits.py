"""What an xDS client may make registryd hold: names over ``MAX_NAME`` are refused,
unknown names are bounded by count and bytes on every kind of stream, and every refused
stream's client is told why (status code and message)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2

from registryd.model import Port, Service
from registryd.testing import AdsClient, DeltaAdsClient
from registryd.testing.ads import TYPES
from registryd.xds.delta import DeltaConnection
from registryd.xds.limits import MAX_NAME, UNKNOWN_BYTES_PER_NAME
from registryd.xds.limits import Refused as _Refused
from registryd.xds.server import XdsServer
from tests.support.harness import Harness

REPEATS = 12  # refusals per test: a status lost to a race shows up within a few


def svc(host: str) -> Service:
    return Service(hostname=host, ports=(Port(number=8080, name="http", protocol="HTTP"),))


async def refusal(client: AdsClient | DeltaAdsClient) -> grpc.aio.AioRpcError:
    """The error ``client``'s stream ended with (closing the client).

    The clients here do not ACK (``auto_ack=False``): a grpc.aio client whose own write
    is in flight when the server ends the stream reports ``INTERNAL: Internal error from
    Core`` instead of the server's status (grpc/grpc#36066, a client bug), which would
    hide what these tests check: that the server always sends its status."""
    assert client._reader is not None
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(asyncio.shield(client._reader), timeout=10)
    finally:
        await client.close()
    return info.value


async def with_clusters(harness: Harness) -> None:
    harness.memory.set([svc(f"s{i}.example") for i in range(20)])
    await harness.settle()


def test_the_longest_real_name_is_far_under_the_limit() -> None:
    longest = f"outbound|65535|{'s' * 63}|{'h' * 253}"
    assert len(longest) * 3 <= MAX_NAME
    assert UNKNOWN_BYTES_PER_NAME > len("outbound|8080||reviews.default.svc.cluster.local")


async def test_a_name_over_the_limit_is_invalid_on_either_protocol(harness: Harness) -> None:
    await with_clusters(harness)
    long = "outbound|8080||" + "x" * MAX_NAME
    for i in range(REPEATS):
        client: AdsClient | DeltaAdsClient
        client = (
            AdsClient(harness.target, auto_ack=False)
            if i % 2
            else DeltaAdsClient(harness.target, auto_ack=False)
        )
        await client.connect()
        client.subscribe("cds")  # the writer is busy answering when the refusal comes
        client.subscribe("eds", ["outbound|8080||s1.example", long])
        error = await refusal(client)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert f"eds resource name of {len(long)} bytes (limit {MAX_NAME})" in (
            error.details() or ""
        )
    assert harness.app.serving.xds.refused == REPEATS
    assert harness.app.health.failures == {}


async def test_a_name_of_multibyte_characters_counts_its_bytes(harness: Harness) -> None:
    name = "é" * (MAX_NAME // 2 + 1)  # fewer characters than the limit, more bytes
    client = DeltaAdsClient(harness.target, auto_ack=False)
    await client.connect()
    client.subscribe("rds", [name])
    error = await refusal(client)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{MAX_NAME + 2} bytes" in (error.details() or "")


async def test_a_name_at_the_limit_is_served(harness: Harness) -> None:
    name = "r" * MAX_NAME
    async with DeltaAdsClient(harness.target) as client:
        client.subscribe("rds", [name])
        assert (await client.next("rds")).names == [name]


async def test_unknown_bytes_are_bounded_on_a_wildcard_sotw_stream(harness: Harness) -> None:
    await with_clusters(harness)
    harness.app.serving.xds.max_unknown_names = 100
    harness.app.serving.xds.max_unknown_bytes = 10_000
    names = [f"{i:04d}" + "u" * 996 for i in range(11)]  # 11,000 bytes in 11 names
    async with AdsClient(harness.target) as fine:
        fine.subscribe("cds", ["*", *names[:10]])  # 10,000 bytes: at the limit
        assert len((await fine.next("cds")).names) > 20
    for _ in range(REPEATS):
        client = AdsClient(harness.target, auto_ack=False)
        await client.connect()
        client.subscribe("cds", ["*", *names])
        error = await refusal(client)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        details = error.details() or ""
        assert "11 cds resource names unknown to this server, 11000 bytes" in details
        assert "10000 bytes" in details and "--xdsMaxUnknownNames" in details


async def test_unknown_names_are_bounded_on_a_delta_stream(harness: Harness) -> None:
    await with_clusters(harness)
    harness.app.serving.xds.max_unknown_names = 50  # 12,800 bytes
    for i in range(REPEATS):
        client = DeltaAdsClient(harness.target, auto_ack=False)
        await client.connect()
        client.subscribe("cds")
        if i % 2:  # too many names
            client.subscribe("eds", [f"outbound|1||nowhere-{n}" for n in range(51)])
            expected = "51 eds resource names unknown"
        else:  # few names, too many bytes
            client.subscribe("eds", [f"{n:03d}" + "b" * 997 for n in range(13)])
            expected = "13 eds resource names unknown to this server, 13000 bytes"
        error = await refusal(client)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert expected in (error.details() or "")


async def test_a_delta_wildcard_lifts_no_limit(harness: Harness) -> None:
    await with_clusters(harness)
    harness.app.serving.xds.max_unknown_names = 20
    for _ in range(REPEATS):
        client = DeltaAdsClient(harness.target, auto_ack=False)
        await client.connect()
        client.subscribe("cds", ["*"])
        await client.next("cds")
        for batch in range(5):  # 25 names, 5 at a time
            client.subscribe("cds", [f"made-up-{batch}-{n}" for n in range(5)])
        error = await refusal(client)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert "25 cds resource names unknown" in (error.details() or "")


def test_names_churned_faster_than_answered_count_against_the_limit() -> None:
    # names subscribed then unsubscribed stay pending an answer until the writer plans:
    # a client that never reads can pile them up only to the limit
    server = XdsServer(max_unknown_names=30)
    conn = DeltaConnection(peer="test", version_prefix="v")
    eds = TYPES["eds"]
    with pytest.raises(_Refused) as info:
        for n in range(100):
            name = f"outbound|1||churn-{n}"
            for request in (
                discovery_pb2.DeltaDiscoveryRequest(type_url=eds, resource_names_subscribe=[name]),
                discovery_pb2.DeltaDiscoveryRequest(
                    type_url=eds, resource_names_unsubscribe=[name]
                ),
            ):
                digest = conn.on_request(request)
                server._check_subscription(conn, digest)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert n == 30  # refused on subscribing the 31st name
    assert conn.states[eds].names == {"outbound|1||churn-30"}  # the rest were pending


def test_initial_resource_versions_count_against_the_limit() -> None:
    server = XdsServer(max_unknown_names=10, max_unknown_bytes=1000)
    conn = DeltaConnection(peer="test", version_prefix="v")
    initial = {f"outbound|1||gone-{n}" + "i" * 100: "v-1" for n in range(10)}
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=TYPES["cds"], initial_resource_versions=initial
    )
    with pytest.raises(_Refused, match="10 cds resource names unknown"):
        server._check_subscription(conn, conn.on_request(request))


def test_the_byte_budget_follows_the_name_limit_unless_set() -> None:
    server = XdsServer()
    assert server.max_unknown_bytes == 10000 * UNKNOWN_BYTES_PER_NAME
    server.max_unknown_names = 100  # as a settings reload does
    assert server.max_unknown_bytes == 100 * UNKNOWN_BYTES_PER_NAME
    server.max_unknown_bytes = 5
    assert server.max_unknown_bytes == 5
