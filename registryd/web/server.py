"""The HTTP side: readiness, liveness, the istiod-style debug endpoints and /metrics.

It reads daemon state and never changes it (the one exception is the log level API,
see :mod:`registryd.web.logging_api`).  The same application is served on
``--httpAddr`` and ``--monitoringAddr``, as istiod mirrors its debug endpoints.
Handlers run on the event loop between pushes' writes; each one renders from the
current objects without waiting on anything, so the debug port answers while a push is
fanning out.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import Metric

from registryd.base.health import TaskHealth
from registryd.model import ShardKey
from registryd.registry.store import RegistryStore
from registryd.web import views, waitz
from registryd.web.logging_api import logging_routes
from registryd.xds.snapshot import Snapshot
from registryd.xds.streams import Streams
from registryd.xds.tracking import PushRecord

__all__ = ["ENDPOINTS", "MISSING_HEADER", "DebugSources", "make_app"]

MISSING_HEADER = "X-Registryd-Unanswered"
"""Set on a listing (``connections``, ``adsz``, ``syncz``) that leaves out the
connections of a process that does not answer: which, and for how long."""

# path -> description, in the order of the /debug index
ENDPOINTS: Mapping[str, str] = {
    "/debug/registryz": "merged services as served (?hostname=, ?namespace=)",
    "/debug/endpointz": "endpoints per hostname, namespace and registry, with provenance "
    "(?hostname=)",
    "/debug/configz": "raw config each registry holds, with per-source errors (?registry=)",
    "/debug/adsz": "connected xDS clients: node, locality, subscriptions "
    "(?proxyID=, ?verbose=1: the node's extensions too)",
    "/debug/syncz": "per client and type: version and nonce sent, ACK/NACK (?proxyID=)",
    "/debug/config_dump": "what one proxy gets, as Envoy's config_dump (?proxyID=)",
    "/debug/connections": "a light list of connections (?proxyID=)",
    "/debug/push_status": "problems in the current view",
    "/debug/pushz": "the last pushes: trigger, debounce, sent to whom, time to ACK "
    "(?proxyID=, ?limit=)",
    "/debug/history": "the last changes of every registry, the push each caused and its "
    "outcome at the proxies (?hostname=, ?registry=, ?limit=)",
    "/debug/waitz": "whether a change reached the proxies: ?for=hostname/<host> or "
    "push/<id>, ?proxy= (repeatable; registryd wait polls it)",
    "/debug/logging": "log scopes and levels; PUT /debug/logging/<scope> from localhost",
    "/debug/list": "this list as JSON",
    "/ready": "200 once every registry has synced, 503 (saying which has not) before; "
    "503 too while an xDS worker does not answer",
    "/healthz": "liveness",
    "/metrics": "Prometheus metrics",
}


class PushHistory(Protocol):
    """The pushes kept for ``/debug/pushz``, oldest first."""

    @property
    def history(self) -> Sequence[PushRecord]: ...

    @property
    def snapshot(self) -> Snapshot: ...


class ChangeLog(Protocol):
    """The change history for ``/debug/history`` and ``/debug/waitz``."""

    def render(self, hostname: str = "", registry: str = "", limit: int = 50) -> list[Any]: ...

    def last_change(self, hostname: str) -> int | None: ...


class Restarts(Protocol):
    """Registry restarts for ``/debug/configz``: how many, and the wall time of a retry
    still pending, by shard."""

    @property
    def restarts(self) -> Mapping[ShardKey, int]: ...

    @property
    def next_retry(self) -> Mapping[ShardKey, float]: ...


class Exposition(Protocol):
    def render(self, others: Iterable[Iterable[Metric]] = ()) -> bytes:
        """``/metrics`` in the text format, with ``others``' families merged in."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DebugSources:
    """The live objects the HTTP side reads: the store and the streams, and the daemon's
    push controller, supervisor and metrics through the little of each it reads
    (:class:`PushHistory`, :class:`Restarts`, :class:`Exposition`), so that this package
    knows nothing of how the daemon is put together."""

    store: RegistryStore
    push: PushHistory
    streams: Streams  # the xDS streams, in this process or in worker processes
    supervisor: Restarts
    metrics: Exposition
    registries: Sequence[tuple[ShardKey, Mapping[str, Any]]]  # configured, with settings
    readiness: Callable[[], list[str]]
    health: TaskHealth | None = None  # failures of long-lived tasks (/healthz)
    allow_remote_log_level: bool = False
    log_level_changed: Callable[[str, int], None] | None = None  # told (logger, level)
    log_scopes: Mapping[str, str] = field(default_factory=dict)  # adapters': -> description
    history: ChangeLog | None = None  # the change history, if kept


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, indent=2, sort_keys=False) + "\n",
        status=status,
        content_type="application/json",
    )


