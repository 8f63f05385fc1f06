"""A small emulator of the Nacos v1 Open API subset registryd reads, for tests.

Covered (``namespaceId`` defaults to ``public``, ``groupName`` to ``DEFAULT_GROUP``):

========================================  ================================================
``GET /nacos/v1/ns/service/list``         ``{"count": N, "doms": [names]}``; ``pageNo`` and
                                          ``pageSize`` required (400 otherwise, as Nacos'
                                          parameter check answers), 1-based pages of the
                                          group's services sorted by name
``GET /nacos/v1/ns/instance/list``        ``{"name": "<group>@@<svc>", "groupName",
                                          "clusters", "cacheMillis": 10000, "hosts":
                                          [...], "lastRefTime", "checksum", "allIPs",
                                          "reachProtectionThreshold", "valid"}``;
                                          ``serviceName`` required, may carry its group as
                                          ``<group>@@<svc>``; ``healthyOnly=true`` leaves
                                          unhealthy hosts out; an unknown service answers
                                          an empty ``hosts`` list (Nacos 2.x)
``POST /nacos/v1/auth/login``             form ``username``/``password`` -> ``{"accessToken",
                                          "tokenTtl", "globalAdmin"}``, 403
                                          ``unknown user!`` otherwise
========================================  ================================================

Hosts carry ``instanceId, ip, port, weight, healthy, enabled, ephemeral, clusterName,
serviceName, metadata`` plus the heartbeat fields.  ``checksum`` is the MD5 of the hosts
as JSON and ``lastRefTime`` the time (ms) of the service's last change; with
``empty_checksum`` the checksum is ``""``, as some server versions send.

With ``auth=(username, password)`` every ``/ns/`` call needs a valid ``accessToken``
query parameter, else 403 ``token invalid!`` (or ``user not found!`` without one).

Knobs for tests: :meth:`register` / :meth:`deregister` / :meth:`remove_service` change
the state; :meth:`fail_service` makes one service's instance reads answer an error status
(``status=200`` with a body that is not JSON, or any hostile body: millions of ``{}``,
JSON nested thousands deep); :meth:`drip_service` makes them answer at once but send the
body one byte at a time; :attr:`endless_list` makes ``service/list`` answer every page
full of new names and a ``count`` one page further, forever, and :attr:`silent_list`
makes it never answer at all; :meth:`expire_tokens`
revokes every token; :meth:`stop` / :meth:`start` (the server goes away and comes back
on the same port).  Every request is recorded in :attr:`requests`.

Standalone: ``python -m tests.support.emulators.nacos [--port P] [FILE]`` serves it
on 127.0.0.1 (port 8848 by default, gRPC on P + 1000: 9848) until Ctrl-C, with the
instances of ``FILE`` (:func:`from_state` gives the format).

gRPC (Nacos 2.x/3.x; off with ``grpc=False``, a Nacos 1.x): a ``grpc.aio`` server on
127.0.0.1 at the HTTP port + 1000 (or ``grpc_port``) serving the two services of Nacos'
``nacos_grpc_service.proto`` (frames: :mod:`registryd.adapters.nacos.wire`), as Nacos'
``GrpcRequestAcceptor`` and ``GrpcBiStreamRequestAcceptor`` do:

* ``/Request/request`` (unary): ``ServerCheckRequest`` answers ``ServerCheckResponse``
  with the ``connectionId`` of the caller's TCP connection (the gRPC peer), at any time;
  every other request of a connection that has not sent ``ConnectionSetupRequest`` on
  its bi-stream answers ``ErrorResponse`` 301 (``UN_REGISTER``), an unknown type 302
  (``NO_HANDLER``).  ``HealthCheckRequest`` -> ``HealthCheckResponse``;
  ``SubscribeServiceRequest`` (``SubscribeServiceRequestHandler``) subscribes or
  unsubscribes the connection and answers ``SubscribeServiceResponse`` with the
  ``serviceInfo`` (the instance list above, ``name`` without the group); a new
  subscriber also gets a push, as Nacos' ``ServiceSubscribedEvent`` does;
  ``ServiceListRequest`` (``ServiceListRequestHandler``) answers ``ServiceListResponse``
  with ``count`` and the page of ``<group>@@<name>`` names (sorted here);
  ``ServiceQueryRequest`` answers ``QueryServiceResponse`` with the ``serviceInfo``.  With
  ``auth`` the naming requests need a valid ``accessToken`` header, else the handler's
  response with ``resultCode`` 500 and ``errorCode`` 403 (``RemoteRequestAuthFilter``).
  :meth:`fail_service` makes a subscription answer ``errorCode`` = its status.
* ``/BiRequestStream/requestBiStream``: the client's ``ConnectionSetupRequest`` registers
  the connection; every register/deregister/removal pushes a
  ``NotifySubscriberRequest`` (``PushExecutorRpcImpl``: a fresh ``requestId``, the
  ``serviceInfo``) to each subscribed connection, ``push_delay`` (500 ms, as Nacos'
  ``PushDelayTask``) after the first change not yet pushed, so that the changes of a
  burst go out in one push, whose answers (responses) are kept in
  :attr:`acks`.  :meth:`push_raw` sends any body to every connection;
  :meth:`drop_streams` ends every bi-stream (the server closes it).

Every gRPC message received (unary or on a stream) is recorded in :attr:`requests` as
``Request("GRPC", <Metadata.type>, {...})``, next to the HTTP ones.

Not covered: registration over HTTP or gRPC, heartbeats and health checks (health
changes only through :meth:`register`), clusters filtering, protect threshold, v2 API,
push retries, ability negotiation (no ``SetupAckRequest``), TLS on the gRPC port.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from aiohttp import web

from registryd.adapters.nacos import wire
from tests.support.emulators import standalone
from tests.support.emulators.base import LoopbackServer

__all__ = ["NacosEmulator", "Request"]

DEFAULT_GROUP = "DEFAULT_GROUP"
PUBLIC = "public"
TOKEN_TTL = 18000
GRPC_OFFSET = 1000  # Nacos' gRPC port is its HTTP port + 1000
PUSH_DELAY = 0.5  # seconds: Nacos' PushConstants.DEFAULT_PUSH_TASK_DELAY
BIND_TRIES = 5  # free HTTP ports tried when the one + 1000 is taken
UN_REGISTER, NO_HANDLER, NO_RIGHT = 301, 302, 403  # NacosException codes
NAMING = frozenset({"SubscribeServiceRequest", "ServiceListRequest", "ServiceQueryRequest"})


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    params: Mapping[str, str]


@dataclass
class _Service:
    hosts: dict[tuple[str, int, str], dict[str, Any]] = field(default_factory=dict)
    changed_ms: int = 0


@dataclass
class _Connection:
    """One client's gRPC connection (its TCP connection: the gRPC peer)."""

    id: str
    registered: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    outbox: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)


