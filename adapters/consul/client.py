"""The HTTP client of the ``consul`` registry: py-consul on an aiohttp session of ours.

py-consul supplies the HTTP client interface, headers and reply decoding (``CB.json``,
which checks the status and reads ``X-Consul-Index``); the queries are issued through
its ``http.get`` rather than ``catalog.services()``/``health.service()`` because the
latter drops the consistency mode (``stale``) and neither exposes response headers.  The
aiohttp session is our own: py-consul's caps a query at aiohttp's default 5 minutes
(shorter than ``wait`` plus Consul's jitter), sends client certificates only when
verifying, and reads ``CONSUL_HTTP_TOKEN`` over an explicit token.

Contract: :class:`ConsulClient` is configured only by the settings (TLS from
:func:`ssl_context`); its ``http.get(decode, path, ...)`` returns a :class:`Reply` (the
``X-Consul-Index``, the decoded body and whether ACLs filtered it) or raises: py-consul's
exceptions for an error status, :class:`~.faults.ConsulError` for a reply without a
numeric index, aiohttp's for the connection and ``TimeoutError``.  A query that has not
connected after :data:`CONNECT_TIMEOUT` seconds or not finished ``wait * 17/16 +``
:data:`READ_SLACK` seconds after it was sent fails.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import consul.aio
import consul.base
from consul.callback import CB

from .faults import ConsulError
from .settings import ConsulSettings

__all__ = ["CONNECT_TIMEOUT", "READ_SLACK", "ConsulClient", "Reply", "decode", "ssl_context"]

CONNECT_TIMEOUT = 5.0
READ_SLACK = 10.0  # seconds on top of wait and Consul's jitter (wait / 16)
FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful reply: its ``X-Consul-Index``, its decoded body, and whether the
    agent filtered it by ACLs."""

    index: int
    data: Any
    filtered: bool = False


def decode(response: Any) -> Reply:
    """py-consul's JSON callback (status check, ``X-Consul-Index``), plus our headers."""
    raw_index, data = CB.json(index=True, allow_404=False)(response)
    try:
        index = int(raw_index)
    except (TypeError, ValueError):
        raise ConsulError(f"X-Consul-Index {str(raw_index)[:40]!r} is not a number") from None
    filtered = str(response.headers.get(FILTERED_HEADER, "")).lower() == "true"
    return Reply(index, data, filtered)


class _HTTPClient(consul.base.HTTPClient):  # type: ignore[misc]
    """py-consul's HTTP client interface on an aiohttp session we configure."""

    def __init__(
        self,
        host: str,
        port: int,
        scheme: str,
        *,
        ssl_context: ssl.SSLContext | None,
        timeout: aiohttp.ClientTimeout,
    ) -> None:
        super().__init__(host, port, scheme, verify=ssl_context is not None)
        connector = aiohttp.TCPConnector(
            ssl=ssl_context if ssl_context is not None else True, limit=0
        )
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def _request(
        self,
        callback: Callable[[Any], Any],
        method: str,
        path: str,
        params: Any,
        headers: Mapping[str, str] | None,
        data: str | bytes | None = None,
    ) -> Any:
        uri = self.uri(path, params)
        async with self._session.request(method, uri, headers=headers, data=data) as response:
            body = await response.text(encoding="utf-8")
            return callback(consul.base.Response(response.status, response.headers, body))

    def get(
        self,
        callback: Callable[[Any], Any],
        path: str,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
        raw: bool = False,
    ) -> Any:
        return self._request(callback, "GET", path, params, headers)

    def put(
        self,
        callback: Callable[[Any], Any],
        path: str,
        params: Any = None,
        data: str | bytes = "",
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        return self._request(callback, "PUT", path, params, headers, data)

    def delete(
        self,
        callback: Callable[[Any], Any],
        path: str,
        params: Any = None,
        data: str | bytes = "",
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        return self._request(callback, "DELETE", path, params, headers, data)

    def post(
        self,
        callback: Callable[[Any], Any],
        path: str,
        params: Any = None,
        data: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        return self._request(callback, "POST", path, params, headers, data)

    def close(self) -> Any:
        return self._session.close()


class ConsulClient(consul.aio.Consul):  # type: ignore[misc]
    """``consul.aio.Consul`` on :class:`_HTTPClient`, configured only by the settings."""

    def __init__(self, settings: ConsulSettings, ssl_context: ssl.SSLContext | None) -> None:
        self.ssl_context = ssl_context
        read = settings.wait * 17 / 16 + READ_SLACK  # Consul adds up to wait/16 of jitter
        self._timeout = aiohttp.ClientTimeout(total=read, sock_connect=CONNECT_TIMEOUT)
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        super().__init__(
            host=host,
            port=settings.port,
            scheme=settings.scheme,
            consistency="stale" if settings.stale else "default",
            verify=settings.verify,
        )
        self.token = settings.token  # py-consul would prefer CONSUL_HTTP_TOKEN

    def http_connect(
        self, host: str, port: int, scheme: str, verify: bool | str = True, cert: Any = None
    ) -> _HTTPClient:
        return _HTTPClient(host, port, scheme, ssl_context=self.ssl_context, timeout=self._timeout)


def ssl_context(settings: ConsulSettings) -> ssl.SSLContext | None:
    if not settings.tls:
        return None
    context = ssl.create_default_context(cafile=settings.ca_file)
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.cert_file:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    return context
