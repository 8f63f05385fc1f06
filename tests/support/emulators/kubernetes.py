"""A small, faithful emulator of the Kubernetes API server's list/watch protocol, for tests.

Served, read-only (``GET``; other methods answer 405), JSON only:

================================================  =========================================
``/api/v1/{services,pods,endpoints}``             list/watch in every namespace
``/api/v1/namespaces/{ns}/{plural}[/{name}]``     list/watch in one namespace; one object
``/api/v1/{nodes,namespaces}[/{name}]``           cluster-scoped list/watch; one object
``/apis/discovery.k8s.io/v1[/namespaces/{ns}]``   ``/endpointslices[/{name}]``, the same
``/version``, ``/api``, ``/apis``, ``/api/v1``,   legacy (unaggregated) discovery documents
``/apis/discovery.k8s.io[/v1]``
================================================  =========================================

One global resourceVersion (RV) counter for all kinds, an integer sent as a string (1 at
start), bumped by every change like etcd's revision.  Objects carry
``metadata.resourceVersion`` (their last change), ``uid`` and ``creationTimestamp`` (set
on creation over whatever the caller sent, kept on update).  Lists answer
``metadata.resourceVersion`` = the current RV and items sorted by namespace/name
*without* ``kind``/``apiVersion``, as the apiserver does (a GET and watch events carry
them).

Watches (``watch=true``/``1``) answer 200 at once, chunked, one ``{"type", "object"}``
JSON event a line, as the apiserver's watch cache does:

* ``resourceVersion`` empty or ``0``: a synthetic ``ADDED`` per current object (each
  with its own RV), then live events.
* ``resourceVersion=N``: every kept event after N, then live.  If N is older than the
  history (N < oldest kept RV - 1; the last ``history`` events of all kinds are kept,
  :meth:`compact` forgets them all), one ``ERROR`` event whose object is the Status
  ``{"code": 410, "reason": "Expired", "message": "too old resource version: N (M)"}``,
  M being the RV before the oldest kept event (after :meth:`compact`, the RV then), and
  the stream ends.  A future N is
  accepted (events after N), as by the apiserver.
* ``allowWatchBookmarks=true``: every :attr:`bookmark_interval` s (later while events are
  queued: a bookmark never overtakes one) a ``BOOKMARK`` whose object is ``{kind,
  apiVersion, metadata: {resourceVersion: <current global RV>}}`` (the apiserver sends
  one about a minute apart, with zero-valued fields such as ``creationTimestamp: null``),
  but only once that RV is past the one the watch started from: as the apiserver, which
  sends none while it has nothing newer than that (its bookmarks carry the last RV its
  watch cache of that resource saw, from its events or etcd's progress notifications).
* ``timeoutSeconds=T`` (fractions accepted, for fast tests): the stream ends cleanly
  after T s; without it the stream stays open (the apiserver closes it after 30-60 min).
* ``labelSelector`` (``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``, ``a
  notin (x)``) and ``fieldSelector`` (``=``, ``==``, ``!=`` on ``metadata.name``,
  ``metadata.namespace`` if namespaced, and a few per kind such as pods'
  ``spec.nodeName``; others answer 400 ``field label not supported``) filter lists and
  watches.  Per event, as the watch cache: matching now and before: ``MODIFIED``; now
  only: ``ADDED``; before only (it stopped matching, or was deleted): ``DELETED`` with
  the previous state and the event's RV.  So a ``DELETED`` always carries the RV of its
  deletion.

Errors are Status objects (``{"kind": "Status", "apiVersion": "v1", "metadata": {},
"status": "Failure", "message", "reason", "code"}``): 401 on every path without
``Authorization: Bearer <token>`` when ``token`` is set, 404, 405, 400 for bad selectors,
``limit``, ``continue`` or a list's RV, 500 for a watch's bad RV (as the apiserver), and
whatever :meth:`fail_next` asks.  Knobs: :meth:`apply`, :meth:`delete`,
:meth:`get`, :meth:`compact`, :meth:`drop_watches` (a reset mid-stream, or with
``graceful`` a clean end), :meth:`fail_next`, :meth:`stop`/:meth:`start` (connections
cut; the same port and state after), :attr:`forbidden` (resource plurals the caller
may not read: 403 as RBAC answers), :attr:`requests`, :attr:`open_watches`,
:attr:`watch_ends`, :attr:`bookmarks` (every bookmark sent: kind and version), and
:attr:`on_request` (called with each request before it is answered, to change the state
at a precise moment, e.g. compact between two pages of a list).

Lists honour ``limit``/``continue``: later pages come from the snapshot of the first, with
``remainingItemCount`` (left out when a label or field selector filters the list), as the
apiserver does; a token it did not hand out answers 400 BadRequest (``invalid continue
token``), one older than :meth:`compact` 410 Expired, and a ``resourceVersion`` beside a
token 400.  ``resourceVersion=0`` lists are whole, whatever the ``limit`` (the apiserver
serves them from its watch cache, unpaged).

:meth:`apply` validates EndpointSlices as the apiserver does (``addressType`` required
and known; 1 to 100 addresses an endpoint, each an IP of that type that is not
unspecified, loopback or link-local) and raises ValueError with the apiserver's words;
``loopback_endpoints=True`` lets loopback addresses in (the apiserver never does), for
tests whose pods are local servers.

Standalone (no kubectl needed): ``python -m tests.support.emulators.kubernetes [--port P]
FILES...`` serves the Namespaces, Services, EndpointSlices, Pods and Nodes of the YAML
FILES (several documents a file, or a ``List``; see :func:`load`) on 127.0.0.1, writes a
kubeconfig (``--kubeconfig``, else in a temporary directory) and prints its path, and
runs until Ctrl-C.  ``--help`` tells the rest.

Not covered: writes over HTTP (use :meth:`apply`/:meth:`delete`),
``resourceVersion``/``resourceVersionMatch`` on lists and gets (always the newest state;
the apiserver waits up to 3 s for an RV it has not reached, then answers 504),
``sendInitialEvents`` (streaming lists), watches on an object's path or under
``/watch/``, protobuf/CBOR/Table, aggregated discovery, validation of other kinds (a
Service without a port number is stored: a malformed object a real server refuses),
defaulting (no cluster IP is allocated) and admission (a namespace need not exist),
finalizers and graceful deletion, ``generation``, managed fields, TLS, RBAC, priority and
fairness (use :meth:`fail_next`).
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import itertools
import json
import re
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from aiohttp import web

from tests.support.emulators.base import LoopbackServer

__all__ = ["KubeEmulator", "Request", "load"]

Obj = dict[str, Any]


@dataclass(frozen=True)
class _Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool
    fields: tuple[str, ...] = ()  # field selector labels besides metadata.name/namespace

    @property
    def prefix(self) -> str:
        return "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"


_POD_FIELDS: tuple[str, ...] = ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName")
_POD_FIELDS += ("spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP")
_KINDS = (
    _Kind("v1", "Namespace", "namespaces", False, ("status.phase",)),
    _Kind("v1", "Node", "nodes", False, ("spec.unschedulable",)),
    _Kind("v1", "Service", "services", True, ("spec.clusterIP", "spec.type")),
    _Kind("v1", "Endpoints", "endpoints", True),
    _Kind("v1", "Pod", "pods", True, _POD_FIELDS),
    _Kind("discovery.k8s.io/v1", "EndpointSlice", "endpointslices", True),
)
_BY_TYPE = {(k.api_version, k.kind): k for k in _KINDS}
_BY_PATH = {(k.api_version, k.plural): k for k in _KINDS}
_BOOL_FIELDS = {"spec.unschedulable", "spec.hostNetwork"}  # Go bools: "false" when unset
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}
_REASONS |= {405: "MethodNotAllowed", 409: "Conflict", 410: "Gone", 422: "Invalid"}
_REASONS |= {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
_REASONS |= {504: "Timeout"}
_LABEL_REQ = re.compile(
    r"\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*(?:(?P<op>==|=|!=)\s*"
    r"(?P<value>[-A-Za-z0-9_.]*)|\s(?P<set>in|notin)\s*\((?P<values>[^()]*)\))?\s*"
)
_PAGE_TOKEN = re.compile(r"page-\d+-\d+")  # the continue tokens this emulator hands out
_FIELD_REQ = re.compile(r"\s*(?P<key>[^=!\s]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^,]*?)\s*")


class Request(NamedTuple):
    """One request the emulator received."""

    at: float  # time.monotonic()
    method: str
    path: str
    query: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Event:
    rv: int
    kind: _Kind
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj  # the new state (DELETED: the last state with the deletion's RV)
    prev: Obj | None


@dataclass(eq=False)
class _Watch:
    kind: _Kind
    request: web.Request
    queue: asyncio.Queue[_Event | None] = field(default_factory=asyncio.Queue)


def _status(code: int, message: str, reason: str | None = None, details: Obj | None = None) -> Obj:
    """A ``metav1.Status`` failure object."""
    obj: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
    obj |= {"message": message, "reason": reason or _REASONS.get(code, "Unknown")}
    if details:
        obj["details"] = details
    return obj | {"code": code}


class _APIError(Exception):
    def __init__(self, status_obj: Obj, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_obj["message"])
        self.status = status_obj
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = json.dumps(self.status) + "\n"
        return web.Response(
            status=self.status["code"],
            text=body,
            content_type="application/json",
            headers=self.headers,
        )


def _bool(text: str | None) -> bool:  # Go's strconv.ParseBool, lenient
    return (text or "").lower() in ("1", "t", "true")


def _with_rv(obj: Obj, rv: int) -> Obj:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}


class _Selector:
    """Namespace + label selector + field selector of one list or watch."""

    def __init__(self, kind: _Kind, namespace: str | None, labels: str, fields: str) -> None:
        self.namespace = namespace
        self.labels: list[tuple[str, str, set[str]]] = []
        for part in re.split(r",(?![^(]*\))", labels) if labels.strip() else []:
            m = _LABEL_REQ.fullmatch(part)
            if m is None or (m["neg"] and (m["op"] or m["set"])):
                raise _APIError(_status(400, f"unable to parse requirement: {part.strip()!r}"))
            op = "!" if m["neg"] else m["op"] or m["set"] or "exists"
            values = {m["value"] or ""} if m["op"] else set()
            if m["set"]:
                values = {v.strip() for v in m["values"].split(",")}
            self.labels.append((m["key"], "=" if op == "==" else op, values))
        allowed = {"metadata.name", *kind.fields}
        allowed |= {"metadata.namespace"} if kind.namespaced else set()
        self.fields: list[tuple[str, bool, str]] = []  # (label, equal, value)
        for part in fields.split(",") if fields.strip() else []:
            m = _FIELD_REQ.fullmatch(part)
            if m is None:
                raise _APIError(_status(400, f"invalid field selector: {part.strip()!r}"))
            if m["key"] not in allowed:
                raise _APIError(_status(400, f"field label not supported: {m['key']}"))
            self.fields.append((m["key"], m["op"] != "!=", m["value"]))

    def __call__(self, obj: Obj) -> bool:
        meta = obj["metadata"]
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        for key, op, values in self.labels:
            ok = {
                "=": labels.get(key) in values,
                "!=": labels.get(key) not in values,  # absent keys match, as in Kubernetes
                "in": key in labels and labels[key] in values,
                "notin": labels.get(key) not in values,
                "exists": key in labels,
                "!": key not in labels,
            }[op]
            if not ok:
                return False
        return all((self._field(obj, f) == v) == eq for f, eq, v in self.fields)

    @staticmethod
    def _field(obj: Obj, label: str) -> str:
        value: Any = obj
        for part in label.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, bool) or (value is None and label in _BOOL_FIELDS):
            return "true" if value else "false"
        return "" if value is None else str(value)


_ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")
_MAX_ENDPOINTS, _MAX_ADDRESSES = 1000, 100


def _endpoint_ip(address: str, path: str, version: int, allow_loopback: bool) -> list[str]:
    """The apiserver's complaints about one address (at ``path``, e.g.
    ``endpoints[0].addresses[1]``) of an IPv4/IPv6 EndpointSlice."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        example = "(e.g. 10.9.8.7 or 2001:db8::ffff)"
        return [f'{path}: Invalid value: "{address}": must be a valid IP address, {example}']
    said = f'{path}: Invalid value: "{address}": '
    errors = []
    if ip.version != version:  # named by the list, not the item
        errors.append(
            f"{said.replace(path, path.rpartition('[')[0])}must be an IPv{version} address"
        )
    if ip.is_unspecified:
        errors.append(f"{said}may not be unspecified ({address})")
    if ip.is_loopback and not allow_loopback:
        errors.append(f"{said}may not be in the loopback range (127.0.0.0/8, ::1/128)")
    if ip.is_link_local:
        errors.append(f"{said}may not be in the link-local range (169.254.0.0/16, fe80::/10)")
    return errors


