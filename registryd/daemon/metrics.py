"""The daemon's metrics: registryd's per-registry metrics and the push controller's,
under istiod's names where istiod has them.  The xDS stream half
(:class:`registryd.xds.metrics.XdsMetrics`) belongs to whatever serves the streams: with
``--xdsWorkers 1`` the in-process :class:`registryd.xds.serving.LocalServing` registers
it in this registry; with more, the worker processes keep it (they load only the stream
half) and :meth:`Metrics.render` merges their families in, so ``/metrics`` reads as one
daemon.  Naming follows
:mod:`registryd.xds.metrics`: istiod's counters are exposed untyped under their bare
names, registryd's own metrics are typed normally.

Events come in through hooks that never block: the push controller's listener
(:meth:`Metrics.pushed`) and the store's change listener (:meth:`Metrics.registry_changed`);
the stream half has its own.  Gauges (services, per-registry
state) are read from the live store at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from registryd.base.health import TaskFailures
from registryd.model import ShardKey
from registryd.registry.store import ChangeEvent, RegistryStore
from registryd.xds.metrics import TIME_BUCKETS, IstioCounters, histogram
from registryd.xds.streams import merge_families
from registryd.xds.tracking import PushRecord

__all__ = ["Metrics", "merge_families"]

_COUNTERS = {  # name -> help; every one has the single label "type"
    "pilot_push_triggers": "Total number of times a push was triggered, labeled by reason.",
    "pilot_inbound_updates": "Total number of updates received by pilot.",
}


class _State(Collector):
    """Gauges read from the live store at scrape time: services in the merged view and
    the state of every registry."""

    def __init__(self, store: RegistryStore, failures: Callable[[], dict[ShardKey, int]]) -> None:
        self._store = store
        self._failures = failures

    def collect(self) -> Iterator[Metric]:
        services = GaugeMetricFamily("pilot_services", "Total services known to pilot.")
        services.add_metric([], len(self._store.view.services))
        yield services
        yield from self._registries(self._store)

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


class Metrics:
    """All metrics of the daemon's main process, in a registry of their own (no global
    state): of ``store`` (``failures``: restarts per registry, ``task_failures``: the
    process' :class:`~registryd.base.health.TaskHealth` counts).  The stream metrics are
    registered in :attr:`registry` by the in-process serving, if any; :meth:`render` adds
    the families of the other processes."""

    def __init__(
        self,
        store: RegistryStore,
        failures: Callable[[], dict[ShardKey, int]] = dict,
        task_failures: Callable[[], dict[str, int]] = dict,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.counters = IstioCounters(_COUNTERS)
        self.registry.register(self.counters)
        self.registry.register(_State(store, failures))
        self.registry.register(TaskFailures(task_failures))
        self.debounce = histogram(
            self.registry,
            "pilot_debounce_time",
            "Delay in seconds between the first config enters debouncing and the merged push "
            "request is pushed into the push queue.",
            TIME_BUCKETS,
        )

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
