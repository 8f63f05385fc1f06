"""The xDS throttles on real gRPC streams: --pushThrottle and --maxRequestsPerSecond.

istiod: pilot/pkg/xds/discovery.go doSendPushes (concurrentPushLimit) and
WaitForRequestLimit, called first thing in ads.go StreamAggregatedResources.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from registryd.daemon.app import App
from registryd.daemon.config import RegistryConfig
from registryd.model import Port, Service
from registryd.testing import AdsClient, MemoryAdapter
from registryd.xds.stream import Connection, Digest, Planned
from registryd.xds.throttle import Throttle
from tests.support.fake_time import FakeTime
from tests.support.harness import loopback_settings
from tests.xds.test_protocol import FreezableRelay, eps


def svc(host: str) -> Service:
    return Service(hostname=host, ports=(Port(number=8080, name="http", protocol="HTTP"),))


async def until(condition: Callable[[], bool], steps: int = 3000) -> None:
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def sample(app: App, name: str, labels: dict[str, str] | None = None) -> float:
    for family in text_string_to_metric_families(app.metrics.render().decode()):
        for s in family.samples:
            if s.name == name and s.labels == (labels or {}):
                return float(s.value)
    raise AssertionError(f"no sample {name} {labels}")


class InFlight:
    """Observer: how many connections held a push slot whenever a response was written."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.seen: list[int] = []

    def sent(
        self, conn: Connection, planned: Planned, version: int, started: float, finished: float
    ) -> None:
        self.seen.append(self.app.serving.xds.throttle.pushes.in_flight)

    def failed(self, conn: Connection, planned: Planned) -> None:
        pass

    def synced(self, conn: Connection, version: int, at: float) -> None:
        pass

    def answered(self, conn: Connection, digest: Digest, version_info: str, at: float) -> None:
        pass


@pytest.fixture
async def throttled() -> AsyncIterator[tuple[App, MemoryAdapter]]:
    settings = loopback_settings(
        registries=(RegistryConfig(name="mem", type="memory", settings={}),),
        push_throttle=3,
        max_requests_per_second=10000.0,
    )
    app = App(settings)
    memory = app._adapters[0][1]
    assert isinstance(memory, MemoryAdapter)
    await app.start()
    try:
        yield app, memory
    finally:
        await app.stop()


async def test_a_push_to_many_clients_writes_at_most_push_throttle_at_once(
    throttled: tuple[App, MemoryAdapter],
) -> None:
    app, memory = throttled
    memory.set([svc("a.example")])
    await until(lambda: bool(app.store.view.services))
    app.push.push_now()
    await until(lambda: app.serving.xds.snapshot.version > 0)
    clients = [AdsClient(f"127.0.0.1:{app.grpc_port}", node_id=f"p-{i}") for i in range(40)]
    await asyncio.gather(*(c.connect() for c in clients))
    try:
        for client in clients:
            client.subscribe("cds")
        await asyncio.gather(*(c.next("cds", timeout=30) for c in clients))
        watch = InFlight(app)
        app.serving.xds.observers.append(watch)
        memory.set([svc("a.example"), svc("b.example")])
        app.push.push_now()
        pushed = await asyncio.gather(*(c.next("cds", timeout=30) for c in clients))
        assert all("outbound|8080||b.example" in r.registry_names for r in pushed)
        assert len(watch.seen) >= 40
        assert max(watch.seen) <= 3
        assert app.serving.xds.throttle.pushes.waited > 0  # the limit was reached, not just obeyed
        assert sample(app, "registryd_xds_throttled_total", {"limit": "push"}) > 0
        assert sample(app, "registryd_xds_push_throttle") == 3
        await until(lambda: app.serving.xds.throttle.pushes.in_flight == 0)
        assert sample(app, "registryd_xds_pushes_in_flight") == 0
    finally:
        await asyncio.gather(*(c.close() for c in clients))


@pytest.fixture
async def paced() -> AsyncIterator[tuple[App, FakeTime]]:
    """A registryd admitting 2 new streams a second on a fake clock."""
    settings = loopback_settings(
        registries=(RegistryConfig(name="mem", type="memory", settings={}),)
    )
    app = App(settings)
    clock = FakeTime(hold=True)
    app.serving.xds.throttle = Throttle.build(
        push_limit=None, rate=2.0, clock=clock, sleep=clock.sleep
    )
    assert app.serving.metrics is not None  # one process: it keeps the stream metrics
    app.serving.xds.throttle.observe(app.serving.metrics.throttled)
    memory = app._adapters[0][1]
    assert isinstance(memory, MemoryAdapter)
    memory.set([svc("a.example")])
    await app.start()
    try:
        await until(lambda: bool(app.store.view.services))
        app.push.push_now()
        await until(lambda: app.serving.xds.snapshot.version > 0)
        yield app, clock
    finally:
        await app.stop()


