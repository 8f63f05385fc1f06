"""The xDS streams as the HTTP side sees them, wherever they are served.

The debug endpoints about connected clients (``/debug/connections``, ``adsz``,
``syncz``, ``config_dump``), the push traces of ``/debug/pushz`` and the stream metrics
read a :class:`Streams`: the daemon's one :class:`registryd.xds.serving.Serving`, which
extends it.  With one process that is :class:`registryd.xds.serving.LocalServing` (the
:class:`LocalStreams` of the daemon's own xDS server); with ``--xdsWorkers N`` it is the
worker pool (:class:`registryd.workers.pool.WorkerPool`), which asks each worker's
``LocalServing`` and merges the answers with the functions here, so the daemon reads as
one.

Every method is a coroutine and returns plain, picklable data (JSON-like values,
:class:`PushTrace`, prometheus ``Metric`` families).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from registryd.proxyids import select
from registryd.xds import views
from registryd.xds.dump import config_dump
from registryd.xds.server import XdsServer
from registryd.xds.stream import Connection
from registryd.xds.tracking import PushTrace, PushTracker

__all__ = [
    "LISTINGS",
    "LocalStreams",
    "Streams",
    "merge_dumps",
    "merge_families",
    "merge_listings",
    "merge_traces",
]

JSON = dict[str, Any]
Listing = list[tuple[float, JSON]]  # (connected at, rendered connection)

LISTINGS: dict[str, Callable[[list[Connection], str, bool], list[JSON]]] = {
    "connections": lambda conns, proxy, _: views.connections(conns, proxy),
    "adsz": views.adsz,
    "syncz": lambda conns, proxy, _: views.syncz(conns, proxy),
    "tables": lambda conns, proxy, _: views.tables(conns, proxy),
    "console": lambda conns, proxy, _: views.console(conns, proxy),
}
"""Per-connection views, by the name of their endpoint under ``/debug/`` (``tables``:
what ``/debug/preview`` groups clients by; ``console``: the clients of ``/debug/console``);
and ``versions`` (:func:`registryd.xds.views.versions`, what ``/debug/waitz`` reads), which
also reads the server's snapshot."""


class Streams(Protocol):
    async def listing(self, view: str, proxy_id: str = "", verbose: bool = False) -> Listing:
        """``LISTINGS[view]`` of the matching connections, oldest first, each with the
        time it connected (for merging)."""
        ...

    async def full_listing(self, view: str) -> tuple[Listing, list[str]]:
        """``LISTINGS[view]`` of every connection, and the serving processes left out of
        it because they did not answer (up, but silent or too slow), one sentence each:
        a caller that must see every connection (``/debug/waitz``) cannot trust a
        listing with gaps."""
        ...

    async def config_dump(self, proxy_id: str) -> JSON | None:
        """What the newest stream of the proxy ``proxy_id`` names is served, as Envoy's
        config_dump: ``{"connectedAt", "proxyID", "dump"}``.  The name is resolved as
        ``registryd proxy-status`` resolves it (:func:`registryd.proxyids.select`: a full
        proxy or connection id, or its ``<pod>.<namespace>`` or ``<pod>`` part).  None if
        no connection fits; ``{"ambiguous": [proxy ids]}`` if several proxies do."""
        ...

    async def traces(self) -> list[PushTrace]:
        """The kept push traces, newest first."""
        ...

    async def metric_families(self) -> list[Metric]:
        """Metrics of the streams not already in the daemon's own registry."""
        ...

    def unresponsive(self) -> list[str]:
        """The serving processes that do not answer now (a hung xDS worker), one
        sentence each: the listings and metrics leave them out, ``/ready`` names them."""
        ...


