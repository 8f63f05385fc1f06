"""A recording pass-through HTTP proxy on 127.0.0.1, so a test against a real server sees
what a client asked and what the server answered, as it does with an emulator.

:class:`RecordingProxy` forwards every request (method, path, query, headers, body) to
``upstream`` and answers with the upstream's status, headers and body.  It records each
request in :attr:`~RecordingProxy.requests` (the same :class:`Request` the Consul
emulator records, with :meth:`~RecordingProxy.count`) and each answer's
``X-Consul-Index`` in :attr:`~RecordingProxy.replies`; :attr:`~RecordingProxy.inflight`
counts the requests being answered (a held blocking query included).  A client that
goes away cancels the forwarded request.  An upstream that cannot be reached answers 502.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from tests.support.emulators.base import LoopbackServer
from tests.support.emulators.consul import ConsulEmulator, Request

__all__ = ["RecordingProxy", "Reply"]

# headers of one connection, not passed on (a compressed body is passed on as it came,
# with its Content-Encoding)
HOP_BY_HOP = frozenset(
    h.lower()
    for h in ("Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Host", "Upgrade")
)
RECORDED = web.RequestKey("recorded", Request)


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer the proxy passed on: the request it answers, its status and its
    ``X-Consul-Index`` (None without one)."""

    request: Request
    status: int
    index: int | None


class RecordingProxy(LoopbackServer):
    """Forwards to ``upstream`` (``http://host:port``) and records (see the module
    docstring).  ``async with RecordingProxy(url) as proxy:`` starts and stops it."""

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.requests: list[Request] = []
        self.replies: list[Reply] = []
        self._session: aiohttp.ClientSession | None = None

    def count(self, path_prefix: str = "/v1/", since: float = 0.0) -> int:
        """Requests for paths starting with ``path_prefix`` since ``since`` (monotonic)."""
        return sum(1 for r in self.requests if r.path.startswith(path_prefix) and r.at >= since)

    def replies_of(self, path: str) -> list[Reply]:
        """The answers to requests for exactly ``path``, in the order they were given."""
        return [r for r in self.replies if r.request.path == path]

    async def start(self) -> None:
        if self._session is None:
            # no total timeout: a blocking query is held as long as the server holds it
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0),
                auto_decompress=False,
            )
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", "/{tail:.*}", self._forward)

    async def _handle(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        params = dict(request.query.items())
        token = ConsulEmulator._token(request)
        recorded = Request(request.method, request.path, params, token, time.monotonic())
        self.requests.append(recorded)
        request[RECORDED] = recorded
        response: web.StreamResponse = await handler(request)
        return response

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        recorded = request[RECORDED]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.rel_url.path_qs,
                headers=headers,
                data=body or None,
            ) as upstream:
                data = await upstream.read()
                status, reply_headers = upstream.status, upstream.headers
        except aiohttp.ClientError as exc:
            return web.Response(status=502, text=f"upstream: {exc}")
        raw_index = reply_headers.get("X-Consul-Index")
        index = int(raw_index) if raw_index and raw_index.isdigit() else None
        self.replies.append(Reply(recorded, status, index))
        kept = {k: v for k, v in reply_headers.items() if k.lower() not in HOP_BY_HOP}
        return web.Response(status=status, body=data, headers=kept)
