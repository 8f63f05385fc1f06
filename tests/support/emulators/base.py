"""The life cycle the emulators share: an aiohttp server on 127.0.0.1 that can go away
like a crashed server and come back on the same port."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, Self

from aiohttp import web

__all__ = ["LoopbackServer"]


class LoopbackServer:
    """An aiohttp server on 127.0.0.1, for an emulator to subclass.

    :meth:`start` listens on a free port the first time (or on ``port`` if set before) and
    on the same port after; :meth:`stop` stops listening and cuts every open connection
    (each request being answered has its transport aborted and its handler cancelled).
    ``async with server:`` starts it and stops it.  With ``ssl_context`` it speaks HTTPS.

    Subclasses add their routes in :meth:`_add_routes` and may wrap every request in
    :meth:`_handle` (recording it, answering errors); both run per :meth:`start`.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._inflight: dict[asyncio.Task[Any], web.Request] = {}

    # -- hooks --------------------------------------------------------------------------

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        """Add the server's routes."""
        raise NotImplementedError

    async def _handle(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        """Answer one request (while it is counted in flight): by default ``handler``."""
        response: web.StreamResponse = await handler(request)
        return response

    # -- life cycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def inflight(self) -> int:
        """Requests being answered now (blocked or streaming ones included)."""
        return len(self._inflight)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.address}"

    async def start(self) -> None:
        """Listen on 127.0.0.1 (a free port the first time, the same one after)."""
        if self._runner is not None:
            return
        app = web.Application(middlewares=[self._middleware])
        self._add_routes(app.router)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.2
        )
        await runner.setup()
        site = web.TCPSite(
            runner, "127.0.0.1", self.port, ssl_context=self.ssl_context, reuse_address=True
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Go away like a crashed server: stop listening and cut every open connection."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for task, request in list(self._inflight.items()):
            if request.transport is not None:
                request.transport.abort()
            task.cancel()
        await runner.cleanup()

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._inflight[task] = request
        try:
            return await self._handle(request, handler)
        finally:
            self._inflight.pop(task, None)
