"""The few calls of the Nacos v1 Open API that registryd makes, over aiohttp.

Contract of :class:`NacosClient`:

* Servers (``server_addr``) are tried in order, starting with the one that answered
  last: a server that cannot be connected to, drops the connection or does not answer
  within ``timeout`` is skipped for the next.  When none answers the call raises
  :class:`NacosUnavailable` (the registry is down: ``watch()`` fails).
* Any answer other than ``200`` with JSON raises :class:`QueryError` (the caller decides
  whether that fails the registry or one service), as does a body over ``MAX_BODY``
  bytes (read no further) or JSON nested too deep to parse.
* With a username, ``POST /nacos/v1/auth/login`` gets an ``accessToken`` that travels as
  the ``accessToken`` query parameter; it is renewed after 80 % of its ``tokenTtl`` and
  once when a call answers ``403``.  A refused login raises :class:`NacosError`.  The
  token and the password never appear in a message.
* Every call takes a token of the ``limiter`` first (``max_qps``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from registryd.ratelimit import TokenBucket

from .settings import NacosSettings

__all__ = ["NacosClient", "NacosError", "NacosUnavailable", "QueryError"]

LOGIN = "/nacos/v1/auth/login"
SERVICES = "/nacos/v1/ns/service/list"
INSTANCES = "/nacos/v1/ns/instance/list"
MAX_PAGES = 10_000  # a bound on one listing, whatever the server says its count is
MAX_BODY = 64 * 2**20  # bytes of one answer (10,000 instances take about 3 MB)


class NacosError(Exception):
    """The registry as a whole failed (``watch()`` raises it)."""


class NacosUnavailable(NacosError):
    """No server of ``server_addr`` answered."""


class QueryError(Exception):
    """One call was answered, but not with what the Open API promises."""


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

    async def service_names(self, group: str) -> list[str]:
        """Every service of ``group`` in the namespace, page by page."""
        names: list[str] = []
        for page in range(1, MAX_PAGES + 1):
            params = {
                "pageNo": str(page),
                "pageSize": str(self.settings.page_size),
                "namespaceId": self.settings.namespace,
                "groupName": group,
            }
            body = await self.get(SERVICES, params)
            doms, count = body.get("doms"), body.get("count")
            if not isinstance(doms, list) or not isinstance(count, int):
                raise QueryError(f"{SERVICES}: no 'doms' list and 'count' in {body!r:.200}")
            names.extend(str(d) for d in doms)
            if not doms or len(names) >= count:
                break
        return list(dict.fromkeys(names))

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
        status, text = await self._call("GET", path, await self._with_token(params))
        if status == 403 and self.settings.username:
            self._token = None  # expired or revoked: log in again, once
            status, text = await self._call("GET", path, await self._with_token(params))
        if status != 200:
            raise QueryError(f"{path}: HTTP {status}: {self._clean(text)[:200]}")
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            raise QueryError(f"{path}: not JSON: {self._clean(text)[:200]!r}") from None
        if not isinstance(body, dict):
            raise QueryError(f"{path}: not a JSON object: {self._clean(text)[:200]!r}")
        return body

    async def _with_token(self, params: Mapping[str, str]) -> dict[str, str]:
        if not self.settings.username:
            return dict(params)
        if self._token is None or self.clock() >= self._renew_at:
            await self._login()
        assert self._token is not None
        return {**params, "accessToken": self._token}

    async def _login(self) -> None:
        form = {"username": self.settings.username, "password": self.settings.password}
        status, text = await self._call("POST", LOGIN, {}, form)
        who = f"login as {self.settings.username!r}"
        if status != 200:
            raise NacosError(f"{who} refused: HTTP {status}: {self._clean(text)[:200]}")
        try:
            body = json.loads(text)
            token, ttl = body["accessToken"], float(body.get("tokenTtl", 18000))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
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

    async def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        form: Mapping[str, Any] | None = None,
    ) -> tuple[int, str]:
        """(status, body) from the first server that answers; NacosUnavailable if none."""
        servers = self.settings.servers
        failures = []
        for step in range(len(servers)):
            index = (self._current + step) % len(servers)
            try:
                async with self.session.request(
                    method, servers[index] + path, params=params, data=form
                ) as response:
                    text = await _text(response, path)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                reason = self._clean(str(exc)) or type(exc).__name__
                failures.append(f"{servers[index]}: {reason}")
                continue
            self._current = index
            return response.status, text
        raise NacosUnavailable(f"no Nacos server answered {path}: {'; '.join(failures)}")


async def _text(response: aiohttp.ClientResponse, path: str) -> str:
    """The body of ``response`` as text; QueryError past ``MAX_BODY`` bytes."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(2**16):
        body += chunk
        if len(body) > MAX_BODY:
            raise QueryError(f"{path}: the answer is larger than {MAX_BODY} bytes")
    return body.decode("utf-8", errors="replace")  # JSON is UTF-8 (RFC 8259)