class LocalStreams:
    """The streams of one xDS server.  ``metrics``: the metrics to report through
    :meth:`metric_families` (a worker's; the daemon's own process reports its own
    registry directly and passes None).  ``worker``: the worker's number, shown on each
    connection with the worker's process id (None: the daemon's own process)."""

    def __init__(
        self,
        xds: XdsServer,
        tracker: PushTracker,
        metrics: CollectorRegistry | None = None,
        worker: int | None = None,
    ) -> None:
        self._xds = xds
        self._tracker = tracker
        self._metrics = metrics
        self._worker = worker

    def _matching(self, proxy_id: str) -> list[Connection]:
        conns = sorted(self._xds.connections.values(), key=lambda c: c.connected_at)
        return [c for c in conns if not proxy_id or proxy_id in (c.proxy_id, c.id)]

    async def listing(self, view: str, proxy_id: str = "", verbose: bool = False) -> Listing:
        conns = self._matching(proxy_id)
        if view == "versions":
            rendered = views.versions(conns, proxy_id, self._xds.snapshot)
        else:
            rendered = LISTINGS[view](conns, proxy_id, verbose)
        if self._worker is not None:
            where = {"worker": self._worker, "workerPid": os.getpid()}
            rendered = [{**item, **where} for item in rendered]
        return [(c.connected_at, item) for c, item in zip(conns, rendered, strict=True)]

    async def full_listing(self, view: str) -> tuple[Listing, list[str]]:
        return await self.listing(view), []  # this process answers, or nothing does

    async def config_dump(self, proxy_id: str) -> JSON | None:
        conns = sorted(self._xds.connections.values(), key=lambda c: c.connected_at)
        found = [conns[i] for i in select(proxy_id, [(c.proxy_id, c.id) for c in conns])]
        if not found:
            return None
        proxies = sorted({c.proxy_id for c in found})
        if len(proxies) > 1:
            return {"ambiguous": proxies}
        conn = found[-1]  # the newest stream of that proxy
        xds = self._xds
        return {
            "connectedAt": conn.connected_at,
            "proxyID": conn.proxy_id,
            "dump": config_dump(conn, xds.snapshot, version_prefix=xds.version_prefix),
        }

    async def traces(self) -> list[PushTrace]:
        return self._tracker.traces()

    async def metric_families(self) -> list[Metric]:
        return [] if self._metrics is None else list(self._metrics.collect())

    def unresponsive(self) -> list[str]:
        return []  # this process answers, or nothing does


def merge_listings(parts: Iterable[Listing]) -> Listing:
    """The listings of several servers as one, oldest connection first."""
    return sorted((item for part in parts for item in part), key=lambda pair: pair[0])


def merge_dumps(parts: Iterable[JSON | None]) -> JSON | None:
    """The ``config_dump`` answers of several servers (:meth:`Streams.config_dump`) as
    one: the newest connection's when they all name one proxy, ``{"ambiguous": [ids]}``
    when the name fits several proxies across them, None when none has a connection."""
    found = [part for part in parts if part is not None]
    proxies = {str(p) for part in found for p in part.get("ambiguous", [part.get("proxyID")])}
    if len(proxies) > 1:
        return {"ambiguous": sorted(proxies)}
    return max(found, key=lambda part: part["connectedAt"]) if found else None


def merge_traces(parts: Iterable[list[PushTrace]]) -> list[PushTrace]:
    """Traces of the same push from several servers as one, newest first.  Connection
    ids differ between servers, so deliveries never collide."""
    merged: dict[int, PushTrace] = {}
    for part in parts:
        for trace in part:
            into = merged.get(trace.version)
            if into is None:
                merged[trace.version] = PushTrace(
                    trace.version, trace.started, trace.published, dict(trace.deliveries)
                )
            else:
                into.deliveries.update(trace.deliveries)
    return [merged[v] for v in sorted(merged, reverse=True)]


def merge_families(parts: Iterable[Iterable[Metric]]) -> list[Metric]:
    """Metric families of several processes as one: samples with the same name and
    labels are added (counts, sums, histogram buckets; gauges that count things, such as
    connected clients or throttle limits split between workers), except ``*_created``
    timestamps, of which the earliest is kept.  Families keep the order they are first
    seen in; within one, each label set's samples stay together, in their order."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for part in parts:
        for family in part:
            if family.name not in merged:
                merged[family.name] = Metric(family.name, family.documentation, family.type)
                values[family.name] = {}
            series = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = series.get(key)
                if old is None:
                    series[key] = sample.value
                elif sample.name.endswith("_created"):
                    series[key] = min(old, sample.value)
                else:
                    series[key] = old + sample.value
    for name, family in merged.items():
        keys = list(values[name])
        order = {key: i for i, key in enumerate(keys)}
        keys.sort(key=lambda k: (tuple(kv for kv in k[1] if kv[0] != "le"), order[k]))
        for key in keys:
            family.add_sample(key[0], dict(key[1]), values[name][key])
    return list(merged.values())