def _slice_errors(obj: Obj, allow_loopback: bool) -> list[str]:
    """What the apiserver's validation says of an EndpointSlice (its address type, the
    number of endpoints and addresses, each address), as its field errors."""
    address_type = obj.get("addressType")
    if not address_type:
        return ["addressType: Required value"]
    if address_type not in _ADDRESS_TYPES:
        supported = ", ".join(f'"{t}"' for t in _ADDRESS_TYPES)
        return [f'addressType: Unsupported value: "{address_type}": supported values: {supported}']
    endpoints = obj.get("endpoints") or []
    if len(endpoints) > _MAX_ENDPOINTS:
        return [f"endpoints: Too many: {len(endpoints)}: must have at most {_MAX_ENDPOINTS} items"]
    errors: list[str] = []
    for index, endpoint in enumerate(endpoints):
        path = f"endpoints[{index}].addresses"
        addresses = endpoint.get("addresses") or []
        if not addresses:
            errors.append(f"{path}: Required value: must contain at least 1 address")
        elif len(addresses) > _MAX_ADDRESSES:
            errors.append(
                f"{path}: Too many: {len(addresses)}: must have at most {_MAX_ADDRESSES} items"
            )
        if address_type == "FQDN":
            continue
        version = 4 if address_type == "IPv4" else 6
        for number, address in enumerate(addresses):
            errors += _endpoint_ip(str(address), f"{path}[{number}]", version, allow_loopback)
    return errors


