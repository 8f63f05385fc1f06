"""The Kubernetes adapter against the API-server emulator: full state first, increments,
dropped watches, 410 Gone, bookmarks, two clusters, namespace selection, rate limiting,
failures, credentials, and the adapter contract suite.

The contract suite runs against a real kube-apiserver too (test_kubernetes_real.py, with
a Service deleted and recreated, several slices, RBAC, pages and an etcd compaction).  The
other tests here stay on the emulator because they need a fault or a control only it has:
answers failed on demand (``fail_next``: 429 with Retry-After, 5xx, a 410 answer), watch
streams dropped or ended at a chosen moment and history forgotten on demand
(``drop_watches``, ``compact``, ``on_request`` between two pages), bookmarks every few
milliseconds, objects a real server refuses (a Service without a port number), the
requests it received (``requests``: paths, query, rate), and a token of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from registryd.adapter import Adapter, AdapterContext, Delete, Problems, Replace, Update, Upsert
from registryd.adapters.kubernetes import KubernetesAdapter
from registryd.adapters.kubernetes.adapter import FORBIDDEN_RETRY, KubernetesError
from registryd.adapters.kubernetes.client import CONNECT_RETRIES, CONNECT_RETRY_DELAY, PAGE_SIZE
from registryd.model import Health, Locality
from registryd.testing import AdapterContract
from tests.adapters.feed import Feed as SharedFeed
from tests.support.emulators.kubernetes import KubeEmulator, Request
from tests.support.fake_time import FakeTime

INFORMERS = 4  # Services, EndpointSlices, Pods and Nodes of one namespace (or all)
KINDS = {"Service", "EndpointSlice", "Pod", "Node"}
HANG_GUARD = 60.0  # seconds: only stops a hung test; never what a test asserts
SECRET = "kube-Bearer-5e3f1c2a0b1d4c6e9f007a5b"
HOST = "web.shop.svc.cluster.local"


# -- objects ----------------------------------------------------------------------------------


def svc(
    name: str = "web",
    namespace: str = "shop",
    *,
    ip: str = "10.96.0.10",
    port: int = 80,
    target: int | str = 8080,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "clusterIP": ip,
            "clusterIPs": [ip],
            "type": "ClusterIP",
            "ports": [{"name": "http", "port": port, "targetPort": target, "protocol": "TCP"}],
        },
    }


def eps(
    service: str = "web",
    namespace: str = "shop",
    *addresses: str,
    name: str | None = None,
    port: int = 8080,
    ready: bool = True,
    terminating: bool = False,
    node: str | None = None,
    pods: tuple[str, ...] = (),
) -> dict[str, Any]:
    endpoints = []
    for index, address in enumerate(addresses or ("10.1.0.1",)):
        # all three conditions, as the EndpointSlice controller writes them
        conditions = {"ready": ready, "serving": ready, "terminating": terminating}
        item: dict[str, Any] = {"addresses": [address], "conditions": conditions}
        if node:
            item["nodeName"] = node
        if index < len(pods):
            item["targetRef"] = {"kind": "Pod", "namespace": namespace, "name": pods[index]}
        endpoints.append(item)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name or f"{service}-abc",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def node(name: str, region: str, zone: str) -> dict[str, Any]:
    labels = {"topology.kubernetes.io/region": region, "topology.kubernetes.io/zone": zone}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def ns(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def host(name: str, namespace: str = "shop") -> str:
    return f"{name}.{namespace}.svc.cluster.local"


# -- harness ----------------------------------------------------------------------------------


class Feed(SharedFeed):
    def __init__(self, adapter: Adapter) -> None:
        super().__init__(adapter, HANG_GUARD)

    async def error(self, timeout: float | None = HANG_GUARD) -> BaseException:
        return await super().error(timeout)

    async def synced(self) -> tuple[Replace, Problems]:
        return await self.expect(Replace), await self.expect(Problems)

    async def until(self, wanted: dict[str, int | None]) -> dict[str, Update]:
        """Read increments until each hostname of ``wanted`` had its last update: an
        Upsert with that many endpoints, or (None) a Delete.  No Replace may come."""
        seen: dict[str, Update] = {}

        def done() -> bool:
            for hostname, count in wanted.items():
                update = seen.get(hostname)
                if count is None and not isinstance(update, Delete):
                    return False
                if count is not None and not (
                    isinstance(update, Upsert) and len(update.endpoints) == count
                ):
                    return False
            return True

        while not done():
            update = await self.next()
            assert not isinstance(update, Replace), "a Replace while connected"
            if isinstance(update, Upsert):
                seen[update.service.hostname] = update
            elif isinstance(update, Delete):
                seen[update.hostname] = update
        return seen


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator() as emulator:
        yield emulator


def make(
    kube: KubeEmulator,
    tmp_path: Path,
    name: str = "east",
    *,
    fake: FakeTime | None = None,
    **settings: Any,
) -> KubernetesAdapter:
    """An adapter on ``kube``; with ``fake``, on that clock and sleep."""
    path = tmp_path / f"{name}-{kube.port}.kubeconfig"
    if not path.exists():
        kube.kubeconfig(path)
    values = {"kubeconfig": str(path), **settings}
    if fake is None:
        return KubernetesAdapter(name=name, settings=values, context=AdapterContext())
    return KubernetesAdapter(
        name=name, settings=values, context=AdapterContext(), clock=fake, sleep=fake.sleep
    )


def start(feeds: list[Feed], adapter: Adapter) -> Feed:
    feed = Feed(adapter)
    feeds.append(feed)
    return feed


def is_list(request: Request) -> bool:
    return request.query.get("watch") is None


def addresses_of(update: Update, hostname: str) -> list[str] | None:
    """The sorted endpoint addresses of an Upsert of ``hostname``; None for any other."""
    if isinstance(update, Upsert) and update.service.hostname == hostname:
        return sorted(e.address for e in update.endpoints)
    return None


def endpoints_of(replace: Replace) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {s.hostname: [] for s in replace.services}
    for endpoint in replace.endpoints:
        result[endpoint.hostname].append(endpoint.address)
    return {h: sorted(v) for h, v in result.items()}


async def until_watching(kube: KubeEmulator, count: int) -> None:
    await until(lambda: kube.open_watches >= count)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(HANG_GUARD):
        while not condition():
            await asyncio.sleep(0.01)


# -- full state, increments ----------------------------------------------------------------------


async def test_full_state_first_after_every_list_even_a_throttled_one(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    kube.apply(svc())
    kube.apply(eps("web", "shop", "10.1.0.1", "10.1.0.2", node="n1", pods=("web-1", "web-2")))
    kube.apply(node("n1", "eu-west-1", "eu-west-1a"))
    kube.apply(svc("db", "data", ip="10.96.0.20", port=5432, target=5432))
    kube.fail_next(429, 1, retry_after=1)  # the first list waits Retry-After
    fake = FakeTime(hold=True)
    feed = start(feeds, make(kube, tmp_path, fake=fake))
    assert await fake.slept(1) == [1.0]  # Retry-After, on the adapter's sleep
    await until(lambda: len([r for r in kube.requests if is_list(r)]) == INFORMERS)
    assert feed.queue.empty(), "Replace came before the throttled list"
    fake.advance(1.0)
    replace, problems = await feed.synced()
    assert endpoints_of(replace) == {
        host("db", "data"): [],
        HOST: ["10.1.0.1", "10.1.0.2"],
    }
    endpoint = replace.endpoints[0]
    assert endpoint.cluster_id == "east"
    assert endpoint.locality == Locality(region="eu-west-1", zone="eu-west-1a")
    assert (endpoint.port, endpoint.service_port) == (8080, 80)
    assert problems.errors == {}
    assert set(problems.sources) == {"Service/shop/web", "Service/data/db"}
    throttled = [r for r in kube.requests if is_list(r)]
    assert len(throttled) == 5  # four lists (services, slices, pods, nodes), one twice
    assert fake.sleeps == [1.0]  # nothing else waited


async def test_services_and_slices_come_and_go_as_increments(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    kube.apply(svc())
    feed = start(feeds, make(kube, tmp_path))
    replace, _ = await feed.synced()
    assert endpoints_of(replace) == {HOST: []}  # no endpoints: still served

    kube.apply(eps("web", "shop", "10.1.0.1", name="web-a"))
    kube.apply(eps("web", "shop", "10.1.0.2", name="web-b"))
    await feed.until({HOST: 2})

    kube.apply(eps("web", "shop", "10.1.0.2", name="web-b", ready=False))
    update = (await feed.until({HOST: 2}))[HOST]
    assert isinstance(update, Upsert)
    assert {e.address: e.health for e in update.endpoints} == {
        "10.1.0.1": Health.HEALTHY,
        "10.1.0.2": Health.UNHEALTHY,
    }
    # the full state carries the resourceVersion it was listed at, each change the one
    # of the last object applied (opaque strings: only told apart, not ordered)
    assert replace.revision and update.revision and update.revision != replace.revision

    kube.apply(svc("api", ip="10.96.0.11"))
    kube.apply(svc(port=81))
    seen = await feed.until({host("api"): 0, HOST: 2})
    web = seen[HOST]
    assert isinstance(web, Upsert) and web.service.ports[0].number == 81

    kube.delete("discovery.k8s.io/v1", "EndpointSlice", "shop", "web-a")
    await feed.until({HOST: 1})
    kube.delete("v1", "Service", "shop", "api")
    await feed.until({host("api"): None})

    kube.apply(eps("ghost", "shop", "10.1.0.9"))  # a slice of no Service: nothing to say
    kube.apply(eps("web", "shop", "10.1.0.3", name="web-b"))  # after it, on the same stream
    await feed.nothing_before(lambda u: addresses_of(u, HOST) == ["10.1.0.3"], problems=True)


async def test_malformed_objects_are_reported_and_skipped(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    broken = svc("bad")
    del broken["spec"]["ports"][0]["port"]
    kube.apply(broken)
    kube.apply(svc())
    feed = start(feeds, make(kube, tmp_path))
    replace, problems = await feed.synced()
    assert [s.hostname for s in replace.services] == [HOST]
    assert list(problems.errors) == ["Service/shop/bad"]
    assert "no port number" in problems.errors["Service/shop/bad"]

    kube.apply(svc("bad", ip="10.96.0.12"))  # fixed
    await feed.until({host("bad"): 0})
    assert (await feed.expect(Problems)).errors == {}


# -- watch streams --------------------------------------------------------------------------------


async def test_a_dropped_watch_resumes_without_relist_or_lost_events(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    kube.apply(svc())
    feed = start(feeds, make(kube, tmp_path))
    await feed.synced()
    await until_watching(kube, INFORMERS)
    before, version = len(kube.requests), kube.resource_version

    kube.fail_next(500, 3)  # each re-watch fails once and is tried again 0.5 s later
    await kube.drop_watches()
    assert kube.open_watches == 0
    kube.apply(svc("api", ip="10.96.0.11"))  # made while no watch is open
    await feed.until({host("api"): 0})

    after = kube.requests[before:]
    assert not [r for r in after if is_list(r)], "relisted after a dropped watch"
    services = [r for r in after if r.path == "/api/v1/services"]
    assert services and all(r.query["resourceVersion"] == str(version) for r in services)
    await until_watching(kube, INFORMERS)


async def test_gone_while_watching_relists_and_converges(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    kube.apply(svc())
    kube.apply(eps())
    kube.apply(svc("old", ip="10.96.0.13"))
    feed = start(feeds, make(kube, tmp_path))
    await feed.synced()
    await until_watching(kube, INFORMERS)
    before = len(kube.requests)

    kube.fail_next(500, 3)  # each re-watch fails once and is tried again 0.5 s later
    await kube.drop_watches(graceful=True)
    kube.delete("v1", "Service", "shop", "old")  # changes no watch sees...
    kube.apply(svc("new", ip="10.96.0.14"))
    kube.apply(eps("web", "shop", "10.1.0.1", "10.1.0.7"))
    kube.compact()  # ...and forgotten: watching from the last seen version gets ERROR 410
    await feed.until({host("old"): None, host("new"): 0, HOST: 2})

    await until_watching(kube, INFORMERS)  # Nodes too: relisted (no update to show for it)
    relisted = sorted(r.path for r in kube.requests[before:] if is_list(r))
    assert relisted == [
        "/api/v1/nodes",
        "/api/v1/pods",
        "/api/v1/services",
        "/apis/discovery.k8s.io/v1/endpointslices",
    ]
    # the relists changed nothing more: a later Service is the next update
    kube.apply(svc("late", ip="10.96.0.15"))
    await feed.nothing_before(lambda u: addresses_of(u, host("late")) == [], problems=True)


async def test_a_410_answer_to_a_watch_relists_that_resource(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    kube.apply(svc())
    feed = start(feeds, make(kube, tmp_path, namespaces=["shop"]))
    await feed.synced()
    await until_watching(kube, INFORMERS)
    before = len(kube.requests)
    kube.fail_next(410, 1)  # the next request (one re-watch) answers 410 Gone
    await kube.drop_watches()
    kube.apply(svc("api", ip="10.96.0.11"))
    await feed.until({host("api"): 0})
    await until_watching(kube, INFORMERS)
    assert len([r for r in kube.requests[before:] if is_list(r)]) == 1


async def test_bookmarks_move_the_version_a_watch_resumes_from(
    tmp_path: Path, feeds: list[Feed]
) -> None:
    async with KubeEmulator(bookmark_interval=0.1) as kube:
        kube.apply(svc())
        feed = start(feeds, make(kube, tmp_path))
        await feed.synced()
        await until_watching(kube, INFORMERS)
        for index in range(3):  # objects nobody watches move the global resourceVersion
            kube.apply({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": f"e{index}"}})
        version = kube.resource_version
        # every watch was sent a bookmark of the new version (and read it before the end
        # of its stream below)
        await until(lambda: {k for k, rv in kube.bookmarks if rv == version} >= KINDS)
        before = len(kube.requests)
        kube.compact()  # no history before now: only a watch from now works without 410
        await kube.drop_watches()
        await until_watching(kube, INFORMERS)
        after = kube.requests[before:]
        assert not [r for r in after if is_list(r)], "a relist: bookmarks were not used"
        assert {r.query["resourceVersion"] for r in after} == {str(version)}
        kube.apply(svc("api", ip="10.96.0.11"))
        await feed.until({host("api"): 0})
        await feed.close()


async def test_watches_ask_for_bookmarks_and_a_server_side_timeout(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    feed = start(feeds, make(kube, tmp_path))
    await feed.synced()
    await until_watching(kube, INFORMERS)
    watches = [r for r in kube.requests if not is_list(r)]
    assert len(watches) == INFORMERS
    for request in watches:
        assert request.query["allowWatchBookmarks"].lower() == "true"
        assert 300 <= int(request.query["timeoutSeconds"]) <= 600
        assert request.query["resourceVersion"] == str(kube.resource_version)


# -- clusters and namespaces ----------------------------------------------------------------------


async def test_lists_larger_than_a_page_are_read_in_pages(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    count = PAGE_SIZE + 7
    for i in range(count):
        kube.apply(svc(f"web-{i:04d}", ip=f"10.96.{i // 250}.{i % 250 + 1}"))
    feed = start(feeds, make(kube, tmp_path))
    replace, _ = await feed.synced()
    assert len({s.hostname for s in replace.services}) == count
    pages = [r for r in kube.requests if r.path == "/api/v1/services" and "watch" not in r.query]
    assert [r.query.get("limit") for r in pages] == [str(PAGE_SIZE)] * 2
    assert "continue" not in pages[0].query and pages[1].query.get("continue")


async def test_a_list_whose_continue_token_expires_starts_over(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="registryd.kubernetes")
    count = PAGE_SIZE + 3
    for i in range(count):
        kube.apply(svc(f"web-{i:04d}", ip=f"10.96.{i // 250}.{i % 250 + 1}"))
    compacted = []

    def compact_before_the_first_second_page(request: Request) -> None:
        if request.path == "/api/v1/services" and "continue" in request.query and not compacted:
            # etcd compacted between two pages, and a service came meanwhile
            kube.apply(svc("late", ip="10.96.9.9"))
            kube.compact()
            compacted.append(request)

    kube.on_request = compact_before_the_first_second_page
    feed = start(feeds, make(kube, tmp_path))
    replace, _ = await feed.synced()
    assert compacted
    assert len({s.hostname for s in replace.services}) == count + 1  # the new list has "late"
    pages = [r for r in kube.requests if r.path == "/api/v1/services" and "watch" not in r.query]
    assert ["continue" in r.query for r in pages] == [False, True, False, True]
    assert "the continue token expired; listing again" in caplog.text


async def test_two_clusters_deliver_the_same_service_with_their_cluster_ids(
    tmp_path: Path, feeds: list[Feed]
) -> None:
    async with KubeEmulator() as east, KubeEmulator() as west:
        for cluster, pod in ((east, "10.1.0.1"), (west, "10.2.0.1")):
            cluster.apply(svc())
            cluster.apply(eps("web", "shop", pod))
        feed_east = start(feeds, make(east, tmp_path, "east"))
        feed_west = start(feeds, make(west, tmp_path, "west", cluster_id="west-1"))
        for feed, pod, cluster_id in (
            (feed_east, "10.1.0.1", "east"),
            (feed_west, "10.2.0.1", "west-1"),
        ):
            replace, _ = await feed.synced()
            assert [s.hostname for s in replace.services] == [HOST]
            assert [(e.address, e.cluster_id) for e in replace.endpoints] == [(pod, cluster_id)]
            assert replace.endpoints[0].labels["topology.istio.io/cluster"] == cluster_id
        for feed in (feed_east, feed_west):
            await feed.close()


async def test_namespaces_list_reads_only_those_namespaces(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    kube.apply(svc("web", "shop"))
    kube.apply(svc("web", "billing", ip="10.96.0.21"))
    kube.apply(svc("web", "other", ip="10.96.0.22"))
    feed = start(feeds, make(kube, tmp_path, namespaces=["shop", "billing"]))
    replace, _ = await feed.synced()
    assert sorted(s.hostname for s in replace.services) == [host("web", "billing"), HOST]
    paths = {r.path for r in kube.requests}
    assert paths == {
        "/api/v1/namespaces/shop/services",
        "/api/v1/namespaces/billing/services",
        "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
        "/apis/discovery.k8s.io/v1/namespaces/billing/endpointslices",
        "/api/v1/namespaces/shop/pods",
        "/api/v1/namespaces/billing/pods",
        "/api/v1/nodes",
    }
    kube.apply(svc("api", "other", ip="10.96.0.23"))
    kube.apply(svc("api", "billing", ip="10.96.0.24"))  # the next Service event
    await feed.nothing_before(
        lambda u: addresses_of(u, host("api", "billing")) == [], problems=True
    )
    kube.apply(eps("web", "billing", "10.3.0.1"))
    await feed.until({host("web", "billing"): 1})


async def test_namespace_selector_follows_namespace_labels(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    kube.apply(ns("shop", mesh="on"))
    kube.apply(ns("lab"))
    kube.apply(svc("web", "shop"))
    kube.apply(svc("web", "lab", ip="10.96.0.31"))
    selector = {"matchLabels": {"mesh": "on"}}
    feed = start(feeds, make(kube, tmp_path, namespace_selector=selector))
    replace, _ = await feed.synced()
    assert [s.hostname for s in replace.services] == [HOST]
    assert "/api/v1/namespaces" in {r.path for r in kube.requests}

    kube.apply(ns("lab", mesh="on"))
    await feed.until({host("web", "lab"): 0})
    kube.apply(ns("shop", mesh="off"))
    await feed.until({HOST: None})


async def test_qps_and_burst_bound_the_request_rate(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    qps, burst = 10.0, 2
    spaces = ["a", "b", "c"]
    fake = FakeTime(hold=True)  # the clock stands still until the test moves it
    start_time = fake()
    adapter = make(kube, tmp_path, namespaces=spaces, qps=qps, burst=burst, fake=fake)
    feed = start(feeds, adapter)
    lists = len(spaces) * 3 + 1  # Services, EndpointSlices, Pods per namespace; Nodes
    # A clock that does not move: `burst` requests go out, every other one waits on the
    # adapter's sleep, the n-th of them n/qps seconds.
    waits = await fake.slept(lists - burst)
    assert waits == pytest.approx([n / qps for n in range(1, lists - burst + 1)])
    # Once every informer waits (the first ones for their watch), nothing else can go out.
    await until(lambda: fake.sleeping == lists)
    assert len(kube.requests) == burst
    fake.advance_to_next()  # 1/qps later: exactly one more
    await until(lambda: fake.sleeping == lists)
    assert len(kube.requests) == burst + 1
    # Then each wait that ends lets one request out, until the 10 lists and the 10
    # watches are sent, each 1/qps after the one before.
    while len(kube.requests) < 2 * lists:
        await until(lambda: fake.sleeping > 0 or len(kube.requests) == 2 * lists)
        if fake.sleeping:
            fake.advance_to_next()
    await feed.synced()
    await until_watching(kube, lists)
    assert len(kube.requests) == 2 * lists  # 10 lists, 10 watches
    assert fake.dues == pytest.approx(
        [start_time + n / qps for n in range(1, 2 * lists - burst + 1)]
    )
    assert fake() == pytest.approx(start_time + (2 * lists - burst) / qps)


# -- failures -------------------------------------------------------------------------------------


async def test_apiserver_down_raises_and_a_new_watch_has_exactly_the_new_state(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    kube.apply(svc())
    kube.apply(eps())
    kube.apply(svc("old", ip="10.96.0.13"))
    adapter = make(kube, tmp_path, fake=(fake := FakeTime()))
    feed = start(feeds, adapter)
    await feed.synced()
    await kube.stop()
    error = await feed.error()
    assert isinstance(error, KubernetesError)
    assert kube.address in str(error)
    # It fails because the connection is refused, after one quick retry of it and the
    # first short re-watch delay: no timeout (connect, read) is waited out.
    assert "Connect call failed" in str(error), error
    assert set(fake.sleeps) <= {0.1, CONNECT_RETRY_DELAY}, fake.sleeps
    assert 1 <= fake.sleeps.count(CONNECT_RETRY_DELAY) <= INFORMERS * CONNECT_RETRIES

    kube.delete("v1", "Service", "shop", "old")  # changes while it is down
    kube.apply(svc("new", ip="10.96.0.14"))
    kube.apply(eps("web", "shop", "10.1.0.5"))
    await kube.start()
    again = start(feeds, adapter)
    replace, _ = await again.synced()
    assert endpoints_of(replace) == {host("new"): [], HOST: ["10.1.0.5"]}


async def test_a_5xx_is_retried_and_repeated_ones_raise(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    kube.apply(svc())
    kube.fail_next(500, 1)
    feed = start(feeds, make(kube, tmp_path))
    replace, _ = await feed.synced()
    assert [s.hostname for s in replace.services] == [HOST]
    await feed.close()

    kube.fail_next(503, 10)
    error = await start(feeds, make(kube, tmp_path)).error()
    assert isinstance(error, KubernetesError)
    assert "HTTP 503" in str(error)


async def test_forbidden_nodes_sync_without_regions_until_allowed(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    kube.apply(svc())
    kube.apply(eps("web", "shop", "10.1.0.1", node="n1", pods=("web-1",)))
    kube.apply(node("n1", "eu-west-1", "eu-west-1a"))
    kube.forbidden.add("nodes")  # a Role without cluster-scoped reads
    fake = FakeTime(hold=True)
    feed = start(feeds, make(kube, tmp_path, fake=fake))
    replace, problems = await feed.synced()
    (endpoint,) = replace.endpoints
    assert endpoint.locality == Locality()  # no region: Nodes could not be read
    (message,) = problems.errors.values()
    assert list(problems.errors) == ["Node"]
    assert "HTTP 403" in message and "nodes is forbidden" in message
    assert "listed again every" in message

    kube.forbidden.clear()  # the permission is granted: picked up without a restart
    assert await fake.slept(1) == [FORBIDDEN_RETRY]  # Nodes are listed again after this
    fake.advance(FORBIDDEN_RETRY)
    upsert = await feed.expect(Upsert)
    assert upsert.endpoints[0].locality == Locality(region="eu-west-1", zone="eu-west-1a")
    assert (await feed.expect(Problems)).errors == {}


async def test_forbidden_services_fail_the_registry(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    kube.forbidden.add("services")
    error = await start(feeds, make(kube, tmp_path)).error()
    assert isinstance(error, KubernetesError)
    assert "HTTP 403" in str(error) and "need 'list' and 'watch' on services" in str(error)


async def test_nothing_listening_raises_at_once(tmp_path: Path, feeds: list[Feed]) -> None:
    fake = FakeTime()
    async with KubeEmulator() as kube:
        adapter = make(kube, tmp_path, fake=fake)
    error = await start(feeds, adapter).error()
    assert isinstance(error, KubernetesError)
    # refused, tried once more after CONNECT_RETRY_DELAY: no timeout is waited out
    assert "Connect call failed" in str(error), error
    assert 1 <= len(fake.sleeps) <= INFORMERS * CONNECT_RETRIES
    assert set(fake.sleeps) == {CONNECT_RETRY_DELAY}


async def test_the_token_is_sent_and_never_shown(
    tmp_path: Path, feeds: list[Feed], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with KubeEmulator(token=SECRET) as kube:
        kube.apply(svc())
        adapter = make(kube, tmp_path)
        feed = start(feeds, adapter)
        replace, _ = await feed.synced()
        assert [s.hostname for s in replace.services] == [HOST]
        await feed.close()
        assert SECRET not in repr(adapter)

        wrong = tmp_path / "wrong.kubeconfig"
        kube.kubeconfig(wrong)
        wrong.write_text(wrong.read_text().replace(SECRET, "not-the-token"))
        error = await start(feeds, make(kube, tmp_path, kubeconfig=str(wrong))).error()
        assert "HTTP 401" in str(error) and "credentials" in str(error)
    assert SECRET not in caplog.text


async def test_a_kubeconfig_that_does_not_load_fails_redacted(
    tmp_path: Path, feeds: list[Feed], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "broken.kubeconfig"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
        # an oidc provider without client-id: kubernetes_asyncio's error quotes the user
        # entry, token and refresh token included
        "users": [
            {
                "name": "u",
                "user": {
                    "token": SECRET,
                    "auth-provider": {"name": "oidc", "config": {"refresh-token": f"r-{SECRET}"}},
                },
            }
        ],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path.write_text(yaml.safe_dump(doc))
    adapter = KubernetesAdapter(
        name="east", settings={"kubeconfig": str(path)}, context=AdapterContext()
    )
    error = await start(feeds, adapter).error()
    assert isinstance(error, KubernetesError)
    assert str(path) in str(error) and "client-id" in str(error)
    assert "<redacted>" in str(error)
    assert SECRET not in str(error) and SECRET not in caplog.text

    missing = KubernetesAdapter(
        name="east", settings={"kubeconfig": str(path), "context": "nope"}, context=AdapterContext()
    )
    error = await start(feeds, missing).error()
    assert "nope" in str(error) and SECRET not in str(error)


# -- the adapter contract suite --------------------------------------------------------------------


class TestKubernetesAdapterContract(AdapterContract):
    """registryd's adapter contract, each test on a fresh emulated API server."""

    factory = KubernetesAdapter

    async def setup_registry(self) -> None:
        self.running: list[Adapter] = []  # adapters whose watch() runs
        self.kube = KubeEmulator()
        await self.kube.start()
        self.workdir = Path(await asyncio.to_thread(_tempdir))
        self.path = self.kube.kubeconfig(self.workdir / "kubeconfig")

    async def teardown_registry(self) -> None:
        await self.kube.stop()
        await asyncio.to_thread(_rmtree, self.workdir)

    async def create(self) -> Adapter:
        settings = {"kubeconfig": str(self.path)}
        adapter = KubernetesAdapter(name="contract", settings=settings, context=AdapterContext())
        return _Counted(adapter, self.running)

    async def add_service(self, name: str) -> str:
        """The EndpointSlice first, the Service once a running adapter has read the slice:
        they are separate objects on separate watch streams, so this is how the service
        appears with endpoints."""
        if self.kube.get("v1", "Service", "shop", name) is None:
            self.kube.apply(eps(name, "shop", "10.1.0.50"))
            if self.running:
                await self._read_so_far()
        self.kube.apply(svc(name, ip="10.96.0.50"))
        return host(name)

    async def _read_so_far(self) -> None:
        """Until the running adapter has read every event made so far: its watch streams
        end cleanly after the events queued on them, and an informer watches again only
        once it has handed on everything its stream carried."""
        await until_watching(self.kube, INFORMERS)
        await self.kube.drop_watches(graceful=True)
        await until_watching(self.kube, INFORMERS)

    async def remove_service(self, name: str) -> None:
        for api_version, kind, object_name in (
            ("v1", "Service", name),
            ("discovery.k8s.io/v1", "EndpointSlice", f"{name}-abc"),
        ):
            if self.kube.get(api_version, kind, "shop", object_name) is not None:
                self.kube.delete(api_version, kind, "shop", object_name)

    async def break_registry(self) -> None:
        await self.kube.stop()

    async def heal_registry(self) -> None:
        await self.kube.start()

    def bad_settings(self) -> list[dict[str, object]]:
        return [
            {"kubeconfig": "/no/such/file"},
            {"kubeconfig": str(self._any_file()), "bogus": 1},
            {"kubeconfig": str(self._any_file()), "qps": -1},
            {"kubeconfig": str(self._any_file()), "namespaces": "shop"},
            {"kubeconfig": str(self._any_file()), "namespace_selector": "a in ()"},
        ]

    @staticmethod
    def _any_file() -> Path:
        return Path(__file__)


