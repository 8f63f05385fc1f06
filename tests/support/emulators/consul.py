"""A small, faithful emulator of the Consul HTTP API subset registryd reads, for tests.

Covered (``<dc>``: ``?dc=``, default the emulator's first datacenter; an unknown one
answers 500 ``No path to datacenter``):

===================================  ======================================================
``GET /v1/catalog/services``         ``{name: [tags]}``; blocking; ``dc``, ``stale``,
                                     ``consistent``
``GET /v1/health/service/<name>``    ``[{Node, Service, Checks}]`` sorted by node and
                                     service id, node checks first; blocking; ``passing``
                                     (only entries whose checks all pass), ``dc``,
                                     ``stale``, ``consistent``
``PUT /v1/catalog/register``         ``Datacenter, ID, Node, Address, TaggedAddresses,
                                     NodeMeta, SkipNodeUpdate, Service {ID, Service,
                                     Kind, Proxy, Tags, Address, Meta, Port, Weights,
                                     EnableTagOverride}, Check, Checks`` (field names
                                     matched case-insensitively, as Go's JSON decoder
                                     does; a service ID defaults to its name, a check ID
                                     to its name, a check status to ``critical``)
``PUT /v1/catalog/deregister``       ``Datacenter, Node`` and optionally ``ServiceID`` or
                                     ``CheckID`` (the node alone removes everything on it)
``GET /v1/status/leader``            ``"127.0.0.1:8300"``
``GET /v1/health/state/<state>``     the checks in ``state`` (``any``, ``passing``,
                                     ``warning``, ``critical``), by node and check ID;
                                     blocking on the index of the last check change
``GET /v1/catalog/nodes``            the nodes by name; blocking on the index of the
                                     last change of a node or of a service instance
``GET /v1/agent/self``               ``Config.Datacenter``, ``Config.NodeName``,
                                     ``Config.Version``,
                                     ``DebugConfig.HTTPMaxConnsPerClient`` (200, or
                                     ``max_conns_per_client``); needs a valid token
                                     under ACLs
===================================  ======================================================

Entries have the shape of a real agent's: an instance's ``Kind`` (typical),
``TaggedAddresses`` and ``Port`` are left out when empty or 0 (Consul's ``omitempty``),
and its ``Meta`` is null when it was registered without any, as are a node's
``TaggedAddresses`` and ``Meta``; checks carry ``ServiceTags``, ``Interval``,
``Timeout``, ``ExposedPort`` and ``Definition`` too.

Blocking queries follow Consul: every catalog/health reply carries ``X-Consul-Index``
(plus ``X-Consul-KnownLeader``, ``X-Consul-LastContact`` and
``X-Consul-Effective-Consistency``); with ``?index=N`` (N > 0) the request waits until
the index of what it reads exceeds N or ``wait`` (Go duration, default 5m, at most 10m;
``jitter=True`` adds up to wait/16 as Consul does) runs out, and answers the current
state and index.  Every write bumps the datacenter's raft index by one; the catalog's
index moves when a service registration changes, a service's index when anything in
its health entries changes (its instances, their checks, their nodes and node checks).
A service that is not in the catalog answers the index of the last write that removed
a service name's last instance (before any did, of the last change to any node, service
or check); a blocking read of it that blocks waits until it is registered, and answers
the index it started with if its wait runs out first (one of a service that goes away
returns).  Replies carry
``X-Consul-Query-Backend: blocking-query`` too.  ``/v1/catalog/services`` lists each
service's tags once (sorted; a real agent's order varies from one read to the next).
Bad ``index``/``wait`` answer 400 as Consul does.

ACLs (``acl_token=...``, the management token): ``default_policy = deny``, and every
reply says so in ``X-Consul-Default-Acl-Policy`` (``allow`` without ACLs).  A read with
the management token (``X-Consul-Token``, ``Authorization: Bearer`` or ``?token=``)
sees everything; one with a token of ``acl_readers`` (token -> service name prefixes:
``service_prefix "<p>" { policy = "read" }`` for each, and ``node_prefix "" { policy =
"read" }``) sees only those services, and ``X-Consul-Results-Filtered-By-ACLs: true``
when anything was left out.  A read without a token is the anonymous token, which may
read nothing: an empty result, and no filtered header (Consul tells only a token that
its results were filtered).  A token the emulator does not know answers 403 ``ACL not
found``; a write or ``/v1/agent/self`` without the management token answers 403 with
Consul's ``Permission denied: ... lacks permission ...`` text.

As on a real cluster, each datacenter's catalog starts with the server's own ``consul``
service (node ``node_name``, 127.0.0.1, port 8300, a passing ``serfHealth`` node check);
``server_service=False`` leaves it out.

Knobs for tests: :meth:`reset_index` (a snapshot restore: indexes go back, blocked
queries return at once), ``zero_index`` (replies say ``X-Consul-Index: 0``),
``immediate`` (blocking queries answer at once, unchanged), ``fail_status`` /
``fail_body`` (reads fail, blocked ones at once), :meth:`fail_service` (one service's
health reads fail, blocked ones at once: an error status, or with status 200 a body
that is not what Consul sends; the next N reads or until told otherwise;
:attr:`service_failures` counts the failed answers), ``max_conns_per_client`` (the
agent's ``limits.http_max_conns_per_client``, off by default: a request on a connection
beyond that many open ones from its client address answers 429 as Consul does, idle
keep-alive connections counted too; :attr:`refused` counts them), :meth:`stop` /
:meth:`start` (the agent goes away, open connections are cut, and comes back on the
same port).  Every request is recorded in :attr:`requests`.

Standalone: ``python -m tests.support.emulators.consul [--port P] [FILE]`` serves it
on 127.0.0.1 (port 8500 by default) until Ctrl-C, with the services of ``FILE``
(:func:`from_state` gives the format).

Not covered: the agent endpoints (``/v1/agent/service/register``, anti-entropy, check
runners: check status changes only by registration), sessions, KV, prepared queries,
``filter`` beyond clauses ``Field == "v"`` / ``Field != "v"`` joined by ``and`` (on the
two endpoints above), ``node-meta``, ``tag``, ``near``, namespaces/partitions, peering, tagged
address translation, hash-based blocking, ``max_stale``, request rate limiting.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import re
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.emulators import standalone
from tests.support.emulators.base import LoopbackServer

__all__ = ["ConsulEmulator", "Request"]

MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DEFAULT_WEIGHTS = {"Passing": 1, "Warning": 1}


@dataclass(frozen=True, slots=True)
class Request:
    """One request the emulator received."""

    method: str
    path: str
    params: Mapping[str, str]
    token: str | None
    at: float  # time.monotonic()


class HTTPError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


_CLAUSE = re.compile(r'\s*([A-Za-z]+)\s*(==|!=)\s*"([^"]*)"\s*')


def _filter(expression: str | None) -> Callable[[Mapping[str, Any]], bool]:
    """The records a ``filter`` keeps: the subset of Consul's filter language of clauses
    ``Field == "value"`` / ``Field != "value"`` on top-level string fields joined by
    ``and``; anything else answers 400 (None keeps everything)."""
    if expression is None:
        return lambda record: True
    clauses = []
    for part in expression.split(" and "):
        match = _CLAUSE.fullmatch(part)
        if match is None:
            raise HTTPError(400, f"Failed to create boolean expression evaluator: {expression!r}")
        clauses.append(match.groups())

    def keep(record: Mapping[str, Any]) -> bool:
        return all((record.get(f) == v) == (op == "==") for f, op, v in clauses)

    return keep


def parse_go_duration(text: str) -> float:
    """Seconds of a Go duration (``10s``, ``1m30s``, ``250ms``, ``0``)."""
    if text == "0":
        return 0.0
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(text)
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def _field(obj: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """``obj[name]`` matched case-insensitively, like Go's encoding/json."""
    if name in obj:
        return obj[name]
    lower = name.lower()
    for key, value in obj.items():
        if isinstance(key, str) and key.lower() == lower:
            return value
    return default


