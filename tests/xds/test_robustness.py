"""The ADS server under faults and hostile clients: failing writers, foreign nonces,
made-up names, NACK floods."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from typing import Any

import grpc
import pytest

from registryd.model import Port, Service
from registryd.testing import AdsClient
from registryd.testing.ads import TYPES
from registryd.xds.stream import Connection
from tests.support.harness import Harness
from tests.xds.quiet import nothing_pending

CDS, EDS = TYPES["cds"], TYPES["eds"]


def svc(host: str) -> Service:
    return Service(hostname=host, ports=(Port(number=8080, name="http", protocol="HTTP"),))


async def ended(client: AdsClient) -> grpc.aio.AioRpcError:
    """The error the stream ended with."""
    assert client._reader is not None
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(asyncio.shield(client._reader), timeout=10)
    return info.value


async def until(condition: Any, steps: int = 3000) -> None:
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_a_writer_that_fails_ends_its_stream_and_is_counted(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    harness.memory.set([svc("a.example")])
    await harness.settle()
    real = Connection.plan

    def broken(conn: Connection, snapshot: Any) -> Any:
        raise RuntimeError("planner bug")

    monkeypatch.setattr(Connection, "plan", broken)
    client = AdsClient(harness.target)
    await client.connect()
    try:
        with caplog.at_level(logging.ERROR, logger="registryd"):
            client.subscribe("cds")
            error = await ended(client)
        assert error.code() == grpc.StatusCode.INTERNAL
        assert harness.app.health.failures == {"xds-writer": 1}
        assert any(r.exc_info and "planner bug" in r.getMessage() for r in caplog.records)
        await until(lambda: not harness.app.serving.xds.connections)
    finally:
        await client.close()
    monkeypatch.setattr(Connection, "plan", real)
    async with AdsClient(harness.target) as again:  # a new stream is served
        again.subscribe("cds")
        assert (await again.next("cds")).registry_names == ["outbound|8080||a.example"]


async def test_first_request_with_a_foreign_nonce_is_answered(harness: Harness) -> None:
    """istiod: pkg/xds/server.go ShouldRespond answers INIT/RECONNECT whatever nonce."""
    harness.memory.set([svc("a.example")])
    await harness.settle()
    async with AdsClient(harness.target) as client:
        client.send(CDS, [], version="other-7", nonce="nonce-from-another-server")
        first = await client.next("cds")
        assert first.registry_names == ["outbound|8080||a.example"]
        # later stale nonces on the same stream are ignored and counted
        client.send(CDS, [], version=first.message.version_info, nonce="stale")
        await nothing_pending(client)
        (conn,) = harness.app.serving.xds.connections.values()
        assert conn.states[CDS].expired_nonces == 1


async def test_too_many_unknown_names_close_the_stream(harness: Harness) -> None:
    harness.app.serving.xds.max_unknown_names = 100
    harness.memory.set([svc("a.example")])
    await harness.settle()
    async with AdsClient(harness.target) as fine:
        known = ["outbound|8080||a.example"]
        fine.subscribe("eds", known + [f"made-up-{i}" for i in range(100)])  # at the limit
        assert len((await fine.next("eds")).names) == 101
    client = AdsClient(harness.target)
    await client.connect()
    try:
        client.subscribe("eds", [f"made-up-{i}" for i in range(101)])
        error = await ended(client)
    finally:
        await client.close()
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "101 eds resource names unknown" in (error.details() or "")
    assert "--xdsMaxUnknownNames" in (error.details() or "")
    assert harness.app.serving.xds.refused == 1
    assert harness.app.health.failures == {}  # a refusal is not a failure


async def test_a_client_that_leaves_leaves_no_interned_names(harness: Harness) -> None:
    harness.app.serving.xds.max_unknown_names = 0  # no limit: the interner itself must let go
    names = [f"outbound|8080||made-up-{i}.example" for i in range(20000)]
    for _ in range(3):
        async with AdsClient(harness.target) as client:
            client.subscribe("eds", names)
            await client.next("eds")
            assert harness.app.serving.xds.interner.size > 20000 * 40
    await until(lambda: not harness.app.serving.xds.connections)
    assert harness.app.serving.xds.snapshot.cache.size == 0  # responses naming made-up names
    gc.collect()
    assert harness.app.serving.xds.interner.entries == 0
    assert harness.app.serving.xds.interner.size == 0


async def test_nack_logs_are_rate_limited_clipped_and_escaped(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.memory.set([svc("a.example")])
    await harness.settle()
    forged = "sidecar~1.2.3.4~x.default~default.svc.cluster.local\n2026-01-01T00:00:00Z\terror"
    async with AdsClient(harness.target, node_id=forged, auto_ack=False) as client:
        client.subscribe("cds")
        response = await client.next("cds")
        with caplog.at_level(logging.INFO, logger="registryd"):
            for i in range(60):
                client.send(
                    CDS,
                    [],
                    version="",
                    nonce=response.message.nonce,
                    error=f"bad {i}\n" + "x" * 100_000,
                )
            for _ in range(60):  # stale nonces: counted, never logged
                client.send(CDS, [], nonce="stale", error="y" * 100_000)
            await nothing_pending(client)
    (conn_state,) = [c.states[CDS] for c in harness.app.serving.xds.connections.values()] or [None]
    records = [r for r in caplog.records if r.name == "registryd.xds"]
    nacks = [r for r in records if "rejected" in r.getMessage()]
    assert 1 <= len(nacks) <= 5  # the per-stream burst
    for record in nacks:
        message = record.getMessage()
        assert "\n" not in message and len(message) < 1000
        assert "\\n2026-01-01" in message  # the forged line is shown, escaped
    assert not any("y" * 100 in r.getMessage() for r in records)
    assert conn_state is None or len(conn_state.last_nack) < 1100


async def test_refused_streams_leave_no_interned_names(harness: Harness) -> None:
    harness.app.serving.xds.max_unknown_names = 10
    for _ in range(3):
        client = AdsClient(harness.target)
        await client.connect()
        try:
            client.subscribe("eds", [f"made-up-{i}" for i in range(5000)])
            assert (await ended(client)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            await client.close()
    await until(lambda: not harness.app.serving.xds.connections)
    gc.collect()
    assert harness.app.serving.xds.interner.entries == 0


async def test_a_connection_storm_leaves_no_state_behind(harness: Harness) -> None:
    harness.memory.set([svc("a.example")])
    await harness.settle()
    clients = [AdsClient(harness.target, node_id=f"storm-{i}") for i in range(200)]
    await asyncio.gather(*(c.connect() for c in clients))
    for client in clients:
        client.subscribe("cds")
    await asyncio.gather(*(c.next("cds", timeout=30) for c in clients))
    assert len(harness.app.serving.xds.connections) == 200
    await asyncio.gather(*(c.close() for c in clients))  # all drop at once
    await until(lambda: not harness.app.serving.xds.connections)
    text = harness.app.metrics.render().decode()
    assert not [line for line in text.splitlines() if line.startswith("pilot_xds{")]
    assert harness.app.health.failures == {}


async def test_a_stream_cancelled_twice_while_closing_leaves_no_connection_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # gRPC may cancel a handler again while it is already winding down
    from registryd.xds.server import XdsServer

    server = XdsServer()
    release = asyncio.Event()

    class Requests:
        def __aiter__(self) -> Requests:
            return self

        async def __anext__(self) -> bytes:
            await asyncio.Event().wait()  # a client that sends nothing
            raise StopAsyncIteration

    class Context:
        def peer(self) -> str:
            return "ipv4:127.0.0.1:1"

        async def send_initial_metadata(self, metadata: object) -> None:
            pass

        async def write(self, payload: bytes) -> None:
            await release.wait()

        def set_code(self, code: object) -> None:
            pass

        def set_details(self, details: str) -> None:
            pass

    handler = asyncio.create_task(server._stream(Requests(), Context()))  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        while not server.connections:
            await asyncio.sleep(0)
    # first cancel: the handler starts closing; then hold its closing up and cancel again
    original_gather = asyncio.gather

    async def slow_gather(*tasks: object, **kwargs: object) -> object:
        await asyncio.Event().wait()
        return await original_gather(*tasks, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio, "gather", slow_gather)
    handler.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    handler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await handler
    monkeypatch.undo()
    assert server.connections == {}
    assert server.handlers == 0  # what a stopping daemon waits for
