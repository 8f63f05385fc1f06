"""One gRPC connection to a Nacos 2.x/3.x server, as Nacos' own clients open it.

Protocol (Nacos' ``GrpcClient.connectToServer``, ``GrpcRequestAcceptor`` and
``GrpcBiStreamRequestAcceptor``; frames: :mod:`.wire`):

1. The gRPC port is the HTTP port + 1000 (``grpc_port`` overrides it).  A unary
   ``ServerCheckRequest`` answers ``ServerCheckResponse`` with the ``connectionId`` the
   server gave this TCP connection.
2. The client opens the bi-stream and sends ``ConnectionSetupRequest`` (clientVersion,
   labels ``source=sdk``/``module=naming``, tenant = the namespace).  The server
   registers the connection asynchronously; until it has, unary requests answer error
   ``301`` (``UN_REGISTER``), so :meth:`NacosLink.open` sends ``HealthCheckRequest``
   until one succeeds (bounded).
3. Unary requests (:meth:`NacosLink.request`) carry their headers (``accessToken``) in
   ``Metadata.headers`` and answer a response whose ``resultCode`` is 200, or 500 with
   an ``errorCode`` and ``message`` (403: the token was refused).
4. The server sends its own requests on the bi-stream (:meth:`NacosLink.read`):
   ``NotifySubscriberRequest`` (a pushed ``serviceInfo``), ``ClientDetectionRequest``,
   ``ConnectResetRequest``, ``SetupAckRequest``; the client answers the ones that want
   it on the stream with the matching response carrying the same ``requestId``
   (:meth:`NacosLink.reply`).

Contract: every message is at most ``max_response_bytes`` (gRPC's receive limit) and
its JSON is parsed within the :class:`~registryd.adapter.JsonLimits` of that size.
:meth:`NacosLink.open` raises :class:`NoGrpc` when no server of ``server_addr`` speaks
gRPC (refused, ``UNIMPLEMENTED``, no answer within ``timeout``, a failed server check);
once open, a lost connection or stream raises :class:`~.client.NacosUnavailable` and
what is wrong with one answer :class:`~.client.QueryError`.  Tokens never appear in a
message.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
import grpc.aio

from registryd.adapter import JsonTooLarge, describe_error, load_json

from . import wire
from .client import NacosUnavailable, QueryError
from .settings import NacosSettings

__all__ = [
    "CLIENT_VERSION",
    "LABELS",
    "NacosLink",
    "NoGrpc",
    "ServerRequest",
    "grpc_target",
]

CLIENT_VERSION = "registryd:v0.1.0"
LABELS = {"source": "sdk", "module": "naming"}  # RemoteConstants.LABEL_SOURCE_SDK, naming
UN_REGISTER = 301  # NacosException.UN_REGISTER: the connection is not registered (yet)
SETUP_TRIES = 40  # health checks while the server registers the connection
SETUP_PAUSE = 0.05  # seconds between them (Nacos' own client waits 100 ms once)
STATUS_TASK = "_handle_status_once_received"  # grpc.aio's task ending a stream call
CLOSE_WAIT = 1.0  # seconds close() waits for those of its calls


class NoGrpc(NacosUnavailable):
    """No server of ``server_addr`` speaks Nacos' gRPC protocol."""


@dataclass(frozen=True, slots=True)
class ServerRequest:
    """A request the server sent on the bi-stream: its type and JSON body (an object)."""

    type: str
    body: Mapping[str, Any]


def grpc_target(server: str, grpc_port: int | None) -> tuple[str, bool]:
    """``host:port`` of the gRPC side of ``server`` (a base URL) and whether it is TLS."""
    parts = urlsplit(server)
    host, port = parts.hostname or "127.0.0.1", parts.port or 8848
    target_port = grpc_port if grpc_port is not None else port + 1000
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{target_port}", parts.scheme == "https"


def _local_ip(target: str) -> str:
    """The address this host would reach ``target`` from (no packet is sent)."""
    host = target.rsplit(":", 1)[0].strip("[]")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def _code(exc: grpc.aio.AioRpcError) -> str:
    return exc.code().name if exc.code() is not None else "UNKNOWN"


