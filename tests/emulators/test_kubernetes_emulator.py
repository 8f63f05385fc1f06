"""The Kubernetes API emulator against the real ``kubernetes_asyncio`` client (and plain
aiohttp where the client hides the wire): lists and resourceVersions, watches from an RV,
from ``0``/empty, bookmarks, 410 Expired, ``timeoutSeconds``, dropped streams, selectors,
bearer tokens, failures, stop/start on the same port, the kubeconfig and the CLI.

What ``kubernetes_asyncio.watch.Watch`` (36.x) makes of the server's behaviour, pinned here:

* 410: the ``ERROR`` event raises ``ApiException(status=410, reason="Expired: too old
  resource version: N (M)")``.  With ``timeout_seconds`` at once; without it (watch
  forever) after one silent retry from the same RV (two requests).
* a stream the server ends cleanly: with ``timeout_seconds`` the iteration stops
  (``StopAsyncIteration``); without it the client re-watches from the last RV it saw
  (bookmarks included), transparently.
* a stream cut mid-way (:meth:`KubeEmulator.drop_watches`, :meth:`KubeEmulator.stop`):
  ``aiohttp.ClientPayloadError`` escapes the iteration, no retry.
* bookmarks: yielded as events (``type == "BOOKMARK"``, ``object`` is the raw dict, not a
  model) and they move ``Watch.resource_version``.
* any HTTP error on a watch request (401, 429, 500...) raises ``ApiException`` with the
  Status' code, read from the body (the client does not look at the HTTP status there).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client, config, watch

from registryd.adapter import AdapterContext, Replace
from registryd.adapters.kubernetes import KubernetesAdapter
from tests.support.emulators.kubernetes import KubeEmulator

TIMEOUT = 5.0  # every wait in this module is bounded by this
ROOT = Path(__file__).resolve().parents[2]


def service(name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]},
    }


def endpoint_slice(name: str, service_name: str, address: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
    }


def pod(name: str, node: str, phase: str = "Running") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": phase, "podIP": "10.1.0.1"},
    }


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


async def make_client(kube: KubeEmulator, path: Path) -> client.ApiClient:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(kube.kubeconfig(path)), client_configuration=configuration
    )
    return client.ApiClient(configuration)


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(bookmark_interval=0.2) as emulator:
        yield emulator


@pytest.fixture
async def api(kube: KubeEmulator, tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    async with await make_client(kube, tmp_path / "kubeconfig") as api_client:
        yield api_client


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        yield session


async def events(
    func: Callable[..., Any], count: int, *, watcher: watch.Watch | None = None, **kwargs: Any
) -> list[dict[str, Any]]:
    """The first ``count`` events of a kubernetes_asyncio watch on ``func``."""
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT), watcher or watch.Watch() as w:
        async for event in w.stream(func, **kwargs):
            found.append(event)
            if len(found) == count:
                break
    return found


async def raw_watch(
    http: aiohttp.ClientSession, kube: KubeEmulator, path: str, **params: str
) -> tuple[aiohttp.ClientResponse, list[dict[str, Any]]]:
    """A watch over plain HTTP read to its end (the server must end it)."""
    async with http.get(f"{kube.url}{path}", params={"watch": "true", **params}) as response:
        body = await response.read()
    return response, [json.loads(line) for line in body.decode().splitlines()]


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)


def rv_of(event: dict[str, Any]) -> int:
    return int(event["raw_object"]["metadata"]["resourceVersion"])


def body_of(error: client.ApiException) -> dict[str, Any]:
    assert error.body is not None
    body: dict[str, Any] = json.loads(error.body)
    return body


# -- lists, gets, discovery ------------------------------------------------------------


async def test_list_carries_resource_versions(
    kube: KubeEmulator, api: client.ApiClient, http: aiohttp.ClientSession
) -> None:
    v1 = client.CoreV1Api(api)
    a = kube.apply(service("a", app="web"))
    kube.apply(service("b", "other"))
    listed = await v1.list_service_for_all_namespaces()
    assert listed.kind == "ServiceList"
    assert listed.metadata.resource_version == str(kube.resource_version)
    assert [(s.metadata.namespace, s.metadata.name) for s in listed.items] == [
        ("default", "a"),
        ("other", "b"),
    ]
    first = listed.items[0].metadata
    assert first.resource_version == a["metadata"]["resourceVersion"]
    assert first.uid == a["metadata"]["uid"] and first.creation_timestamp is not None
    assert [s.metadata.name for s in (await v1.list_namespaced_service("other")).items] == ["b"]

    # an identical replace is a no-op; a change keeps uid and creationTimestamp
    before = kube.resource_version
    assert kube.apply(service("a", app="web")) == a and kube.resource_version == before
    changed = kube.apply(service("a", app="shop"))
    assert int(changed["metadata"]["resourceVersion"]) == before + 1
    assert changed["metadata"]["uid"] == a["metadata"]["uid"]
    got = await v1.read_namespaced_service("a", "default")
    assert got.kind == "Service" and got.metadata.labels == {"app": "shop"}
    with pytest.raises(client.ApiException) as missing:
        await v1.read_namespaced_service("nope", "default")
    assert missing.value.status == 404

    # on the wire, as the apiserver: list items without kind/apiVersion, a GET with them
    async with http.get(f"{kube.url}/api/v1/services") as response:
        body = await response.json()
    assert set(body) == {"kind", "apiVersion", "metadata", "items"}
    assert "kind" not in body["items"][0] and "apiVersion" not in body["items"][0]
    async with http.get(f"{kube.url}/api/v1/namespaces/default/services/nope") as response:
        assert response.status == 404
        assert await response.json() == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": 'services "nope" not found',
            "reason": "NotFound",
            "details": {"name": "nope", "kind": "services"},
            "code": 404,
        }
    async with http.post(f"{kube.url}/api/v1/namespaces/default/services", json={}) as response:
        assert response.status == 405


async def test_lists_page_from_one_snapshot(kube: KubeEmulator, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    for name in "abcde":
        kube.apply(service(name))
    first = await v1.list_service_for_all_namespaces(limit=2)
    assert [s.metadata.name for s in first.items] == ["a", "b"]
    assert first.metadata.remaining_item_count == 3 and first.metadata._continue
    kube.apply(service("f"))  # later pages still come from the first page's snapshot
    rest = await v1.list_service_for_all_namespaces(limit=10, _continue=first.metadata._continue)
    assert [s.metadata.name for s in rest.items] == ["c", "d", "e"]
    assert rest.metadata.resource_version == first.metadata.resource_version
    assert not rest.metadata._continue
    again = await v1.list_service_for_all_namespaces(limit=2)
    kube.compact()
    with pytest.raises(client.ApiException) as expired:
        await v1.list_service_for_all_namespaces(limit=2, _continue=again.metadata._continue)
    assert expired.value.status == 410


async def test_list_pages_as_the_real_apiserver(
    kube: KubeEmulator, http: aiohttp.ClientSession
) -> None:
    """What kube-apiserver 1.37 answers about pages (seen on one): a continue token it did
    not make is a 400 BadRequest (not 410); one whose snapshot is compacted away is 410
    Expired, saying so at length; a resourceVersion beside a continue token is a 400;
    ``remainingItemCount`` is left out of a list filtered by a selector (it cannot be
    counted); ``resourceVersion=0`` is served whole from the watch cache, ``limit`` or
    not; a ``limit`` that is not a number is a 400, a ``resourceVersion`` that is not one
    a 400 for a list and a 500 (without a reason) for a watch."""
    for name in "abcde":
        kube.apply(service(name, app="web"))
    url = f"{kube.url}/api/v1/services"

    async def get(**params: str) -> tuple[int, dict[str, Any]]:
        async with http.get(url, params=params) as response:
            return response.status, await response.json()

    status, body = await get(limit="2", labelSelector="app=web")
    assert status == 200 and body["metadata"]["continue"], body
    assert "remainingItemCount" not in body["metadata"]
    status, body = await get(limit="2", fieldSelector="metadata.name!=z")
    assert status == 200 and "remainingItemCount" not in body["metadata"]
    status, body = await get(limit="2")
    assert body["metadata"]["remainingItemCount"] == 3
    token = body["metadata"]["continue"]

    status, body = await get(resourceVersion="abc")
    invalid = 'resourceVersion: Invalid value: "abc": strconv.ParseUint: parsing "abc": invalid'
    assert (status, body["reason"]) == (400, "BadRequest")
    assert body["message"] == f"invalid resource version: {invalid} syntax"
    status, body = await get(watch="true", resourceVersion="abc")
    assert (status, body["code"], body["message"]) == (500, 500, f"{invalid} syntax")
    assert "reason" not in body  # as the real server's: an error it did not convert

    status, body = await get(limit="two")
    assert (status, body["reason"]) == (400, "BadRequest")
    assert body["message"] == 'strconv.ParseInt: parsing "two": invalid syntax'

    status, body = await get(limit="2", resourceVersion="0")
    assert status == 200 and len(body["items"]) == 5 and "continue" not in body["metadata"]

    status, body = await get(limit="2", **{"continue": "bm90LWEtdG9rZW4"})
    assert (status, body["reason"], body["code"]) == (400, "BadRequest", 400)
    assert body["message"].startswith("invalid continue token: "), body

    status, body = await get(limit="2", resourceVersion="1", **{"continue": token})
    assert (status, body["reason"]) == (400, "BadRequest")
    assert body["message"] == "specifying resource version is not allowed when using continue"

    kube.compact()
    status, body = await get(limit="2", **{"continue": token})
    assert (status, body["reason"], body["code"]) == (410, "Expired", 410)
    assert body["message"].startswith(
        "The provided continue parameter is too old to display a consistent list result."
    )


def test_endpoint_slices_are_validated_as_by_the_real_apiserver() -> None:
    """kube-apiserver 1.37 refuses (422) an EndpointSlice without an address type or with
    an address that is not one of its type, is loopback, unspecified or link-local; the
    emulator's apply() raises ValueError with the same words, and takes loopback
    addresses only when made with ``loopback_endpoints`` (for tests that route to local
    servers)."""
    kube = KubeEmulator()

    def refused(change: Callable[[dict[str, Any]], object]) -> str:
        obj = endpoint_slice("web-abc", "web", "10.1.0.1")
        change(obj)
        with pytest.raises(ValueError) as error:
            kube.apply(obj)
        return str(error.value)

    prefix = 'EndpointSlice.discovery.k8s.io "web-abc" is invalid: '
    assert refused(lambda o: o.pop("addressType")) == prefix + "addressType: Required value"
    assert refused(lambda o: o.update(endpoints=[{"addresses": ["127.0.0.11"]}])) == (
        prefix + 'endpoints[0].addresses[0]: Invalid value: "127.0.0.11": may not be in the '
        "loopback range (127.0.0.0/8, ::1/128)"
    )
    assert refused(lambda o: o.update(endpoints=[{"addresses": ["300.1.1.1"]}])) == (
        prefix + 'endpoints[0].addresses[0]: Invalid value: "300.1.1.1": must be a valid IP '
        "address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
    )
    assert refused(lambda o: o.update(endpoints=[{"addresses": ["2001:db8::1"]}])) == (
        prefix + 'endpoints[0].addresses: Invalid value: "2001:db8::1": must be an IPv4 address'
    )
    assert "may not be in the link-local range" in refused(
        lambda o: o.update(endpoints=[{"addresses": ["169.254.0.1"]}])
    )
    assert "must contain at least 1 address" in refused(
        lambda o: o.update(endpoints=[{"addresses": []}])
    )
    assert kube.get("discovery.k8s.io/v1", "EndpointSlice", "shop", "web-abc") is None

    fqdn = endpoint_slice("web-fqdn", "web", "web.example.com") | {"addressType": "FQDN"}
    assert kube.apply(fqdn)["addressType"] == "FQDN"
    local = KubeEmulator(loopback_endpoints=True)
    assert local.apply(endpoint_slice("web-abc", "web", "127.0.0.11"))["endpoints"]


async def test_every_kind_is_served(kube: KubeEmulator, api: client.ApiClient) -> None:
    v1, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    kube.apply(node("n1"))
    kube.apply(pod("p1", "n1"))
    kube.apply(endpoint_slice("web-1", "web", "10.1.0.1"))
    assert [n.metadata.name for n in (await v1.list_namespace()).items] == ["shop"]
    assert (await v1.read_namespace("shop")).metadata.name == "shop"
    assert [n.metadata.name for n in (await v1.list_node()).items] == ["n1"]
    assert (await v1.read_node("n1")).metadata.namespace is None
    assert [p.spec.node_name for p in (await v1.list_pod_for_all_namespaces()).items] == ["n1"]
    assert (await v1.read_namespaced_pod("p1", "shop")).status.phase == "Running"
    assert len((await v1.list_namespaced_pod("default")).items) == 0
    slices = await discovery.list_endpoint_slice_for_all_namespaces()
    assert slices.kind == "EndpointSliceList" and slices.api_version == "discovery.k8s.io/v1"
    assert slices.items[0].endpoints[0].addresses == ["10.1.0.1"]
    assert len((await discovery.list_namespaced_endpoint_slice("shop")).items) == 1
    read = await discovery.read_namespaced_endpoint_slice("web-1", "shop")
    assert read.address_type == "IPv4"
    with pytest.raises(client.ApiException) as missing:
        await discovery.read_namespaced_endpoint_slice("nope", "shop")
    assert body_of(missing.value)["details"]["group"] == "discovery.k8s.io"
    with pytest.raises(ValueError):
        kube.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}})
    with pytest.raises(KeyError):
        kube.delete("v1", "Node", None, "nope")


async def test_discovery_endpoints(api: client.ApiClient) -> None:
    assert (await client.VersionApi(api).get_code()).major == "1"
    assert (await client.CoreApi(api).get_api_versions()).versions == ["v1"]
    groups = (await client.ApisApi(api).get_api_versions()).groups
    assert [g.name for g in groups] == ["discovery.k8s.io"]
    core = await client.CoreV1Api(api).get_api_resources()
    assert {"services", "pods", "nodes", "namespaces"} <= {r.name for r in core.resources}
    group = await client.DiscoveryV1Api(api).get_api_resources()
    assert [r.kind for r in group.resources] == ["EndpointSlice"]


# -- watches ----------------------------------------------------------------------------


async def test_watch_from_a_resource_version_gets_only_later_events(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    v1 = client.CoreV1Api(api)
    kube.apply(service("a"))
    listed = (await v1.list_namespaced_service("default")).metadata.resource_version
    kube.apply(service("b"))
    kube.apply(service("a", app="web"))
    kube.delete("v1", "Service", "default", "b")
    kube.apply(service("elsewhere", "other"))  # another namespace: not on this watch
    asyncio.get_running_loop().call_later(0.1, kube.apply, service("c"))  # live
    w = watch.Watch()
    seen = await events(
        v1.list_namespaced_service,
        4,
        watcher=w,
        namespace="default",
        resource_version=listed,
        timeout_seconds=5,
    )
    assert [(e["type"], e["object"].metadata.name) for e in seen] == [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
        ("ADDED", "c"),
    ]
    assert seen[1]["object"].metadata.labels == {"app": "web"}
    # DELETED carries the last state with the deletion's resourceVersion
    assert rv_of(seen[2]) == rv_of(seen[1]) + 1
    assert seen[2]["raw_object"]["kind"] == "Service"  # watch objects have kind/apiVersion
    assert [rv_of(e) for e in seen] == sorted(rv_of(e) for e in seen)
    assert w.resource_version == str(kube.resource_version)


@pytest.mark.parametrize("resource_version", ["0", ""])
async def test_watch_from_zero_or_nothing_replays_the_current_state(
    kube: KubeEmulator, api: client.ApiClient, resource_version: str
) -> None:
    a = kube.apply(service("a"))
    kube.apply(service("gone"))
    kube.delete("v1", "Service", "default", "gone")
    b = kube.apply(service("b", "other"))

    async def then_c() -> None:  # once the watch is open, so "c" is a live event
        await until(lambda: kube.open_watches == 1)
        kube.apply(service("c"))

    later = asyncio.create_task(then_c())
    kwargs: dict[str, Any] = {"resource_version": resource_version} if resource_version else {}
    seen = await events(
        client.CoreV1Api(api).list_service_for_all_namespaces, 3, timeout_seconds=5, **kwargs
    )
    await later
    assert [(e["type"], e["object"].metadata.name) for e in seen] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("ADDED", "c"),
    ]
    # synthetic ADDED events carry each object's own resourceVersion
    assert [rv_of(e) for e in seen[:2]] == [
        int(a["metadata"]["resourceVersion"]),
        int(b["metadata"]["resourceVersion"]),
    ]


async def test_bookmarks_carry_the_current_resource_version(
    kube: KubeEmulator, api: client.ApiClient, http: aiohttp.ClientSession
) -> None:
    v1 = client.CoreV1Api(api)
    start = str(kube.resource_version)
    kube.apply(node("n1"))  # another kind moves the global RV too
    w = watch.Watch()
    seen = await events(
        v1.list_service_for_all_namespaces,
        2,
        watcher=w,
        resource_version=start,
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    )
    bookmark = {"kind": "Service", "apiVersion": "v1", "metadata": {"resourceVersion": "2"}}
    assert [e["type"] for e in seen] == ["BOOKMARK", "BOOKMARK"]
    assert seen[0]["object"] == seen[0]["raw_object"] == bookmark  # a dict, not a model
    assert w.resource_version == "2"  # the client resumes from bookmarks

    # without allowWatchBookmarks: none
    _, plain = await raw_watch(
        http, kube, "/api/v1/services", resourceVersion=start, timeoutSeconds="0.3"
    )
    assert plain == []


async def test_no_bookmark_until_the_resource_version_moves_past_the_watch_start(
    kube: KubeEmulator, http: aiohttp.ClientSession
) -> None:
    """As kube-apiserver 1.37 (seen on one: a quiet watch with bookmarks got none in 80 s):
    a bookmark whose resourceVersion is not past the one the watch started from is not
    sent."""
    kube.bookmark_interval = 0.02
    start = str(kube.resource_version)
    _, quiet = await raw_watch(
        http,
        kube,
        "/api/v1/services",
        resourceVersion=start,
        allowWatchBookmarks="true",
        timeoutSeconds="0.3",
    )
    assert quiet == [] and kube.bookmarks == []
    kube.apply(node("n1"))  # another kind moves the resourceVersion past the start
    _, moved = await raw_watch(
        http,
        kube,
        "/api/v1/services",
        resourceVersion=start,
        allowWatchBookmarks="true",
        timeoutSeconds="1",
    )
    assert moved and {e["type"] for e in moved} == {"BOOKMARK"}
    assert {e["object"]["metadata"]["resourceVersion"] for e in moved} == {str(int(start) + 1)}


async def test_a_bookmark_never_skips_a_queued_event(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    kube.bookmark_interval = 0.05
    start = str(kube.resource_version)

    async def churn() -> None:
        for i in range(40):
            kube.apply(service(f"s{i}"))
            await asyncio.sleep(0.005)

    task = asyncio.create_task(churn())
    seen = await events(
        client.CoreV1Api(api).list_service_for_all_namespaces,
        1000,
        resource_version=start,
        allow_watch_bookmarks=True,
        timeout_seconds=1,
    )
    await task
    added = [e["object"].metadata.name for e in seen if e["type"] == "ADDED"]
    assert added == [f"s{i}" for i in range(40)]
    high = 0
    for event in seen:
        if event["type"] == "BOOKMARK":
            high = max(high, rv_of(event))
        else:
            assert rv_of(event) > high  # nothing arrives after a bookmark that covers it
    assert any(e["type"] == "BOOKMARK" for e in seen)


async def test_too_old_resource_version_after_compact_is_an_error_event(
    kube: KubeEmulator, http: aiohttp.ClientSession
) -> None:
    kube.apply(service("a"))
    kube.apply(service("b"))
    kube.compact()
    current = kube.resource_version
    response, seen = await raw_watch(http, kube, "/api/v1/services", resourceVersion="2")
    assert response.status == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert seen == [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: 2 ({current})",
                "reason": "Expired",
                "code": 410,
            },
        }
    ]
    # the current RV is still fine after compact()
    kube.apply(service("c"))
    response, seen = await raw_watch(
        http, kube, "/api/v1/services", resourceVersion=str(current), timeoutSeconds="0.3"
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in seen] == [("ADDED", "c")]


async def test_kubernetes_asyncio_raises_410(kube: KubeEmulator, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    kube.apply(service("a"))
    kube.compact()
    reason = f"Expired: too old resource version: 1 ({kube.resource_version})"
    cases: list[tuple[dict[str, Any], int]] = [({"timeout_seconds": 5}, 1), ({}, 2)]
    for kwargs, requests in cases:
        before = len(kube.requests)
        with pytest.raises(client.ApiException) as expired:
            await events(v1.list_service_for_all_namespaces, 1, resource_version="1", **kwargs)
        assert (expired.value.status, expired.value.reason) == (410, reason)
        assert len(kube.requests) - before == requests  # watching forever: one retry


async def test_history_is_trimmed(kube: KubeEmulator, http: aiohttp.ClientSession) -> None:
    kube.history = 3
    for i in range(5):
        kube.apply(service(f"s{i}"))  # RVs 2..6; 4, 5, 6 kept
    _, seen = await raw_watch(http, kube, "/api/v1/services", resourceVersion="2")
    assert seen[0]["object"]["message"] == "too old resource version: 2 (3)"
    _, seen = await raw_watch(
        http, kube, "/api/v1/services", resourceVersion="3", timeoutSeconds="0.3"
    )
    assert [e["object"]["metadata"]["name"] for e in seen] == ["s2", "s3", "s4"]


async def test_watch_from_a_future_resource_version(
    kube: KubeEmulator, http: aiohttp.ClientSession
) -> None:
    future = kube.resource_version + 2

    def churn() -> None:
        for name in ("a", "b", "c"):
            kube.apply(service(name))

    asyncio.get_running_loop().call_later(0.05, churn)
    _, seen = await raw_watch(
        http, kube, "/api/v1/services", resourceVersion=str(future), timeoutSeconds="0.3"
    )
    assert [e["object"]["metadata"]["name"] for e in seen] == ["c"]  # RV future + 1


async def test_timeout_seconds_ends_the_stream(kube: KubeEmulator, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    seen = await events(
        v1.list_service_for_all_namespaces,
        10,
        resource_version="1",
        allow_watch_bookmarks=True,
        timeout_seconds=1,
    )
    assert len(seen) < 10  # the stream ended before the client stopped reading...
    assert kube.watch_ends == ["timeout"]  # ...because its timeoutSeconds were up
    assert {e["type"] for e in seen} <= {"BOOKMARK"}  # nothing happened but bookmarks
    await until(lambda: kube.open_watches == 0)


async def test_drop_watches_cuts_streams(kube: KubeEmulator, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    kube.apply(service("a"))
    task = asyncio.create_task(events(v1.list_service_for_all_namespaces, 10))
    await until(lambda: kube.open_watches == 1)
    await kube.drop_watches()
    with pytest.raises(aiohttp.ClientPayloadError):
        await task  # kubernetes_asyncio does not retry a cut stream
    assert kube.open_watches == 0
    assert len((await v1.list_service_for_all_namespaces()).items) == 1  # still up


async def test_graceful_drop_resumes_from_the_last_resource_version(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    v1 = client.CoreV1Api(api)
    kube.apply(service("a"))
    task = asyncio.create_task(events(v1.list_service_for_all_namespaces, 2))
    await until(lambda: kube.open_watches == 1)
    rv_a = str(kube.resource_version)
    watches = len(kube.requests)
    await kube.drop_watches(graceful=True)
    await until(lambda: len(kube.requests) > watches and kube.open_watches == 1)
    kube.apply(service("b"))
    seen = await task
    assert [(e["type"], e["object"].metadata.name) for e in seen] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
    ]
    resumed = kube.requests[-1]
    assert resumed.query["resourceVersion"] == rv_a and resumed.path == "/api/v1/services"


async def test_selectors_filter_lists(kube: KubeEmulator, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    kube.apply(service("a", app="web", tier="front"))
    kube.apply(service("b", app="db"))
    kube.apply(service("c", "other"))
    cases = {
        "app=web": ["a"],
        "app==web,tier": ["a"],
        "app!=web": ["b", "c"],
        "!app": ["c"],
        "app": ["a", "b"],
        "app in (web, db)": ["a", "b"],
        "app notin (web),tier!=x": ["b", "c"],
    }
    for selector, names in cases.items():
        listed = await v1.list_service_for_all_namespaces(label_selector=selector)
        assert [s.metadata.name for s in listed.items] == names, selector
    for selector, names in {
        "metadata.name=a": ["a"],
        "metadata.namespace!=default": ["c"],
        "metadata.namespace==default,metadata.name!=a": ["b"],
        "spec.type=": ["a", "b", "c"],
    }.items():
        listed = await v1.list_service_for_all_namespaces(field_selector=selector)
        assert [s.metadata.name for s in listed.items] == names, selector
    kube.apply(pod("p1", "n1"))
    kube.apply(pod("p2", "n2", phase="Pending"))
    pods = await v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=n2")
    assert [p.metadata.name for p in pods.items] == ["p2"]
    bad_selectors: list[dict[str, Any]] = [{"field_selector": "x=y"}, {"label_selector": "!a=b"}]
    for bad in bad_selectors:
        with pytest.raises(client.ApiException) as invalid:
            await v1.list_service_for_all_namespaces(**bad)
        assert invalid.value.status == 400


async def test_selectors_filter_watches(kube: KubeEmulator, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    start = str(kube.resource_version)
    kube.apply(service("a", app="web"))
    kube.apply(service("b", app="db"))  # never matches: never seen
    kube.apply(service("a", app="web", v="2"))
    kube.apply(service("a", app="db"))  # stops matching: DELETED
    kube.apply(service("b", app="web"))  # starts matching: ADDED
    kube.delete("v1", "Service", "default", "b")
    seen = await events(
        v1.list_service_for_all_namespaces,
        5,
        label_selector="app=web",
        resource_version=start,
        timeout_seconds=5,
    )
    assert [(e["type"], e["object"].metadata.name) for e in seen] == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
        ("ADDED", "b"),
        ("DELETED", "b"),
    ]
    # the DELETED of an object that stopped matching: its previous state, the new RV
    assert seen[2]["object"].metadata.labels == {"app": "web", "v": "2"}
    assert rv_of(seen[2]) == rv_of(seen[1]) + 1
    by_name = await events(
        v1.list_service_for_all_namespaces, 1, field_selector="metadata.name=a", timeout_seconds=5
    )
    assert by_name[0]["object"].metadata.labels == {"app": "db"}


async def test_pods_are_watched_per_namespace_with_label_changes_as_events(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    v1 = client.CoreV1Api(api)
    labelled = pod("p1", "n1")
    labelled["metadata"]["labels"] = {"app": "web"}
    kube.apply(labelled)
    listed = await v1.list_namespaced_pod("shop", label_selector="app=web")
    start = listed.metadata.resource_version
    relabelled = pod("p1", "n1")
    relabelled["metadata"]["labels"] = {"app": "web", "version": "v2"}
    kube.apply(relabelled)  # a label change: MODIFIED
    elsewhere = pod("p9", "n1")
    elsewhere["metadata"] |= {"namespace": "other", "labels": {"app": "web"}}
    kube.apply(elsewhere)  # another namespace: not seen
    kube.delete("v1", "Pod", "shop", "p1")
    seen = await events(
        v1.list_namespaced_pod,
        2,
        namespace="shop",
        label_selector="app=web",
        resource_version=start,
        timeout_seconds=5,
    )
    assert [(e["type"], e["object"].metadata.name) for e in seen] == [
        ("MODIFIED", "p1"),
        ("DELETED", "p1"),
    ]
    assert seen[0]["object"].metadata.labels == {"app": "web", "version": "v2"}


# -- failures, auth, life cycle ---------------------------------------------------------


async def test_bearer_token_is_required(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with KubeEmulator(token="s3cret") as kube:
        kube.apply(service("a"))
        async with await make_client(kube, tmp_path / "good") as api:
            v1 = client.CoreV1Api(api)
            assert len((await v1.list_service_for_all_namespaces()).items) == 1
            seen = await events(v1.list_service_for_all_namespaces, 1, timeout_seconds=5)
            assert seen[0]["type"] == "ADDED"
        async with http.get(f"{kube.url}/api/v1/services") as response:
            assert response.status == 401
            body = await response.json()
        assert (body["kind"], body["reason"], body["code"]) == ("Status", "Unauthorized", 401)
        async with http.get(f"{kube.url}/version") as response:
            assert response.status == 401
        kube.token = "rotated"
        async with await make_client(kube, tmp_path / "stale") as api:
            kube.token = "s3cret"
            v1 = client.CoreV1Api(api)
            with pytest.raises(client.ApiException) as denied:
                await v1.list_service_for_all_namespaces()
            assert denied.value.status == 401
            with pytest.raises(client.ApiException) as denied:
                await events(v1.list_service_for_all_namespaces, 1)
            assert denied.value.status == 401


async def test_fail_next(kube: KubeEmulator, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    kube.fail_next(500)
    with pytest.raises(client.ApiException) as failed:
        await v1.list_node()
    assert failed.value.status == 500
    assert len((await v1.list_node()).items) == 0
    kube.fail_next(429, 2)
    for _ in range(2):
        with pytest.raises(client.ApiException) as limited:
            await v1.list_node()
        assert limited.value.status == 429 and limited.value.headers is not None
        assert limited.value.headers["Retry-After"] == "1"
        assert body_of(limited.value)["details"] == {"retryAfterSeconds": 1}
    await v1.list_node()
    kube.fail_next(503, retry_after=7)
    with pytest.raises(client.ApiException) as unavailable:
        await events(v1.list_node, 1)  # a watch sees the Status' code
    assert unavailable.value.status == 503
    times = [r.at for r in kube.requests]
    assert times == sorted(times) and len(times) == 6
    assert [(r.method, r.path) for r in kube.requests[-1:]] == [("GET", "/api/v1/nodes")]
    assert kube.requests[-1].query["watch"] == "True"


async def test_stop_cuts_connections_and_start_reuses_the_port(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    v1 = client.CoreV1Api(api)
    kube.apply(service("a"))
    address = kube.address
    task = asyncio.create_task(events(v1.list_service_for_all_namespaces, 10))
    await until(lambda: kube.open_watches == 1)
    await kube.stop()
    with pytest.raises(aiohttp.ClientPayloadError):
        await task
    with pytest.raises(aiohttp.ClientConnectionError):
        await v1.list_service_for_all_namespaces(_request_timeout=TIMEOUT)
    await kube.start()
    assert kube.address == address
    listed = await v1.list_service_for_all_namespaces(_request_timeout=TIMEOUT)
    assert [s.metadata.name for s in listed.items] == ["a"]  # state survives a restart


async def test_kubeconfig(kube: KubeEmulator, tmp_path: Path) -> None:
    path = kube.kubeconfig(tmp_path / "kc", context="east", namespace="shop")
    _, current = config.list_kube_config_contexts(config_file=str(path))
    assert current is not None and current["name"] == "east"
    assert current["context"]["namespace"] == "shop"
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == kube.url and not configuration.api_key
    with pytest.raises(RuntimeError):
        KubeEmulator().kubeconfig(tmp_path / "never")


async def test_command_line(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kubeconfig = tmp_path / "kc"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.emulators.kubernetes",
        "--port",
        str(port),
        "--kubeconfig",
        str(kubeconfig),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            line = await process.stdout.readline()
        assert line.decode().strip() == f"kubernetes emulator on http://127.0.0.1:{port}"
        assert kubeconfig.exists()
        async with http.get(f"http://127.0.0.1:{port}/api/v1/namespaces") as response:
            assert (await response.json())["kind"] == "NamespaceList"
    finally:
        process.terminate()
        async with asyncio.timeout(TIMEOUT):
            await process.wait()


STANDALONE_OBJECTS = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.1.0.1]
  conditions: {ready: true}
"""


