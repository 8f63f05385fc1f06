"""The Nacos registry: services and instances from a Nacos server, pushed or polled.

Contract (see :mod:`registryd.adapter`):

* ``mode`` (:mod:`.settings`) says how: ``grpc`` by push over Nacos 2.x/3.x's gRPC
  protocol (:mod:`.link`); ``poll`` by polling the v1 Open API; ``auto`` (the default)
  opens the gRPC connection at every (re)start of ``watch()`` and, when no server of
  ``server_addr`` speaks gRPC (refused, ``UNIMPLEMENTED``, a failed server check: a
  Nacos 1.x), polls instead, logging one warning and saying so in
  ``Problems.status`` (``{"mode": "poll", "reason": ...}``); while it polls it tries
  gRPC again every :data:`GRPC_RETRY` seconds and switches to push (with a full
  ``Replace``) once it answers.  Nacos 1.x's own push (UDP) is not used: its
  subscriptions expire unless every service is read again about every 10 s, which
  costs as much as polling.  ``Problems.status`` says the mode in use:
  ``{"mode": "push (gRPC <host>:<port>)"}`` or ``{"mode": "poll", "reason": ...}``.

Push (``grpc``, and ``auto`` with a gRPC server):

* ``watch()`` opens one connection (server check, bi-stream, ``ConnectionSetupRequest``),
  lists each configured group's services (``ServiceListRequest``, page by page, at
  most ``max_services`` in all) and subscribes to each (``SubscribeServiceRequest``, at
  most :data:`SUBSCRIBERS` in flight); each answer carries the service's instances.
  Then it yields a :class:`~registryd.adapter.Replace` of the full state and a
  :class:`~registryd.adapter.Problems`.
* The server pushes each change of a subscribed service (``NotifySubscriberRequest``
  on the bi-stream), which is acknowledged at once (``NotifySubscriberResponse``, same
  ``requestId``) and queued: the queue keeps only the latest instance list per service
  (pushes come in order on the stream; a subscription's answer is dropped when a push
  of that service came first), so it never holds more than one entry per subscribed
  service.
  Each batch of queued lists yields one ``Upsert``/``Delete`` per hostname that changed,
  then a new ``Problems`` when it changed: changes per service, not per pass.
* New and vanished services appear only through the listing, repeated every
  ``list_interval`` seconds (±10 %): new ones are subscribed to, vanished ones
  unsubscribed from and deleted.  A ``HealthCheckRequest`` every :data:`KEEPALIVE`
  seconds keeps the connection (Nacos probes, then drops, a connection silent for 20 s;
  its ``ClientDetectionRequest`` is answered too).  Idle, that is
  ``groups * ceil(services / page_size) / list_interval + 1 / KEEPALIVE`` requests a second:
  2.2 at 10,000 services with the defaults.
* One service's failure (an error answer to its subscription, one over
  ``max_response_bytes`` or not whole within ``request_timeout``, a pushed list that is
  not an instance list, a hostname that is not a DNS name, any exception converting
  it) is that service's alone: it keeps its last good endpoints, the error shows under
  ``<group>@@<service>``, and a service whose subscription failed is subscribed again
  at the next listing.  A message on the stream that cannot be read, or a push that
  names no service, is dropped and shown as a warning (the latest one only).  The last
  good state of every service is kept across restarts
  of ``watch()`` (the records live on the adapter), so a restart whose subscription of
  one service fails still serves that service's last endpoints.
* A service whose subscription answer is over ``max_response_bytes`` is that
  service's error and is unsubscribed from at once; later restarts do not subscribe
  to it (the server pushes to every new subscriber, and a push over gRPC's receive
  limit breaks the whole stream) but query it (``ServiceQueryRequest``) at each
  listing, and subscribe again once it fits.  A push over the limit breaks the stream
  before anyone can tell whose it was: the restart finds the service by its
  subscription answer, so an oversized service costs at most two restarts.
* A failed listing, a lost connection or stream (the server going away, a message over
  ``max_response_bytes`` — gRPC's receive limit — a ``ConnectResetRequest``, an
  unanswered health check) makes ``watch()`` raise; the supervisor restarts it with
  backoff, and the restart reconnects, subscribes again to everything and yields a
  full ``Replace``.  With ``mode: grpc`` no gRPC at the start is such an error too
  (:class:`~.link.NoGrpc`).
* With a username, the token of the HTTP login (:mod:`.client`) travels as the
  ``accessToken`` header of every request; one refused (error 403) is renewed once.

Poll (``poll``, and ``auto`` without gRPC):

* Every ``poll_interval`` seconds (±10 % jitter) ``watch()`` lists the services of each
  configured group of the namespace (``GET /nacos/v1/ns/service/list``, page by page,
  at most ``max_services`` in all) and reads each one's instances
  (``GET /nacos/v1/ns/instance/list``, at most :data:`CONCURRENCY` at a time, each
  within ``request_timeout``: a slow service delays a poll by that much at most).  The
  first poll of every ``watch()`` yields a :class:`~registryd.adapter.Replace` with the
  full state and a :class:`~registryd.adapter.Problems`; later polls yield one
  ``Upsert``/``Delete`` per hostname that changed, then a new ``Problems`` when it
  changed.
* Change detection: an instance list whose ``checksum`` (or, when the server sends an
  empty one, whose ``hosts``) equals the last one converted is not converted again.
* One service's failure (an HTTP error status, an answer that is not an instance list,
  one over ``max_response_bytes`` or not whole within ``request_timeout``, a hostname
  that is not a DNS name, any exception while converting its answer) is that
  service's alone: it keeps its last good endpoints (none if it never had any), the
  error shows in the ``Problems`` under its source ``<group>@@<service>``, and the next
  poll tries again.
* A failed service listing (more than ``max_services`` services included), no server
  answering, or a refused login makes ``watch()`` raise (:class:`~.client.NacosError`,
  :class:`~.client.QueryError`); the supervisor keeps the last good state served and
  restarts it with backoff.  The HTTP session is closed in ``finally``.

* It logs under the scope ``nacos`` (``--log_output_level nacos:debug``): one info
  line per full state, with its services, endpoints and the server that answered, as
  the Consul and etcd adapters do; problems are logged by registryd.

Hostnames and the mapping: :mod:`.convert`.  Settings: :mod:`.settings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from registryd.adapter import (
    AdapterContext,
    Delete,
    Problems,
    Published,
    Replace,
    Update,
    Upsert,
    describe_error,
    follow,
    increments,
)
from registryd.model import Endpoint, Service
from registryd.ratelimit import TokenBucket

from .client import NacosClient, NacosError, NacosUnavailable, QueryError, TooManyServices
from .convert import Converted, convert_service, hostname
from .link import NacosLink, NoGrpc, ServerRequest
from .settings import NacosSettings, parse_settings

__all__ = [
    "CONCURRENCY",
    "GRPC_RETRY",
    "KEEPALIVE",
    "SUBSCRIBERS",
    "NacosAdapter",
    "NacosError",
    "Record",
    "Shard",
    "Snapshot",
    "service_key",
]

log = logging.getLogger("registryd.nacos")

CONCURRENCY = 8  # instance lists read at the same time (poll)
SUBSCRIBERS = 32  # subscriptions in flight (push)
KEEPALIVE = 5.0  # seconds between health checks of the gRPC connection (push)
GRPC_RETRY = 300.0  # seconds of polling in auto mode before gRPC is tried again
Sleep = Callable[[float], Awaitable[None]]
Key = tuple[str, str]  # (group, service name)


@dataclass(frozen=True, slots=True)
class Record:
    """The last reading of one Nacos service: what it converted to (last good), the
    signature of that answer, and the error of the latest attempt, if it failed."""

    converted: Converted | None = None
    signature: str = ""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The shard after one poll: services and endpoints by hostname, and problems."""

    services: Mapping[str, Service] = field(default_factory=dict)
    endpoints: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    problems: Problems = field(default_factory=Problems)


