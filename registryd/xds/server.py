"""The ADS gRPC server: one reader and one writer per stream, fed by snapshots.

The server knows snapshots and connections, nothing about registries.  ``publish()``
hands it a new snapshot; every connection's writer wakes, plans against the newest
snapshot and writes.  Writers are independent tasks, so a client that stops reading
blocks only its own writer (gRPC flow control), never the others, and a writer that falls
behind skips straight to the newest snapshot instead of queueing every version.

Both ADS methods are served on the same port, from the same snapshots:
``StreamAggregatedResources`` (state-of-the-world, :mod:`registryd.xds.stream`) and
``DeltaAggregatedResources`` (incremental, :mod:`registryd.xds.delta`).  Only the
per-connection protocol logic differs; readers, writers, limits and observers are shared.

Responses are pre-serialized bytes (see :mod:`registryd.xds.snapshot`); the gRPC methods
are registered with no response serializer so the bytes go out untouched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeAlias

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError

from registryd.base.health import TaskHealth
from registryd.base.logs import LogThrottle, clip
from registryd.xds.delta import DeltaConnection
from registryd.xds.limits import (
    MAX_UNKNOWN_NAMES,
    UNKNOWN_BYTES_PER_NAME,
    Refused,
    check_subscription,
    config_denial,
)
from registryd.xds.resources import is_config_type
from registryd.xds.snapshot import EMPTY, Snapshot
from registryd.xds.stream import (
    ACK,
    EXPIRED,
    NACK,
    Connection,
    Digest,
    Interner,
    Planned,
)
from registryd.xds.throttle import Throttle

__all__ = ["ADS_METHOD", "DELTA_METHOD", "XdsObserver", "XdsServer"]

log = logging.getLogger("registryd.xds")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
ADS_METHOD = f"/{ADS_SERVICE}/StreamAggregatedResources"
DELTA_METHOD = f"/{ADS_SERVICE}/DeltaAggregatedResources"


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


_Request: TypeAlias = discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest


class _WriteFailed(Exception):
    """Writing to the stream failed: the client went away (not a server bug)."""


class XdsServer:
    """The ADS service.  Stream contract:

    * Each stream has a reader (digests requests) and a writer (plans and writes).  If
      either ends, the stream ends.  An unexpected exception in either (a bug, not a
      client going away) is logged with its traceback, counted in
      ``registryd_task_failures_total{task="xds-reader"|"xds-writer"}`` and ends the
      stream with ``INTERNAL``; the client reconnects and is served afresh.
    * What a client may make a stream hold is bounded.  A request naming a resource
      longer than ``MAX_NAME`` bytes ends the stream with ``INVALID_ARGUMENT``.  Per
      type, the names the stream holds that the server does not have (subscribed,
      wildcard or not, state-of-the-world or Delta, and those still pending an answer)
      may number ``max_unknown_names`` and total ``max_unknown_bytes`` characters (by
      default ``UNKNOWN_BYTES_PER_NAME`` per allowed name); past either the stream ends
      with ``RESOURCE_EXHAUSTED`` (0 names: no limit on either).
    * Everything a stream holds is released when it closes: its connection leaves the
      tables and the NACK log throttle, the interner and response caches hold nothing
      of a client's own invention (:mod:`registryd.xds.stream`).
    * A refused stream (or one ended by a bug) always ends with a status code and a
      message: initial metadata is sent before the writer starts, so cancelling a
      write half-way can never leave gRPC unable to send the status.
    * Istio config types (MCP, for an istiod) are for clients without a certificate
      (plaintext, server-only TLS: unauthenticated, as for every type) and for client
      certificates whose identity is in ``root_namespace``; any other stream asking for
      one ends with ``PERMISSION_DENIED`` (:func:`registryd.xds.limits.config_denial`).
    * New streams wait for ``throttle.streams`` before anything else, and a writer holds
      a slot of ``throttle.pushes`` while it plans and writes (see
      :mod:`registryd.xds.throttle`).
    * NACK lines are rate-limited per stream and overall; client text in them is
      clipped and escaped (:func:`registryd.base.logs.clip`).
    """

    def __init__(
        self,
        *,
        version_prefix: str | None = None,
        observers: tuple[XdsObserver, ...] = (),
        health: TaskHealth | None = None,
        max_unknown_names: int = MAX_UNKNOWN_NAMES,
        max_unknown_bytes: int | None = None,
        throttle: Throttle | None = None,
        id_prefix: str = "conn-",
        root_namespace: str = "istio-system",
    ) -> None:
        # the empty state, with a response cache of this server's own (EMPTY's is global)
        self.snapshot: Snapshot = Snapshot(EMPTY.version, EMPTY.tables)
        self.connections: dict[str, Connection] = {}
        self.handlers = 0  # stream handlers still running (a closing one is unlisted already)
        self.version_prefix = version_prefix or time.strftime("%Y%m%dT%H%M%S")
        self.observers: list[XdsObserver] = list(observers)
        self.health = health or TaskHealth()
        self.max_unknown_names = max_unknown_names
        self._max_unknown_bytes = max_unknown_bytes  # None: derived from the name limit
        self.throttle = throttle or Throttle()  # default: no limits
        self.refused = 0  # streams ended for breaking a limit
        self.interner = Interner()
        self.id_prefix = id_prefix  # of connection ids: unique across worker processes
        self.root_namespace = root_namespace
        # told when a stream asks for Istio config while the snapshot has no MCP tables
        self.config_wanted: list[Callable[[], None]] = []
        self._wake: dict[str, asyncio.Event] = {}
        self._nack_log = LogThrottle(log, "NACK")

    @property
    def max_unknown_bytes(self) -> int:
        """Characters of unknown names a stream may hold per type (with the name limit)."""
        if self._max_unknown_bytes is not None:
            return self._max_unknown_bytes
        return self.max_unknown_names * UNKNOWN_BYTES_PER_NAME

    @max_unknown_bytes.setter
    def max_unknown_bytes(self, value: int | None) -> None:
        self._max_unknown_bytes = value

    # -- feeding -------------------------------------------------------------------
    def publish(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` current and wake every connection's writer."""
        self.snapshot = snapshot
        for event in self._wake.values():
            event.set()

    # -- gRPC wiring ---------------------------------------------------------------
    def handler(self) -> grpc.GenericRpcHandler:
        sotw = grpc.stream_stream_rpc_method_handler(
            self._stream,
            request_deserializer=None,  # requests are digested from their bytes
            response_serializer=None,  # responses are already bytes
        )
        delta = grpc.stream_stream_rpc_method_handler(
            self._delta_stream,
            request_deserializer=None,  # decoded by the connection, as for SotW
            response_serializer=None,
        )
        return grpc.method_handlers_generic_handler(
            ADS_SERVICE, {"StreamAggregatedResources": sotw, "DeltaAggregatedResources": delta}
        )

    async def _delta_stream(
        self,
        requests: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        conn = DeltaConnection(
            peer=context.peer(),
            version_prefix=self.version_prefix,
            interner=self.interner,
            id_prefix=self.id_prefix,
        )
        await self._serve(conn, requests, context)

    async def _stream(
        self,
        requests: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        conn = Connection(
            peer=context.peer(),
            version_prefix=self.version_prefix,
            interner=self.interner,
            id_prefix=self.id_prefix,
        )
        await self._serve(conn, requests, context)

    async def _serve(
        self,
        conn: Connection,
        requests: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        self.handlers += 1
        conn.config_denied = self._config_denial(context)
        try:
            await self.throttle.streams.admit()  # --maxRequestsPerSecond, either method
            await self._run_stream(conn, requests, context)
        finally:
            self.handlers -= 1

    async def _run_stream(
        self,
        conn: Connection,
        requests: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        # Sent now, not with the first response: a first write cancelled half-way (the
        # reader refused the stream meanwhile) would otherwise leave gRPC unable to send
        # the final status, and the client would never learn why it was refused.
        try:
            await context.send_initial_metadata(())
        except Exception as exc:  # the client went away already
            log.debug("stream %s closed before it started: %s", conn.id, clip(exc))
            return
        wake = asyncio.Event()
        self.connections[conn.id] = conn
        self._wake[conn.id] = wake
        reader = asyncio.create_task(self._reader(conn, wake, requests), name=f"xdsr-{conn.id}")
        writer = asyncio.create_task(self._writer(conn, wake, context), name=f"xdsw-{conn.id}")
        log.debug("stream %s opened from %s", conn.id, clip(conn.peer))
        try:
            await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            # The connection leaves the tables first: the wait below can itself be
            # cancelled (gRPC cancels a handler again as its connection goes), and a
            # stream must never stay listed after its client is gone.
            self.connections.pop(conn.id, None)
            self._wake.pop(conn.id, None)
            self._nack_log.forget(conn.id)
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
            if conn.node is not None:
                log.info(
                    "proxy %s disconnected (%s, peer %s, %s, connected %.0fs)",
                    clip(conn.proxy_id),
                    conn.id,
                    clip(conn.peer),
                    client_type(conn),
                    time.monotonic() - conn.connected_mono,
                )
            else:
                log.debug("stream %s closed before it identified itself", conn.id)
        self._end(conn, reader, writer, context)

    def _end(
        self,
        conn: Connection,
        reader: asyncio.Task[None],
        writer: asyncio.Task[None],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        """Set the status the stream ends with, from how its tasks ended.  The status is
        set rather than raised (``abort``): a raised error's traceback would keep the
        connection's frames, and so its subscriptions, alive inside gRPC."""
        for name, task in (("xds-reader", reader), ("xds-writer", writer)):
            error = None if task.cancelled() else task.exception()
            if error is None or isinstance(error, _WriteFailed):
                continue
            if isinstance(error, Refused):
                self.refused += 1
                log.warning("stream %s (%s) refused: %s", conn.id, clip(conn.proxy_id), error)
                context.set_code(error.code)
                context.set_details(error.details)
            else:
                self.health.failed(name, error)
                context.set_code(grpc.StatusCode.INTERNAL)
                context.set_details("internal error; reconnect")
            error.__traceback__ = None
            return

    async def _reader(
        self,
        conn: Connection,
        wake: asyncio.Event,
        requests: AsyncIterator[bytes],
    ) -> None:
        while True:
            try:
                raw = await anext(requests)
            except StopAsyncIteration:
                return
            except Exception as exc:  # the client went away: not a server failure
                log.debug("stream %s read error: %s", conn.id, clip(exc))
                return
            anonymous = conn.node is None
            try:
                digest, request = conn.on_raw(raw)
            except DecodeError as exc:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "malformed request") from exc
            if anonymous and conn.node is not None:
                log.info(
                    "proxy %s connected (%s, peer %s, %s)",
                    clip(conn.proxy_id),
                    conn.id,
                    clip(conn.peer),
                    client_type(conn),
                )
            if digest.replan:
                self._check_subscription(conn, digest)
                self._want_config(digest)
                wake.set()
            version_info = _answered_version(request, digest)
            if self.observers:
                at = time.monotonic()
                for observer in self.observers:
                    observer.answered(conn, digest, version_info, at)
            if digest.kind == NACK and self._nack_log.allow(conn.id):
                log.warning(
                    "%s rejected %s version %s: %s",
                    clip(conn.proxy_id),
                    request.type_url.rsplit(".", 1)[-1],
                    clip(version_info or "-", 64),
                    clip(request.error_detail.message),
                )
            elif log.isEnabledFor(logging.DEBUG):
                log.debug("%s", describe_request(conn, digest, request, version_info))

    def _config_denial(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        """Why the stream of ``context`` may not have Istio config ("": it may); when
        gRPC cannot say who the client is, it may not."""
        try:
            auth = context.auth_context()
        except Exception as exc:
            return f"the client's identity is unknown ({clip(exc, 100)})"
        return config_denial(auth, self.root_namespace)

    def _want_config(self, digest: Digest) -> None:
        """Tell ``config_wanted`` that a stream (allowed to) asks for Istio config the
        snapshot does not have yet: it is answered once a snapshot has it."""
        if self.snapshot.mcp or digest.state is None:
            return
        if is_config_type(digest.state.type_url):
            for callback in self.config_wanted:
                try:
                    callback()
                except Exception as exc:  # a bug there must not end the stream
                    self.health.failed("config-wanted", exc)

    def _check_subscription(self, conn: Connection, digest: Digest) -> None:
        """Refuse (:class:`Refused`) what ``digest``'s subscription makes ``conn`` hold
        beyond this server's limits (:func:`registryd.xds.limits.check_subscription`)."""
        if digest.state is not None:
            check_subscription(
                conn,
                digest.state,
                self.snapshot,
                max_names=self.max_unknown_names,
                max_bytes=self.max_unknown_bytes,
            )

    async def _writer(
        self,
        conn: Connection,
        wake: asyncio.Event,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        while True:
            await wake.wait()
            wake.clear()
            async with self.throttle.pushes.hold():  # --pushThrottle
                await self._write_newest(conn, context)

    async def _write_newest(
        self, conn: Connection, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """Plan against the newest snapshot and write what ``conn`` needs of it."""
        snapshot = self.snapshot
        plan = conn.plan(snapshot)
        for planned in plan:
            started = time.monotonic()
            try:
                await context.write(planned.payload)
            except Exception as exc:
                for observer in self.observers:
                    observer.failed(conn, planned)
                raise _WriteFailed(str(exc)) from exc
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "sent %s %s version %s nonce %s: %d resources",
                    clip(conn.proxy_id),
                    planned.type_url.rsplit(".", 1)[-1],
                    planned.version,
                    planned.nonce,
                    len(planned.names),
                )
            if self.observers:
                finished = time.monotonic()
                for observer in self.observers:
                    observer.sent(conn, planned, snapshot.version, started, finished)
        conn.written_version = snapshot.version
        if plan and self.observers:
            at = time.monotonic()
            for observer in self.observers:
                observer.synced(conn, snapshot.version, at)


def client_type(conn: Connection) -> str:
    """What kind of client ``conn`` is, for log lines: the node's user agent (``envoy
    1.30.1``, ``gRPC Python 1.60``...), proxyless gRPC or a sidecar by what it asks
    for, and which ADS protocol (``sotw``/``delta``)."""
    node = conn.node
    agent = "unknown agent"
    if node is not None:
        version = node.user_agent_version
        if not version and node.HasField("user_agent_build_version"):
            number = node.user_agent_build_version.version
            version = f"{number.major_number}.{number.minor_number}.{number.patch}"
        agent = " ".join(p for p in (node.user_agent_name, version) if p) or agent
    kind = conn.client_kind
    protocol = "delta" if conn.delta else "sotw"
    return f"{clip(agent, 64)}, {kind}, {protocol}"


def describe_request(conn: Connection, digest: Digest, request: _Request, version: str) -> str:
    """One debug line for a request that is not a logged NACK: an ACK (the version it
    keeps), a NACK, a new or changed subscription, a stale nonce, an unserved type."""
    kind = request.type_url.rsplit(".", 1)[-1] or "-"
    who = clip(conn.proxy_id)
    if digest.kind == ACK:
        return f"{who} ACKed {kind} version {clip(version or '-', 64)}"
    if digest.kind == NACK:
        return (
            f"{who} NACKed {kind} version {clip(version or '-', 64)}: "
            f"{clip(request.error_detail.message)}"
        )
    state = digest.state
    if digest.kind == EXPIRED:
        return f"{who} sent {kind} with a stale nonce {clip(request.response_nonce, 64)}"
    if state is None:
        return f"{who} asked for {clip(kind, 64)}, a type this server does not serve"
    names = "every resource" if state.wildcard else f"{len(state.names)} names"
    return f"{who} requested {kind}: {names}"


def _answered_version(request: _Request, digest: Digest) -> str:
    """The version an ACK or NACK is about: a state-of-the-world request says it (the
    version it keeps); a Delta request names the response's nonce, which the connection
    mapped to that response's version."""
    if isinstance(request, discovery_pb2.DiscoveryRequest):
        return request.version_info
    if digest.state is None:
        return ""
    if digest.kind == ACK:
        return digest.state.acked_version
    return digest.state.nack_version if digest.kind == NACK else ""
