"""An in-memory registry: a real adapter whose state the caller sets directly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from registryd.adapter import (
    AdapterContext,
    Delete,
    Problems,
    Replace,
    Update,
    Upsert,
)
from registryd.model import Endpoint, Service
from registryd.settings import SettingsReader

__all__ = ["MemoryAdapter"]


class MemoryAdapter:
    """Holds services and endpoints in memory and follows the adapter contract.

    ``set()``/``upsert()``/``delete()`` change the state; a running ``watch()`` yields the
    matching increments; ``report()`` sets the current :class:`Problems`, which a
    ``watch()`` also yields after its ``Replace``.  ``fail(exc)`` makes the running
    ``watch()`` raise ``exc`` (as a registry that went away would); the next ``watch()``
    starts with a full ``Replace``.
    """

    def __init__(
        self,
        *,
        name: str = "memory",
        settings: Mapping[str, Any] | None = None,
        context: AdapterContext | None = None,
    ) -> None:
        SettingsReader(name, "memory", settings or {}, known=())  # takes none
        self.name = name
        self.services: dict[str, Service] = {}
        self.endpoints: dict[str, tuple[Endpoint, ...]] = {}
        self.problems: Problems | None = None
        self._queues: list[asyncio.Queue[Update | BaseException]] = []
        self.watches = 0

    def set(self, services: Iterable[Service], endpoints: Iterable[Endpoint] = ()) -> None:
        """Replace the whole state (running watchers get a ``Replace``)."""
        self.services = {s.hostname: s for s in services}
        grouped: dict[str, list[Endpoint]] = {}
        for e in endpoints:
            grouped.setdefault(e.hostname, []).append(e)
        self.endpoints = {h: tuple(v) for h, v in grouped.items()}
        self._emit(self._replace())

    def upsert(self, service: Service, endpoints: Iterable[Endpoint] = ()) -> None:
        self.services[service.hostname] = service
        self.endpoints[service.hostname] = tuple(endpoints)
        self._emit(Upsert(service=service, endpoints=self.endpoints[service.hostname]))

    def delete(self, hostname: str) -> None:
        self.services.pop(hostname, None)
        self.endpoints.pop(hostname, None)
        self._emit(Delete(hostname=hostname))

    def report(self, problems: Problems) -> None:
        """Replace the current problems (errors, raw sources, warnings)."""
        self.problems = problems
        self._emit(problems)

    def fail(self, error: BaseException) -> None:
        self._emit(error)

    def _replace(self) -> Replace:
        return Replace(
            services=tuple(self.services.values()),
            endpoints=tuple(e for eps in self.endpoints.values() for e in eps),
        )

    @property
    def pending(self) -> int:
        """Items emitted that a running ``watch()`` has not taken yet.  Whoever iterates
        ``watch()`` gets each item the moment it is taken, so 0 means everything emitted
        so far has been handed on."""
        return sum(queue.qsize() for queue in self._queues)

    def _emit(self, item: Update | BaseException) -> None:
        for queue in self._queues:
            queue.put_nowait(item)

    async def watch(self) -> AsyncIterator[Update]:
        queue: asyncio.Queue[Update | BaseException] = asyncio.Queue()
        self._queues.append(queue)
        self.watches += 1
        try:
            yield self._replace()
            if self.problems is not None:
                yield self.problems
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._queues.remove(queue)