class NacosEmulator(LoopbackServer):
    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        grpc: bool = True,
        grpc_port: int | None = None,
        push_delay: float = PUSH_DELAY,
    ) -> None:
        """``grpc=False``: no gRPC port (a Nacos 1.x).  ``grpc_port``: where the gRPC side
        listens (None: the HTTP port + 1000; 0: any free port, then the same one).
        ``push_delay``: seconds from a service's first change to its push (0: at once)."""
        super().__init__()
        self.push_delay = push_delay
        self._delayed: dict[tuple[str, str, str], asyncio.TimerHandle] = {}
        self.auth = auth
        self.grpc = grpc
        self.grpc_port = grpc_port
        self.acks: list[Mapping[str, Any]] = []
        self._grpc_server: grpc.aio.Server | None = None
        self._connections: dict[str, _Connection] = {}  # by gRPC peer
        self._subscribers: dict[tuple[str, str, str], set[str]] = {}  # service -> peers
        self._push_ids = itertools.count(1)
        self._last_ms = 0
        self._info_json: dict[tuple[str, str, str], tuple[bool, bytes]] = {}  # cached
        self.tokens: set[str] = set()
        self.empty_checksum = False
        self.endless_list = False
        self.silent_list = False
        self.requests: list[Request] = []
        self._services: dict[tuple[str, str, str], _Service] = {}  # (ns, group, name)
        self._failing: dict[str, tuple[int, str]] = {}  # "<group>@@<name>" -> status, body
        self._dripping: dict[str, float] = {}  # "<group>@@<name>" -> seconds per byte

    # -- state ---------------------------------------------------------------------------
    def register(
        self,
        service: str,
        ip: str,
        port: int,
        *,
        group: str = DEFAULT_GROUP,
        namespace: str = PUBLIC,
        weight: float = 1.0,
        healthy: bool = True,
        enabled: bool = True,
        ephemeral: bool = True,
        cluster: str = "DEFAULT",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Add or replace the instance ``ip:port`` of ``cluster``."""
        entry = self._services.setdefault((namespace, group, service), _Service())
        grouped = f"{group}@@{service}"
        entry.hosts[(ip, port, cluster)] = {
            "instanceId": f"{ip}#{port}#{cluster}#{grouped}",
            "ip": ip,
            "port": port,
            "weight": weight,
            "healthy": healthy,
            "enabled": enabled,
            "ephemeral": ephemeral,
            "clusterName": cluster,
            "serviceName": grouped,
            "metadata": dict(metadata or {}),
            "instanceHeartBeatInterval": 5000,
            "instanceHeartBeatTimeOut": 15000,
            "ipDeleteTimeout": 30000,
            "instanceIdGenerator": "simple",
        }
        self._changed(namespace, group, service)

    def deregister(
        self,
        service: str,
        ip: str,
        port: int,
        *,
        group: str = DEFAULT_GROUP,
        namespace: str = PUBLIC,
        cluster: str = "DEFAULT",
    ) -> None:
        """Remove one instance; the service stays listed (empty), as in Nacos."""
        entry = self._services[(namespace, group, service)]
        del entry.hosts[(ip, port, cluster)]
        self._changed(namespace, group, service)

    def remove_service(
        self, service: str, *, group: str = DEFAULT_GROUP, namespace: str = PUBLIC
    ) -> None:
        if self._services.pop((namespace, group, service), None) is not None:
            self._info_json.pop((namespace, group, service), None)
            self._notify((namespace, group, service))

    def _changed(self, namespace: str, group: str, service: str) -> None:
        """A service changed: a new ``lastRefTime`` (strictly increasing) and a push."""
        self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
        self._services[(namespace, group, service)].changed_ms = self._last_ms
        self._info_json.pop((namespace, group, service), None)
        self._notify((namespace, group, service))

    def fail_service(
        self,
        service: str,
        status: int | None = 500,
        *,
        group: str = DEFAULT_GROUP,
        body: str = "<html>not an instance list</html>",
    ):
        """Instance reads of one service answer ``status`` with ``body`` (None: normal
        again)."""
        if status is None:
            self._failing.pop(f"{group}@@{service}", None)
        else:
            self._failing[f"{group}@@{service}"] = (status, body)

    def drip_service(
        self, service: str, interval: float | None = 0.05, *, group: str = DEFAULT_GROUP
    ) -> None:
        """Instance reads of one service answer 200 and their headers at once, then the
        body one byte every ``interval`` seconds (None: normal again)."""
        if interval is None:
            self._dripping.pop(f"{group}@@{service}", None)
        else:
            self._dripping[f"{group}@@{service}"] = interval

    def expire_tokens(self) -> None:
        self.tokens.clear()

    # -- HTTP ----------------------------------------------------------------------------
    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/nacos/v1/ns/service/list", self._service_list)
        router.add_get("/nacos/v1/ns/instance/list", self._instance_list)
        router.add_post("/nacos/v1/auth/login", self._login)

    async def _handle(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(Request(request.method, request.path, dict(request.query)))
        if self.auth and request.path.startswith("/nacos/v1/ns/"):
            token = request.query.get("accessToken")
            if token is None:
                return web.Response(status=403, text="user not found!")
            if token not in self.tokens:
                return web.Response(status=403, text="token invalid!")
        response: web.StreamResponse = await handler(request)
        return response

    async def _login(self, request: web.Request) -> web.Response:
        form = await request.post()
        if self.auth is None or (form.get("username"), form.get("password")) != self.auth:
            return web.Response(status=403, text="unknown user!")
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        body = {"accessToken": token, "tokenTtl": TOKEN_TTL, "globalAdmin": True}
        return web.json_response(body)

    async def _service_list(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            page, size = int(query["pageNo"]), int(query["pageSize"])
        except (KeyError, ValueError):
            return web.Response(status=400, text="Required parameter 'pageNo' is not present")
        namespace = query.get("namespaceId") or PUBLIC
        group = query.get("groupName") or DEFAULT_GROUP
        if self.silent_list:
            await asyncio.Event().wait()  # until the client gives up (or stop())
        if self.endless_list:
            doms = [f"endless-{page}-{i}" for i in range(size)]
            return web.json_response({"count": (page + 1) * size, "doms": doms})
        names = sorted(n for (ns, g, n) in self._services if ns == namespace and g == group)
        start = max(0, (page - 1) * size)
        return web.json_response({"count": len(names), "doms": names[start : start + size]})

    async def _instance_list(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        name = query.get("serviceName")
        if not name:
            return web.Response(status=400, text="Required parameter 'serviceName' is not present")
        group = query.get("groupName") or DEFAULT_GROUP
        if "@@" in name:
            group, name = name.split("@@", 1)
        grouped = f"{group}@@{name}"
        if grouped in self._failing:
            status, text = self._failing[grouped]
            return web.Response(status=status, text=text)
        namespace = query.get("namespaceId") or PUBLIC
        body = self._instances(
            (namespace, group, name), grouped, healthy_only=query.get("healthyOnly") == "true"
        )
        if grouped in self._dripping:
            return await self._drip(request, json.dumps(body).encode(), self._dripping[grouped])
        return web.json_response(body)

    def _instances(
        self, key: tuple[str, str, str], name: str, *, healthy_only: bool = False
    ) -> dict[str, Any]:
        """The instance list (Open API) or ``ServiceInfo`` (gRPC) of one service."""
        entry = self._services.get(key, _Service())
        hosts = [h for _, h in sorted(entry.hosts.items())]
        if healthy_only:
            hosts = [h for h in hosts if h["healthy"]]
        digest = hashlib.md5(json.dumps(hosts, sort_keys=True).encode()).hexdigest()
        return {
            "name": name,
            "groupName": key[1],
            "clusters": "",
            "cacheMillis": 10000,
            "hosts": hosts,
            "lastRefTime": entry.changed_ms,
            "checksum": "" if self.empty_checksum else digest,
            "allIPs": False,
            "reachProtectionThreshold": False,
            "valid": True,
        }

    @staticmethod
    async def _drip(request: web.Request, body: bytes, interval: float) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(body)
        await response.prepare(request)
        for index in range(len(body)):
            await asyncio.sleep(interval)
            await response.write(body[index : index + 1])
        await response.write_eof()
        return response

    # -- gRPC ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on 127.0.0.1: HTTP, and gRPC unless ``grpc=False``.  The first start on
        a free HTTP port whose + 1000 is taken tries other free ports (a few times)."""
        if self.running:
            return
        fresh = self.port == 0 and self.grpc_port is None
        for attempt in range(BIND_TRIES if fresh else 1):
            await super().start()
            if not self.grpc:
                return
            try:
                await self._start_grpc()
                return
            except OSError:
                await super().stop()
                if attempt == BIND_TRIES - 1 or not fresh:
                    raise
                self.port = 0

    async def _start_grpc(self) -> None:
        port = self.port + GRPC_OFFSET if self.grpc_port is None else self.grpc_port
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        handlers = {
            "Request": {"request": grpc.unary_unary_rpc_method_handler(self._grpc_request)},
            "BiRequestStream": {
                "requestBiStream": grpc.stream_stream_rpc_method_handler(self._grpc_stream)
            },
        }
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(name, methods)
                for name, methods in handlers.items()
            ]
        )
        try:
            bound = server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
        except RuntimeError as exc:  # gRPC's "failed to bind"
            await server.stop(None)
            raise OSError(f"gRPC: {exc}") from None
        except BaseException:
            await server.stop(None)
            raise
        if self.grpc_port is not None:
            self.grpc_port = bound
        self._grpc_server = server

    async def stop(self) -> None:
        """Go away like a crashed server: every gRPC call is cut, connections forgotten."""
        server, self._grpc_server = self._grpc_server, None
        if server is not None:
            await server.stop(None)
        for timer in self._delayed.values():
            timer.cancel()
        self._delayed.clear()
        self._connections.clear()
        self._subscribers.clear()
        await super().stop()

    @property
    def grpc_address(self) -> str:
        """``127.0.0.1:<gRPC port>`` (while running)."""
        port = self.port + GRPC_OFFSET if self.grpc_port is None else self.grpc_port
        return f"127.0.0.1:{port}"

    def subscribers(
        self, service: str, *, group: str = DEFAULT_GROUP, namespace: str = PUBLIC
    ) -> int:
        """How many connections are subscribed to a service."""
        return len(self._subscribers.get((namespace, group, service), ()))

    def push_raw(self, body: str, type_name: str = "NotifySubscriberRequest") -> None:
        """Send ``body`` (any text, as the JSON of a ``type_name``) to every connection."""
        message = wire.Payload()
        message.metadata.type = type_name
        message.body.value = body.encode()
        for connection in self._connections.values():
            connection.outbox.put_nowait(message.SerializeToString())

    def drop_streams(self) -> None:
        """End every bi-stream (the server completes it); subscriptions are forgotten."""
        for connection in self._connections.values():
            connection.outbox.put_nowait(None)

    def _notify(self, key: tuple[str, str, str]) -> None:
        """Push ``key`` to its subscribers: ``push_delay`` after its first change not yet
        pushed, with what it holds then (Nacos' ``PushDelayTask``: tasks of one service
        merge, keeping the earliest start; ``nacos.naming.push.pushTaskDelay``, 500 ms by
        default), or at once with a ``push_delay`` of 0 or outside an event loop."""
        if key in self._delayed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if self.push_delay > 0 and loop is not None:
            self._delayed[key] = loop.call_later(self.push_delay, self._push_now, key)
            return
        self._push_now(key)

    def _push_now(self, key: tuple[str, str, str]) -> None:
        self._delayed.pop(key, None)
        peers = self._subscribers.get(key)
        if not peers:
            return
        for peer in peers:
            connection = self._connections.get(peer)
            if connection is not None:
                connection.outbox.put_nowait(self._push(key))

    def _info(self, key: tuple[str, str, str]) -> bytes:
        """The ``serviceInfo`` of a service as JSON, kept until the service changes (as
        Nacos' ``ServiceStorage`` keeps it), so that answers and pushes share it."""
        cached = self._info_json.get(key)
        if cached is None or cached[0] != self.empty_checksum:
            text = json.dumps(self._instances(key, key[2]), separators=(",", ":"))
            cached = self._info_json[key] = (self.empty_checksum, text.encode())
        return cached[1]

    @staticmethod
    def _with_info(type_name: str, head: Mapping[str, Any], info: bytes) -> bytes:
        """A frame whose JSON body is ``head`` plus ``"serviceInfo": info``."""
        message = wire.Payload()
        message.metadata.type = type_name
        start = json.dumps(head, separators=(",", ":"))[:-1].encode()
        message.body.value = start + b',"serviceInfo":' + info + b"}"
        data: bytes = message.SerializeToString()
        return data

    def _push(self, key: tuple[str, str, str]) -> bytes:
        head = {
            "headers": {},
            "requestId": str(next(self._push_ids)),
            "namespace": key[0],
            "groupName": key[1],
            "serviceName": key[2],
            "module": "naming",
        }
        return self._with_info("NotifySubscriberRequest", head, self._info(key))

    @staticmethod
    def _answer(type_name: str, body: Mapping[str, Any] | None = None) -> bytes:
        return wire.encode(
            type_name, {"resultCode": 200, "errorCode": 0, "success": True, **(body or {})}
        )

    @staticmethod
    def _error(type_name: str, code: int, message: str) -> bytes:
        body = {"resultCode": 500, "errorCode": code, "message": message, "success": False}
        return wire.encode(type_name, body)

    def _record(self, frame: wire.Frame, body: Any) -> None:
        fields = body if isinstance(body, dict) else {}
        params = {
            k: str(v)
            for k, v in fields.items()
            if k in ("namespace", "groupName", "serviceName", "subscribe", "pageNo", "requestId")
        }
        if "accessToken" in frame.headers:
            params["accessToken"] = frame.headers["accessToken"]
        self.requests.append(Request("GRPC", frame.type, params))

    async def _grpc_request(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        peer = context.peer()
        try:
            frame = wire.decode(raw)
            body = json.loads(frame.body)
        except ValueError:
            self.requests.append(Request("GRPC", "?", {}))
            return self._error("ErrorResponse", 502, "Invalid request")
        self._record(frame, body)
        kind = frame.type
        if kind == "ServerCheckRequest":
            connection = self._connections.setdefault(
                peer, _Connection(f"{int(time.time() * 1000)}_{peer}")
            )
            return self._answer(
                "ServerCheckResponse",
                {"connectionId": connection.id, "supportAbilityNegotiation": False},
            )
        if kind not in ("HealthCheckRequest", *NAMING):
            return self._error("ErrorResponse", NO_HANDLER, "RequestHandler Not Found")
        connection = self._connections.get(peer)
        if connection is None or not connection.registered:
            return self._error("ErrorResponse", UN_REGISTER, "Connection is unregistered.")
        if kind == "HealthCheckRequest":
            return self._answer("HealthCheckResponse")
        response = kind.replace("Request", "Response")
        if self.auth:
            token = frame.headers.get("accessToken")
            if token is None or token not in self.tokens:
                reason = "user not found!" if token is None else "token invalid!"
                return self._error(response, NO_RIGHT, reason)
        namespace = body.get("namespace") or PUBLIC
        group = body.get("groupName") or DEFAULT_GROUP
        if kind == "ServiceListRequest":
            names = sorted(
                f"{g}@@{n}" for (ns, g, n) in self._services if ns == namespace and g == group
            )
            size = int(body.get("pageSize") or 10)
            start = max(0, (int(body.get("pageNo") or 1) - 1) * size)
            page = names[start : start + size]
            return self._answer(response, {"count": len(names), "serviceNames": page})
        name = str(body.get("serviceName") or "")
        key = (namespace, group, name)
        failing = self._failing.get(f"{group}@@{name}")
        if failing is not None:
            return self._error(response, failing[0], failing[1])
        if kind == "ServiceQueryRequest":  # ServiceQueryRequestHandler: no subscription
            info = self._instances(key, name, healthy_only=bool(body.get("healthyOnly")))
            return self._answer("QueryServiceResponse", {"serviceInfo": info})
        peers = self._subscribers.setdefault(key, set())
        if body.get("subscribe"):
            fresh = peer not in peers
            peers.add(peer)
        else:
            fresh = False
            peers.discard(peer)
        if fresh:  # ServiceSubscribedEvent: the new subscriber gets a push too
            connection.outbox.put_nowait(self._push(key))
        head = {"resultCode": 200, "errorCode": 0, "success": True, "message": "success"}
        return self._with_info(response, head, self._info(key))

    async def _grpc_stream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        peer = context.peer()
        connection = self._connections.setdefault(
            peer, _Connection(f"{int(time.time() * 1000)}_{peer}")
        )
        reader = asyncio.create_task(self._read_stream(requests, connection))
        try:
            while (message := await connection.outbox.get()) is not None:
                yield message
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            if self._connections.get(peer) is connection:
                del self._connections[peer]
            for peers in self._subscribers.values():
                peers.discard(peer)

    async def _read_stream(self, requests: AsyncIterator[bytes], connection: _Connection) -> None:
        async for raw in requests:
            try:
                frame = wire.decode(raw)
                body = json.loads(frame.body)
            except ValueError:
                self.requests.append(Request("GRPC", "?", {}))
                continue
            self._record(frame, body)
            if frame.type == "ConnectionSetupRequest":
                connection.registered = True
                labels = body.get("labels") if isinstance(body, dict) else None
                connection.labels = dict(labels) if isinstance(labels, dict) else {}
            elif frame.type.endswith("Response") and isinstance(body, dict):
                self.acks.append(body)
        connection.outbox.put_nowait(None)  # the client completed its side


STATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "service": str,
    "ip": str,
    "port": int,
    "group": str,
    "namespace": str,
    "weight": (int, float),
    "healthy": bool,
    "enabled": bool,
    "ephemeral": bool,
    "cluster": str,
    "metadata": dict,
}


def from_state(document: Any) -> NacosEmulator:
    """An emulator with the instances of a state file (see :mod:`.standalone`)::

    instances:                # each one instance of a service
    - service: orders         # required
      ip: 127.0.0.1           # required
      port: 8080              # required
      group: DEFAULT_GROUP    # the default
      namespace: public       # the default (a namespace id)
      weight: 1.0
      healthy: true
      enabled: true
      ephemeral: true
      cluster: DEFAULT
      metadata: {protocol: http}
    """
    instances = standalone.entries(document, "instances", STATE_FIELDS, ("service", "ip", "port"))
    emulator = NacosEmulator()
    for instance in instances:
        service, ip, port = instance.pop("service"), instance.pop("ip"), instance.pop("port")
        emulator.register(service, ip, port, **instance)
    return emulator


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.support.emulators.nacos [--port P] [FILE]``: serve until Ctrl-C
    (see :mod:`.standalone`; the file's format is :func:`from_state`'s)."""
    standalone.run(
        "nacos",
        8848,
        from_state,
        argv,
        file_help="instances to load (YAML or JSON: see from_state in nacos.py)",
    )


if __name__ == "__main__":
    main()