class _Counted:
    """An adapter that is in ``running`` while its ``watch()`` runs."""

    def __init__(self, adapter: KubernetesAdapter, running: list[Adapter]) -> None:
        self.adapter = adapter
        self.running = running

    async def watch(self) -> AsyncIterator[Update]:
        self.running.append(self.adapter)
        try:
            async with contextlib.aclosing(self.adapter.watch()) as updates:
                async for update in updates:
                    yield update
        finally:
            self.running.remove(self.adapter)


def _tempdir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="kube-contract-")


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# -- answers bounded before they are parsed ----------------------------------------------------


async def test_a_list_page_over_max_response_bytes_fails_the_registry_naming_it(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    for i in range(20):  # about 8 KB of Services
        kube.apply(svc(f"web{i}", ip=f"10.96.0.{i + 10}"))
    feed = start(feeds, make(kube, tmp_path, max_response_bytes=4096))
    error = await feed.error()
    assert isinstance(error, KubernetesError)
    assert str(error).endswith(": the answer is larger than 4096 bytes (max_response_bytes)")
    assert str(error).startswith("list /api/v1/services on ")


async def test_a_watch_event_over_max_response_bytes_fails_the_watch_naming_it(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    kube.apply(svc())
    feed = start(feeds, make(kube, tmp_path, max_response_bytes=4096))
    await feed.synced()
    big = svc("big", ip="10.96.0.99")
    big["metadata"]["annotations"] = {"note": "x" * 5000}
    kube.apply(big)
    error = await feed.error()
    assert isinstance(error, KubernetesError)
    assert str(error).startswith("watch /api/v1/services on ")
    assert str(error).endswith(": an event larger than 4096 bytes (max_response_bytes)")
