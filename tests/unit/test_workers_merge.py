"""What the xDS worker processes report, merged into one daemon; their share of limits."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from registryd.daemon.config import quota_cpus
from registryd.daemon.metrics import Metrics
from registryd.registry.store import RegistryStore
from registryd.workers.pool import share
from registryd.xds.metrics import XdsMetrics
from registryd.xds.server import XdsServer
from registryd.xds.streams import merge_dumps, merge_families, merge_listings, merge_traces
from registryd.xds.tracking import Delivery, PushTrace, PushTracker


def worker_registry(pushes: float, waits: list[float], clients: float) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    Counter("pushes", "p", ["type"], registry=registry).labels("cds").inc(pushes)
    wait = Histogram("wait_seconds", "w", buckets=(0.1, 1.0), registry=registry)
    for value in waits:
        wait.observe(value)
    Gauge("clients", "c", registry=registry).set(clients)
    return registry


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_histograms_and_gauges_of_workers_add_up() -> None:
    one = worker_registry(3, [0.05, 0.5], 10)
    two = worker_registry(4, [2.0], 7)
    merged = merge_families([list(one.collect()), list(two.collect())])
    by_name = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in merged for s in f.samples
    }
    assert by_name[("pushes_total", (("type", "cds"),))] == 7
    assert by_name[("clients", ())] == 17
    assert by_name[("wait_seconds_bucket", (("le", "0.1"),))] == 1
    assert by_name[("wait_seconds_bucket", (("le", "1.0"),))] == 2
    assert by_name[("wait_seconds_bucket", (("le", "+Inf"),))] == 3
    assert by_name[("wait_seconds_count", ())] == 3
    assert by_name[("wait_seconds_sum", ())] == pytest.approx(2.55)
    created = [s.value for f in one.collect() for s in f.samples if s.name == "pushes_created"]
    later = [s.value for f in two.collect() for s in f.samples if s.name == "pushes_created"]
    assert by_name[("pushes_created", (("type", "cds"),))] == min(created + later)


def test_the_daemon_renders_its_own_metrics_with_the_workers() -> None:
    main = Metrics(RegistryStore())  # workers serve the streams: no stream half here
    assert "registryd_xds_streams" not in {f.name for f in main.registry.collect()}
    worker, other = CollectorRegistry(auto_describe=False), CollectorRegistry(auto_describe=False)
    XdsMetrics(worker, XdsServer(), PushTracker()).counters.inc("pilot_xds_pushes", "eds", 5)
    XdsMetrics(other, XdsServer(), PushTracker()).counters.inc("pilot_xds_pushes", "eds", 2)
    main.counters.inc("pilot_inbound_updates", "eds")
    text = main.render([list(worker.collect()), list(other.collect())])
    values = samples(text.decode())
    assert values[("pilot_xds_pushes", (("type", "eds"),))] == 7
    assert values[("pilot_inbound_updates", (("type", "eds"),))] == 1
    assert values[("pilot_services", ())] == 0  # the main process' only: no double count
    assert values[("registryd_xds_streams", (("type", "sotw"),))] == 0
    # without others, the daemon's registry as it is
    assert samples(main.render().decode())[("pilot_inbound_updates", (("type", "eds"),))] == 1


def test_push_traces_of_workers_merge_by_version() -> None:
    def delivery(conn: str) -> Delivery:
        return Delivery(conn, "p", "cds", 1, 10, 1.0)

    one = [PushTrace(2, 0.5, 0.6, {("conn-w1-1", "cds"): delivery("conn-w1-1")})]
    two = [
        PushTrace(3, 0.7, 0.8, {}),
        PushTrace(2, 0.5, 0.6, {("conn-w2-1", "cds"): delivery("conn-w2-1")}),
    ]
    merged = merge_traces([one, two])
    assert [t.version for t in merged] == [3, 2]
    assert set(merged[1].deliveries) == {("conn-w1-1", "cds"), ("conn-w2-1", "cds")}
    assert len(one[0].deliveries) == 1  # the parts are not changed


def test_connection_listings_merge_oldest_first() -> None:
    merged = merge_listings([[(1.0, {"id": "a"}), (3.0, {"id": "c"})], [(2.0, {"id": "b"})]])
    assert [item["id"] for _, item in merged] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("cpu_max", "v1_quota", "v1_period", "expected"),
    [
        ("max 100000\n", None, None, None),
        ("200000 100000\n", None, None, 2),
        ("150000 100000", None, None, 2),  # 1.5 CPUs: rounded up
        ("50000 100000", None, None, 1),
        ("garbage", None, None, None),
        (None, "-1\n", "100000\n", None),
        (None, "300000\n", "100000\n", 3),
        (None, None, None, None),
    ],
)
def test_container_cpu_quota(
    cpu_max: str | None, v1_quota: str | None, v1_period: str | None, expected: int | None
) -> None:
    assert quota_cpus(cpu_max, v1_quota, v1_period) == expected


def test_each_worker_gets_its_share_of_a_daemon_limit_rounded_up() -> None:
    assert share(25, 2) == 13
    assert share(100, 4) == 25
    assert share(0, 3) == 0  # no limit stays no limit
    assert share(1, 8) == 1


def test_config_dumps_of_the_workers_merge_to_the_newest_or_say_ambiguous() -> None:
    a1 = {"connectedAt": 1.0, "proxyID": "sidecar~1~web-1.a~a.svc", "dump": {"n": 1}}
    a2 = {"connectedAt": 2.0, "proxyID": "sidecar~1~web-1.a~a.svc", "dump": {"n": 2}}
    b = {"connectedAt": 3.0, "proxyID": "sidecar~2~web-1.b~b.svc", "dump": {"n": 3}}
    assert merge_dumps([None, None]) is None
    assert merge_dumps([a1, None, a2]) == a2
    assert merge_dumps([a1, b]) == {"ambiguous": [a1["proxyID"], b["proxyID"]]}
    assert merge_dumps([{"ambiguous": ["x", "y"]}, None]) == {"ambiguous": ["x", "y"]}
