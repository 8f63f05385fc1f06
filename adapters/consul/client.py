"""The HTTP client of the ``consul`` registry: py-consul on an aiohttp session of ours.

py-consul supplies the HTTP client interface, headers and reply decoding (``CB.json``,
which checks the status and reads ``X-Consul-Index``); the queries are issued through
its ``http.get`` rather than ``catalog.services()``/``health.service()`` because the
latter drops the consistency mode (``stale``) and neither exposes response headers.  The
aiohttp session is our own: py-consul's caps a query at aiohttp's default 5 minutes
(shorter than ``wait`` plus Consul's jitter), sends client certificates only when
verifying, and reads ``CONSUL_HTTP_TOKEN`` over an explicit token.

Contract: :class:`ConsulClient` is configured only by the settings (TLS from
:func:`ssl_context`); its ``http.get(client.decode, path, ...)`` returns a :class:`Reply`
(the ``X-Consul-Index``, the decoded body and what it says of ACLs) or raises:
py-consul's exceptions for an error status, :class:`~.faults.ConsulError` for a reply
without a numeric index, that is not JSON or is over ``max_response_bytes``, aiohttp's
for the connection and ``TimeoutError``.  A query that has not connected after
:data:`CONNECT_TIMEOUT` seconds or not finished ``wait * 17/16 +`` :data:`READ_SLACK`
seconds after it was sent fails: every blocking query has its own deadline.

Replies are bounded before they are parsed: the body is read up to
``max_response_bytes`` (no further), and parsed within the
:class:`~registryd.adapter.JsonLimits` of that size, in a thread of its own when it is
large (the decoding callback runs there).  py-consul's own JSON decoding
(``CB.json``) is used only for its status check.
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

from registryd.adapter import (
    JsonLimits,
    JsonTooLarge,
    off_loop,
    parse_json,
    read_capped,
)

from .faults import ConsulError
from .settings import ConsulSettings

__all__ = ["CONNECT_TIMEOUT", "READ_SLACK", "ConsulClient", "Reply", "decode", "ssl_context"]

CONNECT_TIMEOUT = 5.0
READ_SLACK = 10.0  # seconds on top of wait and Consul's jitter (wait / 16)
FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"
DEFAULT_POLICY_HEADER = "X-Consul-Default-Acl-Policy"  # "allow" or "deny"
INLINE_BYTES = 64 * 2**10  # replies up to this size are decoded on the event loop


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful reply: its ``X-Consul-Index``, its decoded body, whether the agent
    filtered it by ACLs (it says so only to a token, never to the anonymous one) and
    whether its ACL default policy is ``deny``.  ``unchanged``: its index is the one the
    caller already holds the answer of, so its body was not decoded (``data`` None)."""

    index: int
    data: Any
    filtered: bool = False
    default_deny: bool = False
    unchanged: bool = False


def decode(response: Any, limits: JsonLimits, held: int = 0) -> Reply:
    """The reply of ``response``: py-consul's status check (its exceptions for an error
    status), the body parsed within ``limits``, ``X-Consul-Index`` and our headers.

    ``held``: the index of the answer the caller holds (0: none).  A successful reply at
    that same index is not decoded: Consul moves a query's index with every change to
    what it answers (a blocking query that times out returns the same index and the same
    answer), so the body is the one held.  Decoding 10,000 unchanged replies is most of
    what a sweep of polled services costs."""
    if held > 0 and response.code < 400 and _index(response) == held:
        return Reply(held, None, unchanged=True)
    data = decode_body(response, limits)
    index = _index(response)
    filtered = str(response.headers.get(FILTERED_HEADER, "")).lower() == "true"
    default_deny = str(response.headers.get(DEFAULT_POLICY_HEADER, "")).lower() == "deny"
    return Reply(index, data, filtered, default_deny)


def _index(response: Any) -> int:
    raw_index = response.headers.get("X-Consul-Index")
    try:
        return int(raw_index)
    except (TypeError, ValueError):
        raise ConsulError(f"X-Consul-Index {str(raw_index)[:40]!r} is not a number") from None


def decode_body(response: Any, limits: JsonLimits) -> Any:
    """The body of ``response`` parsed within ``limits``, after py-consul's status check
    (for a reply that is not a catalog read, without ``X-Consul-Index``)."""
    if response.code >= 400:
        CB.json(allow_404=False)(response)  # raises for the status, before any parsing
    try:
        data = parse_json(response.body, limits)
    except JsonTooLarge as exc:
        setting = "" if exc.limit == "max_depth" else " (max_response_bytes)"
        raise ConsulError(f"{exc}{setting}") from None
    except ValueError:
        raise ConsulError(f"Failed to decode JSON: {response.body[:100]!r}") from None
    return data


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
        max_bytes: int,
    ) -> None:
        super().__init__(host, port, scheme, verify=ssl_context is not None)
        self.max_bytes = max_bytes
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
            chunks = response.content.iter_chunked(2**16)
            try:
                raw = await read_capped(chunks, self.max_bytes)
            except JsonTooLarge as exc:
                raise ConsulError(f"{exc} (max_response_bytes)") from None
            status, reply_headers = response.status, response.headers
        reply = consul.base.Response(status, reply_headers, raw.decode("utf-8", "replace"))
        if len(raw) > INLINE_BYTES:
            return await off_loop(callback, reply)
        return callback(reply)

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
        self.limits = settings.limits
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
        return _HTTPClient(
            host,
            port,
            scheme,
            ssl_context=self.ssl_context,
            timeout=self._timeout,
            max_bytes=self.limits.max_bytes,
        )

    def decode(self, response: Any, held: int = 0) -> Reply:
        """:func:`decode` within this registry's limits: the callback of ``http.get``."""
        return decode(response, self.limits, held)

    def decode_body(self, response: Any) -> Any:
        """:func:`decode_body` within this registry's limits."""
        return decode_body(response, self.limits)


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