def signature(document: Mapping[str, Any]) -> str:
    """What identifies the content of an instance-list answer."""
    checksum = document.get("checksum")
    if isinstance(checksum, str) and checksum:
        return "checksum:" + checksum
    return "hosts:" + json.dumps(document.get("hosts"), sort_keys=True, default=str)


def snapshot(records: Mapping[Key, Record], status: Mapping[str, str] | None = None) -> Snapshot:
    """The shard the records make, with ``status``.  Pure.  Two services with one
    hostname: the first by (group, name) wins, the other is an error."""
    services: dict[str, Service] = {}
    endpoints: dict[str, tuple[Endpoint, ...]] = {}
    owners: dict[str, str] = {}
    errors: dict[str, str] = {}
    warnings: list[str] = []
    for (group, name), record in sorted(records.items()):
        source = f"{group}@@{name}"
        if record.error is not None:
            errors[source] = record.error
        converted = record.converted
        if converted is None:
            continue
        host = converted.service.hostname
        if host in owners:
            errors[source] = f"hostname {host} is already that of {owners[host]}"
            continue
        owners[host] = source
        services[host], endpoints[host] = converted.service, converted.endpoints
        warnings.extend(f"{source}: {note}" for note in converted.notes)
    problems = Problems(errors=errors, warnings=tuple(warnings), status=dict(status or {}))
    return Snapshot(services, endpoints, problems)


