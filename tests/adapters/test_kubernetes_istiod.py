"""The Kubernetes adapter serves what istiod serves, through the API-server emulator:
endpoint conditions, headless and ExternalName Services, port protocols, pod labels
(watched, re-emitted on change, optional when forbidden)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from registryd.adapter import Problems, Upsert
from registryd.adapters.kubernetes import adapter as adapter_module
from registryd.model import AUTO, Health, Location, Resolution
from tests.adapters.test_kubernetes_adapter import (
    HOST,
    INFORMERS,
    Feed,
    eps,
    host,
    make,
    start,
    svc,
    until_watching,
)
from tests.support.emulators.kubernetes import KubeEmulator


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator() as emulator:
        yield emulator


def pod(name: str, namespace: str = "shop", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running", "podIP": "10.1.0.1"},
    }


def headless(name: str) -> dict[str, Any]:
    obj = svc(name, ip="None")
    obj["spec"]["clusterIPs"] = ["None"]
    return obj


def external(name: str, target: str) -> dict[str, Any]:
    obj = svc(name)
    obj["spec"] = {
        "type": "ExternalName",
        "externalName": target,
        "ports": [{"name": "tcp-pg", "port": 5432, "protocol": "TCP"}],
    }
    return obj


def labels_of(update: Upsert) -> dict[str, dict[str, str]]:
    return {e.address: dict(e.labels) for e in update.endpoints}


async def test_istiod_mapping_of_conditions_headless_external_name_and_protocols(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    web = svc()
    web["spec"]["ports"] = [
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
        {"name": "admin", "port": 9000, "protocol": "TCP"},  # no protocol in the name
        {"name": "stats", "port": 8125, "protocol": "UDP"},
    ]
    kube.apply(web)
    ready = eps("web", "shop", "10.1.0.1", name="web-a")
    stopping = eps("web", "shop", "10.1.0.2", name="web-b", ready=False, terminating=True)
    broken = eps("web", "shop", "10.1.0.3", name="web-c", ready=False)
    for piece in (ready, stopping, broken):
        kube.apply(piece)
    kube.apply(headless("db"))
    kube.apply(eps("db", "shop", "10.2.0.1", "10.2.0.2", name="db-a"))
    kube.apply(external("legacy", "Legacy.Example.COM"))
    feed = start(feeds, make(kube, tmp_path))
    replace, _ = await feed.synced()

    services = {s.hostname: s for s in replace.services}
    assert {p.number: p.protocol for p in services[HOST].ports} == {
        80: "HTTP",
        9000: AUTO,
        8125: "UDP",
    }
    health = {e.address: e.health for e in replace.endpoints if e.hostname == HOST}
    assert health == {"10.1.0.1": Health.HEALTHY, "10.1.0.3": Health.UNHEALTHY}  # no .2

    db = services[host("db")]
    assert (db.resolution, db.addresses) == (Resolution.NONE, ())
    assert sorted(e.address for e in replace.endpoints if e.hostname == db.hostname) == [
        "10.2.0.1",
        "10.2.0.2",
    ]

    legacy = services[host("legacy")]
    assert legacy.resolution is Resolution.ALIAS
    assert legacy.alias_for == "legacy.example.com"
    assert legacy.location is Location.MESH_EXTERNAL
    assert [p.number for p in legacy.ports] == [5432]
    assert [e for e in replace.endpoints if e.hostname == legacy.hostname] == []

    kube.apply(eps("web", "shop", "10.1.0.2", name="web-b"))  # ready again
    update = (await feed.until({HOST: 3}))[HOST]
    assert isinstance(update, Upsert)


async def test_eds_for_headless_setting_load_balances_headless_services(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    kube.apply(headless("db"))
    kube.apply(eps("db", "shop", "10.2.0.1", name="db-a"))
    feed = start(feeds, make(kube, tmp_path, eds_for_headless=True))
    replace, _ = await feed.synced()
    (db,) = replace.services
    assert db.resolution is Resolution.STATIC
    assert [e.address for e in replace.endpoints] == ["10.2.0.1"]


async def test_pod_labels_reach_endpoints_and_a_label_change_re_emits_only_its_service(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    kube.apply(svc())
    kube.apply(svc("api", ip="10.96.0.11"))
    kube.apply(eps("web", "shop", "10.1.0.1", name="web-a", pods=("web-1",)))
    kube.apply(eps("api", "shop", "10.1.0.9", name="api-a", pods=("api-1",)))
    kube.apply(pod("web-1", app="web", version="v1"))
    kube.apply(pod("api-1", app="api"))
    feed = start(feeds, make(kube, tmp_path))
    replace, _ = await feed.synced()
    labels = {e.address: dict(e.labels) for e in replace.endpoints}
    assert labels["10.1.0.1"]["version"] == "v1"
    assert labels["10.1.0.9"]["app"] == "api"
    assert labels["10.1.0.1"]["topology.istio.io/cluster"] == "east"

    kube.apply(pod("web-1", app="web", version="v2"))
    while True:  # an Upsert of api would come first (increments are sorted by hostname)
        update = await feed.next()
        if isinstance(update, Problems):
            continue
        assert isinstance(update, Upsert) and update.service.hostname == HOST, update
        break
    assert labels_of(update)["10.1.0.1"]["version"] == "v2"

    kube.apply(pod("web-2", app="web", version="v2"))  # then backs a new endpoint
    kube.apply(eps("web", "shop", "10.1.0.1", "10.1.0.2", name="web-a", pods=("web-1", "web-2")))
    # Pods and EndpointSlices are separate watches: the slice may come first (the new
    # endpoint then has topology labels only) and the pod's labels follow it
    while True:
        update = await feed.next()
        if isinstance(update, Upsert) and update.service.hostname == HOST:
            new = labels_of(update).get("10.1.0.2")
            if new is not None and new.get("version") == "v2":
                break


async def test_pods_of_the_listed_namespaces_only(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed]
) -> None:
    kube.apply(svc())
    kube.apply(eps("web", "shop", "10.1.0.1", pods=("web-1",)))
    kube.apply(pod("web-1", app="web"))
    kube.apply(pod("other-1", "other", app="other"))
    feed = start(feeds, make(kube, tmp_path, namespaces=["shop"]))
    replace, _ = await feed.synced()
    assert replace.endpoints[0].labels["app"] == "web"
    pod_paths = {r.path for r in kube.requests if r.path.endswith("/pods")}
    assert pod_paths == {"/api/v1/namespaces/shop/pods"}
    await until_watching(kube, INFORMERS)


async def test_forbidden_pods_sync_without_pod_labels_until_allowed(
    kube: KubeEmulator, tmp_path: Path, feeds: list[Feed], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adapter_module, "FORBIDDEN_RETRY", 0.5)
    kube.apply(svc())
    kube.apply(eps("web", "shop", "10.1.0.1", pods=("web-1",)))
    kube.apply(pod("web-1", app="web"))
    kube.forbidden.add("pods")  # a ClusterRole without pods
    feed = start(feeds, make(kube, tmp_path))
    replace, problems = await feed.synced()
    (endpoint,) = replace.endpoints
    assert "app" not in endpoint.labels
    assert list(problems.errors) == ["Pod"]
    message = problems.errors["Pod"]
    assert "HTTP 403" in message and "pods is forbidden" in message
    assert "need 'list' and 'watch' on pods" in message
    assert "Pods are listed again every" in message

    kube.forbidden.clear()  # the permission is granted: picked up without a restart
    upsert = await feed.expect(Upsert)
    assert upsert.endpoints[0].labels["app"] == "web"
    assert (await feed.expect(Problems)).errors == {}
