"""A complete registryd adapter plugin: services from an in-house HTTP inventory.

registryd finds it through the ``registryd.adapters`` entry point named ``inventory``
(see this package's pyproject.toml) and builds one :class:`InventoryAdapter` per
registry of that type in registryd.yaml::

    registries:
    - name: cmdb
      type: inventory
      url: http://inventory.internal:8000/services
      interval: 10          # seconds between polls (default 10)
      token: ...            # optional bearer token; registryd never shows it

The adapter follows registryd's contract (``registryd.adapter``): after every start of
``watch()`` it yields the full state as a ``Replace``, then one ``Upsert``/``Delete`` per
hostname that changed; per-service errors go out as ``Problems``; a failed request
raises, and registryd retries with backoff while the last good state stays served.
Polls send ``If-None-Match`` so an unchanged inventory costs a 304.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from registryd.adapter import (
    AdapterContext,
    Delete,
    Problems,
    Replace,
    Update,
    Upsert,
    follow,
    increments,
)
from registryd.settings import SettingsReader

from .convert import Inventory, convert

__all__ = ["InventoryAdapter"]

SETTINGS = ("url", "interval", "timeout", "hostname_suffix", "token")


class InventoryAdapter:
    def __init__(self, *, name: str, settings: Mapping[str, Any], context: AdapterContext):
        reader = SettingsReader(name, "inventory", settings, SETTINGS)
        url = reader.text("url")
        if url is None or not url.startswith(("http://", "https://")):
            raise reader.error(f"'url' must be an http(s) URL, got {url!r}")
        self.name = name
        self.url = url
        self.interval = reader.number("interval", 10, unit="seconds")
        self.timeout = reader.number("timeout", 5, unit="seconds")
        self.suffix = reader.text("hostname_suffix", "inventory.internal") or ""
        token = reader.text("token", secret=True)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    def __repr__(self) -> str:  # never show the token
        return f"InventoryAdapter(name={self.name!r}, url={self.url!r})"

    async def watch(self) -> AsyncIterator[Update]:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout, headers=self._headers) as session:
            state = _State()

            async def poll() -> None:  # what follow() awaits between increments
                await asyncio.sleep(self.interval)
                await self._poll(session, state)

            await self._poll(session, state)
            yield state.replace()
            shown = state.problems()
            yield shown
            async for update in follow(poll, state.changes, state.problems, shown):
                yield update

    async def _poll(self, session: aiohttp.ClientSession, state: _State) -> None:
        fetched = await self._fetch(session, state.etag)
        if fetched is not None:
            state.etag, document = fetched
            state.read(document, convert(document, self.suffix))

    async def _fetch(self, session: aiohttp.ClientSession, etag: str) -> tuple[str, Any] | None:
        """The new (etag, document), or None when unchanged.  Raises on any failure."""
        headers = {"If-None-Match": etag} if etag else {}
        async with session.get(self.url, headers=headers) as response:
            if response.status == 304:
                return None
            if response.status != 200:
                raise ConnectionError(f"{self.url}: HTTP {response.status}")
            try:
                document = json.loads(await response.read())
            except ValueError as exc:
                raise ValueError(f"{self.url}: not JSON: {exc}") from None
            return response.headers.get("ETag", ""), document


class _State:
    """The inventory as last read and as last handed out to registryd."""

    def __init__(self) -> None:
        self.etag = ""
        self.current = Inventory()
        self.shown = Inventory()
        self._problems = Problems()

    def read(self, document: Any, inventory: Inventory) -> None:
        if inventory.errors != self.current.errors or not self._problems.sources:
            self._problems = Problems(errors=inventory.errors, sources={"inventory": document})
        self.current = inventory

    def replace(self) -> Replace:
        """The full state; from now on :meth:`changes` starts from it."""
        self.shown = new = self.current
        endpoints = tuple(e for eps in new.endpoints.values() for e in eps)
        return Replace(services=tuple(new.services.values()), endpoints=endpoints)

    def changes(self) -> list[Upsert | Delete]:
        """One Upsert/Delete per hostname changed since the state last handed out."""
        old, self.shown = self.shown, self.current
        return increments(
            old.services, old.endpoints, self.current.services, self.current.endpoints
        )

    def problems(self) -> Problems:
        """The same object while nothing changed (``follow`` yields it only when new)."""
        return self._problems