@dataclass
class _ServiceFailure:
    """How the health reads of one service fail (see :meth:`ConsulEmulator.fail_service`)."""

    status: int
    body: str
    times: int | None  # failed answers left; None: until told otherwise


@dataclass
class _Datacenter:
    """One datacenter's tables, with indexes by service name and by node kept in step
    with them (every write goes through :meth:`put_service`, :meth:`drop_service`,
    :meth:`put_check` and :meth:`drop_check`), so that reads and writes cost what the
    service or node they touch holds, not what the whole catalog holds."""

    name: str
    index: int = 1  # raft index
    catalog_index: int = 1
    tables_index: int = 1  # the last write that changed a node, service or check
    nodes_index: int = 1  # the last write that changed a node
    checks_index: int = 1  # the last write that changed a check
    extinction_index: int = 0  # the last write that removed a service name's last instance
    service_index: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    checks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    by_name: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    services_on: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    checks_on: dict[str, set[tuple[str, str]]] = field(default_factory=dict)

    def put_service(self, key: tuple[str, str], record: dict[str, Any]) -> None:
        old = self.services.get(key)
        if old is not None:
            self.by_name[old["Service"]].discard(key)
        self.services[key] = record
        self.by_name.setdefault(record["Service"], set()).add(key)
        self.services_on.setdefault(key[0], set()).add(key)

    def drop_service(self, key: tuple[str, str]) -> dict[str, Any] | None:
        old = self.services.pop(key, None)
        if old is not None:
            self.by_name[old["Service"]].discard(key)
            self.services_on[key[0]].discard(key)
        return old

    def put_check(self, key: tuple[str, str], record: dict[str, Any]) -> None:
        self.checks[key] = record
        self.checks_on.setdefault(key[0], set()).add(key)
        self.checks_index = self.index

    def drop_check(self, key: tuple[str, str]) -> dict[str, Any] | None:
        old = self.checks.pop(key, None)
        if old is not None:
            self.checks_on[key[0]].discard(key)
            self.checks_index = self.index
        return old

    def names_on(self, node: str) -> set[str]:
        return {self.services[k]["Service"] for k in self.services_on.get(node, ())}

    def exists(self, name: str) -> bool:
        return bool(self.by_name.get(name))

    def health_index(self, name: str) -> int:
        """Consul's index of a service's health: its own, or for a service not in the
        catalog the index of the last service name to vanish from it (before any did, the
        last change to any node, service or check)."""
        if self.exists(name):
            return self.service_index.get(name, self.catalog_index)
        return self.extinction_index or self.tables_index

    def catalog(self) -> dict[str, list[str]]:
        """Name -> tags of its instances, each tag once (sorted: Consul lists them in no
        set order)."""
        result: dict[str, set[str]] = {}
        for name, keys in self.by_name.items():
            if keys:
                tags = result.setdefault(name, set())
                for key in keys:
                    tags.update(self.services[key]["Tags"])
        return {name: sorted(tags) for name, tags in sorted(result.items())}

    def entries(self, name: str) -> list[dict[str, Any]]:
        found = []
        for key in sorted(self.by_name.get(name, ())):
            node_name, service_id = key
            checks = [
                c
                for c in (self.checks[k] for k in sorted(self.checks_on.get(node_name, ())))
                if c["ServiceID"] in ("", service_id)
            ]
            checks.sort(key=lambda c: (c["ServiceID"] != "", c["CheckID"]))
            record = {"Node": self.nodes[node_name], "Service": self.services[key]}
            found.append(copy.deepcopy({**record, "Checks": checks}))
        return found


