"""Prometheus metrics under istiod's names, plus registryd's own per-registry metrics.

istiod's names, labels and histogram buckets are kept so that Istio's control-plane
dashboards and alerts work unchanged.  istiod exposes its counters without the
``_total`` suffix (``pilot_xds_pushes{type="cds"} 26``); prometheus-client cannot declare
a counter under such a name, so these are exposed as ``untyped`` with the exact sample
names dashboards query.  registryd's own metrics (``registryd_*``) follow Prometheus'
naming rules and are typed normally.

Events come in through three hooks, none of which blocks: the xDS server's observer
interface (:meth:`sent`, :meth:`failed`, :meth:`synced`, :meth:`answered`), the push
controller's listener (:meth:`pushed`) and the store's change listener
(:meth:`registry_changed`).  When a push started and was published is read from the
:class:`~registryd.xds.tracking.PushTracker` (the pushes ``/debug/pushz`` keeps), so
push and convergence times are measured for those pushes.  Gauges (connected clients,
services, per-registry state) are read from the live objects at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from registryd.base.logs import clip
from registryd.daemon.push import PushRecord
from registryd.model import ShardKey
from registryd.registry.store import ChangeEvent, RegistryStore
from registryd.xds import resources as res
from registryd.xds.server import XdsServer
from registryd.xds.stream import EXPIRED, NACK, Connection, Digest, Planned
from registryd.xds.streams import merge_families
from registryd.xds.tracking import PushTracker

__all__ = ["Metrics", "merge_families"]

# istiod's buckets (pilot/pkg/xds/monitoring.go)
_TIME_BUCKETS = (0.01, 0.1, 1, 3, 5, 10, 20, 30)
_CONVERGENCE_BUCKETS = (0.1, 0.5, 1, 3, 5, 10, 20, 30)
_SIZE_BUCKETS = (1, 10000, 1000000, 4000000, 10000000, 40000000)
_WAIT_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60)

_COUNTERS = {  # name -> help; every one has the single label "type"
    "pilot_xds_pushes": "Pilot build and send errors for lds, rds, cds and eds.",
    "pilot_push_triggers": "Total number of times a push was triggered, labeled by reason.",
    "pilot_inbound_updates": "Total number of updates received by pilot.",
    "pilot_total_xds_rejects": "Total number of XDS responses from pilot rejected by proxy.",
    "pilot_xds_expired_nonce": "Total number of XDS requests with an expired nonce.",
}


class _Counters(Collector):
    """istiod-style counters: one ``type`` label, exposed untyped under the bare name."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, float]] = {name: {} for name in _COUNTERS}

    def inc(self, name: str, label: str, amount: float = 1.0) -> None:
        series = self.values[name]
        series[label] = series.get(label, 0.0) + amount

    def collect(self) -> Iterator[Metric]:
        for name, doc in _COUNTERS.items():
            metric = Metric(name, doc, "unknown")
            for label, value in sorted(self.values[name].items()):
                metric.add_sample(name, {"type": label}, value)
            yield metric