def read_record(
    settings: NacosSettings, key: Key, document: Mapping[str, Any], old: Record
) -> Record:
    """The record of service ``key`` after an instance list (an Open API answer or a
    gRPC ``serviceInfo``): ``old`` when it is unchanged and was good, else converted;
    any exception converting it is that service's error, keeping ``old``'s endpoints."""
    group, name = key
    try:
        sign = signature(document)
        if sign == old.signature and old.error is None:
            return old
        host = hostname(
            settings.hostname_template, service=name, group=group, namespace=settings.namespace
        )
        converted = convert_service(
            document,
            host=host,
            namespace=settings.namespace,
            zone_from=settings.zone_from,
            weight_scale=settings.weight_scale,
        )
    except Exception as exc:  # ValueError, or a bug...: this service's error only
        return Record(old.converted, old.signature, describe_error(exc, own=(ValueError,)))
    return Record(converted, sign)


def service_key(info: Any) -> Key | None:
    """(group, name) of a gRPC ``serviceInfo``: ``name`` may carry its group as
    ``<group>@@<name>`` (Nacos 2.0's ``ServiceInfo``) or leave it to ``groupName``.
    None when there is no usable name.  Pure."""
    if not isinstance(info, Mapping):
        return None
    name, group = info.get("name"), info.get("groupName")
    if not isinstance(name, str) or not name:
        return None
    if "@@" in name:
        group, name = name.split("@@", 1)
    if not isinstance(group, str) or not group or not name:
        return None
    return group, name


class _Poller:
    """One ``watch()``'s polls: the client and the record of every service."""

    def __init__(
        self, settings: NacosSettings, client: NacosClient, status: Mapping[str, str]
    ) -> None:
        self.settings = settings
        self.client = client
        self.status = status
        self.records: dict[Key, Record] = {}
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def poll(self) -> Snapshot:
        names: list[Key] = []
        for group in self.settings.groups:
            budget = self.settings.max_services - len(names)
            names.extend((group, name) for name in await self.client.service_names(group, budget))
        try:
            async with asyncio.TaskGroup() as tasks:
                reads = {key: tasks.create_task(self._read(key)) for key in names}
        except ExceptionGroup as group:  # the first error as it is (NacosError...)
            raise first_error(group) from None
        self.records = {key: task.result() for key, task in reads.items()}
        return snapshot(self.records, self.status)

    async def _read(self, key: Key) -> Record:
        old = self.records.get(key, Record())
        async with self._slots:
            try:
                document = await self.client.instances(*key)
            except QueryError as exc:
                return Record(old.converted, old.signature, str(exc))
        return read_record(self.settings, key, document, old)


