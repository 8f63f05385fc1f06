"""The Nacos registry: services and instances from a Nacos server, by polling.

Contract (see :mod:`registryd.adapter`):

* Every ``poll_interval`` seconds (±10 % jitter) ``watch()`` lists the services of each
  configured group of the namespace (``GET /nacos/v1/ns/service/list``, page by page,
  at most ``max_services`` in all) and reads each one's instances
  (``GET /nacos/v1/ns/instance/list``, at most :data:`CONCURRENCY` at a time, each
  within ``request_timeout``: a slow service delays a poll by that much at most).  The
  first poll of every ``watch()`` yields a :class:`~registryd.adapter.Replace` with the
  full state and a :class:`~registryd.adapter.Problems`; later polls yield one
  ``Upsert``/``Delete`` per hostname that changed, then a new ``Problems`` when it
  changed.
* Change detection: an instance list whose ``checksum`` (or, when the server sends an
  empty one, whose ``hosts``) equals the last one converted is not converted again.
* One service's failure (an HTTP error status, an answer that is not an instance list,
  one over ``max_response_bytes`` or not whole within ``request_timeout``, a hostname
  that is not a DNS name, any exception while converting its answer) is that
  service's alone: it keeps its last good endpoints (none if it never had any), the
  error shows in the ``Problems`` under its source ``<group>@@<service>``, and the next
  poll tries again.
* A failed service listing (more than ``max_services`` services included), no server
  answering, or a refused login makes ``watch()`` raise (:class:`~.client.NacosError`,
  :class:`~.client.QueryError`); the supervisor keeps the last good state served and
  restarts it with backoff.  The HTTP session is closed in ``finally``.

* It logs under the scope ``nacos`` (``--log_output_level nacos:debug``): one info
  line per full state, with its services, endpoints and the server that answered, as
  the Consul and etcd adapters do; problems are logged by registryd.

Hostnames and the mapping: :mod:`.convert`.  Settings: :mod:`.settings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from registryd.adapter import (
    AdapterContext,
    Delete,
    Problems,
    Replace,
    Update,
    Upsert,
    describe_error,
    follow,
    increments,
)
from registryd.model import Endpoint, Service
from registryd.ratelimit import TokenBucket

from .client import NacosClient, NacosError, QueryError
from .convert import Converted, convert_service, hostname
from .settings import NacosSettings, parse_settings

__all__ = ["CONCURRENCY", "NacosAdapter", "NacosError", "Record", "Snapshot"]

log = logging.getLogger("registryd.nacos")

CONCURRENCY = 8  # instance lists read at the same time
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Record:
    """The last reading of one Nacos service: what it converted to (last good), the
    signature of that answer, and the error of the latest attempt, if it failed."""

    converted: Converted | None = None
    signature: str = ""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The shard after one poll: services and endpoints by hostname, and problems."""

    services: Mapping[str, Service] = field(default_factory=dict)
    endpoints: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    problems: Problems = field(default_factory=Problems)


def signature(document: Mapping[str, Any]) -> str:
    """What identifies the content of an instance-list answer."""
    checksum = document.get("checksum")
    if isinstance(checksum, str) and checksum:
        return "checksum:" + checksum
    return "hosts:" + json.dumps(document.get("hosts"), sort_keys=True, default=str)


def snapshot(records: Mapping[tuple[str, str], Record]) -> Snapshot:
    """The shard the records make.  Pure.  Two services with one hostname: the first by
    (group, name) wins, the other is an error."""
    services: dict[str, Service] = {}
    endpoints: dict[str, tuple[Endpoint, ...]] = {}
    owners: dict[str, str] = {}
    errors: dict[str, str] = {}
    warnings: list[str] = []
    for (group, name), record in sorted(records.items()):
        source = f"{group}@@{name}"
        if record.error is not None:
            errors[source] = record.error
        converted = record.converted
        if converted is None:
            continue
        host = converted.service.hostname
        if host in owners:
            errors[source] = f"hostname {host} is already that of {owners[host]}"
            continue
        owners[host] = source
        services[host], endpoints[host] = converted.service, converted.endpoints
        warnings.extend(f"{source}: {note}" for note in converted.notes)
    return Snapshot(services, endpoints, Problems(errors=errors, warnings=tuple(warnings)))