class _State(Collector):
    """Gauges read from the live daemon at scrape time: of the registries (without a
    ``store``: none, an xDS worker process) and of the xDS streams (without ``xds``:
    none, the main process of a daemon whose streams are served by workers)."""

    def __init__(
        self,
        store: RegistryStore | None,
        xds: XdsServer | None,
        failures: Callable[[], dict[ShardKey, int]],
        task_failures: Callable[[], dict[str, int]],
    ) -> None:
        self._store = store
        self._xds = xds
        self._failures = failures
        self._task_failures = task_failures

    def collect(self) -> Iterator[Metric]:
        if self._xds is not None:
            yield from self._streams(self._xds)
        if self._store is not None:
            services = GaugeMetricFamily("pilot_services", "Total services known to pilot.")
            services.add_metric([], len(self._store.view.services))
            yield services
        tasks = CounterMetricFamily(
            "registryd_task_failures",
            "Unexpected exceptions in long-lived tasks (push, xds-reader, xds-writer, "
            "xds-worker, http, registry:<provider>/<instance>), logged with their traceback.",
            labels=["task"],
        )
        for task, count in sorted(self._task_failures().items()):
            tasks.add_metric([task], count)
        yield tasks
        if self._xds is not None:
            yield from self._throttle(self._xds)
        if self._store is not None:
            yield from self._registries(self._store)

    def _streams(self, xds: XdsServer) -> Iterator[Metric]:
        clients = GaugeMetricFamily(
            "pilot_xds",
            "Number of endpoints connected to this pilot using XDS.",
            labels=["version"],
        )
        versions: dict[str, int] = {}
        for conn in list(xds.connections.values()):
            version = _proxy_version(conn)
            versions[version] = versions.get(version, 0) + 1
        for version, count in sorted(versions.items()):
            clients.add_metric([version], count)
        yield clients
        streams = GaugeMetricFamily(
            "registryd_xds_streams",
            "Connected xDS clients by ADS method: sotw (StreamAggregatedResources) or delta "
            "(DeltaAggregatedResources).",
            labels=["type"],
        )
        delta = sum(1 for conn in list(xds.connections.values()) if conn.delta)
        streams.add_metric(["sotw"], len(xds.connections) - delta)
        streams.add_metric(["delta"], delta)
        yield streams

    def _throttle(self, xds: XdsServer) -> Iterator[Metric]:
        throttle = xds.throttle
        pushes, streams = throttle.pushes, throttle.streams
        in_flight = GaugeMetricFamily(
            "registryd_xds_pushes_in_flight", "Connections being written a push now."
        )
        in_flight.add_metric([], pushes.in_flight)
        waiting = GaugeMetricFamily(
            "registryd_xds_throttle_waiting",
            "Waiting now: connections for a push slot (limit=push), new streams for "
            "admission (limit=request).",
            labels=["limit"],
        )
        waiting.add_metric(["push"], pushes.waiting)
        waiting.add_metric(["request"], streams.waiting)
        limit = GaugeMetricFamily(
            "registryd_xds_push_throttle",
            "Most connections written a push at once (--pushThrottle; 0: no limit).",
        )
        limit.add_metric([], pushes.limit or 0)
        rate = GaugeMetricFamily(
            "registryd_xds_max_requests_per_second",
            "New xDS streams admitted a second (--maxRequestsPerSecond; 0: no limit).",
        )
        rate.add_metric([], streams.rate or 0)
        overtime = CounterMetricFamily(
            "registryd_xds_push_overtime",
            "Pushes still writing when their slot's lease ended (a client not reading); "
            "the slot went to the next connection.",
        )
        overtime.add_metric([], pushes.overtime)
        yield from (in_flight, waiting, limit, rate, overtime)

    def _registries(self, store: RegistryStore) -> Iterator[Metric]:
        labels = ["registry", "provider"]
        synced = GaugeMetricFamily(
            "registryd_registry_synced",
            "1 while the registry's adapter is connected and has delivered its full state.",
            labels=labels,
        )
        last = GaugeMetricFamily(
            "registryd_registry_last_sync_timestamp_seconds",
            "Unix time of the registry's last full state (0: never).",
            labels=labels,
        )
        events = CounterMetricFamily(
            "registryd_registry_events",
            "Updates received from the registry's adapter.",
            labels=labels,
        )
        failures = CounterMetricFamily(
            "registryd_registry_failures",
            "Times the registry's adapter failed and was restarted.",
            labels=labels,
        )
        config_errors = GaugeMetricFamily(
            "registryd_registry_config_errors",
            "Sources the registry currently rejects (e.g. broken files); last good kept.",
            labels=labels,
        )
        warnings = GaugeMetricFamily(
            "registryd_registry_warnings",
            "Warnings the registry currently reports (e.g. a hostname defined twice).",
            labels=labels,
        )
        services = GaugeMetricFamily(
            "registryd_registry_services", "Services the registry holds.", labels=labels
        )
        endpoints = GaugeMetricFamily(
            "registryd_registry_endpoints", "Endpoints the registry holds.", labels=labels
        )
        restarts = self._failures()
        for key, shard in sorted(store.shards.items()):
            values = [key.instance, key.provider]
            synced.add_metric(values, 1 if shard.synced else 0)
            last.add_metric(values, shard.last_sync or 0)
            events.add_metric(values, shard.events)
            failures.add_metric(values, restarts.get(key, 0))
            config_errors.add_metric(values, len(shard.problems))
            warnings.add_metric(values, len(shard.warnings))
            services.add_metric(values, len(shard.services))
            endpoints.add_metric(values, sum(len(e) for e in shard.endpoints.values()))
        yield from (synced, last, events, failures, config_errors, warnings, services, endpoints)


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _proxy_version(conn: Connection) -> str:
    """The ``version`` label of a client: its ``ISTIO_VERSION`` (clipped: the client
    chose it), else its user agent's build version."""
    node = conn.node
    if node is not None:
        field = node.metadata.fields.get("ISTIO_VERSION")
        if field is not None and field.string_value:
            return clip(field.string_value, 64)
        if node.user_agent_name and node.HasField("user_agent_build_version"):
            v = node.user_agent_build_version.version
            return f"{clip(node.user_agent_name, 64)}/{v.major_number}.{v.minor_number}.{v.patch}"
    return "unknown"