class _View:
    """The latest poll's snapshot and the one last handed out."""

    def __init__(self, first: Snapshot) -> None:
        self.latest = self.shown = first

    def replace(self) -> Replace:
        self.shown = self.latest
        return Replace(
            services=tuple(self.latest.services.values()),
            endpoints=tuple(e for eps in self.latest.endpoints.values() for e in eps),
        )

    def changes(self) -> list[Upsert | Delete]:
        """One ``Upsert``/``Delete`` per hostname that changed since the last hand-out."""
        old, self.shown = self.shown, self.latest
        return increments(old.services, old.endpoints, self.latest.services, self.latest.endpoints)

    def problems(self) -> Problems:
        return self.latest.problems


class Shard:
    """The shard that records make, as :func:`snapshot` computes it, kept up to date
    one key at a time: a change costs what it touches, not the size of the shard.

    :attr:`winners` holds the converted service served under each hostname (the
    first claimant by (group, name) wins; the others are errors)."""

    def __init__(self) -> None:
        self.winners: dict[str, Converted] = {}
        self._records: dict[Key, Record] = {}
        self._claims: dict[str, set[Key]] = {}  # hostname -> keys converted to it
        self._errors: dict[Key, str] = {}
        self._notes: dict[Key, tuple[str, ...]] = {}

    def set(self, key: Key, record: Record | None) -> set[str]:
        """``key`` now has ``record`` (None: it is gone); the hostnames it touched."""
        old = self._records.pop(key, None)
        if record is not None:
            self._records[key] = record
        hosts: set[str] = set()
        if old is not None and old.converted is not None:
            host = old.converted.service.hostname
            hosts.add(host)
            claims = self._claims[host]
            claims.discard(key)
            if not claims:
                del self._claims[host]
        if record is not None and record.converted is not None:
            host = record.converted.service.hostname
            hosts.add(host)
            self._claims.setdefault(host, set()).add(key)
        judged = {key}
        for host in hosts:
            claimants = self._claims.get(host)
            if not claimants:
                self.winners.pop(host, None)
                continue
            winner = self._records[min(claimants)].converted
            assert winner is not None
            self.winners[host] = winner
            judged |= claimants
        for each in judged:
            self._judge(each)
        return hosts

    def _judge(self, key: Key) -> None:
        self._errors.pop(key, None)
        self._notes.pop(key, None)
        record = self._records.get(key)
        if record is None:
            return
        if record.error is not None:
            self._errors[key] = record.error
        converted = record.converted
        if converted is None:
            return
        host = converted.service.hostname
        first = min(self._claims[host])
        if first != key:
            self._errors[key] = f"hostname {host} is already that of {first[0]}@@{first[1]}"
        elif converted.notes:
            self._notes[key] = converted.notes

    def problems(self, status: Mapping[str, str], notes: Iterable[str] = ()) -> Problems:
        """The errors and warnings (``notes`` first) of the records, and ``status``."""
        errors = {f"{g}@@{n}": error for (g, n), error in sorted(self._errors.items())}
        warnings = [*notes]
        for (group, name), each in sorted(self._notes.items()):
            warnings.extend(f"{group}@@{name}: {note}" for note in each)
        return Problems(errors=errors, warnings=tuple(warnings), status=dict(status))


