"""The HTTP side: readiness, liveness, the istiod-style debug endpoints and /metrics.

It reads daemon state and never changes it (the one exception is the log level API,
see :mod:`registryd.web.logging_api`).  The same application is served on
``--httpAddr`` and ``--monitoringAddr``, as istiod mirrors its debug endpoints.
Handlers run on the event loop between pushes' writes; each one renders from the
current objects without waiting on anything, so the debug port answers while a push is
fanning out.
"""

from __future__ import annotations

import hashlib
import html
import importlib.resources
import json
import time
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
from registryd.web.candidates import RegistryCandidates
from registryd.web.logging_api import logging_routes
from registryd.web.preview import LiveBuild, preview_routes
from registryd.xds.snapshot import Snapshot
from registryd.xds.streams import Streams
from registryd.xds.tracking import PushRecord

__all__ = [
    "CONSOLE_FRESH",
    "ENDPOINTS",
    "MISSING_HEADER",
    "Answer",
    "DebugSources",
    "Recent",
    "make_app",
]

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
    "/debug/preview": "POST candidate ServiceEntry/WorkloadEntry files or registryd.yaml: what "
    "they would change "
    "for each group of connected proxies, nothing applied (from localhost)",
    "/debug/console": "what the web console (/ui) shows, compact: registries, services, "
    "clients and their sync state, the last pushes with the proxies still pending",
    "/debug/history": "the last changes of every registry, the push each caused and its "
    "outcome at the proxies (?hostname=, ?registry=, ?limit=)",
    "/debug/waitz": "whether a change reached the proxies: ?for=hostname/<host> or "
    "push/<id>, ?proxy= (repeatable; registryd wait polls it)",
    "/debug/logging": "log scopes and levels; PUT /debug/logging/<scope> from localhost",
    "/debug/list": "this list as JSON",
    "/ui": "the web console: registries, services, proxies, pushes (read-only)",
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
    live: LiveBuild | None = None  # the push, for /debug/preview (None: no previews)
    candidates: RegistryCandidates | None = None  # registryd.yaml previews (None: none)
    history: ChangeLog | None = None  # the change history, if kept


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, indent=2, sort_keys=False) + "\n",
        status=status,
        content_type="application/json",
    )


CONSOLE_FILES: Mapping[str, str] = {
    "index.html": "text/html",
    "console.js": "text/javascript",
    "console.css": "text/css",
}
"""The console's static files (package data under ``registryd/web/console``)."""

CONSOLE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The console's Content-Security-Policy: its own files only, no inline script."""


def console_files() -> dict[str, bytes]:
    """The console's static files by name, read from the installed package."""
    folder = importlib.resources.files("registryd.web").joinpath("console")
    return {name: folder.joinpath(name).read_bytes() for name in CONSOLE_FILES}


CONSOLE_FRESH = 1.0
"""Seconds a ``/debug/console`` answer is reused: however many consoles are open, the
server builds at most about one answer a second (each polls every 2 s)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A JSON answer as sent: its bytes, strong ETag and ``Server-Timing`` value."""

    body: bytes
    etag: str
    timing: str

    @classmethod
    def of(cls, data: Any, timing: str = "") -> Answer:
        body = json.dumps(data, separators=(",", ":")).encode()
        tag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        return cls(body, tag, timing)

    def response(self, request: web.Request) -> web.Response:
        """304 when the client holds this answer (``If-None-Match``), else the body,
        gzipped when the client accepts it and it is not tiny."""
        headers = {"ETag": self.etag, "Cache-Control": "no-cache"}
        if self.timing:
            headers["Server-Timing"] = self.timing
        if self.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        response = web.Response(body=self.body, content_type="application/json", headers=headers)
        if len(self.body) > 1024:
            response.enable_compression()
        return response


class Recent:
    """The last :class:`Answer` kept, given back while younger than ``fresh`` seconds of
    ``clock``."""

    def __init__(self, fresh: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._fresh = fresh
        self._clock = clock
        self._kept: tuple[float, Answer] | None = None

    def get(self) -> Answer | None:
        if self._kept is None or self._clock() - self._kept[0] >= self._fresh:
            return None
        return self._kept[1]

    def keep(self, answer: Answer) -> None:
        self._kept = (self._clock(), answer)


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

    service_rows = views.ServiceRows()
    recent = Recent(CONSOLE_FRESH)

    async def console(r: web.Request) -> web.StreamResponse:
        kept = recent.get()
        if kept is not None:  # built less than CONSOLE_FRESH ago
            return Answer(kept.body, kept.etag, "app;dur=0.0, reused").response(r)
        answer = await console_answer()
        recent.keep(answer)
        return answer.response(r)

    async def console_answer() -> Answer:
        started = time.perf_counter()
        sup = src.supervisor
        proxies = [item for _, item in await src.streams.listing("console")]
        traces = await src.streams.traces()
        asked = time.perf_counter()
        data = views.console(
            src.store,
            src.registries,
            sup.restarts,
            sup.next_retry,
            src.push.history,
            traces,
            proxies,
            src.streams.unresponsive(),
            service_rows,
        )
        viewed = time.perf_counter()
        body = Answer.of(data)
        done = time.perf_counter()
        timing = ", ".join(
            f"{name};dur={seconds * 1000:.1f}"
            for name, seconds in (
                ("app", done - started),  # first: the whole time
                ("streams", asked - started),
                ("view", viewed - asked),
                ("encode", done - viewed),
            )
        )
        return Answer(body.body, body.etag, timing)

    files = console_files()

    async def ui_redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound("ui/")  # relative: works behind a path prefix too

    def ui_file(name: str) -> Handler:
        async def serve(_: web.Request) -> web.Response:
            return web.Response(
                body=files[name],
                headers={
                    "Content-Type": f"{CONSOLE_FILES[name]}; charset=utf-8",
                    "Cache-Control": "no-cache",
                    "Content-Security-Policy": CONSOLE_POLICY,
                    "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer",
                },
            )

        return serve

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
    app.router.add_get("/debug/console", console)
    app.router.add_get("/ui", ui_redirect)
    app.router.add_get("/ui/", ui_file("index.html"))
    for name in CONSOLE_FILES:
        app.router.add_get(f"/ui/{name}", ui_file(name))
    app.router.add_get("/debug/history", history)
    app.router.add_get("/debug/waitz", wait)
    app.router.add_routes(
        logging_routes(
            allow_remote=src.allow_remote_log_level,
            changed=src.log_level_changed,
            described=src.log_scopes,
        )
    )
    if src.live is not None:
        app.router.add_routes(
            preview_routes(
                store=src.store,
                live=src.live,
                streams=src.streams,
                registries=src.registries,
                candidates=src.candidates,
                allow_remote=src.allow_remote_log_level,
            )
        )
    return app
