"""The Kubernetes adapter against a real kube-apiserver (with its own etcd, on loopback:
tests/support/kube_apiserver.py): the adapter contract suite, the same tests as against the
emulator, and what only a real server shows: a watch through an etcd compaction, RBAC
refusing Pods and Nodes, a list read in pages, a list whose continue token an etcd
compaction expires, a Service deleted and created again under its name, one Service's
endpoints in several EndpointSlices, Pod labels and Node locality, a namespace selector;
and the real server run from the command line.

One server for the module (starting one takes seconds): each test works in a namespace of
its own and deletes what it made there.  EndpointSlices are watched from etcd itself (their
watch cache is off, :data:`WATCH_FROM_ETCD`), everything else from the API server's watch
cache, as by default.  Why: a watch is served from the cache's own event history, which an
etcd compaction does not touch (it keeps at least 75 s of events, up to 100 Ki of them),
so only a watch (or a list's next page) the server reads from etcd meets a compaction as
410 Expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from registryd.adapter import Adapter, AdapterContext, Replace, Update, Upsert
from registryd.adapters.kubernetes import KubernetesAdapter
from registryd.adapters.kubernetes import client as client_module
from registryd.adapters.kubernetes.client import PAGE_SIZE
from tests.adapters import test_kubernetes_adapter as emulated
from tests.adapters.test_kubernetes_adapter import (
    HANG_GUARD,
    HOST,
    INFORMERS,
    Feed,
    endpoints_of,
    eps,
    host,
    node,
    ns,
    start,
    svc,
    until,
)
from tests.support.fake_time import FakeTime
from tests.support.kube_apiserver import (
    READER,
    START_DEADLINE,
    KubeApiServer,
    kube_apiserver_binary,
    start_kube_apiserver,
)
from tests.support.tcp_relay import TcpRelay

ROOT = Path(__file__).resolve().parents[2]
WATCH_FROM_ETCD = "--watch-cache-sizes=endpointslices.discovery.k8s.io#0"
_namespaces = itertools.count(1)


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiServer]:
    """One kube-apiserver (and etcd) for the module; skips without the binary."""
    server = start_kube_apiserver(
        tmp_path_factory.mktemp("kube-apiserver"), extra_args=(WATCH_FROM_ETCD,)
    )
    try:
        yield server
    finally:
        server.stop()


def new_namespace(server: KubeApiServer, prefix: str) -> str:
    name = f"{prefix}-{next(_namespaces)}"
    server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def clean(server: KubeApiServer, namespace: str) -> None:
    """Delete the Services, EndpointSlices and Pods of ``namespace`` (with no controller
    running, a deleted Namespace would keep them for ever)."""
    for path in (
        f"/api/v1/namespaces/{namespace}/services",
        f"/api/v1/namespaces/{namespace}/pods",
        f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
    ):
        server.delete_collection(path)


@pytest.fixture
def namespace(apiserver: KubeApiServer) -> Iterator[str]:
    """A namespace of the test's own on the module's server, emptied after the test."""
    name = new_namespace(apiserver, "t")
    yield name
    clean(apiserver, name)


def real(service: dict[str, Any]) -> dict[str, Any]:
    """``service`` without its cluster IP: the real server allocates one (two Services
    cannot have the same one)."""
    spec = {k: v for k, v in service["spec"].items() if k not in ("clusterIP", "clusterIPs")}
    return {**service, "spec": spec}


async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A blocking request to the server, off the event loop the adapter runs on."""
    return await asyncio.to_thread(function, *args, **kwargs)


def adapter_on(
    kubeconfig: Path, namespace: str, *, fake: FakeTime | None = None, **settings: Any
) -> KubernetesAdapter:
    """An adapter on the Services of ``namespace`` only (other tests' stay out of it)."""
    values = {"kubeconfig": str(kubeconfig), "namespaces": [namespace], **settings}
    if fake is None:
        return KubernetesAdapter(name="real", settings=values, context=AdapterContext())
    return KubernetesAdapter(
        name="real", settings=values, context=AdapterContext(), clock=fake, sleep=fake.sleep
    )


def addresses(update: Update, hostname: str) -> list[str]:
    if isinstance(update, Replace):
        return sorted(e.address for e in update.endpoints if e.hostname == hostname)
    assert isinstance(update, Upsert) and update.service.hostname == hostname, update
    return sorted(e.address for e in update.endpoints)


# -- the adapter contract suite ---------------------------------------------------------------

MARK = "10.1.9.{}"  # the marker Service's one endpoint, changed to say "read so far"