def first_error(group: BaseExceptionGroup[Exception]) -> Exception:
    """The first exception of ``group`` that is not a group itself, depth first: what a
    task group's failure means to the caller (raised outside any ``except*`` block, so
    that it is not wrapped again)."""
    first = group.exceptions[0]
    return first_error(first) if isinstance(first, BaseExceptionGroup) else first


class _GrpcBack(Exception):
    """Polling in auto mode found gRPC again: ``link`` is the open connection."""

    def __init__(self, link: NacosLink) -> None:
        super().__init__("gRPC is available again")
        self.link = link


class _Push:
    """One ``watch()``'s push session over one connection (see the module docstring).

    ``records`` is the adapter's, kept across sessions, and so is ``too_large``: the
    services whose instance list was over ``max_response_bytes``, which are not
    subscribed to (their pushes would break the stream) but queried
    (``ServiceQueryRequest``) at each listing until they fit.  Background tasks (the stream
    reader, the keep-alive, the lister) only queue; :meth:`apply` turns the queue into
    records, on the task that iterates ``watch()``."""

    def __init__(
        self,
        settings: NacosSettings,
        client: NacosClient,
        link: NacosLink,
        limiter: TokenBucket,
        records: dict[Key, Record],
        too_large: set[Key],
        sleep: Sleep,
        jitter: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.too_large = too_large
        self.client = client
        self.link = link
        self.limiter = limiter
        self.records = records
        self.status = {"mode": f"push (gRPC {link.target})"}
        self._sleep = sleep
        self._jitter = jitter
        self.subscribed: set[Key] = set()
        self.pending: dict[Key, Mapping[str, Any]] = {}  # latest serviceInfo per service
        self.pushed: set[Key] = set()  # pushed to since its subscription was sent
        self.failures: dict[Key, str] = {}
        self.removed: set[Key] = set()
        self.stream_note: str | None = None  # the latest message that could not be read
        self.wake = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self._slots = asyncio.Semaphore(SUBSCRIBERS)
        self.shard = Shard()
        for key, record in records.items():  # the last good state of the last session
            self.shard.set(key, record)

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to every listed service; returns once every answer is in (the full
        state is then :attr:`shard`)."""
        self.tasks = [
            asyncio.create_task(self._reader(), name="nacos-stream"),
            asyncio.create_task(self._keepalive(), name="nacos-keepalive"),
        ]
        await self._sync(await self._list())
        self.apply()
        self.tasks.append(asyncio.create_task(self._lister(), name="nacos-lister"))

    async def close(self) -> None:
        """Cancel the background tasks (their errors were raised by :meth:`wait`, or do
        not matter now) and close the connection."""
        for task in self.tasks:
            task.cancel()
        try:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        finally:
            await self.link.close()

    def problems(self) -> Problems:
        notes = () if self.stream_note is None else (self.stream_note,)
        return self.shard.problems(self.status, notes)

    async def wait(self) -> None:
        """Until something is queued; raises the error of a background task that ended."""
        waiter = asyncio.create_task(self.wake.wait())
        try:
            await asyncio.wait([waiter, *self.tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        for task in self.tasks:
            if task.done():
                error = task.exception()
                raise error or NacosUnavailable(f"{self.link.target}: {task.get_name()} ended")
        self.wake.clear()

    def apply(self) -> set[str]:
        """Turn what is queued into records; the hostnames that may have changed."""
        pending, self.pending = self.pending, {}
        failures, self.failures = self.failures, {}
        removed, self.removed = self.removed, set()
        touched: set[str] = set()
        for key in removed:
            self.records.pop(key, None)
            touched |= self.shard.set(key, None)
        for key, error in failures.items():
            old = self.records.get(key, Record())
            self._record(key, Record(old.converted, old.signature, error), touched)
        for key, info in pending.items():
            old = self.records.get(key, Record())
            new = read_record(self.settings, key, info, old)
            if new is not old:
                self._record(key, new, touched)
        return touched

    def _record(self, key: Key, record: Record, touched: set[str]) -> None:
        self.records[key] = record
        touched |= self.shard.set(key, record)

    # -- requests --------------------------------------------------------------------------

    async def _ask(self, type_name: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """A naming request with the token; a refused token is renewed once."""
        for _ in range(2):
            token = await self.client.token()
            headers = {} if token is None else {"accessToken": token}
            answer = await self.link.request(type_name, body, headers, fail=False)
            if answer.get("resultCode") == 200:
                return answer
            if answer.get("errorCode") != 403 or token is None:
                break
            self.client.forget_token()
        return await self.link.request(type_name, body, headers)  # raises the error

    async def _ask_about(self, type_name: str, key: Key, **fields: Any) -> Mapping[str, Any]:
        """:meth:`_ask` a naming request about service ``key`` = (group, name) of the
        namespace (a name of "": the group), with its own ``fields``."""
        group, name = key
        body = {"namespace": self.settings.namespace, "groupName": group, "serviceName": name}
        return await self._ask(type_name, {**body, **fields, "module": "naming"})

    async def _list(self) -> list[Key]:
        """Every service of the configured groups (ServiceListRequest, page by page)."""
        settings = self.settings
        keys: list[Key] = []
        for group in settings.groups:
            budget = settings.max_services - len(keys)
            keys.extend((group, name) for name in await self._list_group(group, budget))
        return keys

    async def _list_group(self, group: str, limit: int) -> list[str]:
        settings = self.settings
        names: list[str] = []
        for page in range(1, limit // settings.page_size + 3):  # bounded by max_services
            await self.limiter.acquire()
            answer = await self._ask_about(
                "ServiceListRequest", (group, ""), pageNo=page, pageSize=settings.page_size
            )
            listed, count = answer.get("serviceNames") or [], answer.get("count")
            if (
                not isinstance(listed, list)
                or isinstance(count, bool)
                or not isinstance(count, int)
            ):
                raise QueryError(
                    f"ServiceListRequest: no serviceNames and count in {answer!r:.200}"
                )
            for item in listed:
                text = str(item)
                names.append(text.split("@@", 1)[1] if "@@" in text else text)
            if max(count, len(names)) > limit:
                total = settings.max_services - limit + max(count, len(names))
                raise TooManyServices(
                    f"ServiceListRequest: the groups list {total} services (up to group "
                    f"{group!r}), more than max_services ({settings.max_services}); "
                    "listing stopped"
                )
            if not listed or len(names) >= count:
                break
        return list(dict.fromkeys(names))

    async def _sync(self, listed: list[Key]) -> None:
        """Subscribe to the new services of a listing, unsubscribe from vanished ones
        (at most :data:`SUBSCRIBERS` requests in flight)."""
        keep = set(listed)
        gone = sorted((self.subscribed | self.records.keys()) - keep)
        unsubscribe = [key for key in gone if key in self.subscribed]
        for key in gone:
            self.subscribed.discard(key)
            self.pending.pop(key, None)
            self.removed.add(key)
        new = [key for key in listed if key not in self.subscribed]
        try:
            async with asyncio.TaskGroup() as tasks:
                for key in unsubscribe:
                    tasks.create_task(self._stop(key))
                for key in new:
                    starting = self._probe(key) if key in self.too_large else self._start(key)
                    tasks.create_task(starting)
        except ExceptionGroup as group:  # the first error (NacosUnavailable...) as it is
            raise first_error(group) from None
        if self.removed or self.failures or self.pending:
            self.wake.set()

    async def _stop(self, key: Key) -> None:
        async with self._slots:
            with contextlib.suppress(QueryError):  # it is gone: nothing to keep
                await self._subscribe(key, False)

    async def _start(self, key: Key) -> None:
        async with self._slots:
            self.subscribed.add(key)  # its pushes count from now on
            self.pushed.discard(key)
            try:
                answer = await self._subscribe(key, True)
                info = answer.get("serviceInfo")
                if not isinstance(info, Mapping):
                    raise QueryError(f"SubscribeServiceRequest: no serviceInfo in {answer!r:.200}")
            except QueryError as exc:
                self.subscribed.discard(key)  # subscribed again at the next listing
                self.failures[key] = self.client.clean(str(exc))
                if "max_response_bytes" in str(exc):  # its pushes would break the stream
                    self.too_large.add(key)
                    with contextlib.suppress(QueryError):
                        await self._subscribe(key, False)
                return
            if key not in self.pushed:  # else a push made after this answer came first
                self.queue(key, info)

    async def _probe(self, key: Key) -> None:
        """A service too large before: subscribed to again once its list fits."""
        async with self._slots:
            try:
                await self._ask_about(
                    "ServiceQueryRequest", key, cluster="", healthyOnly=False, udpPort=0
                )
            except QueryError as exc:
                self.failures[key] = self.client.clean(str(exc))
                return
        self.too_large.discard(key)
        await self._start(key)

    async def _subscribe(self, key: Key, subscribe: bool) -> Mapping[str, Any]:
        return await self._ask_about(
            "SubscribeServiceRequest", key, clusters="", subscribe=subscribe
        )

    def queue(self, key: Key, info: Mapping[str, Any]) -> None:
        """Keep ``info`` as the latest list of ``key`` (it replaces a queued one): one
        entry per subscribed service at most."""
        if key not in self.subscribed:
            return
        self.pending[key] = info
        self.wake.set()

    # -- background tasks ------------------------------------------------------------------

    async def _reader(self) -> None:
        """The server's requests on the bi-stream: pushes are acknowledged and queued."""
        while True:
            item = await self.link.read()
            if not isinstance(item, ServerRequest):
                self._note(str(item))
                continue
            body, request_id = item.body, item.body.get("requestId")
            answer = {"resultCode": 200, "errorCode": 0, "requestId": request_id}
            if item.type == "NotifySubscriberRequest":
                await self.link.reply("NotifySubscriberResponse", answer)
                info = body.get("serviceInfo")
                key = service_key(info)
                if key is None or not isinstance(info, Mapping):
                    self._note(f"NotifySubscriberRequest: no service named in {body!r:.200}")
                elif key in self.subscribed:
                    self.pushed.add(key)
                    self.queue(key, info)
            elif item.type == "ClientDetectionRequest":
                await self.link.reply("ClientDetectionResponse", answer)
            elif item.type == "ConnectResetRequest":
                await self.link.reply("ConnectResetResponse", answer)
                raise NacosUnavailable(f"{self.link.target}: the server asked to reconnect")
            else:  # SetupAckRequest (wants no answer), or a request this client lacks
                log.debug("nacos %s: ignored %s", self.link.target, item.type)

    def _note(self, text: str) -> None:
        self.stream_note = f"gRPC stream of {self.link.target}: dropped a message: {text}"
        log.debug("%s", self.stream_note)
        self.wake.set()

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE)
            try:
                await self.link.request("HealthCheckRequest", {"module": "internal"})
            except QueryError as exc:
                raise NacosUnavailable(f"{self.link.target}: health check: {exc}") from None

    async def _lister(self) -> None:
        while True:
            await self._sleep(self.settings.list_interval * self._jitter())
            await self._sync(await self._list())


