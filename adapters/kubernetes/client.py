"""The kubernetes registry's API-server side: connection, rate limit, list and watch.

Contract:

* :func:`connect` loads the cluster's configuration (``config.load_kube_config`` from the
  kubeconfig and context, or ``config.load_incluster_config``) into a fresh
  ``Configuration`` (never the process-wide default) and opens a
  ``client.ApiClient``; :class:`Api` makes every request through ``CoreV1Api`` /
  ``DiscoveryV1Api`` with ``_preload_content=False`` and reads the JSON itself: objects
  stay plain dicts (what :mod:`.parse` reads), and the status and ``Retry-After`` of
  every response, watches included, are seen.  ``watch.Watch`` is not used: it hides
  both, turns a non-JSON error body into an event and opens a second connection pool.
* Every wait before a retry is the ``sleep`` the :class:`Api` was given.
* Every request first takes a token from the adapter's
  :class:`~registryd.ratelimit.TokenBucket` (``qps`` tokens a second, at most ``burst``
  saved up), as client-go's rate limiter does.
* Answers: 2xx is used; 410 Gone raises :class:`Gone` (the caller lists again); 429 waits
  ``Retry-After`` seconds (1 s without one, at most :data:`MAX_RETRY_AFTER`) and tries
  again, up to :data:`MAX_THROTTLED` times; a 5xx is tried again up to
  :data:`SERVER_RETRIES` times (after ``Retry-After``, or 0.5 s doubling); anything else
  (401, 403, 404, repeated 5xx) raises :class:`KubernetesError` naming the resource
  (:class:`Forbidden` for 403).  A failed connection is tried once more after
  :data:`CONNECT_RETRY_DELAY` s (a pooled keep-alive connection the server has
  closed), then raises.  Connecting times out after
  :data:`CONNECT_TIMEOUT` seconds, a list page after :data:`LIST_TIMEOUT`.
* Every answer is bounded before it is parsed (``max_response_bytes``): a list page is
  read up to that many bytes and a watch event (one line) too, and parsed within the
  :class:`~registryd.adapter.JsonLimits` of that size, off the event loop when large
  (:func:`~registryd.adapter.load_json`); an answer over a limit raises
  :class:`KubernetesError` naming the setting (it would come again: the registry
  fails).  Error bodies are read up to :data:`MAX_ERROR_BODY` bytes.
* :meth:`Api.list` reads a resource in pages of :data:`PAGE_SIZE` (``limit`` /
  ``continue``), from the API server's current state (no ``resourceVersion``), and returns
  the items (each passed through an optional ``shrink`` as its page arrives, so a list of
  many Pods never holds them whole) and the list's ``resourceVersion``; an expired
  ``continue`` token starts the list over.
* :meth:`Api.watch` opens a watch (``watch=true&allowWatchBookmarks=true&
  resourceVersion=<rv>&timeoutSeconds=<t>``) and yields its events as dicts until the
  stream ends (the server's timeout, or a clean close) or drops (connection reset, no
  data for ``t`` + :data:`READ_SLACK` seconds): both simply end the iteration, so the
  caller watches again from its last resourceVersion.

Credentials (tokens, passwords, keys from the kubeconfig or the service account) travel
only in request headers and TLS.  They are not logged and not put in errors: a
kubeconfig that fails to load gives a message with every credential of the file replaced
by ``<redacted>`` (the loader's own messages may quote the user entry), and the same
redaction filters the loader's log records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import yaml
from aiohttp.http_exceptions import LineTooLong
from kubernetes_asyncio import client as kube_client
from kubernetes_asyncio import config as kube_config

from registryd.adapter import (
    JsonLimits,
    JsonTooLarge,
    RegistryUnavailable,
    describe_error,
    load_json,
    parse_json,
    read_capped,
)
from registryd.ratelimit import TokenBucket

from .objects import ENDPOINT_SLICE, NAMESPACE, NODE, POD, SERVICE
from .settings import KubernetesSettings

__all__ = [
    "CONNECT_RETRY_DELAY",
    "CONNECT_TIMEOUT",
    "LIST_TIMEOUT",
    "MAX_ERROR_BODY",
    "MAX_RETRY_AFTER",
    "MAX_THROTTLED",
    "PAGE_SIZE",
    "READ_SLACK",
    "SERVER_RETRIES",
    "Api",
    "Forbidden",
    "Gone",
    "KubernetesError",
    "Resource",
    "TokenBucket",
    "connect",
    "list_page",
    "redact",
]

log = logging.getLogger("registryd.kubernetes")

Sleep = Callable[[float], Awaitable[object]]

CONNECT_TIMEOUT = 5.0  # seconds to open a connection to the API server
LIST_TIMEOUT = 60.0  # seconds for one list page
READ_SLACK = 30.0  # a watch silent this long past its timeoutSeconds is dropped
PAGE_SIZE = 500  # items per list page, as client-go's reflector
SERVER_RETRIES = 2  # a 5xx is tried again this often before watch() fails
MAX_THROTTLED = 10  # 429s in a row before giving up
MAX_RETRY_AFTER = 30.0  # seconds: a longer Retry-After is cut to this
CONNECT_RETRIES = 1
CONNECT_RETRY_DELAY = 0.2  # seconds before a failed connection is tried again
MAX_MESSAGE = 300  # characters of an API server's error message kept
MAX_ERROR_BODY = 64 * 2**10  # bytes of an error answer read for its message
CHUNK = 2**16  # bytes read at a time
DEFAULT_LIMITS = JsonLimits()  # as the default of max_response_bytes
_RESOURCES = {
    SERVICE: ("services", "/api/v1"),
    ENDPOINT_SLICE: ("endpointslices", "/apis/discovery.k8s.io/v1"),
    NODE: ("nodes", "/api/v1"),
    NAMESPACE: ("namespaces", "/api/v1"),
    POD: ("pods", "/api/v1"),
}


class KubernetesError(RegistryUnavailable, RuntimeError):
    """The API server cannot be used right now (unreachable, refusing, failing)."""


class Gone(KubernetesError):
    """410 Gone / Expired: the resourceVersion (or continue token) is too old."""


class Forbidden(KubernetesError):
    """403: the credentials may not read this resource (RBAC)."""


@dataclass(frozen=True, slots=True)
class Resource:
    """One list/watch target: a kind, in one namespace or in all (``None``)."""

    kind: str
    namespace: str | None = None

    @property
    def path(self) -> str:
        plural, prefix = _RESOURCES[self.kind]
        where = f"/namespaces/{self.namespace}" if self.namespace else ""
        return f"{prefix}{where}/{plural}"

    def __str__(self) -> str:
        return self.path


# -- credentials stay out of messages ----------------------------------------------------

_SECRETS: set[str] = set()  # credential strings of every kubeconfig loaded in this process
_MIN_SECRET = 6


def _collect(value: Any, into: set[str]) -> None:
    if isinstance(value, str):
        if len(value) >= _MIN_SECRET:
            into.add(value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, into)
    elif isinstance(value, list):
        for item in value:
            _collect(item, into)


def kubeconfig_secrets(text: str) -> set[str]:
    """Every string of the ``users`` entries of a kubeconfig (tokens, passwords, keys,
    exec arguments): what must never be shown."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return set()
    found: set[str] = set()
    users = data.get("users") if isinstance(data, dict) else None
    for user in users if isinstance(users, list) else []:
        if isinstance(user, dict):
            _collect(user.get("user"), found)
    return found


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known credential replaced by ``<redacted>``."""
    for secret in sorted({*secrets, *_SECRETS}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "<redacted>")
    return text


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            record.msg = redact(record.getMessage())
            record.args = None
        return True


_LOADER_LOGGERS = (
    "kubernetes_asyncio.config.kube_config",
    "kubernetes_asyncio.config.exec_provider",
)
_FILTER = _RedactingFilter()
for _name in _LOADER_LOGGERS:
    logging.getLogger(_name).addFilter(_FILTER)


def public_host(host: str) -> str:
    """The API server URL without any user info."""
    parts = urllib.parse.urlsplit(host)
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# -- connecting -------------------------------------------------------------------------------


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


async def _configuration(settings: KubernetesSettings) -> Any:
    """A fresh ``Configuration`` for the cluster, or KubernetesError (redacted)."""
    configuration = kube_client.Configuration()
    secrets: set[str] = set()
    try:
        if settings.kubeconfig is None:
            kube_config.load_incluster_config(client_configuration=configuration)
        else:
            secrets = kubeconfig_secrets(await asyncio.to_thread(_read, settings.kubeconfig))
            _SECRETS.update(secrets)
            await kube_config.load_kube_config(
                config_file=settings.kubeconfig,
                context=settings.context,
                client_configuration=configuration,
                persist_config=False,
            )
    except Exception as exc:  # the loaders raise anything from ConfigException to KeyError
        raise KubernetesError(
            f"{settings.source}: cannot load it: {_redacted(exc, secrets)}"
        ) from None
    return configuration


def _redacted(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """:func:`~registryd.adapter.describe_error` of ``exc`` with every credential
    redacted (before shortening)."""
    return describe_error(exc, text=redact(str(exc), secrets))


async def connect(
    settings: KubernetesSettings,
    limiter: TokenBucket,
    connections: int,
    *,
    sleep: Sleep = asyncio.sleep,
) -> Api:
    """An :class:`Api` on the cluster of ``settings``; ``connections`` bounds the
    connection pool (one per watch, plus room for lists); ``sleep`` waits before a retry."""
    configuration = await _configuration(settings)
    configuration.connection_pool_maxsize = connections
    try:  # reads the CA and client certificate files
        api_client = kube_client.ApiClient(configuration)
    except Exception as exc:
        raise KubernetesError(f"{settings.source}: TLS setup: {_redacted(exc)}") from None
    return Api(api_client, limiter, sleep=sleep, limits=settings.limits)


# -- requests ---------------------------------------------------------------------------------


def _retry_after(response: aiohttp.ClientResponse, default: float) -> float:
    value = response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        return default
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


async def _error_message(response: aiohttp.ClientResponse) -> str:
    """The API server's ``Status.message`` (or the start of the body)."""
    chunks = response.content.iter_chunked(CHUNK)
    try:
        body = await asyncio.wait_for(read_capped(chunks, MAX_ERROR_BODY), CONNECT_TIMEOUT)
    except (JsonTooLarge, aiohttp.ClientError, TimeoutError):
        return response.reason or ""
    finally:
        response.release()
    text = body.decode("utf-8", "replace")
    try:
        data = parse_json(body, JsonLimits(max_bytes=MAX_ERROR_BODY))
    except ValueError:  # not JSON, or over a limit
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        text = data["message"]
    return " ".join(text.split())[:MAX_MESSAGE]