class Metrics:
    """All metrics of one daemon, in a registry of their own (no global state).  Without
    ``store`` (an xDS worker) or ``xds`` (the main process when workers serve the
    streams) the gauges read from it are left out; :meth:`render` adds the families of
    the other processes."""

    def __init__(
        self,
        store: RegistryStore | None,
        xds: XdsServer | None,
        tracker: PushTracker,
        failures: Callable[[], dict[ShardKey, int]] = dict,
        task_failures: Callable[[], dict[str, int]] = dict,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.counters = _Counters()
        self.registry.register(self.counters)
        self.registry.register(_State(store, xds, failures, task_failures))

        def histogram(name: str, doc: str, buckets: tuple[float, ...], *labels: str) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=self.registry)

        self.push_time = histogram(
            "pilot_xds_push_time",
            "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
            _TIME_BUCKETS,
            "type",
        )
        self.send_time = histogram(
            "pilot_xds_send_time",
            "Total time in seconds Pilot takes to send generated configuration.",
            _TIME_BUCKETS,
        )
        self.convergence = histogram(
            "pilot_proxy_convergence_time",
            "Delay in seconds between config change and a proxy receiving all required "
            "configuration.",
            _CONVERGENCE_BUCKETS,
        )
        self.debounce = histogram(
            "pilot_debounce_time",
            "Delay in seconds between the first config enters debouncing and the merged push "
            "request is pushed into the push queue.",
            _TIME_BUCKETS,
        )
        self.config_size = histogram(
            "pilot_xds_config_size_bytes",
            "Distribution of configuration sizes pushed to clients",
            _SIZE_BUCKETS,
            "type",
        )
        self.throttle_wait = histogram(
            "registryd_xds_throttle_wait_seconds",
            "How long a connection waited for a push slot (limit=push) or a new stream for "
            "admission (limit=request); only those that waited.",
            _WAIT_BUCKETS,
            "limit",
        )
        self.throttled_count = Counter(
            "registryd_xds_throttled",
            "Connections that waited for a push slot (limit=push) and new streams that "
            "waited for admission (limit=request).",
            ["limit"],
            registry=self.registry,
        )
        self._tracker = tracker  # when each recent push started and was published
        self._children: dict[tuple[Any, str], tuple[Any, Any]] = {}

    def _labelled(self, label: str, first: Any, second: Any) -> tuple[Any, Any]:
        """``first`` and ``second``'s children for ``label`` (their one label), looked up
        once: this runs for every response written and every throttled connection."""
        key = (first, label)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = (first.labels(label), second.labels(label))
        return found

    def render(self, others: Iterable[Iterable[Metric]] = ()) -> bytes:
        """The text exposition format, with the families of ``others`` (other processes
        of this daemon) merged in (see :func:`merge_families`)."""
        parts = list(others)
        if not parts:
            return generate_latest(self.registry)
        merged = merge_families([list(self.registry.collect()), *parts])
        return generate_latest(_Fixed(merged))

    # -- registry and push hooks -------------------------------------------------------
    def registry_changed(self, event: ChangeEvent) -> None:
        self.counters.inc("pilot_inbound_updates", "eds" if event.endpoints_only else "svc")

    def pushed(self, record: PushRecord) -> None:
        """Called just before the push's snapshot is published."""
        self.counters.inc("pilot_push_triggers", "endpoint" if record.endpoints_only else "service")
        self.debounce.observe(record.debounce_seconds)

    def throttled(self, limit: str, seconds: float) -> None:
        """A push (``limit="push"``) or a new stream (``"request"``) waited ``seconds``."""
        count, wait = self._labelled(limit, self.throttled_count, self.throttle_wait)
        count.inc()
        wait.observe(seconds)

    # -- xDS server observer -------------------------------------------------------------
    def sent(
        self, conn: Connection, planned: Planned, version: int, started: float, finished: float
    ) -> None:
        kind = res.short_type(planned.type_url)
        self.counters.inc("pilot_xds_pushes", kind)
        size, push_time = self._labelled(kind, self.config_size, self.push_time)
        size.observe(len(planned.payload))
        self.send_time.observe(finished - started)
        push = self._tracker.get(version)
        # a push: time from the snapshot's publication; a request: the write alone
        since = (
            push.published
            if push is not None and push.published >= conn.connected_mono
            else started
        )
        push_time.observe(finished - since)

    def failed(self, conn: Connection, planned: Planned) -> None:
        self.counters.inc("pilot_xds_pushes", res.short_type(planned.type_url) + "_senderr")

    def synced(self, conn: Connection, version: int, at: float) -> None:
        push = self._tracker.get(version)
        if push is not None and push.reaches(conn):
            self.convergence.observe(at - push.started)

    def answered(self, conn: Connection, digest: Digest, version_info: str, at: float) -> None:
        if digest.state is None:
            return
        if digest.kind == NACK:
            self.counters.inc("pilot_total_xds_rejects", res.short_type(digest.state.type_url))
        elif digest.kind == EXPIRED:
            self.counters.inc("pilot_xds_expired_nonce", res.short_type(digest.state.type_url))