async def test_standalone_server_serves_the_objects_of_its_files(tmp_path: Path) -> None:
    """``python -m tests.support.emulators.kubernetes FILES``: a server on a free port
    with the objects of the files, and a kubeconfig it names, that the Kubernetes adapter
    reads the loaded Service through; it ends on SIGINT (Ctrl-C) and removes the
    kubeconfig it made."""
    objects = tmp_path / "shop.yaml"
    objects.write_text(STANDALONE_OBJECTS)
    nodes = tmp_path / "nodes.yaml"  # a List, as kubectl get -o yaml writes
    nodes.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [node("n1")]}))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.emulators.kubernetes",
        str(objects),
        str(nodes),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        async with asyncio.timeout(TIMEOUT):
            url = (await process.stdout.readline()).decode().strip()
            said = (await process.stdout.readline()).decode().strip()
            loaded = (await process.stderr.readline()).decode().strip()
        assert re.fullmatch(r"kubernetes emulator on http://127\.0\.0\.1:\d+", url), url
        assert loaded == "4 objects from 2 file(s)"
        assert said.startswith("kubeconfig: "), said
        kubeconfig = Path(said.removeprefix("kubeconfig: "))

        adapter = KubernetesAdapter(
            name="standalone", settings={"kubeconfig": str(kubeconfig)}, context=AdapterContext()
        )
        updates = adapter.watch()
        try:
            async with asyncio.timeout(TIMEOUT):
                replace = await anext(updates)
        finally:
            await updates.aclose()
        assert isinstance(replace, Replace)
        assert [s.hostname for s in replace.services] == ["web.shop.svc.cluster.local"]
        assert [(e.address, e.port) for e in replace.endpoints] == [("10.1.0.1", 8080)]
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(TIMEOUT):
            assert await process.wait() == 0
    assert not await asyncio.to_thread(kubeconfig.exists)


async def test_standalone_server_refuses_what_a_real_one_would(tmp_path: Path) -> None:
    """A file with an object the API server would refuse: the command fails naming the
    file, the document and the reason, before it serves anything."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(STANDALONE_OBJECTS.replace("10.1.0.1", "127.0.0.1") + "---\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.emulators.kubernetes",
        str(bad),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(TIMEOUT):
        out, err = await process.communicate()
    assert process.returncode == 2 and out == b""
    assert f"{bad}, document 3: " in err.decode()
    assert "may not be in the loopback range" in err.decode()