def list_page(data: Any) -> dict[str, Any]:
    """``data`` if it is a page of a list (an object whose ``items``, if any, are a
    list); ValueError otherwise.  Pure."""
    if not isinstance(data, dict) or not isinstance(data.get("items", []), list | None):
        raise ValueError("the answer is not a list")
    return data


def _over(exc: JsonTooLarge) -> str:
    """The message of an answer over a limit, naming the setting behind it."""
    return str(exc) if exc.limit == "max_depth" else f"{exc} (max_response_bytes)"


def _advice(status: int, resource: Resource) -> str:
    if status == 401:
        return ": the credentials were not accepted"
    if status == 403:
        plural = _RESOURCES[resource.kind][0]
        return f": the credentials need 'list' and 'watch' on {plural}"
    if status == 404 and resource.kind == ENDPOINT_SLICE:
        return ": discovery.k8s.io/v1 EndpointSlices need Kubernetes 1.21 or later"
    return ""


class Api:
    """Requests to one API server (see the module docstring)."""

    def __init__(
        self,
        api_client: Any,
        limiter: TokenBucket,
        *,
        sleep: Sleep = asyncio.sleep,
        limits: JsonLimits = DEFAULT_LIMITS,
    ) -> None:
        self.api_client = api_client
        self.sleep = sleep
        self.limits = limits
        self.host = public_host(str(api_client.configuration.host))
        self.limiter = limiter
        self._core = kube_client.CoreV1Api(api_client)
        self._discovery = kube_client.DiscoveryV1Api(api_client)

    def _method(self, resource: Resource) -> Callable[..., Awaitable[Any]]:
        core, discovery, namespace = self._core, self._discovery, resource.namespace
        if resource.kind == SERVICE:
            if namespace is None:
                return core.list_service_for_all_namespaces
            return lambda **kw: core.list_namespaced_service(namespace, **kw)
        if resource.kind == ENDPOINT_SLICE:
            if namespace is None:
                return discovery.list_endpoint_slice_for_all_namespaces
            return lambda **kw: discovery.list_namespaced_endpoint_slice(namespace, **kw)
        if resource.kind == POD:
            if namespace is None:
                return core.list_pod_for_all_namespaces
            return lambda **kw: core.list_namespaced_pod(namespace, **kw)
        if resource.kind == NODE:
            return core.list_node
        return core.list_namespace

    async def _request(
        self, resource: Resource, what: str, timeout: aiohttp.ClientTimeout, **params: Any
    ) -> aiohttp.ClientResponse:
        """One request with the retry policy; a 2xx response (the caller releases it)."""
        method = self._method(resource)
        failures = {"connect": 0, "server": 0, "throttled": 0}
        while True:
            await self.limiter.acquire()
            try:
                response: aiohttp.ClientResponse = await method(
                    _preload_content=False, _request_timeout=timeout, **params
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                failures["connect"] += 1
                if failures["connect"] > CONNECT_RETRIES:
                    raise KubernetesError(
                        f"{what} {resource} on {self.host}: {describe_error(exc)}"
                    ) from exc
                await self.sleep(CONNECT_RETRY_DELAY)
                continue
            status = response.status
            if 200 <= status < 300:
                return response
            delay = await self._retry_delay(response, failures)
            if delay is None:
                message = await _error_message(response)
                text = f"{what} {resource} on {self.host}: HTTP {status}: {message}"
                if status == 410:
                    raise Gone(text)
                if status == 403:
                    raise Forbidden(text + _advice(status, resource))
                raise KubernetesError(text + _advice(status, resource))
            log.info(
                "%s %s on %s: HTTP %d; again in %.1fs", what, resource, self.host, status, delay
            )
            response.release()
            await self.sleep(delay)

    @staticmethod
    async def _retry_delay(
        response: aiohttp.ClientResponse, failures: dict[str, int]
    ) -> float | None:
        """How long to wait before trying again, or None to give up."""
        status = response.status
        if status == 429 and failures["throttled"] < MAX_THROTTLED:
            failures["throttled"] += 1
            return _retry_after(response, 1.0)
        if status >= 500 and failures["server"] < SERVER_RETRIES:
            failures["server"] += 1
            return _retry_after(response, 0.5 * 2 ** (failures["server"] - 1))
        return None

    async def _json(self, resource: Resource, **params: Any) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=LIST_TIMEOUT, sock_connect=CONNECT_TIMEOUT)
        response = await self._request(resource, "list", timeout, **params)
        try:
            body = await read_capped(response.content.iter_chunked(CHUNK), self.limits.max_bytes)
            data = await load_json(body, self.limits)
        except JsonTooLarge as exc:
            raise KubernetesError(f"list {resource} on {self.host}: {_over(exc)}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise KubernetesError(f"list {resource} on {self.host}: {describe_error(exc)}") from exc
        except ValueError:  # not JSON
            data = None
        finally:
            response.release()
        try:
            return list_page(data)
        except ValueError as exc:
            raise KubernetesError(f"list {resource} on {self.host}: {exc}") from None

    async def list(
        self, resource: Resource, shrink: Callable[[Any], Any] | None = None
    ) -> tuple[list[Any], str]:
        """Every object of ``resource`` now, and the list's resourceVersion; ``shrink``
        is applied to each item as its page arrives (only what it returns is kept)."""
        for attempt in range(3):
            items: list[Any] = []
            token = ""
            try:
                while True:
                    params: dict[str, Any] = {"limit": PAGE_SIZE}
                    if token:
                        params["_continue"] = token
                    data = await self._json(resource, **params)
                    page = data.get("items") or []
                    items.extend(page if shrink is None else map(shrink, page))
                    metadata = data.get("metadata") or {}
                    token = metadata.get("continue") or ""
                    if not token:
                        return items, str(metadata.get("resourceVersion") or "")
            except Gone:
                if attempt == 2 or not token:
                    raise
                log.info(
                    "list %s on %s: the continue token expired; listing again", resource, self.host
                )
        raise AssertionError("unreachable")

    async def watch(
        self, resource: Resource, resource_version: str, timeout_seconds: int
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The events of one watch stream (see the module docstring); raises
        :class:`Gone` when ``resource_version`` is too old to watch from."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT, sock_read=timeout_seconds + READ_SLACK
        )
        response = await self._request(
            resource,
            "watch",
            timeout,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
        )
        try:
            while True:
                try:
                    line = await response.content.readline(max_line_length=self.limits.max_bytes)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.debug(
                        "watch %s on %s dropped: %s", resource, self.host, describe_error(exc)
                    )
                    return
                except (ValueError, LineTooLong):  # over the limit: it would come again
                    raise KubernetesError(
                        f"watch {resource} on {self.host}: an event larger than "
                        f"{self.limits.max_bytes} bytes (max_response_bytes)"
                    ) from None
                if not line:
                    return
                if not line.strip():
                    continue
                try:
                    event = await load_json(line, self.limits)
                except JsonTooLarge as exc:
                    raise KubernetesError(
                        f"watch {resource} on {self.host}: {_over(exc)}"
                    ) from None
                except ValueError:  # not JSON
                    raise KubernetesError(
                        f"watch {resource} on {self.host}: not a JSON event: {line[:100]!r}"
                    ) from None
                if not isinstance(event, dict):
                    raise KubernetesError(f"watch {resource} on {self.host}: not an event")
                yield event
        finally:
            response.close()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.api_client.close(), CONNECT_TIMEOUT)