class _Poller:
    """One ``watch()``'s polls: the client and the record of every service."""

    def __init__(self, settings: NacosSettings, client: NacosClient) -> None:
        self.settings = settings
        self.client = client
        self.records: dict[tuple[str, str], Record] = {}
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def poll(self) -> Snapshot:
        names: list[tuple[str, str]] = []
        for group in self.settings.groups:
            budget = self.settings.max_services - len(names)
            names.extend((group, name) for name in await self.client.service_names(group, budget))
        try:
            async with asyncio.TaskGroup() as tasks:
                reads = {key: tasks.create_task(self._read(*key)) for key in names}
        except* NacosError as group:
            raise group.exceptions[0] from None
        self.records = {key: task.result() for key, task in reads.items()}
        return snapshot(self.records)

    async def _read(self, group: str, name: str) -> Record:
        old = self.records.get((group, name), Record())
        async with self._slots:
            try:
                document = await self.client.instances(group, name)
            except QueryError as exc:
                return Record(old.converted, old.signature, str(exc))
        settings = self.settings
        try:
            sign = signature(document)
            if sign == old.signature and old.error is None:
                return old
            host = hostname(
                settings.hostname_template,
                service=name,
                group=group,
                namespace=settings.namespace,
            )
            converted = convert_service(
                document,
                host=host,
                namespace=settings.namespace,
                zone_from=settings.zone_from,
                weight_scale=settings.weight_scale,
            )
        except Exception as exc:  # ValueError, or a bug...: this service's error only
            return Record(old.converted, old.signature, describe_error(exc, own=(ValueError,)))
        return Record(converted, sign)


class _Polls:
    """The latest poll's snapshot and the one last handed out."""

    def __init__(self, first: Snapshot) -> None:
        self.latest = self.shown = first

    def replace(self) -> Replace:
        self.shown = self.latest
        return Replace(
            services=tuple(self.latest.services.values()),
            endpoints=tuple(e for eps in self.latest.endpoints.values() for e in eps),
        )

    def changes(self) -> list[Upsert | Delete]:
        """One ``Upsert``/``Delete`` per hostname that changed since the last hand-out."""
        old, self.shown = self.shown, self.latest
        return increments(old.services, old.endpoints, self.latest.services, self.latest.endpoints)

    def problems(self) -> Problems:
        return self.latest.problems


class NacosAdapter:
    """The ``nacos`` adapter factory and adapter (see the module docstring)."""

    default_priority = 50  # merge priority when registryd.yaml gives none
    log_scope = "nacos"
    log_description = "Nacos registry adapter: polls of the service lists and instance lists."

    def __init__(
        self,
        *,
        name: str,
        settings: Mapping[str, Any],
        context: AdapterContext,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = lambda: random.uniform(0.9, 1.1),
    ) -> None:
        """``sleep`` waits between polls, for ``poll_interval`` times ``jitter()``
        (tests pass their own)."""
        self.name = name
        self.settings = parse_settings(name, settings)
        self._sleep = sleep
        self._jitter = jitter

    def __repr__(self) -> str:  # no password
        return f"NacosAdapter(name={self.name!r}, servers={list(self.settings.servers)!r})"

    async def watch(self) -> AsyncIterator[Update]:
        settings = self.settings
        limiter = TokenBucket(settings.max_qps, max(1, int(settings.max_qps)))
        # connecting and any silence; each call's whole deadline is request_timeout
        timeout = aiohttp.ClientTimeout(connect=settings.timeout, sock_read=settings.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            client = NacosClient(settings, session, limiter)
            poller = _Poller(settings, client)
            polls = _Polls(await poller.poll())
            full = polls.replace()
            log.info(
                "nacos %s: %d services, %d endpoints from %s",
                self.name,
                len(full.services),
                len(full.endpoints),
                client.server,
            )
            yield full
            yield polls.latest.problems

            async def poll_again() -> None:
                await self._sleep(settings.poll_interval * self._jitter())
                polls.latest = await poller.poll()

            updates = follow(poll_again, polls.changes, polls.problems, polls.latest.problems)
            async with contextlib.aclosing(updates):
                async for update in updates:
                    yield update