def make_app(src: DebugSources) -> web.Application:
    def q(request: web.Request, name: str) -> str:
        return request.query.get(name, "")

    async def ready(_: web.Request) -> web.Response:
        reasons = src.readiness()
        if reasons:
            return web.Response(status=503, text="not ready: " + "; ".join(reasons) + "\n")
        return web.Response(text="ready\n")

    async def healthz(_: web.Request) -> web.Response:
        dead = dict(src.health.dead) if src.health is not None else {}
        if dead:
            lines = "".join(f"task {name} died: {why}\n" for name, why in sorted(dead.items()))
            return web.Response(status=503, text=lines)
        return web.Response(text="ok\n")

    async def metrics(_: web.Request) -> web.Response:
        others = await src.streams.metric_families()
        body = src.metrics.render([others] if others else [])
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def index(_: web.Request) -> web.Response:
        rows = "".join(
            f'<tr><td><a href="{html.escape(p)}">{html.escape(p)}</a></td>'
            f"<td>{html.escape(d)}</td></tr>"
            for p, d in ENDPOINTS.items()
        )
        page = (
            "<!doctype html><html><head><title>registryd debug</title></head><body>"
            f"<h1>registryd debug endpoints</h1><table>{rows}</table></body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    async def listing(_: web.Request) -> web.Response:
        return _json([{"path": p, "description": d} for p, d in ENDPOINTS.items()])

    async def registryz(r: web.Request) -> web.Response:
        return _json(views.registryz(src.store.view.services, q(r, "hostname"), q(r, "namespace")))

    async def endpointz(r: web.Request) -> web.Response:
        return _json(views.endpointz(src.store, q(r, "hostname")))

    async def configz(r: web.Request) -> web.Response:
        sup = src.supervisor
        return _json(
            views.configz(src.store, src.registries, sup.restarts, q(r, "registry"), sup.next_retry)
        )

    async def streams(r: web.Request, view: str, verbose: bool = False) -> web.Response:
        found = await src.streams.listing(view, q(r, "proxyID"), verbose)
        response = _json([item for _, item in found])
        silent = src.streams.unresponsive()
        if silent:  # their connections are not in the list: say so beside it
            response.headers[MISSING_HEADER] = "; ".join(silent)
        return response

    async def adsz(r: web.Request) -> web.Response:
        return await streams(r, "adsz", q(r, "verbose").lower() in ("1", "true"))

    async def syncz(r: web.Request) -> web.Response:
        return await streams(r, "syncz")

    async def connections(r: web.Request) -> web.Response:
        return await streams(r, "connections")

    async def dump(r: web.Request) -> web.Response:
        proxy = q(r, "proxyID")
        if not proxy:
            return _json({"error": "proxyID is required (see /debug/connections)"}, 400)
        found = await src.streams.config_dump(proxy)
        if found is None:
            return _json({"error": f"proxy {proxy!r} is not connected"}, 404)
        if "ambiguous" in found:
            names = ", ".join(found["ambiguous"])
            return _json({"error": f"proxyID {proxy!r} names several proxies: {names}"}, 400)
        return _json(found["dump"])

    async def push_status(_: web.Request) -> web.Response:
        return _json(views.push_status(src.store))

    async def pushz(r: web.Request) -> web.Response:
        try:
            limit = int(q(r, "limit") or 20)
        except ValueError:
            return _json({"error": "limit must be an integer"}, 400)
        records = src.push.history
        traces = await src.streams.traces()
        return _json(views.pushz(records, traces, q(r, "proxyID"), limit))

    async def history(r: web.Request) -> web.Response:
        try:
            limit = int(q(r, "limit") or 50)
        except ValueError:
            return _json({"error": "limit must be an integer"}, 400)
        if src.history is None:
            return _json([])
        return _json(src.history.render(q(r, "hostname").lower(), q(r, "registry"), limit))

    async def wait(r: web.Request) -> web.Response:
        try:
            kind, value = waitz.parse_target(q(r, "for"))
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        current = src.push.snapshot.version
        if kind == "push":
            version: int | None = int(value)
        else:
            version = waitz.host_version(value, src.store.view, src.push.snapshot, src.history)
        if version is None:
            return _json({"error": f"hostname {value!r} is not served nor in the history"}, 404)
        selectors = r.query.getall("proxy", [])
        found, missing = await src.streams.full_listing("versions")
        silent = [*missing, *src.streams.unresponsive()]
        entries = [item for _, item in found]
        return _json(waitz.judge(version, current, entries, selectors, silent))

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        """A handler bug answers 500 and is logged and counted; it never goes unseen."""
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:
            (src.health or TaskHealth()).failed("http", exc)
            return _json({"error": f"internal error in {request.path}"}, 500)

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app.router.add_get("/ready", ready)
    app.router.add_get("/healthz/ready", ready)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/debug", index)
    app.router.add_get("/debug/", index)
    app.router.add_get("/debug/list", listing)
    app.router.add_get("/debug/registryz", registryz)
    app.router.add_get("/debug/endpointz", endpointz)
    app.router.add_get("/debug/configz", configz)
    app.router.add_get("/debug/adsz", adsz)
    app.router.add_get("/debug/syncz", syncz)
    app.router.add_get("/debug/connections", connections)
    app.router.add_get("/debug/config_dump", dump)
    app.router.add_get("/debug/push_status", push_status)
    app.router.add_get("/debug/pushz", pushz)
    app.router.add_get("/debug/history", history)
    app.router.add_get("/debug/waitz", wait)
    app.router.add_routes(
        logging_routes(
            allow_remote=src.allow_remote_log_level,
            changed=src.log_level_changed,
            described=src.log_scopes,
        )
    )
    return app