class ConsulEmulator(LoopbackServer):
    """The emulated agent on 127.0.0.1 (see the module docstring).

    ``async with ConsulEmulator() as agent:`` starts it on a free port; ``agent.address``
    is ``127.0.0.1:<port>`` and ``agent.url`` the base URL.
    """

    def __init__(
        self,
        *,
        datacenters: tuple[str, ...] = ("dc1",),
        acl_token: str | None = None,
        acl_readers: Mapping[str, tuple[str, ...]] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        jitter: bool = False,
        node_name: str = "emulator",
        server_service: bool = True,
    ) -> None:
        super().__init__(ssl_context=ssl_context)
        self.datacenters = {name: _Datacenter(name) for name in datacenters}
        self.default_dc = datacenters[0]
        self.acl_token = acl_token
        self.acl_readers = dict(acl_readers or {})
        self.jitter = jitter
        self.node_name = node_name
        self.requests: list[Request] = []
        # knobs
        self.immediate = False
        self.zero_index = False
        self.fail_status: int | None = None
        self.fail_body = "rpc error: emulated failure"
        self.max_conns_per_client: int | None = None
        self._failing_services: dict[str, _ServiceFailure] = {}
        self.service_failures: dict[str, int] = {}  # service name -> failed answers given
        self.refused = 0  # requests answered 429 for max_conns_per_client
        self._conns: dict[str, set[asyncio.BaseTransport]] = {}  # client address -> open
        self._changed = asyncio.Event()
        self._generation = 0  # bumped by reset_index: blocked queries return
        if server_service:
            for dc in self.datacenters.values():
                self._apply_register(self._server_registration(dc.name), dc)

    # -- life cycle (see LoopbackServer) -------------------------------------------------

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/catalog/services", self._catalog_services)
        router.add_get("/v1/health/service/{name}", self._health_service)
        router.add_get("/v1/health/state/{state}", self._health_state)
        router.add_get("/v1/catalog/nodes", self._catalog_nodes)
        router.add_put("/v1/catalog/register", self._register)
        router.add_put("/v1/catalog/deregister", self._deregister)
        router.add_get("/v1/status/leader", self._leader)
        router.add_get("/v1/agent/self", self._agent_self)

    # -- knobs ----------------------------------------------------------------------

    def reset_index(self, value: int = 1) -> None:
        """Indexes go back to at most ``value`` (as after a snapshot restore); blocked
        queries return at once with the lower index."""
        for dc in self.datacenters.values():
            dc.index = value
            dc.catalog_index = min(dc.catalog_index, value)
            dc.service_index = {k: min(v, value) for k, v in dc.service_index.items()}
        self._generation += 1
        self._notify()

    def fail(self, status: int | None = 500, body: str | None = None) -> None:
        """Reads answer ``status`` from now on (None: normal again)."""
        self.fail_status = status
        if body is not None:
            self.fail_body = body
        self._notify()

    def fail_service(
        self,
        name: str,
        status: int | None = 500,
        *,
        body: str | None = None,
        times: int | None = None,
    ) -> None:
        """``GET /v1/health/service/<name>`` (every datacenter) answers ``status`` with
        ``body`` (default :attr:`fail_body`) the next ``times`` times, or until called
        again with ``status`` None.  With status 200 the body is sent as the reply, with
        a valid ``X-Consul-Index``: a malformed reply.  Blocked reads answer at once."""
        if status is None:
            self._failing_services.pop(name, None)
        else:
            text = self.fail_body if body is None else body
            self._failing_services[name] = _ServiceFailure(status, text, times)
        self._notify()

    def count(self, path_prefix: str = "/v1/", since: float = 0.0) -> int:
        """Requests for paths starting with ``path_prefix`` since ``since`` (monotonic)."""
        return sum(1 for r in self.requests if r.path.startswith(path_prefix) and r.at >= since)

    def _server_registration(self, datacenter: str) -> dict[str, Any]:
        """What a Consul server registers for itself in its datacenter's catalog: its
        node, the ``consul`` service on the server RPC port 8300 and the node's
        ``serfHealth`` check.  So ``/v1/catalog/services`` always lists ``consul``."""
        meta = {"raft_version": "3", "serf_protocol_current": "2", "version": "1.18.0"}
        return {
            "Datacenter": datacenter,
            "Node": self.node_name,
            "Address": "127.0.0.1",
            "Service": {"ID": "consul", "Service": "consul", "Port": 8300, "Meta": meta},
            "Check": {
                "CheckID": "serfHealth",
                "Name": "Serf Health Status",
                "Status": "passing",
                "Output": "Agent alive and reachable",
            },
        }

    # -- in-process writes (the HTTP handlers use the same code) ---------------------

    def register(self, payload: Mapping[str, Any]) -> None:
        """``PUT /v1/catalog/register`` without HTTP (works while stopped too)."""
        self._apply_register(payload, self._dc(_field(payload, "Datacenter") or None))

    def deregister(self, payload: Mapping[str, Any]) -> None:
        """``PUT /v1/catalog/deregister`` without HTTP."""
        self._apply_deregister(payload, self._dc(_field(payload, "Datacenter") or None))

    # -- plumbing -------------------------------------------------------------------

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def _handle(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        params = {k: v for k, v in request.query.items()}
        token = self._token(request)
        self.requests.append(Request(request.method, request.path, params, token, time.monotonic()))
        if self._over_limit(request):
            self.refused += 1
            text = (
                "Your IP is issuing too many concurrent connections, please rate limit your calls\n"
            )
            return web.Response(status=429, text=text, headers={"Connection": "close"})
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except HTTPError as exc:
            policy = "allow" if self.acl_token is None else "deny"
            headers = {"X-Consul-Default-Acl-Policy": policy}
            return web.Response(status=exc.status, text=exc.text, headers=headers)

    def _over_limit(self, request: web.Request) -> bool:
        """Whether ``request`` came on a connection beyond ``max_conns_per_client``."""
        transport = request.transport
        if self.max_conns_per_client is None or transport is None:
            return False
        open_ = self._conns.setdefault(request.remote or "", set())
        open_ -= {t for t in open_ if t.is_closing()}
        if transport in open_:
            return False
        if len(open_) >= self.max_conns_per_client:
            return True
        open_.add(transport)
        return False

    @staticmethod
    def _token(request: web.Request) -> str | None:
        token = request.headers.get("X-Consul-Token")
        if not token:
            auth = request.headers.get("Authorization", "")
            if auth.lower().startswith("bearer "):
                token = auth[7:].strip()
        return token or request.query.get("token") or None

    def _dc(self, name: str | None) -> _Datacenter:
        dc = self.datacenters.get(name or self.default_dc)
        if dc is None:
            raise HTTPError(500, "No path to datacenter")
        return dc

    def _read_access(self, request: web.Request) -> tuple[str, ...] | None:
        """The service name prefixes the request's token may read (None: all of them;
        ``()``: none, the anonymous token)."""
        if self.acl_token is None:
            return None
        token = self._token(request)
        if token is None:
            return ()
        if token == self.acl_token:
            return None
        if token not in self.acl_readers:
            raise HTTPError(403, "ACL not found")
        return self.acl_readers[token]

    def _write_access(self, request: web.Request, permission: str, resource: str) -> None:
        """403 as Consul answers it unless the request has the management token."""
        if self.acl_token is None:
            return
        token = self._token(request)
        if token == self.acl_token:
            return
        if token is None:
            raise HTTPError(
                403,
                f"Permission denied: anonymous token lacks permission '{permission}' on "
                f'"{resource}". The anonymous token is used implicitly when a request does '
                "not specify a token.",
            )
        if token not in self.acl_readers:
            raise HTTPError(403, "ACL not found")
        accessor = uuid.uuid5(uuid.NAMESPACE_OID, token)
        raise HTTPError(
            403,
            f"Permission denied: token with AccessorID '{accessor}' lacks permission "
            f"'{permission}' on \"{resource}\"",
        )

    @staticmethod
    def _readable(name: str, prefixes: tuple[str, ...] | None) -> bool:
        return prefixes is None or any(name.startswith(p) for p in prefixes)

    def _blocking_params(self, request: web.Request) -> tuple[int, float]:
        query = request.query
        if "stale" in query and "consistent" in query:
            raise HTTPError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
        try:
            index = int(query.get("index", "0"))
            if index < 0:
                raise ValueError
        except ValueError:
            raise HTTPError(400, "Invalid index") from None
        try:
            wait = parse_go_duration(query["wait"]) if "wait" in query else DEFAULT_WAIT
        except ValueError:
            raise HTTPError(400, "Invalid wait time") from None
        return index, min(wait, MAX_WAIT) or DEFAULT_WAIT

    async def _block(
        self, request: web.Request, current: Callable[[], int], service: str | None = None
    ) -> None:
        """Wait as a blocking query does (see the module docstring); a read of
        ``service`` returns at once when that service starts failing."""
        index, wait = self._blocking_params(request)
        if index <= 0 or self.immediate:
            return
        if self.jitter:
            wait += random.uniform(0, wait / 16)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        generation = self._generation
        while current() <= index and generation == self._generation:
            if self.fail_status is not None or self.immediate or service in self._failing_services:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return

    def _reply(self, request: web.Request, data: Any, index: int, filtered: bool) -> web.Response:
        if self.fail_status is not None:
            raise HTTPError(self.fail_status, self.fail_body)
        headers = {
            "X-Consul-Default-Acl-Policy": "allow" if self.acl_token is None else "deny",
            "X-Consul-Index": "0" if self.zero_index else str(index),
            "X-Consul-KnownLeader": "true",
            "X-Consul-LastContact": "0",
            "X-Consul-Effective-Consistency": "stale" if "stale" in request.query else "leader",
            "X-Consul-Query-Backend": "blocking-query",
        }
        if filtered:
            headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
        return web.json_response(data, headers=headers)

    # -- handlers -------------------------------------------------------------------

    async def _catalog_services(self, request: web.Request) -> web.Response:
        self._check_failing()
        dc = self._dc(request.query.get("dc"))
        prefixes = self._read_access(request)
        await self._block(request, lambda: dc.catalog_index)
        catalog = dc.catalog()
        data = {k: v for k, v in catalog.items() if self._readable(k, prefixes)}
        filtered = bool(prefixes) and len(data) < len(catalog)  # never said to anonymous
        return self._reply(request, data, dc.catalog_index, filtered)

    async def _health_state(self, request: web.Request) -> web.Response:
        self._check_failing()
        state = request.match_info["state"]
        if state not in ("any", "passing", "warning", "critical"):
            raise HTTPError(400, f"Invalid check state: {state!r}")
        dc = self._dc(request.query.get("dc"))
        prefixes = self._read_access(request)
        keep = _filter(request.query.get("filter"))
        await self._block(request, lambda: dc.checks_index)
        checks = [
            copy.deepcopy(c)
            for _, c in sorted(dc.checks.items())
            if (state == "any" or c["Status"] == state)
            and (not c["ServiceName"] or self._readable(c["ServiceName"], prefixes))
            and keep(c)
        ]
        return self._reply(request, checks, dc.checks_index, False)

    async def _catalog_nodes(self, request: web.Request) -> web.Response:
        self._check_failing()
        dc = self._dc(request.query.get("dc"))
        self._read_access(request)
        keep = _filter(request.query.get("filter"))
        await self._block(request, lambda: dc.nodes_index)
        nodes = [copy.deepcopy(n) for _, n in sorted(dc.nodes.items()) if keep(n)]
        return self._reply(request, nodes, dc.nodes_index, False)

    async def _health_service(self, request: web.Request) -> web.Response:
        self._check_failing()
        name = request.match_info["name"]
        dc = self._dc(request.query.get("dc"))
        prefixes = self._read_access(request)
        # Consul watches only the service itself: a read of one not in the catalog that
        # blocks (its index is not past ``index``) waits until it is registered, and if
        # its wait runs out first answers the index it started with, whatever that index
        # became meanwhile
        existed, started = dc.exists(name), dc.health_index(name)

        def current() -> int:
            return dc.health_index(name) if existed or dc.exists(name) else started

        await self._block(request, current, name)
        index = current()
        failure = self._service_failure(name, index)
        if failure is not None:
            return failure
        entries = dc.entries(name)
        filtered = bool(prefixes) and bool(entries) and not self._readable(name, prefixes)
        if not self._readable(name, prefixes):
            entries = []
        if "passing" in request.query:
            entries = [e for e in entries if all(c["Status"] == "passing" for c in e["Checks"])]
        return self._reply(request, entries, index, filtered)

    def _service_failure(self, name: str, index: int) -> web.Response | None:
        """The failed answer for a health read of ``name``, if it is failing (counted)."""
        failure = self._failing_services.get(name)
        if failure is None:
            return None
        if failure.times is not None:
            failure.times -= 1
            if failure.times <= 0:
                del self._failing_services[name]
        self.service_failures[name] = self.service_failures.get(name, 0) + 1
        headers = {"X-Consul-Index": str(index)} if failure.status == 200 else {}
        return web.Response(status=failure.status, text=failure.body, headers=headers)

    async def _register(self, request: web.Request) -> web.Response:
        payload = await self._json(request)
        service = _field(payload, "Service")
        name = _field(service, "Service") if isinstance(service, Mapping) else None
        if name:
            self._write_access(request, "service:write", str(name))
        else:
            self._write_access(request, "node:write", str(_field(payload, "Node")))
        self._apply_register(payload, self._dc(_field(payload, "Datacenter") or None))
        return web.json_response(True)

    async def _deregister(self, request: web.Request) -> web.Response:
        payload = await self._json(request)
        self._write_access(request, "node:write", str(_field(payload, "Node")))
        self._apply_deregister(payload, self._dc(_field(payload, "Datacenter") or None))
        return web.json_response(True)

    async def _leader(self, request: web.Request) -> web.Response:
        return web.json_response("127.0.0.1:8300")

    async def _agent_self(self, request: web.Request) -> web.Response:
        self._write_access(request, "agent:read", self.node_name)
        config = {"Datacenter": self.default_dc, "NodeName": self.node_name}
        conns = 200 if self.max_conns_per_client is None else self.max_conns_per_client
        return web.json_response(
            {
                "Config": {**config, "Version": "1.18.0-emulated"},
                "DebugConfig": {"HTTPMaxConnsPerClient": conns},
            }
        )

    def _check_failing(self) -> None:
        if self.fail_status is not None:
            raise HTTPError(self.fail_status, self.fail_body)

    @staticmethod
    async def _json(request: web.Request) -> Mapping[str, Any]:
        try:
            payload = json.loads(await request.text() or "null")
        except ValueError:
            raise HTTPError(400, "Request decode failed: invalid JSON") from None
        if not isinstance(payload, dict):
            raise HTTPError(400, "Request decode failed: expected an object")
        return payload

    # -- writes ---------------------------------------------------------------------

    def _apply_register(self, payload: Mapping[str, Any], dc: _Datacenter) -> None:
        node_name = _field(payload, "Node")
        if not isinstance(node_name, str) or not node_name:
            raise HTTPError(400, "Must provide node")
        update_node = not _field(payload, "SkipNodeUpdate") or node_name not in dc.nodes
        address = _field(payload, "Address")
        if update_node and (not isinstance(address, str) or not address):
            raise HTTPError(400, "Must provide address")
        service_in = _field(payload, "Service")
        if isinstance(service_in, Mapping) and not _field(service_in, "Service"):
            raise HTTPError(400, "Must provide service name")
        if isinstance(service_in, Mapping) and _field(service_in, "Kind") == "connect-proxy":
            proxy = _field(service_in, "Proxy")
            target = _field(proxy, "DestinationServiceName") if isinstance(proxy, Mapping) else ""
            if not isinstance(target, str) or not target.strip():
                raise HTTPError(
                    400, "Proxy.DestinationServiceName must be non-empty for Connect proxy services"
                )
        dc.index += 1
        touched: set[str] = set()  # service names whose health entries changed
        catalog_changed = changed = False
        if update_node:
            node = {
                "ID": _field(payload, "ID") or "",
                "Node": node_name,
                "Address": address,
                "Datacenter": dc.name,
                "TaggedAddresses": _field(payload, "TaggedAddresses") or None,
                "Meta": _field(payload, "NodeMeta") or None,
            }
            stored = self._stored(dc.nodes.get(node_name), node, dc.index)
            if stored is not None:
                dc.nodes[node_name] = stored
                dc.nodes_index = dc.index
                changed = True
                touched |= dc.names_on(node_name)
        if isinstance(service_in, Mapping):
            name = _field(service_in, "Service")
            service = {
                "ID": _field(service_in, "ID") or name,
                "Service": name,
                "Kind": _field(service_in, "Kind") or "",
                "Proxy": _field(service_in, "Proxy") or {},
                "Tags": _field(service_in, "Tags") or [],
                "Address": _field(service_in, "Address") or "",
                "TaggedAddresses": _field(service_in, "TaggedAddresses") or {},
                "Meta": _field(service_in, "Meta") or None,
                "Port": _field(service_in, "Port") or 0,
                "Weights": _field(service_in, "Weights") or dict(_DEFAULT_WEIGHTS),
                "EnableTagOverride": bool(_field(service_in, "EnableTagOverride")),
            }
            # as Consul's JSON (``omitempty``) leaves them out: an empty Kind (a typical
            # service), no TaggedAddresses, a Port of 0; Meta is null when none was given
            for omitted, empty in (("Kind", ""), ("TaggedAddresses", {}), ("Port", 0)):
                if service[omitted] == empty:
                    del service[omitted]
            key = (node_name, service["ID"])
            old = dc.services.get(key)
            stored = self._stored(old, service, dc.index)
            if stored is not None:
                dc.put_service(key, stored)
                catalog_changed = changed = True
                touched.add(name)
                if old is not None:
                    touched.add(old["Service"])
        checks = list(_field(payload, "Checks") or [])
        if isinstance(_field(payload, "Check"), Mapping):
            checks.append(_field(payload, "Check"))
        for check_in in checks:
            check_touched = self._register_check(dc, node_name, check_in)
            if check_touched is not None:
                changed = True
                touched |= check_touched
        self._bump(dc, touched, catalog_changed, changed)

    def _register_check(
        self, dc: _Datacenter, node_name: str, check_in: Mapping[str, Any]
    ) -> set[str] | None:
        """Store one check of a registration: the service names whose health it touched,
        or None if it changed nothing."""
        check_id = _field(check_in, "CheckID") or _field(check_in, "Name")
        if not check_id:
            raise HTTPError(400, "Must provide a CheckID or Name")
        service_id = _field(check_in, "ServiceID") or ""
        service_name = ""
        service: dict[str, Any] = {}
        if service_id:
            found = dc.services.get((node_name, service_id))
            if found is None:
                raise HTTPError(500, f"Missing service registration for {service_id}")
            service, service_name = found, found["Service"]
        check = {
            "Node": node_name,
            "CheckID": check_id,
            "Name": _field(check_in, "Name") or check_id,
            "Status": _field(check_in, "Status") or "critical",
            "Notes": _field(check_in, "Notes") or "",
            "Output": _field(check_in, "Output") or "",
            "ServiceID": service_id,
            "ServiceName": service_name,
            "ServiceTags": list(service["Tags"]) if service_id else [],
            "Type": _field(check_in, "Type") or "",
            "Interval": _field(check_in, "Interval") or "",
            "Timeout": _field(check_in, "Timeout") or "",
            "ExposedPort": _field(check_in, "ExposedPort") or 0,
            "Definition": _field(check_in, "Definition") or {},
        }
        stored = self._stored(dc.checks.get((node_name, check_id)), check, dc.index)
        if stored is None:
            return None
        dc.put_check((node_name, check_id), stored)
        return {service_name} if service_name else dc.names_on(node_name)

    def _apply_deregister(self, payload: Mapping[str, Any], dc: _Datacenter) -> None:
        node_name = _field(payload, "Node")
        if not isinstance(node_name, str) or not node_name:
            raise HTTPError(400, "Must provide node")
        service_id, check_id = _field(payload, "ServiceID"), _field(payload, "CheckID")
        dc.index += 1
        touched: set[str] = set()
        catalog_changed = changed = False
        if service_id:
            service = dc.drop_service((node_name, service_id))
            if service is not None:
                touched.add(service["Service"])
                catalog_changed = True
                changed = True
                for key in list(dc.checks_on.get(node_name, ())):
                    if dc.checks[key]["ServiceID"] == service_id:
                        dc.drop_check(key)
        elif check_id:
            check = dc.drop_check((node_name, check_id))
            if check is not None:
                changed = True
                touched |= {check["ServiceName"]} if check["ServiceID"] else dc.names_on(node_name)
        elif node_name in dc.nodes:
            changed = True
            touched |= dc.names_on(node_name)
            catalog_changed = bool(touched)
            del dc.nodes[node_name]
            dc.nodes_index = dc.index
            for key in list(dc.services_on.get(node_name, ())):
                dc.drop_service(key)
            for key in list(dc.checks_on.get(node_name, ())):
                dc.drop_check(key)
        self._bump(dc, touched, catalog_changed, changed)

    @staticmethod
    def _stored(
        old: dict[str, Any] | None, value: dict[str, Any], index: int
    ) -> dict[str, Any] | None:
        """``value`` with Create/ModifyIndex, to replace ``old``; None if it changes
        nothing."""
        if old is not None:
            bare = {k: v for k, v in old.items() if k not in ("CreateIndex", "ModifyIndex")}
            if bare == value:
                return None
        created = old["CreateIndex"] if old is not None else index
        return {**value, "CreateIndex": created, "ModifyIndex": index}

    def _bump(
        self, dc: _Datacenter, touched: set[str], catalog_changed: bool, changed: bool
    ) -> None:
        """After a write: move the indexes of what it changed (``changed``: anything at
        all, a node without services included) and wake the blocked queries."""
        for name in touched:
            dc.service_index[name] = dc.index
            if not dc.exists(name):
                dc.extinction_index = dc.index
        if catalog_changed:  # nodes are listed with their services: theirs moves too
            dc.catalog_index = dc.nodes_index = dc.index
        if changed or touched or catalog_changed:
            dc.tables_index = dc.index
            self._notify()


STATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "address": str,
    "port": int,
    "id": str,
    "node": str,
    "tags": list,
    "meta": dict,
    "status": str,
    "datacenter": str,
}


