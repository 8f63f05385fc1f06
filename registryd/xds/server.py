"""The ADS gRPC server: one reader and one writer per stream, fed by snapshots.

The server knows snapshots and connections, nothing about registries.  ``publish()``
hands it a new snapshot; every connection's writer wakes, plans against the newest
snapshot and writes.  Writers are independent tasks, so a client that stops reading
blocks only its own writer (gRPC flow control), never the others, and a writer that falls
behind skips straight to the newest snapshot instead of queueing every version.

Responses are pre-serialized bytes (see :mod:`registryd.xds.snapshot`); the gRPC method
is registered with no response serializer so the bytes go out untouched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from registryd.xds.snapshot import EMPTY, Snapshot
from registryd.xds.stream import Connection, Digest, Interner, Planned

__all__ = ["ADS_METHOD", "XdsObserver", "XdsServer"]

log = logging.getLogger("registryd.xds")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
ADS_METHOD = f"/{ADS_SERVICE}/StreamAggregatedResources"


class XdsObserver(Protocol):
    """Told about every response written and every answer read (metrics, push traces).
    Called on the event loop; must be quick and must not raise."""

    def sent(
        self, conn: Connection, planned: Planned, version: int, started: float, finished: float
    ) -> None:
        """``planned`` (of snapshot ``version``) was written; monotonic start and end."""

    def failed(self, conn: Connection, planned: Planned) -> None:
        """Writing ``planned`` failed (the stream is broken and will close)."""

    def synced(self, conn: Connection, version: int, at: float) -> None:
        """Everything ``conn`` needed of snapshot ``version`` has been written."""

    def answered(self, conn: Connection, digest: Digest, version_info: str, at: float) -> None:
        """A request arrived on ``conn``: ``digest.kind`` says whether ACK, NACK..."""


class XdsServer:
    def __init__(
        self,
        *,
        version_prefix: str | None = None,
        observers: tuple[XdsObserver, ...] = (),
    ) -> None:
        self.snapshot: Snapshot = EMPTY
        self.connections: dict[str, Connection] = {}
        self.version_prefix = version_prefix or time.strftime("%Y%m%dT%H%M%S")
        self.observers: list[XdsObserver] = list(observers)
        self._interner = Interner()
        self._wake: dict[str, asyncio.Event] = {}

    # -- feeding -------------------------------------------------------------------
    def publish(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` current and wake every connection's writer."""
        self.snapshot = snapshot
        for event in self._wake.values():
            event.set()

    # -- gRPC wiring ---------------------------------------------------------------
    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.stream_stream_rpc_method_handler(
            self._stream,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=None,  # responses are already bytes
        )
        return grpc.method_handlers_generic_handler(
            ADS_SERVICE, {"StreamAggregatedResources": method}
        )

    async def _stream(
        self,
        requests: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        conn = Connection(
            peer=context.peer(), version_prefix=self.version_prefix, interner=self._interner
        )
        wake = asyncio.Event()
        self.connections[conn.id] = conn
        self._wake[conn.id] = wake
        writer = asyncio.create_task(self._writer(conn, wake, context), name=f"xds-{conn.id}")
        log.debug("stream %s opened from %s", conn.id, conn.peer)
        try:
            async for request in requests:
                if writer.done():
                    break
                digest = conn.on_request(request)
                if digest.replan:
                    wake.set()
                if self.observers:
                    at = time.monotonic()
                    for observer in self.observers:
                        observer.answered(conn, digest, request.version_info, at)
                if request.HasField("error_detail") and request.response_nonce:
                    log.warning(
                        "%s rejected %s version %s: %s",
                        conn.proxy_id,
                        request.type_url.rsplit(".", 1)[-1],
                        request.version_info or "-",
                        request.error_detail.message,
                    )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken stream ends this connection only
            log.debug("stream %s read error: %s", conn.id, exc)
        finally:
            writer.cancel()
            self.connections.pop(conn.id, None)
            self._wake.pop(conn.id, None)
            log.debug("stream %s (%s) closed", conn.id, conn.proxy_id)
        if writer.done() and not writer.cancelled() and writer.exception() is not None:
            log.debug("stream %s writer failed: %s", conn.id, writer.exception())

    async def _writer(
        self,
        conn: Connection,
        wake: asyncio.Event,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        while True:
            await wake.wait()
            wake.clear()
            snapshot = self.snapshot
            plan = conn.plan(snapshot)
            for planned in plan:
                started = time.monotonic()
                try:
                    await context.write(planned.payload)
                except Exception:
                    for observer in self.observers:
                        observer.failed(conn, planned)
                    raise
                if self.observers:
                    finished = time.monotonic()
                    for observer in self.observers:
                        observer.sent(conn, planned, snapshot.version, started, finished)
            conn.written_version = snapshot.version
            if plan and self.observers:
                at = time.monotonic()
                for observer in self.observers:
                    observer.synced(conn, snapshot.version, at)
