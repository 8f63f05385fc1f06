"""The kubernetes registry: Services and EndpointSlices of one cluster, listed and watched.

Mapping rules: :mod:`.mapping`; settings: :mod:`.settings`; requests: :mod:`.client`.

Contract (see :mod:`registryd.adapter`):

* ``watch()`` loads the cluster's configuration, then follows, each with a list and a
  watch (an *informer*): Services, EndpointSlices and Pods (all namespaces, or each of
  ``namespaces``), Nodes (for locality) and, with ``namespace_selector``, Namespaces.
  Of a Pod only its name, namespace and labels are kept (cut down as each list page
  or event arrives: see :mod:`.pods`).
  Once the first list of every one of them has completed it yields a
  :class:`~registryd.adapter.Replace` with the full state and a
  :class:`~registryd.adapter.Problems`; then, as events arrive, one ``Upsert``/``Delete``
  per changed hostname (events that arrive together are applied together) and a new
  ``Problems`` whenever the errors or the summaries changed.
* Each informer lists, remembers the list's resourceVersion and watches from it with
  ``allowWatchBookmarks=true`` and a ``timeoutSeconds`` drawn between
  :data:`WATCH_TIMEOUT_MIN` and :data:`WATCH_TIMEOUT_MAX` (as client-go does), moving
  its resourceVersion with every event and BOOKMARK.  A stream that ends (the timeout)
  or drops (connection reset, silence) is watched again from that resourceVersion, not
  listed again, so no event is lost; a stream that ends again within
  :data:`SHORT_STREAM` seconds makes the next one wait (0.1 s doubling to
  :data:`MAX_REWATCH_DELAY`).
* An ERROR event with code 410 (Expired/Gone), or a 410 answer to the watch request:
  that informer lists its resource again and carries on from the new list; the
  difference comes out as ``Upsert``/``Delete`` increments (not a ``Replace``: the other
  resources are still current).
* Nodes and Pods are optional (they only add locality regions and endpoint labels):
  when the credentials may not read one of them (403) the registry syncs without it,
  reports the refusal under ``Node`` or ``Pod`` (its Problems) and lists that kind again
  every :data:`FORBIDDEN_RETRY` seconds, so a permission granted later is picked up
  without a restart.  Labels read before a refusal stay in use.
* Failures make ``watch()`` raise :class:`~.client.KubernetesError`: a kubeconfig that
  cannot be loaded, an API server that cannot be reached, refuses (401, 403, 404) or
  keeps failing (5xx after :data:`~.client.SERVER_RETRIES` retries), an ERROR event
  other than 410.  The supervisor keeps the last good state served and calls ``watch()``
  again with backoff, which reloads the kubeconfig and starts with a full ``Replace``.
  429 answers wait ``Retry-After`` instead (see :mod:`.client`).
* All requests of one registry instance (lists, watches, retries; across restarts of
  ``watch()``) share one token bucket: ``qps`` a second, ``burst`` at once.
* The informers and the HTTP session are closed in ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from registryd.adapter import (
    PROBLEMS_EVERY,
    AdapterContext,
    Update,
    describe_error,
    follow,
)
from registryd.ratelimit import TokenBucket

from .client import Api, Forbidden, Gone, KubernetesError, Resource, Sleep, connect
from .mapping import Options
from .objects import ENDPOINT_SLICE, NAMESPACE, NODE, POD, SERVICE
from .pods import shrink_pod
from .settings import KubernetesSettings, parse_settings
from .state import ClusterState

__all__ = [
    "FORBIDDEN_RETRY",
    "MAX_REWATCH_DELAY",
    "SHORT_STREAM",
    "WATCH_TIMEOUT_MAX",
    "WATCH_TIMEOUT_MIN",
    "KubernetesAdapter",
    "KubernetesError",
]

log = logging.getLogger("registryd.kubernetes")

WATCH_TIMEOUT_MIN = 300  # seconds: a watch asks the server to end it after 5 to 10 min
WATCH_TIMEOUT_MAX = 600
SHORT_STREAM = 1.0  # seconds: a watch that ends sooner counts as a failed one...
MAX_REWATCH_DELAY = 5.0  # ...and delays the next one, doubling up to this
EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED"})
FORBIDDEN_RETRY = 300.0  # seconds between listings of a forbidden optional kind
OPTIONAL = {  # kinds the registry is served without when forbidden: what is then missing
    NODE: "endpoints get locality regions only from Node labels read earlier (if any)",
    POD: "endpoints get pod labels only from Pods read earlier (if any)",
}
_SHRINK: dict[str, Callable[[Any], Any]] = {POD: shrink_pod}  # keep only what is read


@dataclass(frozen=True, slots=True)
class _Listed:
    resource: Resource
    items: list[Any]
    version: str = ""  # the list's resourceVersion


@dataclass(frozen=True, slots=True)
class _Event:
    resource: Resource
    type: str
    obj: Any


@dataclass(frozen=True, slots=True)
class _Failed:
    resource: Resource
    error: BaseException


@dataclass(frozen=True, slots=True)
class _Unavailable:
    """An optional resource that may not be read (see ``OPTIONAL``)."""

    resource: Resource
    message: str


_Item = _Listed | _Event | _Failed | _Unavailable


def _version(obj: Any) -> str:
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    value = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
    return value if isinstance(value, str) else ""


def _status_text(status: Any) -> tuple[Any, str]:
    if not isinstance(status, Mapping):
        return None, repr(status)[:200]
    code = status.get("code")
    return code, f"{code} {status.get('reason') or ''}: {status.get('message') or ''}".strip()


@dataclass(frozen=True, slots=True)
class _Time:
    """The clock and sleep the adapter measures and waits with."""

    clock: Callable[[], float] = time.monotonic
    sleep: Sleep = asyncio.sleep


class _Informer:
    """List then watch one resource, reporting what it sees (or its failure) in order."""

    def __init__(
        self, api: Api, resource: Resource, report: Callable[[_Item], None], time_: _Time
    ) -> None:
        self.api = api
        self.resource = resource
        self.report = report
        self.time = time_
        self.task = asyncio.create_task(self._run(), name=f"kubernetes:{resource}")

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except Forbidden as exc:
                if self.resource.kind not in OPTIONAL:
                    self.report(_Failed(self.resource, exc))
                    return
                self.report(_Unavailable(self.resource, str(exc)))
                await self.time.sleep(FORBIDDEN_RETRY)
            except Exception as exc:  # handed to watch(), which raises it
                self.report(_Failed(self.resource, exc))
                return

    async def _follow(self) -> None:
        """List, then watch for as long as the API server lets us."""
        version = await self._list()
        delay = 0.0
        while True:
            started = self.time.clock()
            try:
                version = await self._watch(version)
            except Gone as exc:
                log.info("%s: %s; listing again", self.resource, exc)
                version = await self._list()
                continue
            if self.time.clock() - started >= SHORT_STREAM:
                delay = 0.0
            else:
                delay = min(max(delay * 2, 0.1), MAX_REWATCH_DELAY)
                await self.time.sleep(delay)

    async def _list(self) -> str:
        items, version = await self.api.list(self.resource, _SHRINK.get(self.resource.kind))
        log.debug("%s: %d items at resourceVersion %s", self.resource, len(items), version)
        self.report(_Listed(self.resource, items, version))
        return version

    async def _watch(self, version: str) -> str:
        """One watch stream from ``version``; the resourceVersion to go on from."""
        timeout = random.randint(WATCH_TIMEOUT_MIN, WATCH_TIMEOUT_MAX)
        stream = self.api.watch(self.resource, version, timeout)
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                kind, obj = event.get("type"), event.get("object")
                if kind == "ERROR":
                    code, text = _status_text(obj)
                    if code == 410:
                        raise Gone(f"watch from resourceVersion {version}: {text}")
                    raise KubernetesError(f"watch {self.resource} on {self.api.host}: {text}")
                if isinstance(kind, str) and kind in EVENT_TYPES:
                    shrink = _SHRINK.get(self.resource.kind)
                    self.report(_Event(self.resource, kind, obj if shrink is None else shrink(obj)))
                elif kind != "BOOKMARK":
                    log.debug("%s: ignoring a watch event of type %r", self.resource, kind)
                    continue
                version = _version(obj) or version
        return version


class _Run:
    """One run of ``watch()``: the connection, the informers and the converted state."""

    def __init__(self, name: str, settings: KubernetesSettings, time_: _Time) -> None:
        self.name = name
        self.settings = settings
        self.time = time_
        self.state = ClusterState(
            Options(
                domain=settings.domain,
                cluster_id=settings.cluster_id,
                eds_for_headless=settings.eds_for_headless,
            ),
            namespaces=settings.namespaces,
            selector=settings.namespace_selector,
        )
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.informers: list[_Informer] = []
        self.pending: set[Resource] = set()
        self.api: Api | None = None
        self.version = ""  # the resourceVersion of the last list or event applied

    def resources(self) -> list[Resource]:
        scopes: list[str | None] = list(self.settings.namespaces) or [None]
        kinds = (SERVICE, ENDPOINT_SLICE, POD)
        found = [Resource(kind, scope) for kind in kinds for scope in scopes]
        found.append(Resource(NODE))
        if self.settings.namespace_selector is not None:
            found.append(Resource(NAMESPACE))
        return found

    async def start(self, limiter: TokenBucket) -> None:
        resources = self.resources()
        self.api = await connect(
            self.settings, limiter, connections=len(resources) + 4, sleep=self.time.sleep
        )
        log.info(
            "kubernetes %s: cluster %s at %s (%s); watching %s",
            self.name,
            self.settings.cluster_id,
            self.api.host,
            self.settings.source,
            ", ".join(str(r) for r in resources),
        )
        for resource in resources:
            informer = _Informer(self.api, resource, self.queue.put_nowait, self.time)
            self.informers.append(informer)
            self.pending.add(resource)

    def apply(self, item: _Item) -> None:
        if isinstance(item, _Failed):
            error = item.error
            if isinstance(error, KubernetesError):
                raise error
            raise KubernetesError(f"{item.resource}: {describe_error(error)}") from error
        if isinstance(item, _Listed):
            self.state.reset(item.resource.kind, item.items, item.resource.namespace)
            self.pending.discard(item.resource)
            self.version = item.version or self.version
        elif isinstance(item, _Unavailable):
            kind = item.resource.kind
            self.state.unavailable(
                kind,
                f"{item.message}; {OPTIONAL[kind]}; {kind}s are listed again every "
                f"{FORBIDDEN_RETRY / 60:g} min",
            )
            self.pending.discard(item.resource)
        else:
            self.state.apply(item.resource.kind, item.type, item.obj)
            self.version = _version(item.obj) or self.version

    async def apply_queued(self) -> None:
        """Wait for an item, then apply it and every other one already queued."""
        self.apply(await self.queue.get())
        while not self.queue.empty():
            self.apply(self.queue.get_nowait())

    async def close(self) -> None:
        """Stop the informers and close the session, even if cancelled meanwhile."""
        tasks = [i.task for i in self.informers]
        for task in tasks:
            task.cancel()
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            if self.api is not None:
                await asyncio.shield(self.api.close())


class KubernetesAdapter:
    """Services of one Kubernetes cluster (see the module docstring).

    ``clock`` and ``sleep`` are what the rate limit, the retries and the re-watch delays
    measure and wait with (tests give a fake pair)."""

    default_priority = 400  # merge priority when registryd.yaml gives none
    default_export = False  # not sent to istiod over MCP unless asked: it reads its own
    log_scope = "kubernetes"
    log_description = "Kubernetes registry adapter: Services, EndpointSlices and Nodes."

    def __init__(
        self,
        *,
        name: str,
        settings: Mapping[str, Any],
        context: AdapterContext,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.name = name
        self.settings = parse_settings(name, settings, context)
        self._time = _Time(clock, sleep)
        self.limiter = TokenBucket(self.settings.qps, self.settings.burst, clock=clock, sleep=sleep)

    def __repr__(self) -> str:
        s = self.settings
        return f"KubernetesAdapter(name={self.name!r}, cluster_id={s.cluster_id!r}, {s.source})"

    async def watch(self) -> AsyncIterator[Update]:
        run = _Run(self.name, self.settings, self._time)
        try:
            await run.start(self.limiter)
            while run.pending:
                await run.apply_queued()
            full = dataclasses.replace(run.state.replace(), revision=run.version)
            log.info(
                "kubernetes %s: %d services, %d endpoints",
                self.name,
                len(full.services),
                len(full.endpoints),
            )
            yield full
            problems = run.state.problems()
            yield problems
            updates = follow(
                run.apply_queued,
                run.state.changes,
                run.state.problems,
                problems,
                every=PROBLEMS_EVERY,
                revision=lambda: run.version,  # of the last object applied
            )
            async with contextlib.aclosing(updates):
                async for update in updates:
                    yield update
        finally:
            await run.close()
