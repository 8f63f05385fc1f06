"""Memory comes back: what hostile xDS clients make registryd hold is released when they
leave.

A registryd runs in process on loopback; clients of each hostile kind connect with real
grpc.aio channels, hold what they made the server hold, then leave.  Python allocations
are measured with :mod:`tracemalloc` (the names, sets, empty resources and responses the
server builds are all Python objects): they must grow while the clients are connected
(or the test proves nothing) and come back to the baseline once the server has dropped
every connection.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import grpc

from registryd.model import Port, Service
from registryd.testing import AdsClient, DeltaAdsClient
from registryd.xds.limits import MAX_NAME
from tests.support.harness import Harness

CLIENTS = 6  # per kind
NAMES = 800  # unknown names per client, of NAME_SIZE bytes: under the default limits
NAME_SIZE = 1000
MiB = 2**20

Client = AdsClient | DeltaAdsClient


def svc(host: str) -> Service:
    return Service(hostname=host, ports=(Port(number=8080, name="http", protocol="HTTP"),))


def big_names(tag: str, count: int = NAMES) -> list[str]:
    """``count`` made-up names of ``NAME_SIZE`` bytes, unique to ``tag``."""
    return [f"outbound|1||{tag}-{i}-".ljust(NAME_SIZE, "x") for i in range(count)]


async def until(condition: Callable[[], bool]) -> None:
    """Until ``condition`` holds (the server's own state, polled between loop turns)."""
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0.01)


async def sotw_unknown(harness: Harness, tag: str) -> Client:
    """SotW: EDS for big made-up names, answered with empty resources, then more of
    them (a changed subscription), then idle."""
    client = AdsClient(harness.target, node_id=f"sotw-{tag}")
    await client.connect()
    names = big_names(tag)
    client.subscribe("eds", names[: NAMES // 2])
    assert len((await client.next("eds", timeout=30)).names) == NAMES // 2
    client.subscribe("eds", names)
    assert len((await client.next("eds", timeout=30)).names) == NAMES - NAMES // 2
    return client


async def delta_unknown(harness: Harness, tag: str) -> Client:
    """Delta: EDS and RDS for big made-up names."""
    client = DeltaAdsClient(harness.target, node_id=f"delta-{tag}")
    await client.connect()
    client.subscribe("eds", big_names(f"e{tag}", NAMES // 2))
    client.subscribe("rds", big_names(f"r{tag}", NAMES // 2))
    await client.next("eds", timeout=30)
    await client.next("rds", timeout=30)
    return client


async def delta_wildcard(harness: Harness, tag: str) -> Client:
    """Delta: ``*`` for clusters, then big made-up cluster names on top."""
    client = DeltaAdsClient(harness.target, node_id=f"wild-{tag}")
    await client.connect()
    client.subscribe("cds", ["*"])
    await client.next("cds", timeout=30)
    client.subscribe("cds", big_names(tag))
    assert len((await client.next("cds", timeout=30)).removed) == NAMES
    return client


async def delta_churn(harness: Harness, tag: str) -> Client:
    """Delta: subscribe and unsubscribe batches of big made-up names, round after round;
    keeps the last batch."""
    client = DeltaAdsClient(harness.target, node_id=f"churn-{tag}")
    await client.connect()
    previous: list[str] = []
    for round_ in range(8):
        names = big_names(f"{tag}-{round_}", NAMES // 4)
        client.subscribe("eds", names)
        if previous:
            client.unsubscribe("eds", previous)
        await client.next("eds", timeout=30)
        previous = names
    return client


async def refused(harness: Harness, tag: str) -> None:
    """Streams ended by the server: a name over the limit, on each protocol."""
    long = "outbound|1||" + "z" * MAX_NAME + tag
    for client in (AdsClient(harness.target), DeltaAdsClient(harness.target)):
        client.auto_ack = False
        await client.connect()
        client.subscribe("eds", [long])
        await client.wait_ended(timeout=30)
        assert client._reader is not None
        error = client._reader.exception()
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        await client.close()


KINDS = (sotw_unknown, delta_unknown, delta_wildcard, delta_churn)


@asynccontextmanager
async def hostile(harness: Harness, clients: int, round_: str) -> AsyncIterator[None]:
    """``clients`` clients of every kind connected (and a few refused) for the body."""
    opened: list[Client] = []
    try:
        for kind in KINDS:
            for i in range(clients):
                opened.append(await kind(harness, f"{round_}{i}"))
        await refused(harness, round_)
        yield
    finally:
        await asyncio.gather(*(c.close() for c in opened))
        opened.clear()
        xds = harness.app.serving.xds
        await until(lambda: not xds.connections and xds.handlers == 0)


def retained() -> int:
    """Python bytes allocated and still alive, after a full collection."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def test_what_hostile_clients_make_registryd_hold_goes_when_they_leave(
    harness: Harness,
) -> None:
    harness.memory.set([svc(f"s{i}.example") for i in range(20)])
    await harness.settle()
    tracemalloc.start()
    try:
        async with hostile(harness, 1, "warm"):  # lazily built state is not a leak
            pass
        before = retained()
        async with hostile(harness, CLIENTS, "run"):
            during = retained()
        after = retained()
    finally:
        tracemalloc.stop()
    grown = during - before
    print(
        f"traced: before {before / MiB:.1f} MiB, during {during / MiB:.1f} MiB, "
        f"after {after / MiB:.1f} MiB"
    )
    # the made-up names alone: 4 kinds x CLIENTS x NAMES x NAME_SIZE (churn keeps a quarter)
    assert grown > 3.25 * CLIENTS * NAMES * NAME_SIZE
    assert after - before < max(MiB, grown // 50), (before, during, after)
    assert harness.app.serving.xds.interner.entries == 0
    assert harness.app.serving.xds.snapshot.cache.size < MiB  # only responses of known resources