class NacosAdapter:
    """The ``nacos`` adapter factory and adapter (see the module docstring)."""

    default_priority = 50  # merge priority when registryd.yaml gives none
    log_scope = "nacos"
    log_description = "Nacos registry adapter: gRPC push subscriptions, or polls of the Open API."

    def __init__(
        self,
        *,
        name: str,
        settings: Mapping[str, Any],
        context: AdapterContext,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = lambda: random.uniform(0.9, 1.1),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``sleep`` waits between polls (for ``poll_interval`` times ``jitter()``) and
        between listings in push mode (``list_interval`` times ``jitter()``); tests pass
        their own, and their own ``clock`` for the retries of gRPC."""
        self.name = name
        self.settings = parse_settings(name, settings)
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock
        self._records: dict[Key, Record] = {}  # push mode's last good state, across restarts
        self._too_large: set[Key] = set()  # push mode: services not to subscribe to
        self._warned = False

    def __repr__(self) -> str:  # no password
        return f"NacosAdapter(name={self.name!r}, servers={list(self.settings.servers)!r})"

    async def watch(self) -> AsyncIterator[Update]:
        settings = self.settings
        limiter = TokenBucket(settings.max_qps, max(1, int(settings.max_qps)))
        # connecting and any silence; each call's whole deadline is request_timeout
        timeout = aiohttp.ClientTimeout(connect=settings.timeout, sock_read=settings.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            client = NacosClient(settings, session, limiter)
            link: NacosLink | None = None
            if settings.mode != "poll":
                try:
                    link = await NacosLink.open(settings)
                except NoGrpc as exc:
                    if settings.mode == "grpc":
                        raise
                    reason = client.clean(str(exc))
                    status = {"mode": "poll", "reason": f"no gRPC ({reason})"[:400]}
                    if not self._warned:
                        self._warned = True
                        log.warning("nacos %s: %s; polling the Open API", self.name, reason)
            else:
                status = {"mode": "poll", "reason": "the setting mode is poll"}
            if link is None:
                try:
                    async for update in self._poll(client, status):
                        yield update
                except _GrpcBack as back:
                    link = back.link
                    log.info(
                        "nacos %s: gRPC at %s answers: push from now on", self.name, link.target
                    )
            async for update in self._push(client, link, limiter):
                yield update

    async def _poll(self, client: NacosClient, status: Mapping[str, str]) -> AsyncIterator[Update]:
        settings = self.settings
        poller = _Poller(settings, client, status)
        polls = _View(await poller.poll())
        full = polls.replace()
        log.info(
            "nacos %s: %d services, %d endpoints from %s (poll)",
            self.name,
            len(full.services),
            len(full.endpoints),
            client.server,
        )
        yield full
        yield polls.latest.problems
        retry_at = self._clock() + GRPC_RETRY

        async def poll_again() -> None:
            nonlocal retry_at
            await self._sleep(settings.poll_interval * self._jitter())
            if settings.mode == "auto" and self._clock() >= retry_at:
                retry_at = self._clock() + GRPC_RETRY
                with contextlib.suppress(NoGrpc):
                    raise _GrpcBack(await NacosLink.open(settings))
            polls.latest = await poller.poll()

        updates = follow(poll_again, polls.changes, polls.problems, polls.latest.problems)
        async with contextlib.aclosing(updates):
            async for update in updates:
                yield update

    async def _push(
        self, client: NacosClient, link: NacosLink | None, limiter: TokenBucket
    ) -> AsyncIterator[Update]:
        assert link is not None
        push = _Push(
            self.settings,
            client,
            link,
            limiter,
            self._records,
            self._too_large,
            self._sleep,
            self._jitter,
        )
        published: Published[str] = Published()
        touched: set[str] = set()
        try:
            await push.start()
            full = published.replace(push.shard.winners)
            log.info(
                "nacos %s: %d services, %d endpoints from %s (push)",
                self.name,
                len(full.services),
                len(full.endpoints),
                link.target,
            )
            yield full
            shown = push.problems()
            yield shown

            async def apply_queued() -> None:
                await push.wait()
                touched.update(push.apply())

            def changes() -> list[Upsert | Delete]:
                hosts = set(touched)
                touched.clear()
                return published.changes(push.shard.winners, hosts)

            updates = follow(apply_queued, changes, push.problems, shown)
            async with contextlib.aclosing(updates):
                async for update in updates:
                    yield update
        finally:
            await push.close()