class NacosLink:
    """One open connection (see the module docstring); :meth:`open` makes one."""

    def __init__(self, settings: NacosSettings, target: str, channel: grpc.aio.Channel) -> None:
        self.settings = settings
        self.target = target
        self.connection_id = ""
        self._channel = channel
        self._client_ip = _local_ip(target)
        self._unary = channel.unary_unary(wire.REQUEST)  # raw bytes in and out
        self._stream: Any = None
        self._calls: set[Any] = set()  # unary calls not known to be over
        self._tasks_before = asyncio.all_tasks()

    @classmethod
    async def open(cls, settings: NacosSettings) -> NacosLink:
        """A registered connection to the first server that speaks gRPC; NoGrpc naming
        every server's reason when none does."""
        failures = []
        for server in settings.servers:
            target, secure = grpc_target(server, settings.grpc_port)
            options = [
                ("grpc.max_receive_message_length", settings.max_response_bytes),
                ("grpc.max_send_message_length", settings.max_response_bytes),
                ("grpc.enable_retries", 0),
                # a TCP connection of its own: Nacos knows a connection by it
                ("grpc.use_local_subchannel_pool", 1),
            ]
            if secure:
                channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options)
            else:
                channel = grpc.aio.insecure_channel(target, options)
            link = cls(settings, target, channel)
            try:
                await link._setup()
            except NoGrpc as exc:
                failures.append(f"{target}: {exc}")
                await link.close()
                continue
            except BaseException:
                await link.close()
                raise
            return link
        raise NoGrpc(f"no Nacos gRPC server answered: {'; '.join(failures)}")

    async def _setup(self) -> None:
        try:
            check = await self._call("ServerCheckRequest", {}, {}, self.settings.timeout)
        except (QueryError, NacosUnavailable) as exc:
            raise NoGrpc(str(exc).removeprefix(f"{self.target}: ")) from None
        connection = check.get("connectionId")
        if check.get("resultCode") != 200 or not isinstance(connection, str):
            raise NoGrpc(f"server check: not a ServerCheckResponse: {check!r:.200}")
        self.connection_id = connection
        self._stream = self._channel.stream_stream(wire.BI_STREAM)()
        setup = {
            "clientVersion": CLIENT_VERSION,
            "tenant": self.settings.namespace,
            "labels": LABELS,
            "module": "internal",
            "headers": {},
        }
        await self.reply("ConnectionSetupRequest", setup)
        for _ in range(SETUP_TRIES):
            answer = await self.request("HealthCheckRequest", {"module": "internal"}, fail=False)
            if answer.get("resultCode") == 200:
                return
            if answer.get("errorCode") != UN_REGISTER:
                raise NoGrpc(f"connection setup: {self._error(answer)}")
            await asyncio.sleep(SETUP_PAUSE)
        raise NoGrpc(f"connection setup: not registered after {SETUP_TRIES} health checks")

    async def close(self) -> None:
        """Cancel the stream and close the channel, leaving no task of gRPC's behind."""
        calls = [*self._calls, *([self._stream] if self._stream is not None else [])]
        for call in calls:
            call.cancel()
        for call in calls:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call.code(), self.settings.timeout)
        with contextlib.suppress(Exception):
            await self._channel.close(grace=None)
        # gRPC ends a cancelled stream in a task of its own, a moment later
        status = [
            task
            for task in asyncio.all_tasks() - self._tasks_before
            if getattr(task.get_coro(), "__qualname__", "").endswith(STATUS_TASK)
        ]
        if status:
            await asyncio.wait(status, timeout=CLOSE_WAIT)

    # -- unary ---------------------------------------------------------------------------

    async def request(
        self,
        type_name: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        *,
        fail: bool = True,
    ) -> Mapping[str, Any]:
        """The answer (a JSON object) to one unary request, within ``request_timeout``.
        With ``fail`` an answer that is not a success raises QueryError (UN_REGISTER:
        NacosUnavailable, the server dropped this connection)."""
        answer = await self._call(
            type_name, {"headers": {}, **body}, headers or {}, self.settings.request_timeout
        )
        if fail and answer.get("resultCode") != 200:
            if answer.get("errorCode") == UN_REGISTER:
                raise NacosUnavailable(f"{self.target}: {type_name}: {self._error(answer)}")
            raise QueryError(f"{type_name}: {self._error(answer)}")
        return answer

    @staticmethod
    def _error(answer: Mapping[str, Any]) -> str:
        return f"error {answer.get('errorCode')}: {str(answer.get('message'))[:200]}"

    async def _call(
        self, type_name: str, body: Mapping[str, Any], headers: Mapping[str, str], timeout: float
    ) -> Mapping[str, Any]:
        data = wire.encode(type_name, body, headers=headers, client_ip=self._client_ip)
        call = self._unary(data, timeout=timeout)
        self._calls = {c for c in self._calls if not c.done()}  # at most those in flight
        self._calls.add(call)  # close() waits for the end of each
        try:
            raw = await call
        except grpc.aio.AioRpcError as exc:
            code = _code(exc)
            if code == "DEADLINE_EXCEEDED":
                raise QueryError(
                    f"{type_name}: no whole answer within {timeout:g}s (request_timeout)"
                ) from None
            if code == "RESOURCE_EXHAUSTED":
                raise QueryError(
                    f"{type_name}: the answer is larger than "
                    f"{self.settings.max_response_bytes} bytes (max_response_bytes)"
                ) from None
            if code in ("UNAVAILABLE", "CANCELLED", "UNIMPLEMENTED", "UNKNOWN", "INTERNAL"):
                raise NacosUnavailable(
                    f"{self.target}: {type_name}: {code}: {exc.details()}"
                ) from None
            raise QueryError(f"{type_name}: {code}: {exc.details()}") from None
        try:
            frame = wire.decode(raw)
        except ValueError as exc:
            raise QueryError(f"{type_name}: {exc}") from None
        return await self._parse(type_name, frame)

    async def _parse(self, what: str, frame: wire.Frame) -> Mapping[str, Any]:
        try:
            value = await load_json(frame.body, self.settings.limits)
        except JsonTooLarge as exc:
            setting = "" if exc.limit == "max_depth" else " (max_response_bytes)"
            raise QueryError(f"{what}: {exc}{setting}") from None
        except ValueError as exc:
            raise QueryError(f"{what}: not a JSON answer: {describe_error(exc)}") from None
        if not isinstance(value, dict):
            raise QueryError(f"{what}: not a JSON object: {value!r:.200}")
        return value

    # -- the bi-stream ---------------------------------------------------------------------

    async def read(self) -> ServerRequest | QueryError:
        """The next request of the server on the bi-stream, or the QueryError of one that
        cannot be read (not a Payload, not a JSON object: the stream goes on);
        NacosUnavailable when the stream ends or breaks (a message over
        ``max_response_bytes`` included)."""
        try:
            raw = await self._stream.read()
        except grpc.aio.AioRpcError as exc:
            code = _code(exc)
            if code == "RESOURCE_EXHAUSTED":
                detail = (
                    f"a message larger than {self.settings.max_response_bytes} bytes "
                    "(max_response_bytes)"
                )
            else:
                detail = f"{code}: {exc.details()}"
            raise NacosUnavailable(f"{self.target}: the stream broke: {detail}") from None
        if raw is grpc.aio.EOF:
            raise NacosUnavailable(f"{self.target}: the server closed the stream")
        try:
            frame = wire.decode(raw)
            body = await self._parse(frame.type or "a message on the stream", frame)
        except ValueError as exc:
            return QueryError(f"a message on the stream: {exc}")
        except QueryError as exc:
            return exc
        return ServerRequest(frame.type, body)

    async def reply(self, type_name: str, body: Mapping[str, Any]) -> None:
        """Send one message on the bi-stream (a response, or the setup request)."""
        data = wire.encode(type_name, body, client_ip=self._client_ip)
        try:
            await self._stream.write(data)
        except grpc.aio.AioRpcError as exc:
            detail = f"{_code(exc)}: {exc.details()}"
            raise NacosUnavailable(f"{self.target}: the stream broke: {detail}") from None
        except asyncio.InvalidStateError as exc:  # written after it ended
            detail = describe_error(exc)
            raise NacosUnavailable(f"{self.target}: the stream broke: {detail}") from None
