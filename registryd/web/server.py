"""HTTP side: readiness and liveness.  It reads daemon state and never changes it."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

__all__ = ["make_app"]


def make_app(readiness: Callable[[], list[str]]) -> web.Application:
    """``readiness()`` returns the reasons the daemon is not ready (empty: ready)."""

    async def ready(_: web.Request) -> web.Response:
        reasons = readiness()
        if reasons:
            return web.Response(status=503, text="not ready: " + "; ".join(reasons) + "\n")
        return web.Response(text="ready\n")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/ready", ready)
    app.router.add_get("/healthz/ready", ready)
    app.router.add_get("/healthz", healthz)
    return app