class TestKubernetesAdapterContractOnRealServer(emulated.TestKubernetesAdapterContract):
    """The contract suite of the emulator's tests on the module's kube-apiserver: a
    namespace per test (what it made is deleted after it); an unreachable registry is
    kube-apiserver killed, healed by starting it again on the same port and etcd."""

    timeout = HANG_GUARD  # a step on a loaded machine: only a hang guard

    @pytest.fixture(autouse=True)
    def _on_real_server(self, apiserver: KubeApiServer) -> None:
        self.server = apiserver

    async def setup_registry(self) -> None:
        self.observed: list[_Observed] = []  # adapters whose watch() runs
        self.marks = 0
        self.namespace = await call(new_namespace, self.server, "contract")
        self.path = self.server.kubeconfig
        await call(self.server.create, real(svc("marker", self.namespace)))
        await call(
            self.server.create, eps("marker", self.namespace, MARK.format(0), name="marker-abc")
        )

    async def teardown_registry(self) -> None:
        if self.server.proc is None or not self.server.proc.alive():
            await call(self.server.start)  # a test that failed between break and heal
        await call(clean, self.server, self.namespace)

    async def create(self) -> Adapter:
        settings = {"kubeconfig": str(self.path)}
        adapter = KubernetesAdapter(name="contract", settings=settings, context=AdapterContext())
        return _Observed(adapter, self.observed, host("marker", self.namespace))

    def _path(self, plural: str, name: str) -> str:
        group = "/apis/discovery.k8s.io/v1" if plural == "endpointslices" else "/api/v1"
        return f"{group}/namespaces/{self.namespace}/{plural}/{name}"

    async def _exists(self, plural: str, name: str) -> bool:
        status, _ = await call(self.server.request, "GET", self._path(plural, name))
        return bool(status == 200)

    async def add_service(self, name: str) -> str:
        """The EndpointSlice first, the Service once every running adapter has read the
        slice (they come on separate watch streams, whose order nothing fixes): so the
        service appears with its endpoint."""
        if not await self._exists("services", name):
            await call(self.server.create, eps(name, self.namespace, "10.1.0.50"))
            if self.observed:
                await self._read_so_far()
            await call(self.server.create, real(svc(name, self.namespace)))
        return host(name, self.namespace)

    async def _read_so_far(self) -> None:
        """Until every running adapter has read every EndpointSlice made so far: the
        marker's slice, changed after them, comes after them on the same watch stream."""
        self.marks += 1
        address = MARK.format(self.marks)
        marker = eps("marker", self.namespace, address, name="marker-abc")
        await call(self.server.update, marker)
        await until(lambda: all(o.marker == [address] for o in self.observed))

    async def remove_service(self, name: str) -> None:
        for plural, kind, version, object_name in (
            ("services", "Service", "v1", name),
            ("endpointslices", "EndpointSlice", "discovery.k8s.io/v1", f"{name}-abc"),
        ):
            if await self._exists(plural, object_name):
                metadata = {"name": object_name, "namespace": self.namespace}
                obj = {"apiVersion": version, "kind": kind, "metadata": metadata}
                await call(self.server.delete, obj)

    async def break_registry(self) -> None:
        await call(self.server.crash_apiserver)

    async def heal_registry(self) -> None:
        await call(self.server.start)


