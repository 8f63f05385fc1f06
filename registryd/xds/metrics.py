"""Prometheus metrics of the xDS streams one process serves, under istiod's names.

This is the half of the daemon's metrics that lives wherever streams are served: in the
daemon's own process (``--xdsWorkers 1``, composed by
:class:`registryd.daemon.metrics.Metrics`) and in every xDS worker process
(:mod:`registryd.workers.worker`), which must not load the registry, build or push
modules.  It therefore knows only the xDS server, its throttle and the
:class:`~registryd.xds.tracking.PushTracker`.

istiod's names, labels and histogram buckets are kept so that Istio's control-plane
dashboards and alerts work unchanged.  istiod exposes its counters without the
``_total`` suffix (``pilot_xds_pushes{type="cds"} 26``); prometheus-client cannot declare
a counter under such a name, so :class:`IstioCounters` exposes them as ``untyped`` with
the exact sample names dashboards query.  registryd's own metrics (``registryd_*``)
follow Prometheus' naming rules and are typed normally.

Events come in through hooks that never block: the server's observer interface
(:meth:`XdsMetrics.sent`, :meth:`~XdsMetrics.failed`, :meth:`~XdsMetrics.synced`,
:meth:`~XdsMetrics.answered`) and the throttle's (:meth:`XdsMetrics.throttled`).  When a
push started and was published is read from the tracker (the pushes ``/debug/pushz``
keeps), so push and convergence times are measured for those pushes.  Gauges (connected
clients, throttle state and limits) are read from the live server at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from registryd.base.logs import clip
from registryd.xds import resources as res
from registryd.xds.server import XdsServer
from registryd.xds.stream import EXPIRED, NACK, Connection, Digest, Planned
from registryd.xds.tracking import PushTracker

__all__ = [
    "CONVERGENCE_BUCKETS",
    "SIZE_BUCKETS",
    "TIME_BUCKETS",
    "WAIT_BUCKETS",
    "XDS_COUNTERS",
    "IstioCounters",
    "XdsMetrics",
    "histogram",
]

# istiod's buckets (pilot/pkg/xds/monitoring.go)
TIME_BUCKETS = (0.01, 0.1, 1, 3, 5, 10, 20, 30)
CONVERGENCE_BUCKETS = (0.1, 0.5, 1, 3, 5, 10, 20, 30)
SIZE_BUCKETS = (1, 10000, 1000000, 4000000, 10000000, 40000000)
WAIT_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60)

XDS_COUNTERS = {  # name -> help; every one has the single label "type"
    "pilot_xds_pushes": "Pilot build and send errors for lds, rds, cds and eds.",
    "pilot_total_xds_rejects": "Total number of XDS responses from pilot rejected by proxy.",
    "pilot_xds_expired_nonce": "Total number of XDS requests with an expired nonce.",
}


class IstioCounters(Collector):
    """istiod-style counters named in ``helps`` (name -> help): one ``type`` label each,
    exposed untyped under the bare name; a counter with no samples yet is still listed."""

    def __init__(self, helps: Mapping[str, str]) -> None:
        self._helps = dict(helps)
        self.values: dict[str, dict[str, float]] = {name: {} for name in helps}

    def inc(self, name: str, label: str, amount: float = 1.0) -> None:
        series = self.values[name]
        series[label] = series.get(label, 0.0) + amount

    def collect(self) -> Iterator[Metric]:
        for name, doc in self._helps.items():
            metric = Metric(name, doc, "unknown")
            for label, value in sorted(self.values[name].items()):
                metric.add_sample(name, {"type": label}, value)
            yield metric


def histogram(
    registry: CollectorRegistry, name: str, doc: str, buckets: tuple[float, ...], *labels: str
) -> Histogram:
    """A histogram in ``registry`` (prometheus-client's, with ``labels``)."""
    return Histogram(name, doc, labels, buckets=buckets, registry=registry)


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


class _Streams(Collector):
    """Gauges read from the live server at scrape time: connected clients (by version
    and by ADS method) and the throttle's state and limits."""

    def __init__(self, xds: XdsServer) -> None:
        self._xds = xds

    def collect(self) -> Iterator[Metric]:
        xds = self._xds
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
        yield from self._throttle(xds)

    @staticmethod
    def _throttle(xds: XdsServer) -> Iterator[Metric]:
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


class XdsMetrics:
    """The metrics of ``xds``'s streams, registered into ``registry`` (no global state).
    Install it as one of the server's observers and as its throttle's observer
    (:meth:`throttled`); ``tracker`` must be the tracker told of the pushes (``begin``)
    that this server publishes.  Register it at most once per registry."""

    def __init__(self, registry: CollectorRegistry, xds: XdsServer, tracker: PushTracker) -> None:
        self.counters = IstioCounters(XDS_COUNTERS)
        registry.register(self.counters)
        registry.register(_Streams(xds))
        self.push_time = histogram(
            registry,
            "pilot_xds_push_time",
            "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
            TIME_BUCKETS,
            "type",
        )
        self.send_time = histogram(
            registry,
            "pilot_xds_send_time",
            "Total time in seconds Pilot takes to send generated configuration.",
            TIME_BUCKETS,
        )
        self.convergence = histogram(
            registry,
            "pilot_proxy_convergence_time",
            "Delay in seconds between config change and a proxy receiving all required "
            "configuration.",
            CONVERGENCE_BUCKETS,
        )
        self.config_size = histogram(
            registry,
            "pilot_xds_config_size_bytes",
            "Distribution of configuration sizes pushed to clients",
            SIZE_BUCKETS,
            "type",
        )
        self.throttle_wait = histogram(
            registry,
            "registryd_xds_throttle_wait_seconds",
            "How long a connection waited for a push slot (limit=push) or a new stream for "
            "admission (limit=request); only those that waited.",
            WAIT_BUCKETS,
            "limit",
        )
        self.throttled_count = Counter(
            "registryd_xds_throttled",
            "Connections that waited for a push slot (limit=push) and new streams that "
            "waited for admission (limit=request).",
            ["limit"],
            registry=registry,
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

    # -- throttle observer ---------------------------------------------------------------
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