class KubeEmulator(LoopbackServer):
    """The emulated apiserver on 127.0.0.1 (see the module docstring).

    ``async with KubeEmulator() as kube:`` starts it on a free port; test-side methods
    (:meth:`apply`, :meth:`delete`, ...) must run on the emulator's event loop; they work
    while it is stopped too.
    """

    def __init__(
        self,
        *,
        history: int = 1000,
        bookmark_interval: float = 1.0,
        token: str | None = None,
        loopback_endpoints: bool = False,
    ) -> None:
        super().__init__()
        self.history = history
        self.loopback_endpoints = loopback_endpoints
        self.bookmark_interval = bookmark_interval
        self.token = token
        self.requests: list[Request] = []
        self.on_request: Callable[[Request], None] | None = None
        self.forbidden: set[str] = set()  # resource plurals ("nodes") answered with 403
        self._rv = 1
        self._floor = 1  # a watch from an RV below this answers 410
        self._objects: dict[tuple[_Kind, str, str], Obj] = {}
        self._history: deque[_Event] = deque()
        # continue token -> (RV of the first page, the items still to send): later pages
        # come from the snapshot the first page was cut from, as the apiserver does
        self._pages: dict[str, tuple[int, list[Obj]]] = {}
        self._page_ids = itertools.count(1)
        self._watches: set[_Watch] = set()
        # why each watch stream ended, in order: "timeout" (its timeoutSeconds),
        # "dropped" (drop_watches), "client" (the client went away)
        self.watch_ends: list[str] = []
        # every BOOKMARK sent, in order: (kind, the resourceVersion it carried)
        self.bookmarks: list[tuple[str, int]] = []
        self._failures: deque[tuple[int, int | None]] = deque()

    # -- life cycle (see LoopbackServer) ---------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion."""
        return self._rv

    @property
    def open_watches(self) -> int:
        return len(self._watches)

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", "/{tail:.*}", self._dispatch)

    async def stop(self) -> None:
        """Go away like a crashed apiserver: stop listening, cut every open connection."""
        if self.running:
            await super().stop()
            self._watches.clear()

    def kubeconfig(
        self, path: Path, *, context: str = "emulator", namespace: str = "default"
    ) -> Path:
        """Write a kubeconfig for this emulator (plain http, the bearer token if any)."""
        if not self.port:
            raise RuntimeError("start() the emulator first: the kubeconfig needs its port")
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": self.token} if self.token else {}}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": context, "user": context, "namespace": namespace},
                }
            ],
            "current-context": context,
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    # -- test-side operations -------------------------------------------------------------

    def apply(self, obj: Obj) -> Obj:
        """Create or replace ``obj`` (by apiVersion/kind/namespace/name); returns it as
        stored.  A replacement equal to what is stored is a no-op (no RV, no event), as
        in the apiserver; a namespaced object without a namespace goes to ``default``."""
        kind = self._kind(obj.get("apiVersion", ""), obj.get("kind", ""))
        new = copy.deepcopy(obj)
        meta = new.setdefault("metadata", {})
        if not meta.get("name"):
            raise ValueError("metadata.name is required")
        if kind.kind == "EndpointSlice":
            errors = _slice_errors(new, self.loopback_endpoints)
            if errors:
                said = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
                raise ValueError(
                    f'EndpointSlice.discovery.k8s.io "{meta["name"]}" is invalid: {said}'
                )
        namespace = meta.pop("namespace", None)
        if kind.namespaced:
            meta["namespace"] = namespace or "default"
        key = (kind, meta.get("namespace", ""), meta["name"])
        old = self._objects.get(key)
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            for name in ("uid", "creationTimestamp", "resourceVersion"):
                meta[name] = old["metadata"][name]
            if new == old:
                return copy.deepcopy(old)
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self._objects[key] = new
        self._record(_Event(self._rv, kind, "MODIFIED" if old else "ADDED", new, old))
        return copy.deepcopy(new)

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        """Delete an object (KeyError if absent); watchers get ``DELETED`` with its last
        state carrying the deletion's RV."""
        key = self._key(api_version, kind, namespace, name)
        old = self._objects.pop(key)
        self._rv += 1
        self._record(_Event(self._rv, key[0], "DELETED", _with_rv(old, self._rv), old))

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        """The stored object (a copy) or None."""
        obj = self._objects.get(self._key(api_version, kind, namespace, name))
        return copy.deepcopy(obj)

    def compact(self) -> None:
        """Forget every past event: a watch from any RV before now gets 410 Expired, and so
        does a continue token handed out before now.  As an etcd compaction does to what
        kube-apiserver reads from etcd (a resource whose watch cache is off); with the
        cache on it serves watches and later pages from the cache, which a compaction does
        not touch (seen on kube-apiserver 1.37: a continue token of Services still worked
        after one)."""
        self._history.clear()
        self._floor = self._rv
        self._pages.clear()

    async def drop_watches(self, *, graceful: bool = False, timeout: float = 5.0) -> None:
        """End every open watch stream while the server stays up: by default abruptly (the
        connection is reset mid-stream), with ``graceful`` by a clean end of the stream."""
        dropped = list(self._watches)
        for watch in dropped:
            if not graceful and watch.request.transport is not None:
                watch.request.transport.abort()  # aiohttp then cancels the handler
            watch.queue.put_nowait(None)
        async with asyncio.timeout(timeout):  # clients may reconnect at once: not counted
            while any(watch in self._watches for watch in dropped):
                await asyncio.sleep(0.005)

    def fail_next(self, status: int, count: int = 1, *, retry_after: int | None = None) -> None:
        """The next ``count`` requests (any path, after authentication) answer ``status``
        with a Status body; 429 carries ``Retry-After`` (``retry_after``, default 1)."""
        if status == 429 and retry_after is None:
            retry_after = 1
        self._failures.extend([(status, retry_after)] * count)

    # -- plumbing -----------------------------------------------------------------------

    @staticmethod
    def _kind(api_version: str, kind: str) -> _Kind:
        try:
            return _BY_TYPE[(api_version, kind)]
        except KeyError:
            raise ValueError(f"not served by the emulator: {api_version} {kind}") from None

    def _key(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> tuple[_Kind, str, str]:
        k = self._kind(api_version, kind)
        return (k, (namespace or "default") if k.namespaced else "", name)

    def _record(self, event: _Event) -> None:
        self._history.append(event)
        while len(self._history) > self.history:
            self._floor = self._history.popleft().rv
        for watch in self._watches:
            if watch.kind is event.kind:
                watch.queue.put_nowait(event)

    def _select(self, kind: _Kind, selector: _Selector) -> list[Obj]:
        keys = sorted((key for key in self._objects if key[0] is kind), key=lambda k: k[1:])
        return [self._objects[key] for key in keys if selector(self._objects[key])]

    async def _handle(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        query = dict(request.query)
        seen = Request(time.monotonic(), request.method, request.path, query)
        self.requests.append(seen)
        if self.on_request is not None:
            self.on_request(seen)
        try:
            if self.token is not None:
                scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
                if scheme.lower() != "bearer" or token.strip() != self.token:
                    raise _APIError(_status(401, "Unauthorized"))
            if self._failures:
                code, retry_after = self._failures.popleft()
                message = "Too many requests, please try again later."
                if code != 429:
                    message = f"emulated failure ({code})"
                headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
                details = {"retryAfterSeconds": retry_after} if retry_after is not None else {}
                raise _APIError(_status(code, message, details=details), headers)
            response: web.StreamResponse = await handler(request)
            return response
        except _APIError as exc:
            return exc.response()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET":
            message = "the server does not allow this method on the requested resource"
            raise _APIError(_status(405, message))
        path = "/" + request.path.strip("/")
        doc = self._discovery(path)
        if doc is not None:
            return web.json_response(doc)
        kind, namespace, name = self._resolve(path)
        query = request.query
        if kind.plural in self.forbidden:
            verb = "watch" if _bool(query.get("watch")) else "get" if name else "list"
            group = kind.api_version.rpartition("/")[0]
            scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
            message = (
                f'{kind.plural} is forbidden: User "system:serviceaccount:istio-system:registryd" '
                f'cannot {verb} resource "{kind.plural}" in API group "{group}" {scope}'
            )
            raise _APIError(_status(403, message, details={"kind": kind.plural}))
        if name is not None:
            obj = self._objects.get((kind, namespace or "", name))
            if obj is None:
                group = kind.api_version.rpartition("/")[0]
                what = f"{kind.plural}.{group}" if group else kind.plural
                details = {"name": name} | ({"group": group} if group else {})
                message = f'{what} "{name}" not found'
                raise _APIError(_status(404, message, details=details | {"kind": kind.plural}))
            return web.json_response(obj)
        labels, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
        selector = _Selector(kind, namespace, labels, fields)
        if _bool(query.get("watch")):
            return await self._watch(request, kind, selector)
        self._parse_rv(query.get("resourceVersion", ""), watch=False)
        token = query.get("continue", "")
        if token:
            if query.get("resourceVersion"):
                message = "specifying resource version is not allowed when using continue"
                raise _APIError(_status(400, message))
            if not _PAGE_TOKEN.fullmatch(token):
                message = f"invalid continue token: continue key is not valid: {token[:40]!r}"
                raise _APIError(_status(400, message))
            if token not in self._pages:  # its snapshot is gone: compact()
                message = (
                    "The provided continue parameter is too old to display a consistent "
                    "list result. You can start a new list without the continue parameter, "
                    "or use the continue token in this response to retrieve the remainder of "
                    "the results. Continuing with the provided token results in an "
                    "inconsistent list - objects that were created, modified, or deleted "
                    "between the time the first chunk was returned and now may show up in "
                    "the list."
                )
                raise _APIError(_status(410, message, reason="Expired"))
            rv, items = self._pages.pop(token)
        else:
            rv = self._rv
            items = [
                {k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
                for o in self._select(kind, selector)
            ]
        meta: Obj = {"resourceVersion": str(rv)}
        limit = self._parse_limit(query.get("limit", ""))
        if query.get("resourceVersion") == "0" and not token:
            limit = 0  # served whole from the watch cache: no pages
        if 0 < limit < len(items):
            items, rest = items[:limit], items[limit:]
            token = f"page-{rv}-{next(self._page_ids)}"
            self._pages[token] = (rv, rest)
            meta["continue"] = token
            if not (labels.strip() or fields.strip()):  # a filtered list cannot count them
                meta["remainingItemCount"] = len(rest)
        list_kind = {"kind": f"{kind.kind}List", "apiVersion": kind.api_version}
        return web.json_response({**list_kind, "metadata": meta, "items": items})

    def _resolve(self, path: str) -> tuple[_Kind, str | None, str | None]:
        """(kind, namespace or None, name or None) of a resource path, or 404."""
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"]:
            group_version, rest = "v1", parts[2:]
        elif parts[0] == "apis" and len(parts) > 3:
            group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            group_version, rest = "", []
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        kind = _BY_PATH.get((group_version, rest[0])) if 1 <= len(rest) <= 2 else None
        name = rest[1] if len(rest) == 2 else None
        if (
            kind is None
            or (namespace is not None and not kind.namespaced)
            or (kind.namespaced and namespace is None and name is not None)
        ):
            message = "the server could not find the requested resource"
            raise _APIError(_status(404, message))
        return kind, namespace, name

    def _discovery(self, path: str) -> Obj | None:
        groups = [
            {
                "name": "discovery.k8s.io",
                "versions": [{"groupVersion": "discovery.k8s.io/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "discovery.k8s.io/v1", "version": "v1"},
            }
        ]
        if path == "/version":
            return {
                "major": "1",
                "minor": "31",
                "gitVersion": "v1.31.0-emulated",
                "gitCommit": "emulated",
                "gitTreeState": "clean",
                "buildDate": "2024-08-13T00:00:00Z",
                "goVersion": "go1.22.5",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if path == "/api":
            cidrs = [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.address}]
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": cidrs}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        if path == "/apis/discovery.k8s.io":
            return {"kind": "APIGroup", "apiVersion": "v1", **groups[0]}
        verbs = ["get", "list", "watch"]
        resources = [
            {"name": k.plural, "singularName": k.kind.lower(), "namespaced": k.namespaced}
            | {"kind": k.kind, "verbs": verbs}
            for k in _KINDS
            if k.prefix == path
        ]
        if not resources:
            return None
        group_version = path.removeprefix("/api/").removeprefix("/apis/")
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }

    @staticmethod
    def _parse_limit(text: str) -> int:
        """``limit`` (0: none); not a whole number: 400, in the apiserver's (Go's) words."""
        if not text:
            return 0
        try:
            return max(int(text), 0)
        except ValueError:
            message = f'strconv.ParseInt: parsing "{text}": invalid syntax'
            raise _APIError(_status(400, message)) from None

    @staticmethod
    def _parse_rv(text: str, *, watch: bool) -> int | None:
        """A ``resourceVersion`` (None: none).  Not a whole number: as kube-apiserver, a
        400 for a list, and for a watch a 500 without a reason (the error escapes its
        handler unconverted)."""
        if not text:
            return None
        if not text.isdigit():
            said = f'resourceVersion: Invalid value: "{text}": strconv.ParseUint: parsing '
            said += f'"{text}": invalid syntax'
            if not watch:
                raise _APIError(_status(400, f"invalid resource version: {said}"))
            status = _status(500, said)
            del status["reason"]
            raise _APIError(status)
        return int(text)

    def _bookmark(self, kind: _Kind) -> Obj:
        meta = {"resourceVersion": str(self._rv)}
        return {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": meta}

    @staticmethod
    def _convert(event: _Event, selector: _Selector) -> tuple[str, Obj] | None:
        """The event as one watcher sees it (see the module docstring), or None."""
        now = event.type != "DELETED" and selector(event.obj)
        before = event.prev is not None and selector(event.prev)
        if now:
            return ("MODIFIED" if before else "ADDED"), event.obj
        if before:
            assert event.prev is not None
            return "DELETED", _with_rv(event.prev, event.rv)
        return None

    async def _watch(
        self, request: web.Request, kind: _Kind, selector: _Selector
    ) -> web.StreamResponse:
        query = request.query
        rv = self._parse_rv(query.get("resourceVersion", ""), watch=True)
        bookmarks = _bool(query.get("allowWatchBookmarks"))
        try:
            timeout = float(query.get("timeoutSeconds") or 0) or None  # 0: the default
        except ValueError:
            raise _APIError(_status(400, "invalid timeoutSeconds")) from None
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        # No await from here until the watch is registered: backlog and live events meet.
        backlog: list[tuple[str, Obj]] = []
        watch: _Watch | None = None
        if not rv:
            backlog = [("ADDED", o) for o in self._select(kind, selector)]
        elif rv < self._floor:
            message = f"too old resource version: {rv} ({self._floor})"
            backlog = [("ERROR", _status(410, message, "Expired"))]
        else:
            events = (e for e in self._history if e.kind is kind and e.rv > rv)
            backlog = [c for c in (self._convert(e, selector) for e in events) if c is not None]
        if not backlog or backlog[-1][0] != "ERROR":
            watch = _Watch(kind, request)
            self._watches.add(watch)
        after = rv or 0  # live events too: only those after the RV asked for
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else None
        next_bookmark = loop.time() + self.bookmark_interval

        async def send(kind_of_event: str, obj: Obj) -> None:
            line = json.dumps({"type": kind_of_event, "object": obj}, separators=(",", ":"))
            await response.write(line.encode() + b"\n")

        try:
            for event_type, obj in backlog:
                await send(event_type, obj)
            while watch is not None:
                now = loop.time()
                if deadline is not None and now >= deadline:
                    self.watch_ends.append("timeout")
                    break
                if not watch.queue.empty():
                    item = watch.queue.get_nowait()
                elif bookmarks and now >= next_bookmark:
                    if self._rv > after:  # as the apiserver: none at or before the start
                        await send("BOOKMARK", self._bookmark(kind))  # queue empty: no skip
                        self.bookmarks.append((kind.kind, self._rv))
                    next_bookmark = loop.time() + self.bookmark_interval
                    continue
                else:
                    waits = [deadline - now] if deadline is not None else []
                    waits += [next_bookmark - now] if bookmarks else []
                    try:
                        async with asyncio.timeout(min(waits) if waits else None):
                            item = await watch.queue.get()
                    except TimeoutError:
                        continue
                if item is None:  # drop_watches
                    self.watch_ends.append("dropped")
                    break
                converted = self._convert(item, selector) if item.rv > after else None
                if converted is not None:
                    await send(*converted)
            await response.write_eof()
        except ConnectionResetError:
            self.watch_ends.append("client")  # the client went away
        finally:
            if watch is not None:
                self._watches.discard(watch)
        return response


def load(emulator: KubeEmulator, paths: list[Path]) -> int:
    """Apply every object of the YAML files ``paths`` (several documents a file; a ``kind:
    List`` stands for its ``items``) to ``emulator``; the number applied.  ValueError
    naming the file and document for what cannot be read or applied."""
    count = 0
    for path in paths:
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: {exc}") from None
        for number, document in enumerate(documents, 1):
            if document is None:
                continue
            objects = document.get("items") if isinstance(document, dict) else None
            if not (isinstance(document, dict) and document.get("kind") == "List"):
                objects = [document]
            for obj in objects or []:
                try:
                    if not isinstance(obj, dict):
                        raise ValueError("not an object")
                    emulator.apply(obj)
                except ValueError as exc:
                    raise ValueError(f"{path}, document {number}: {exc}") from None
                count += 1
    return count


async def _serve(emulator: KubeEmulator, kubeconfig: Path) -> None:
    """Serve until SIGINT or SIGTERM."""
    await emulator.start()
    emulator.kubeconfig(kubeconfig)
    print(f"kubernetes emulator on {emulator.url}", flush=True)
    print(f"kubeconfig: {kubeconfig}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.support.emulators.kubernetes [--port N] [--token T]
    [--kubeconfig P] [--loopback-endpoints] [FILES...]``: the emulator as a server on
    127.0.0.1 with the objects of FILES, until Ctrl-C (or SIGTERM)."""
    import argparse
    import shutil
    import tempfile

    parser = argparse.ArgumentParser(
        prog="python -m tests.support.emulators.kubernetes",
        description="A Kubernetes API server emulator (list and watch) on 127.0.0.1, with "
        "the Namespaces, Services, EndpointSlices, Pods and Nodes of FILES (YAML, several "
        "documents a file).  Point a kubeconfig user (registryd, kubectl get) at the "
        "kubeconfig it writes.",
    )
    parser.add_argument("files", nargs="*", type=Path, metavar="FILES", help="YAML objects")
    parser.add_argument("--port", type=int, default=0, help="listen here (default: a free port)")
    parser.add_argument("--token", default=None, help="require this bearer token")
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="write the kubeconfig here (default: a file in a new temporary directory)",
    )
    parser.add_argument(
        "--loopback-endpoints",
        action="store_true",
        help="let EndpointSlices have loopback addresses (a real API server refuses them)",
    )
    args = parser.parse_args(argv)
    emulator = KubeEmulator(token=args.token, loopback_endpoints=args.loopback_endpoints)
    emulator.port = args.port
    try:
        loaded = load(emulator, args.files)
    except ValueError as exc:
        parser.error(str(exc))
    temporary: Path | None = None
    kubeconfig: Path = args.kubeconfig
    if kubeconfig is None:
        temporary = Path(tempfile.mkdtemp(prefix="kube-emulator-"))
        kubeconfig = temporary / "kubeconfig"
    if args.files:
        print(f"{loaded} objects from {len(args.files)} file(s)", file=sys.stderr, flush=True)
    try:
        asyncio.run(_serve(emulator, kubeconfig))
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    main()