class _Observed:
    """An adapter whose ``watch()`` a task of its own reads as soon as it yields (handing
    the updates on in order), so the marker Service's endpoints (:attr:`marker`) are known
    while the test is not reading; in ``running`` while it runs."""

    def __init__(self, adapter: KubernetesAdapter, running: list[_Observed], marker: str) -> None:
        self.adapter = adapter
        self.running = running
        self.hostname = marker
        self.marker: list[str] | None = None  # its addresses, as last seen

    def _see(self, update: Update) -> None:
        if isinstance(update, Replace) or (
            isinstance(update, Upsert) and update.service.hostname == self.hostname
        ):
            self.marker = addresses(update, self.hostname)

    async def watch(self) -> AsyncIterator[Update]:
        queue: asyncio.Queue[Update | Exception | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async with contextlib.aclosing(self.adapter.watch()) as updates:
                    async for update in updates:
                        self._see(update)
                        queue.put_nowait(update)
            except Exception as exc:  # watch()'s failure: raised to the reader
                queue.put_nowait(exc)
            else:
                queue.put_nowait(None)

        task = asyncio.create_task(pump())
        self.running.append(self)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.running.remove(self)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# -- what only a real server shows ------------------------------------------------------------


async def test_a_watch_through_an_etcd_compaction_relists_and_loses_no_endpoint(
    apiserver: KubeApiServer,
    namespace: str,
    feeds: list[Feed],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="registryd.kubernetes")
    server, web = apiserver, host("web", namespace)
    await call(server.create, real(svc("web", namespace)))
    await call(server.create, eps("web", namespace, "10.1.0.1", name="web-a"))
    relay = await TcpRelay(server.port).start()  # cuts the adapter's watch streams
    try:
        kubeconfig = server.write_kubeconfig(tmp_path / "relayed.kubeconfig", url=relay.url)
        # Time stands still until the test moves it: a watch stream that ends is watched
        # again only after a (held) wait, so the test decides when that happens.
        fake = FakeTime(hold=True)
        feed = start(feeds, adapter_on(kubeconfig, namespace, fake=fake, qps=1000, burst=1000))
        replace, _ = await feed.synced()
        assert endpoints_of(replace) == {web: ["10.1.0.1"]}
        # Cut every stream until each informer waits before watching again (a watch
        # request in flight at a cut fails and waits before it is tried again).
        async with asyncio.timeout(HANG_GUARD):
            while fake.sleeping < INFORMERS:
                relay.cut()
                await asyncio.sleep(0.05)

        # What no watch sees: made while none is open, then compacted away in etcd.
        await call(server.delete, eps("web", namespace, name="web-a"))
        await call(server.create, eps("web", namespace, "10.1.0.2", name="web-b"))
        await call(server.create, real(svc("new", namespace)))
        await call(server.create, eps("new", namespace, "10.1.0.3", name="new-abc"))
        await call(server.etcd.compact)
        caplog.clear()
        fake.advance(1.0)  # every informer watches again, from before the compaction

        seen = await feed.until({web: 1, host("new", namespace): 1})
        assert addresses(seen[web], web) == ["10.1.0.2"]
        assert addresses(seen[host("new", namespace)], host("new", namespace)) == ["10.1.0.3"]
    finally:
        await relay.stop()
    # The EndpointSlice watch, passed on to etcd, met the compaction: 410 Expired as an
    # ERROR event, and its informer listed again.  The other informers resumed from the
    # watch cache, whose history the compaction did not touch.
    relisted = [r.getMessage() for r in caplog.records if "listing again" in r.getMessage()]
    slices = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    gone = "410 Expired: The resourceVersion for the provided watch is too old."
    assert len(relisted) == 1, relisted
    assert re.fullmatch(
        rf"{re.escape(slices)}: watch from resourceVersion \d+: {re.escape(gone)}; listing again",
        relisted[0],
    ), relisted


async def test_rbac_refusing_pods_and_nodes_leaves_services_served(
    apiserver: KubeApiServer, namespace: str, feeds: list[Feed], tmp_path: Path
) -> None:
    server, web = apiserver, host("web", namespace)
    read = ["get", "list", "watch"]
    await call(
        server.grant,
        [
            {"apiGroups": [""], "resources": ["services"], "verbs": read},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
        ],
    )
    await call(server.create, real(svc("web", namespace)))
    await call(server.create, eps("web", namespace, "10.1.0.1", name="web-a"))
    kubeconfig = server.write_kubeconfig(tmp_path / "reader.kubeconfig", user=READER)
    feed = start(feeds, adapter_on(kubeconfig, namespace))
    replace, problems = await feed.synced()
    assert endpoints_of(replace) == {web: ["10.1.0.1"]}
    assert sorted(problems.errors) == ["Node", "Pod"], problems.errors
    # the real server's words, passed on
    assert (
        f'HTTP 403: pods is forbidden: User "{READER}" cannot list resource "pods" in API '
        f'group "" in the namespace "{namespace}"'
    ) in problems.errors["Pod"]
    assert (
        f'HTTP 403: nodes is forbidden: User "{READER}" cannot list resource "nodes" in API '
        'group "" at the cluster scope'
    ) in problems.errors["Node"]

    await call(server.create, eps("web", namespace, "10.1.0.2", name="web-b"))
    seen = await feed.until({web: 2})  # still followed
    assert addresses(seen[web], web) == ["10.1.0.1", "10.1.0.2"]


def list_requests(server: KubeApiServer, resource: str) -> int:
    """How many LIST requests of ``resource`` in one namespace the server has answered
    with 200 (its ``apiserver_request_total`` counter: one per page)."""
    status, text = server.request("GET", "/metrics")
    assert status == 200, text
    total = 0
    for line in str(text).splitlines():
        if line.startswith("apiserver_request_total{") and all(
            f'{label}="{value}"' in line
            for label, value in (
                ("code", "200"),
                ("resource", resource),
                ("scope", "namespace"),
                ("verb", "LIST"),
            )
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


async def test_1500_services_are_listed_in_pages(
    apiserver: KubeApiServer, namespace: str, feeds: list[Feed]
) -> None:
    server, count = apiserver, 1500
    names = [f"s{index:04d}" for index in range(count)]
    # headless: no cluster IP to allocate (and free again), so half the writes
    await call(server.create_all, [svc(name, namespace, ip="None") for name in names])
    before = await call(list_requests, server, "services")
    feed = start(feeds, adapter_on(server.kubeconfig, namespace))
    replace, _ = await feed.synced()
    assert sorted(s.hostname for s in replace.services) == [host(n, namespace) for n in names]
    pages = await call(list_requests, server, "services") - before
    assert pages == math.ceil(count / PAGE_SIZE) == 3


async def test_a_list_whose_continue_token_expires_starts_over(
    apiserver: KubeApiServer,
    namespace: str,
    feeds: list[Feed],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """etcd compacted between two pages of a list of EndpointSlices (read from etcd: a
    list served from the watch cache pages from the cache's snapshot, which a compaction
    does not expire): the next page is 410 Expired, and the adapter lists again from the
    start.  Pages of 2 (patched), so three slices make two pages."""
    caplog.set_level(logging.INFO, logger="registryd.kubernetes")
    monkeypatch.setattr(client_module, "PAGE_SIZE", 2)
    server, web = apiserver, host("web", namespace)
    await call(server.create, real(svc("web", namespace)))
    for index in range(1, 4):
        await call(server.create, eps("web", namespace, f"10.1.0.{index}", name=f"web-{index}"))
    # Two requests at once, then one a second on a clock that stands still: the lists of
    # Services and of the first page of slices go out; every later request (Pods, Nodes,
    # the Services' watch, the second page of slices) waits.
    fake = FakeTime(hold=True)
    feed = start(feeds, adapter_on(server.kubeconfig, namespace, fake=fake, qps=1, burst=2))
    async with asyncio.timeout(HANG_GUARD):
        while fake.sleeping < INFORMERS:
            await asyncio.sleep(0.01)
    assert feed.queue.empty()
    await call(new_namespace, server, "moved")  # a write: the revision moves past the page's
    await call(server.etcd.compact)
    fake.hold = False  # every wait is over at once from now on
    fake.advance(60.0)

    replace, _ = await feed.synced()
    assert endpoints_of(replace) == {web: ["10.1.0.1", "10.1.0.2", "10.1.0.3"]}
    slices = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    expired = [r.getMessage() for r in caplog.records if "continue token" in r.getMessage()]
    assert expired == [f"list {slices} on {server.url}: the continue token expired; listing again"]


async def test_a_service_deleted_and_created_again_under_its_name(
    apiserver: KubeApiServer, namespace: str, feeds: list[Feed]
) -> None:
    server, web = apiserver, host("web", namespace)
    await call(server.create, real(svc("web", namespace)))
    await call(server.create, eps("web", namespace, "10.1.0.1", name="web-a"))
    feed = start(feeds, adapter_on(server.kubeconfig, namespace))
    await feed.synced()

    await call(server.delete, svc("web", namespace))
    await feed.until({web: None})
    again = await call(server.create, real(svc("web", namespace, port=81)))
    upsert = (await feed.until({web: 1}))[web]  # the slice was never gone
    assert isinstance(upsert, Upsert)
    assert [p.number for p in upsert.service.ports] == [81]
    assert upsert.service.addresses == (again["spec"]["clusterIP"],)
    assert addresses(upsert, web) == ["10.1.0.1"]


async def test_endpoints_of_one_service_in_several_slices(
    apiserver: KubeApiServer, namespace: str, feeds: list[Feed]
) -> None:
    server, web = apiserver, host("web", namespace)
    await call(server.create, real(svc("web", namespace)))
    for name, members in (
        ("web-a", ("10.1.0.1", "10.1.0.2")),
        ("web-b", ("10.1.0.3",)),
        ("web-c", ("10.1.0.4", "10.1.0.5")),
    ):
        await call(server.create, eps("web", namespace, *members, name=name))
    feed = start(feeds, adapter_on(server.kubeconfig, namespace))
    replace, _ = await feed.synced()
    assert endpoints_of(replace) == {web: [f"10.1.0.{n}" for n in range(1, 6)]}

    await call(server.delete, eps("web", namespace, name="web-b"))
    seen = await feed.until({web: 4})
    assert addresses(seen[web], web) == ["10.1.0.1", "10.1.0.2", "10.1.0.4", "10.1.0.5"]


async def test_pod_labels_and_node_locality_reach_the_endpoints(
    apiserver: KubeApiServer, namespace: str, feeds: list[Feed]
) -> None:
    """A real Pod needs its namespace's ``default`` ServiceAccount (admission checks it,
    and no controller makes it here); its labels, and its Node's region and zone, reach
    the endpoint that names it, and a change of its labels comes as an Upsert."""
    server, web, node_name = apiserver, host("web", namespace), f"node-{namespace}"
    await call(server.create, node(node_name, "eu-west-1", "eu-west-1a"))
    account = {"name": "default", "namespace": namespace}
    await call(server.create, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": account})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": namespace, "labels": {"version": "v1"}},
        "spec": {"nodeName": node_name, "containers": [{"name": "app", "image": "app:1"}]},
    }
    stored = await call(server.create, pod)  # defaulted: an update must keep its spec
    await call(server.create, real(svc("web", namespace)))
    await call(
        server.create,
        eps("web", namespace, "10.1.0.1", name="web-a", node=node_name, pods=("web-0",)),
    )
    feed = start(feeds, adapter_on(server.kubeconfig, namespace))
    replace, problems = await feed.synced()
    assert problems.errors == {}
    (endpoint,) = replace.endpoints
    assert endpoint.labels.get("version") == "v1", endpoint.labels
    assert (endpoint.locality.region, endpoint.locality.zone) == ("eu-west-1", "eu-west-1a")

    stored["metadata"]["labels"] = {"version": "v2"}
    await call(server.update, stored)
    upsert = (await feed.until({web: 1}))[web]
    assert isinstance(upsert, Upsert)
    assert upsert.endpoints[0].labels.get("version") == "v2"


async def test_a_namespace_selector_follows_namespace_labels(
    apiserver: KubeApiServer, feeds: list[Feed]
) -> None:
    """With ``namespace_selector`` the adapter watches the real server's Namespaces too:
    a namespace whose labels stop matching takes its Services out, and back in."""
    server = apiserver
    namespace = await call(new_namespace, server, "selected")
    try:
        labelled = ns(namespace, mesh=namespace)
        await call(server.update, labelled)
        await call(server.create, real(svc("web", namespace)))
        web = host("web", namespace)
        selector = {"matchLabels": {"mesh": namespace}}  # this namespace only
        settings = {"kubeconfig": str(server.kubeconfig), "namespace_selector": selector}
        adapter = KubernetesAdapter(name="real", settings=settings, context=AdapterContext())
        feed = start(feeds, adapter)
        replace, _ = await feed.synced()
        assert [s.hostname for s in replace.services] == [web]

        await call(server.update, ns(namespace, mesh="off"))
        await feed.until({web: None})
        await call(server.update, labelled)
        await feed.until({web: 0})
    finally:
        await call(clean, server, namespace)


async def test_the_command_line_server_creates_the_objects_of_its_files(tmp_path: Path) -> None:
    """``python -m tests.support.kube_apiserver FILES``: a real server of its own with the
    objects of the files (in order: the Namespace first), whose kubeconfig the adapter
    reads the Service through; it stops on SIGINT (Ctrl-C)."""
    kube_apiserver_binary()  # skips (or fails under CI) before anything starts
    objects = tmp_path / "shop.yaml"
    documents = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        real(svc("web", "shop")),
        eps("web", "shop", "10.1.0.1"),
    ]
    objects.write_text(yaml.safe_dump_all(documents))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.kube_apiserver",
        "--dir",
        str(tmp_path / "server"),
        str(objects),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(START_DEADLINE):
            url = (await process.stdout.readline()).decode().strip()
            said = (await process.stdout.readline()).decode().strip()
        assert re.fullmatch(r"kube-apiserver on https://127\.0\.0\.1:\d+", url), url
        kubeconfig = Path(said.removeprefix("kubeconfig: "))
        adapter = KubernetesAdapter(
            name="cli", settings={"kubeconfig": str(kubeconfig)}, context=AdapterContext()
        )
        updates = adapter.watch()
        try:
            replace = await asyncio.wait_for(anext(updates), HANG_GUARD)
        finally:
            await updates.aclose()
        assert isinstance(replace, Replace)
        assert HOST in endpoints_of(replace), endpoints_of(replace)
        assert endpoints_of(replace)[HOST] == ["10.1.0.1"]
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(HANG_GUARD):
            assert await process.wait() == 0
