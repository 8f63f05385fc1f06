"""The Kubernetes adapter against a real kube-apiserver (with its own etcd, on loopback:
tests/support/kube_apiserver.py): the adapter contract suite, the same tests as against the
emulator.

One server for the module (starting one takes seconds): each test works in a namespace of
its own and deletes what it made there.  EndpointSlices are watched from etcd itself (their
watch cache is off, :data:`WATCH_FROM_ETCD`), everything else from the API server's watch
cache, as by default.  Why: a watch is served from the cache's own event history, which an
etcd compaction does not touch (it keeps at least 75 s of events, up to 100 Ki of them),
so only a watch the server passes on to etcd meets a compaction as 410 Expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from registryd.adapter import Adapter, AdapterContext, Replace, Update, Upsert
from registryd.adapters.kubernetes import KubernetesAdapter
from tests.adapters import test_kubernetes_adapter as emulated
from tests.adapters.test_kubernetes_adapter import (
    HANG_GUARD,
    eps,
    host,
    svc,
    until,
)
from tests.support.fake_time import FakeTime
from tests.support.kube_apiserver import KubeApiServer, start_kube_apiserver

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
    for version, kind, path in (
        ("v1", "Service", f"/api/v1/namespaces/{namespace}/services"),
        ("v1", "Pod", f"/api/v1/namespaces/{namespace}/pods"),
        (
            "discovery.k8s.io/v1",
            "EndpointSlice",
            f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
        ),
    ):
        items = server.items(path)
        server.delete_all(
            [{"apiVersion": version, "kind": kind, "metadata": i["metadata"]} for i in items]
        )


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
