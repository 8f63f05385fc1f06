"""The few calls of the Nacos v1 Open API that registryd makes, over aiohttp.

Contract of :class:`NacosClient`:

* Servers (``server_addr``) are tried in order, starting with the one that answered
  last: a server that cannot be connected to, or drops the connection or stays silent
  for ``timeout`` seconds before its answer's status line and headers, is skipped for
  the next.  When none answers the call raises :class:`NacosUnavailable` (the registry
  is down: ``watch()`` fails).
* Once a server has answered, everything wrong with that answer raises
  :class:`QueryError` (the caller decides whether that fails the registry or one
  service): a status other than ``200``, a body that breaks off or stalls, a body over
  ``max_response_bytes`` (read no further), JSON over the
  :class:`~registryd.adapter.JsonLimits` of that size (refused before it is parsed),
  anything that is not a JSON object.  Bodies are parsed off the event loop when large
  (:func:`~registryd.adapter.load_json`).
* Every call (each page of a listing, each instance list, each login) must be over
  within ``request_timeout`` seconds, whatever servers it tried; past it, QueryError
  naming the setting.  A server that drips its answer is thus one call's error.
* :meth:`NacosClient.service_names` lists at most ``limit`` services (the caller's
  ``max_services`` budget): a server claiming more, or pages that go on past it, raise
  :class:`TooManyServices` and paging stops.
* With a username, ``POST /nacos/v1/auth/login`` gets an ``accessToken`` that travels as
  the ``accessToken`` query parameter; it is renewed after 80 % of its ``tokenTtl`` and
  once when a call answers ``403``.  A refused login raises :class:`NacosError`.  The
  token and the password never appear in a message.
* Every call takes a token of the ``limiter`` first (``max_qps``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from registryd.adapter import (
    JsonTooLarge,
    RegistryUnavailable,
    describe_error,
    load_json,
    read_capped,
)
from registryd.ratelimit import TokenBucket

from .settings import NacosSettings

__all__ = [
    "NacosClient",
    "NacosError",
    "NacosUnavailable",
    "QueryError",
    "TooManyServices",
    "service_page",
]

LOGIN = "/nacos/v1/auth/login"
SERVICES = "/nacos/v1/ns/service/list"
INSTANCES = "/nacos/v1/ns/instance/list"
CHUNK = 2**16  # bytes read at a time
PREVIEW = 4096  # bytes of an answer redacted for the 200 characters a message shows


class NacosError(RegistryUnavailable):
    """The registry as a whole failed (``watch()`` raises it)."""


class NacosUnavailable(NacosError):
    """No server of ``server_addr`` answered."""


class TooManyServices(NacosError):
    """The listing names more services than ``max_services``."""


class QueryError(RegistryUnavailable):
    """One call was answered, but not with what the Open API promises (or not in time)."""


def service_page(body: Mapping[str, Any]) -> tuple[list[str], int]:
    """The names of one ``service/list`` page and the count the server claims;
    QueryError when the answer has no ``doms`` list or no whole ``count``.  Pure."""
    doms, count = body.get("doms"), body.get("count")
    if not isinstance(doms, list) or isinstance(count, bool) or not isinstance(count, int):
        raise QueryError(f"{SERVICES}: no 'doms' list and 'count' in {body!r:.200}")
    return [str(d) for d in doms], count


class NacosClient:
    """Calls to the servers of one registry over ``session`` (see the module docstring)."""

    def __init__(
        self,
        settings: NacosSettings,
        session: aiohttp.ClientSession,
        limiter: TokenBucket,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.session = session
        self.limiter = limiter
        self.clock = clock
        self._current = 0
        self._token: str | None = None
        self._renew_at = 0.0
        self._login_lock = asyncio.Lock()

    @property
    def server(self) -> str:
        """The server that answered last (the first one before any answer)."""
        return self.settings.servers[self._current]

    async def service_names(self, group: str, limit: int) -> list[str]:
        """Every service of ``group`` in the namespace, page by page; TooManyServices
        past ``limit`` names (no further page is asked for)."""
        names: list[str] = []
        page = 0
        while True:
            page += 1
            params = {
                "pageNo": str(page),
                "pageSize": str(self.settings.page_size),
                "namespaceId": self.settings.namespace,
                "groupName": group,
            }
            doms, count = service_page(await self.get(SERVICES, params))
            names.extend(doms)
            if max(count, len(names)) > limit:
                raise TooManyServices(self._too_many(group, count, len(names), limit))
            if not doms or len(names) >= count:
                break
        return list(dict.fromkeys(names))

    def _too_many(self, group: str, count: int, listed: int, limit: int) -> str:
        total = self.settings.max_services - limit + max(count, listed)
        return (
            f"{SERVICES}: the groups list {total} services (up to group {group!r}), more "
            f"than max_services ({self.settings.max_services}); listing stopped"
        )

    async def instances(self, group: str, service: str) -> Mapping[str, Any]:
        """The instance list of one service, unhealthy instances included."""
        params = {
            "serviceName": service,
            "groupName": group,
            "namespaceId": self.settings.namespace,
            "healthyOnly": "false",
        }
        return await self.get(INSTANCES, params)

    async def get(self, path: str, params: Mapping[str, str]) -> Mapping[str, Any]:
        """The JSON object answered to ``GET path``; raises QueryError/NacosUnavailable."""
        await self.limiter.acquire()
        status, body = await self._call("GET", path, await self._with_token(params))
        if status == 403 and self.settings.username:
            self.forget_token()  # expired or revoked: log in again, once
            status, body = await self._call("GET", path, await self._with_token(params))
        if status != 200:
            raise QueryError(f"{path}: HTTP {status}: {self._preview(body)}")
        try:
            value = await load_json(body, self.settings.limits)
        except JsonTooLarge as exc:
            setting = "" if exc.limit == "max_depth" else " (max_response_bytes)"
            raise QueryError(f"{path}: {exc}{setting}") from None
        except ValueError:
            raise QueryError(f"{path}: not JSON: {self._preview(body)!r}") from None
        if not isinstance(value, dict):
            raise QueryError(f"{path}: not a JSON object: {self._preview(body)!r}")
        return value

    async def _with_token(self, params: Mapping[str, str]) -> dict[str, str]:
        token = await self.token()
        return dict(params) if token is None else {**params, "accessToken": token}

    async def token(self) -> str | None:
        """A current access token, logging in first when there is none or it is due for
        renewal (one login at a time); None without a username."""
        if not self.settings.username:
            return None
        async with self._login_lock:
            if self._token is None or self.clock() >= self._renew_at:
                await self._login()
        assert self._token is not None
        return self._token

    def forget_token(self) -> None:
        """The server refused the token: the next call logs in again."""
        self._token = None

    def clean(self, text: str) -> str:
        """``text`` without the token or the password."""
        return self._clean(text)

    async def _login(self) -> None:
        form = {"username": self.settings.username, "password": self.settings.password}
        status, text = await self._call("POST", LOGIN, {}, form)
        who = f"login as {self.settings.username!r}"
        if status != 200:
            raise NacosError(f"{who} refused: HTTP {status}: {self._preview(text)}")
        try:
            body = await load_json(text, self.settings.limits)
            token, ttl = body["accessToken"], float(body.get("tokenTtl", 18000))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise NacosError(f"{who}: the answer has no accessToken") from None
        if not isinstance(token, str) or not token:
            raise NacosError(f"{who}: the answer has no accessToken")
        self._token, self._renew_at = token, self.clock() + 0.8 * ttl

    def _clean(self, text: str) -> str:
        """``text`` without the token or the password."""
        for secret in (self._token, self.settings.password):
            if secret:
                text = text.replace(secret, "<redacted>")
        return text

    def _preview(self, body: bytes) -> str:
        """The start of an answer, for a message (no secrets)."""
        return self._clean(body[:PREVIEW].decode("utf-8", "replace"))[:200]

    async def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        form: Mapping[str, Any] | None = None,
    ) -> tuple[int, bytes]:
        """(status, body) from the first server that answers, within ``request_timeout``;
        NacosUnavailable if none answers, QueryError if the answer fails."""
        deadline = self.settings.request_timeout
        try:
            async with asyncio.timeout(deadline):
                return await self._first_answer(method, path, params, form)
        except TimeoutError:
            raise QueryError(
                f"{path}: no whole answer within {deadline:g}s (request_timeout)"
            ) from None

    async def _first_answer(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        form: Mapping[str, Any] | None,
    ) -> tuple[int, bytes]:
        servers = self.settings.servers
        failures = []
        for step in range(len(servers)):
            index = (self._current + step) % len(servers)
            try:
                async with self.session.request(
                    method, servers[index] + path, params=params, data=form
                ) as response:
                    self._current = index
                    return response.status, await self._body(response, path)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                reason = self._clean(str(exc)) or type(exc).__name__
                failures.append(f"{servers[index]}: {reason}")
        raise NacosUnavailable(f"no Nacos server answered {path}: {'; '.join(failures)}")

    async def _body(self, response: aiohttp.ClientResponse, path: str) -> bytes:
        """The body of an answer, up to ``max_response_bytes``; QueryError when it is
        larger, breaks off or stalls (the server did answer: it is not skipped)."""
        limit = self.settings.max_response_bytes
        try:
            return await read_capped(response.content.iter_chunked(CHUNK), limit)
        except JsonTooLarge as exc:
            raise QueryError(f"{path}: {exc} (max_response_bytes)") from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            text = self._clean(str(exc))
            message = f"{path}: the answer broke off: {describe_error(exc, text=text)}"
            raise QueryError(message) from exc
