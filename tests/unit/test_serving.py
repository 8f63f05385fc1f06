"""One serving seam: the daemon composes exactly one :class:`Serving`, chosen from
``--xdsWorkers``; with workers nothing that would serve is built in the main process; a
worker answers typed questions, dispatched by type, and nothing else."""

from __future__ import annotations

import gc
import pickle
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from registryd.daemon.app import App
from registryd.daemon.config import Settings
from registryd.workers.channel import ConfigDump, Listing, MetricFamilies, Traces
from registryd.workers.pool import WorkerPool
from registryd.workers.worker import ANSWERS, answer
from registryd.xds.addresses import Address
from registryd.xds.server import XdsServer
from registryd.xds.serving import LocalServing
from registryd.xds.snapshot import EMPTY, Snapshot
from registryd.xds.throttle import Throttle
from registryd.xds.tracking import PushTracker


def settings(workers: int) -> Settings:
    loopback = Address("127.0.0.1", 0)
    return Settings(
        grpc_addr=loopback,
        http_addr=loopback,
        monitoring_addr=loopback,
        secure_grpc_addr=loopback,
        xds_workers=workers,
        push_throttle=10,
        max_requests_per_second=8.0,
    )


def built(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, kind))


def test_one_process_serves_in_process_with_its_metrics_in_the_daemons_registry() -> None:
    app = App(settings(1))
    serving = app.serving
    assert isinstance(serving, LocalServing)
    names = {f.name for f in app.metrics.registry.collect()}
    assert "registryd_xds_streams" in names  # the stream half, reported by the daemon
    assert serving.registry is app.metrics.registry
    assert serving.xds.health is app.health
    assert serving.xds.max_unknown_names == app.settings.max_unknown_names
    assert serving.xds.id_prefix == "conn-"
    assert serving.xds.observers == [serving.tracker, serving.metrics]
    serving.announce(3, 1.0, 2.0)
    serving.publish(Snapshot(3, EMPTY.tables))
    assert serving.xds.snapshot.version == 3
    assert serving.tracker.get(3) is not None


async def test_a_local_servings_own_metrics_are_reported_by_it() -> None:
    mine = LocalServing(grpc_addr=None, worker=2)
    given = LocalServing(grpc_addr=None, registry=CollectorRegistry(auto_describe=False))
    assert {f.name for f in await mine.metric_families()} >= {"registryd_xds_streams"}
    assert await given.metric_families() == []  # its owner reports them
    assert mine.xds.id_prefix == "conn-w2-"


def test_with_workers_the_main_process_builds_nothing_that_would_serve() -> None:
    gc.collect()
    before = [built(kind) for kind in (XdsServer, Throttle, PushTracker)]
    app = App(settings(3))
    assert isinstance(app.serving, WorkerPool)
    assert [built(kind) for kind in (XdsServer, Throttle, PushTracker)] == before
    names = {f.name for f in app.metrics.registry.collect()}
    assert "registryd_xds_streams" not in names  # the workers keep the stream half
    template = app.serving.template
    assert (template.push_throttle, template.max_requests_per_second) == (4, 3)
    assert template.version_prefix  # every worker serves the same versions


class Recording:
    """A Streams that records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[Any, ...]] = []

    async def listing(self, view: str, proxy_id: str = "", verbose: bool = False) -> Any:
        self.asked.append(("listing", view, proxy_id, verbose))
        return []

    async def config_dump(self, proxy_id: str) -> Any:
        self.asked.append(("config_dump", proxy_id))
        return None

    async def traces(self) -> Any:
        self.asked.append(("traces",))
        return []

    async def metric_families(self) -> Any:
        self.asked.append(("metric_families",))
        return []

    def unresponsive(self) -> list[str]:
        return []


async def test_a_worker_answers_each_question_by_its_type() -> None:
    streams = Recording()
    questions = [Listing("adsz", "p1", True), ConfigDump("p2"), Traces(), MetricFamilies()]
    assert set(ANSWERS) == {type(q) for q in questions}  # closed: these and no other
    for question in questions:
        await answer(streams, pickle.loads(pickle.dumps(question)))
    assert streams.asked == [
        ("listing", "adsz", "p1", True),
        ("config_dump", "p2"),
        ("traces",),
        ("metric_families",),
    ]
    assert [q.name for q in questions] == [step[0] for step in streams.asked]


@pytest.mark.parametrize("question", ["listing", ("listing", "adsz"), Listing])
async def test_anything_else_is_not_a_question(question: Any) -> None:
    with pytest.raises(TypeError, match="not a question"):
        await answer(Recording(), question)
