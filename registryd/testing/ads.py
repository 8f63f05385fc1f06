"""Small ADS clients on grpc.aio, for tests, benchmarks and poking at a live server.

:class:`AdsClient` speaks state-of-the-world ADS the way Envoy does: one stream, requests
per type, ACKs (or NACKs) each response with its nonce.  :class:`DeltaAdsClient` speaks
Delta (incremental) ADS: it subscribes and unsubscribes names, applies each response to
what it holds (``held``) and can reconnect announcing what it holds
(``initial_resource_versions``).  Both ACK automatically unless ``auto_ack`` is off;
``reject`` makes them NACK a type instead.

For many clients at once (benchmarks), ``keep=False`` makes a client cheap: it counts
each response (``received``, by type URL) and hands it to ``on_response`` without
queueing it for :meth:`~AdsClient.next` or holding its resources (``held``); a response's
resources are decoded only if the caller asks (:meth:`Response.decode`, ``names``).
:meth:`~AdsClient.flush` waits until the queued requests were written to the stream.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from registryd.xds.resources import MCP_RESOURCE_TYPE
from registryd.xds.snapshot import STATIC_NAMES

__all__ = ["TYPES", "AdsClient", "DeltaAdsClient", "DeltaResponse", "Response"]

_SERVICE = "/envoy.service.discovery.v3.AggregatedDiscoveryService"
_METHOD = f"{_SERVICE}/StreamAggregatedResources"
_DELTA_METHOD = f"{_SERVICE}/DeltaAggregatedResources"
TYPES = {
    "cds": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "eds": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "lds": "type.googleapis.com/envoy.config.listener.v3.Listener",
    "rds": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
}


@dataclass
class _Answer:
    """What both kinds of response share: the message, when it arrived, its names."""

    message: Any
    received: float = field(default_factory=time.monotonic)

    @property
    def type_url(self) -> str:
        return str(self.message.type_url)

    @property
    def names(self) -> list[str]:
        raise NotImplementedError

    @property
    def registry_names(self) -> list[str]:
        """:attr:`names` without the resources every proxy gets whatever the registries
        hold (``PassthroughCluster``, ``BlackHoleCluster``, ``virtualOutbound``)."""
        return [n for n in self.names if n not in STATIC_NAMES]


@dataclass
class Response(_Answer):
    """One DiscoveryResponse and when it arrived."""

    message: discovery_pb2.DiscoveryResponse

    @property
    def names(self) -> list[str]:
        return [_name_of(r) for r in self.message.resources]

    @property
    def eds_names(self) -> list[str]:
        """The names of the EDS clusters of a CDS response: what Envoy asks EDS for."""
        from envoy.config.cluster.v3 import cluster_pb2

        return [c.name for c in self.decode() if c.type == cluster_pb2.Cluster.EDS]

    def decode(self) -> list[Any]:
        """The resources as protos (Cluster, ClusterLoadAssignment, ...)."""
        out = []
        for packed in self.message.resources:
            cls = _message_class(packed.type_url)
            out.append(cls.FromString(packed.value))
        return out


def _message_class(type_url: str) -> Any:
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.endpoint.v3 import endpoint_pb2
    from envoy.config.listener.v3 import listener_pb2
    from envoy.config.route.v3 import route_pb2

    from registryd.build import istio_pb

    return {
        TYPES["cds"]: cluster_pb2.Cluster,
        TYPES["eds"]: endpoint_pb2.ClusterLoadAssignment,
        TYPES["lds"]: listener_pb2.Listener,
        TYPES["rds"]: route_pb2.RouteConfiguration,
        MCP_RESOURCE_TYPE: istio_pb.Resource,  # Istio config over MCP (for an istiod)
    }[type_url]


def _name_of(packed: Any) -> str:
    message = _message_class(packed.type_url).FromString(packed.value)
    if packed.type_url == MCP_RESOURCE_TYPE:
        return str(message.metadata.name)  # namespace/name
    return message.cluster_name if packed.type_url == TYPES["eds"] else message.name


def _node(node_id: str, metadata: Mapping[str, str] | None) -> base_pb2.Node:
    node = base_pb2.Node(id=node_id, cluster="test")
    if metadata:
        node.metadata.CopyFrom(
            struct_pb2.Struct(
                fields={k: struct_pb2.Value(string_value=v) for k, v in metadata.items()}
            )
        )
    return node


def _channel(
    target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)


async def _next(queue: asyncio.Queue[Any], kind: str | None, timeout: float) -> Any:
    """The next response of ``queue`` (of ``kind`` if given; others are skipped)."""
    type_url = TYPES.get(kind, kind) if kind else None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {kind or 'response'} within {timeout}s")
        response = await asyncio.wait_for(queue.get(), timeout=left)
        if type_url is None or response.type_url == type_url:
            return response


class _Stream:
    """What both clients share: one channel and one ADS stream, fed from an outbox,
    read by a task (:meth:`_read`), usable as ``async with``."""

    _method = ""
    _request: Any = None  # the request message class
    _response: Any = None  # the response message class
    responses: asyncio.Queue[Any]  # what next() reads (with ``keep``)

    def __init__(
        self,
        target: str,
        *,
        node_id: str = "sidecar~127.0.0.1~test-1.default~default.svc.cluster.local",
        metadata: Mapping[str, str] | None = None,
        auto_ack: bool = True,
        channel_options: Iterable[tuple[str, Any]] = (),
        credentials: grpc.ChannelCredentials | None = None,
        keep: bool = True,
        on_response: Callable[[Any], None] | None = None,
    ) -> None:
        """``keep``: queue every response for :meth:`next` (and, on Delta, hold its
        resources); off, a response is only counted in ``received`` and handed to
        ``on_response``, called after the response is ACKed (or NACKed)."""
        self.target = target
        self.node = _node(node_id, metadata)
        self.auto_ack = auto_ack
        self.keep = keep
        self.on_response = on_response
        self.received: Counter[str] = Counter()  # type_url -> responses read
        self.channel_options = list(channel_options)
        self.credentials = credentials  # None: plaintext
        self.reject: dict[str, str] = {}  # type_url -> NACK message
        self._channel: grpc.aio.Channel | None = None
        self._outbox: asyncio.Queue[Any] = asyncio.Queue()
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._sent_node = False

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self._channel = _channel(self.target, self.credentials, self.channel_options)
        stream = self._channel.stream_stream(
            self._method,
            request_serializer=self._request.SerializeToString,
            response_deserializer=self._response.FromString,
        )
        self._sent_node = False
        self._outbox = asyncio.Queue()
        self._call = stream(self._requests())
        self._reader = asyncio.create_task(self._read(), name=f"ads-client-{self.target}")

    async def close(self) -> None:
        self._outbox.put_nowait(None)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()

    @property
    def ended(self) -> bool:
        """The stream has ended (the server ended it or the connection broke)."""
        return self._reader is not None and self._reader.done()

    async def wait_ended(self, timeout: float = 5.0) -> None:
        """Until the server ends the stream or the connection breaks (``TimeoutError``
        if neither happens within ``timeout`` seconds)."""
        assert self._reader is not None, "not connected"
        done, _ = await asyncio.wait({self._reader}, timeout=timeout)
        if not done:
            raise TimeoutError(f"the stream to {self.target} is still open")

    async def flush(self, timeout: float = 5.0) -> None:
        """Until every request queued so far was written to the stream, or the stream
        ended (``TimeoutError`` if neither happens within ``timeout`` seconds)."""
        assert self._reader is not None, "not connected"
        written = asyncio.ensure_future(self._outbox.join())
        try:
            done, _ = await asyncio.wait(
                {written, self._reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            written.cancel()
        if not done:
            raise TimeoutError(f"requests to {self.target} still unwritten")

    def _queue(self, request: Any, error: str | None) -> None:
        """Queue ``request``: the stream's first carries the node; ``error`` makes it a
        NACK with that message."""
        if not self._sent_node:
            request.node.CopyFrom(self.node)
            self._sent_node = True
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._outbox.put_nowait(request)

    async def _requests(self) -> Any:
        outbox = self._outbox
        while True:
            request = await outbox.get()
            if request is None:
                outbox.task_done()
                return
            yield request
            outbox.task_done()  # grpc asks for the next request once this one is written

    async def _answered(self, response: Any) -> None:
        """Count ``response``, ACK it (unless ``auto_ack`` is off), hand it on."""
        self.received[response.type_url] += 1
        if self.auto_ack:
            self.ack(response)
        if self.on_response is not None:
            self.on_response(response)
        if self.keep:
            await self.responses.put(response)

    def ack(self, response: Any) -> None:
        raise NotImplementedError

    async def _read(self) -> None:
        raise NotImplementedError


class AdsClient(_Stream):
    _method = _METHOD
    _request = discovery_pb2.DiscoveryRequest
    _response = discovery_pb2.DiscoveryResponse

    def __init__(self, target: str, **options: Any) -> None:
        super().__init__(target, **options)
        self.responses: asyncio.Queue[Response] = asyncio.Queue()
        self.last: dict[str, Response] = {}
        self.subscriptions: dict[str, list[str]] = {}
        self.acked: dict[str, str] = {}

    def send(
        self,
        type_url: str,
        names: Iterable[str] = (),
        *,
        version: str = "",
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        """Queue a raw DiscoveryRequest."""
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=list(names),
            version_info=version,
            response_nonce=nonce,
        )
        self._queue(request, error)

    def subscribe(self, kind: str, names: Iterable[str] = ()) -> None:
        """Subscribe (or change the subscription) to ``kind`` (cds/eds/lds/rds or URL)."""
        type_url = TYPES.get(kind, kind)
        self.subscriptions[type_url] = list(names)
        last = self.last.get(type_url)
        self.send(
            type_url,
            names,
            version=self.acked.get(type_url, ""),
            nonce=last.message.nonce if last else "",
        )

    async def _read(self) -> None:
        async for message in self._call:
            response = Response(message)
            self.last[message.type_url] = response
            await self._answered(response)

    def ack(self, response: Response) -> None:
        message = response.message
        names = self.subscriptions.get(message.type_url, [])
        error = self.reject.get(message.type_url)
        if error is None:
            self.acked[message.type_url] = message.version_info
        self.send(
            message.type_url,
            names,
            version=self.acked.get(message.type_url, "") if error else message.version_info,
            nonce=message.nonce,
            error=error,
        )

    async def next(self, kind: str | None = None, timeout: float = 5.0) -> Response:
        """The next response (of ``kind`` if given; others are skipped)."""
        response: Response = await _next(self.responses, kind, timeout)
        return response


@dataclass
class DeltaResponse(_Answer):
    """One DeltaDiscoveryResponse and when it arrived."""

    message: discovery_pb2.DeltaDiscoveryResponse

    @property
    def names(self) -> list[str]:
        """The names of the resources it carries, in order."""
        return [r.name for r in self.message.resources]

    @property
    def removed(self) -> list[str]:
        return list(self.message.removed_resources)

    @property
    def versions(self) -> dict[str, str]:
        return {r.name: r.version for r in self.message.resources}

    def decode(self) -> list[Any]:
        """The resources as protos (Cluster, ClusterLoadAssignment, ...)."""
        return [
            _message_class(r.resource.type_url).FromString(r.resource.value)
            for r in self.message.resources
        ]


class DeltaAdsClient(_Stream):
    """A Delta ADS client.  ``held`` is what it holds per type, by name, after applying
    every response read so far (an ACKed or NACKed response is applied alike; nothing
    with ``keep=False``)."""

    _method = _DELTA_METHOD
    _request = discovery_pb2.DeltaDiscoveryRequest
    _response = discovery_pb2.DeltaDiscoveryResponse

    def __init__(self, target: str, **options: Any) -> None:
        super().__init__(target, **options)
        self.responses: asyncio.Queue[DeltaResponse] = asyncio.Queue()
        self.held: dict[str, dict[str, discovery_pb2.Resource]] = {}

    def send(
        self,
        type_url: str,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        *,
        nonce: str = "",
        error: str | None = None,
        initial: Mapping[str, str] | None = None,
    ) -> None:
        """Queue a raw DeltaDiscoveryRequest."""
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=TYPES.get(type_url, type_url),
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            initial_resource_versions=dict(initial or {}),
            response_nonce=nonce,
        )
        self._queue(request, error)

    def subscribe(self, kind: str, names: Iterable[str] = (), *, resume: bool = False) -> None:
        """Subscribe to ``names`` of ``kind`` (none: the first request of CDS/LDS is a
        wildcard).  With ``resume``, announce what is held of ``kind`` as
        ``initial_resource_versions`` (the first request after a reconnect)."""
        type_url = TYPES.get(kind, kind)
        held = self.held.setdefault(type_url, {})
        initial = {n: r.version for n, r in held.items()} if resume else None
        self.send(type_url, names, initial=initial)

    def unsubscribe(self, kind: str, names: Iterable[str]) -> None:
        """Unsubscribe from ``names``; they are dropped from ``held``."""
        type_url = TYPES.get(kind, kind)
        names = list(names)
        for name in names:
            self.held.get(type_url, {}).pop(name, None)
        self.send(type_url, unsubscribe=names)

    async def _read(self) -> None:
        async for message in self._call:
            response = DeltaResponse(message)
            if self.keep:
                held = self.held.setdefault(message.type_url, {})
                for name in message.removed_resources:
                    held.pop(name, None)
                for resource in message.resources:
                    held[resource.name] = resource
            await self._answered(response)

    def ack(self, response: DeltaResponse) -> None:
        """ACK ``response`` (NACK it if its type is in ``reject``)."""
        error = self.reject.get(response.type_url)
        self.send(response.type_url, nonce=response.message.nonce, error=error)

    async def next(self, kind: str | None = None, timeout: float = 5.0) -> DeltaResponse:
        """The next response (of ``kind`` if given; others are skipped)."""
        response: DeltaResponse = await _next(self.responses, kind, timeout)
        return response