async def test_new_streams_beyond_the_rate_wait_and_every_one_is_served_in_turn(
    paced: tuple[App, FakeTime],
) -> None:
    app, clock = paced
    streams = app.serving.xds.throttle.streams
    clients = [AdsClient(f"127.0.0.1:{app.grpc_port}", node_id=f"p-{i}") for i in range(4)]
    try:
        for i, client in enumerate(clients):  # one after the other: a known order
            await client.connect()
            client.subscribe("cds")
            await until(lambda i=i: len(app.serving.xds.connections) + streams.waiting == i + 1)
        assert (await clients[0].next("cds", timeout=30)).registry_names  # the burst
        assert (len(app.serving.xds.connections), streams.waiting) == (1, 3)
        for step in (1, 2, 3):
            await until(lambda: clock.sleeping == 1)
            clock.advance(0.5)
            assert (await clients[step].next("cds", timeout=30)).registry_names
            assert (len(app.serving.xds.connections), streams.waiting) == (step + 1, 3 - step)
        assert sample(app, "registryd_xds_throttled_total", {"limit": "request"}) == 3
        waited = sample(app, "registryd_xds_throttle_wait_seconds_sum", {"limit": "request"})
        assert waited == pytest.approx(0.5 + 1.0 + 1.5)
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_a_client_that_leaves_while_waiting_leaves_the_line(
    paced: tuple[App, FakeTime],
) -> None:
    app, clock = paced
    streams = app.serving.xds.throttle.streams
    first = AdsClient(f"127.0.0.1:{app.grpc_port}", node_id="first")
    gone = AdsClient(f"127.0.0.1:{app.grpc_port}", node_id="gone")
    last = AdsClient(f"127.0.0.1:{app.grpc_port}", node_id="last")
    try:
        await first.connect()
        first.subscribe("cds")
        await first.next("cds", timeout=30)
        for n, client in enumerate((gone, last), start=1):
            await client.connect()
            client.subscribe("cds")
            await until(lambda n=n: streams.waiting == n)
        await gone.close()
        await until(lambda: streams.waiting == 1)
        await until(lambda: clock.sleeping == 1)
        clock.advance(0.5)  # the token the leaver would have had
        assert (await last.next("cds", timeout=30)).registry_names
        assert {c.proxy_id for c in app.serving.xds.connections.values()} == {"first", "last"}
    finally:
        await asyncio.gather(*(c.close() for c in (first, gone, last)))


async def test_clients_that_stop_reading_cannot_keep_the_push_slots(
    throttled: tuple[App, MemoryAdapter],
) -> None:
    """With one push slot, a client that stops reading holds it only for its lease;
    the healthy client gets every push (istiod would hold the slot for the whole send)."""
    app, memory = throttled
    app.serving.xds.throttle = Throttle.build(push_limit=1, rate=None, lease=0.05)
    pad = "outbound|8080||pad.example"
    names = ["outbound|8080||a.example", pad]
    memory.set([svc("a.example"), svc("pad.example")], eps("a.example", "10.0.0.1"))
    await until(lambda: bool(app.store.view.services))
    app.push.push_now()
    await until(lambda: app.serving.xds.snapshot.version > 0)
    relay = FreezableRelay(app.grpc_port)
    stalled = AdsClient(f"127.0.0.1:{await relay.start()}")
    await stalled.connect()
    stalled.subscribe("eds", names)
    await stalled.next("eds", timeout=30)
    relay.frozen.set()
    try:
        async with AdsClient(f"127.0.0.1:{app.grpc_port}") as healthy:
            healthy.subscribe("eds", names)
            await healthy.next("eds", timeout=30)
            rounds = 0
            while app.serving.xds.throttle.pushes.overtime == 0:  # until the stalled one overstays
                assert rounds < 200, "the stalled client never held its slot past the lease"
                addresses = [f"10.{rounds % 250}.{i // 250}.{i % 250 + 1}" for i in range(3000)]
                memory.upsert(svc("pad.example"), eps("pad.example", *addresses))
                await until(lambda a=addresses[0]: _has(app, a))
                app.push.push_now()
                update = await healthy.next("eds", timeout=30)
                assert update.names == [pad]
                rounds += 1
            latest = app.serving.xds.snapshot.version
            behind = [c for c in app.serving.xds.connections.values() if c.written_version < latest]
            assert len(behind) == 1  # the stalled client, stuck in its write
    finally:
        await relay.close()
        await stalled.close()


def _has(app: App, address: str) -> bool:
    served = app.store.view.services.get("pad.example")
    return served is not None and any(e.address == address for e in served.endpoints)