def from_state(document: Any) -> ConsulEmulator:
    """An emulator with the services of a state file (see :mod:`.standalone`)::

    services:                 # each one instance, registered in the catalog
    - name: web               # required: the service name
      address: 127.0.0.1      # required: its node's address (and so the instance's)
      port: 8080              # required
      id: web-1               # default: <name>-<n>, n counting that name's instances
      node: vm-1              # default: the id; instances may share a node
      tags: [version|v1]
      meta: {protocol: http}
      status: passing         # its check: passing (default), warning or critical
      datacenter: dc1         # default dc1; every one named is served
    """
    services = standalone.entries(document, "services", STATE_FIELDS, ("name", "address", "port"))
    datacenters = list(dict.fromkeys(["dc1", *(s.get("datacenter", "dc1") for s in services)]))
    emulator = ConsulEmulator(datacenters=tuple(datacenters))
    counts: dict[str, int] = {}
    for number, service in enumerate(services, 1):
        counts[service["name"]] = counts.get(service["name"], 0) + 1
        service_id = service.get("id", f"{service['name']}-{counts[service['name']]}")
        status = service.get("status", "passing")
        if status not in ("passing", "warning", "critical"):
            raise standalone.StateError(
                f"services[{number}]: status must be passing, warning or critical"
            )
        try:
            emulator.register(
                {
                    "Datacenter": service.get("datacenter", "dc1"),
                    "Node": service.get("node", service_id),
                    "Address": service["address"],
                    "Service": {
                        "ID": service_id,
                        "Service": service["name"],
                        "Port": service["port"],
                        "Tags": service.get("tags", []),
                        "Meta": service.get("meta", {}),
                    },
                    "Check": {
                        "CheckID": f"service:{service_id}",
                        "Name": "health",
                        "ServiceID": service_id,
                        "Status": status,
                    },
                }
            )
        except HTTPError as exc:
            raise standalone.StateError(f"services[{number}]: {exc.text}") from None
    return emulator


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.support.emulators.consul [--port P] [FILE]``: serve until Ctrl-C
    (see :mod:`.standalone`; the file's format is :func:`from_state`'s)."""
    standalone.run(
        "consul",
        8500,
        from_state,
        argv,
        file_help="services to load (YAML or JSON: see from_state in consul.py)",
    )


if __name__ == "__main__":
    main()
