"""The Kubernetes cluster state (:mod:`registryd.adapters.kubernetes.state`), pure: objects ->
services, problems and increments."""

from __future__ import annotations

from typing import Any

import pytest

from registryd.adapter import Delete, Replace, Upsert
from registryd.adapters.kubernetes.objects import (
    ENDPOINT_SLICE,
    NAMESPACE,
    NODE,
    SERVICE,
)
from registryd.adapters.kubernetes.parse import PARSERS
from registryd.adapters.kubernetes.selector import parse_selector
from registryd.adapters.kubernetes.state import ClusterState
from registryd.model import Locality
from tests.adapters.kube_objects import OPTIONS, endpoint_slice, ep, namespace, node, service


def state(**kwargs: Any) -> ClusterState:
    return ClusterState(OPTIONS, **kwargs)


def hosts(update: Replace) -> list[str]:
    return [s.hostname for s in update.services]


def test_state_replace_then_increments() -> None:
    cluster = state()
    cluster.reset(SERVICE, [service("web"), service("db", cluster_ip="10.96.0.11")])
    cluster.reset(ENDPOINT_SLICE, [endpoint_slice()])
    cluster.reset(NODE, [])
    full = cluster.replace()
    assert hosts(full) == ["db.shop.svc.cluster.local", "web.shop.svc.cluster.local"]
    assert [e.address for e in full.endpoints] == ["10.1.0.1"]
    assert cluster.changes() == []

    # a new endpoint: one Upsert of that hostname with all of its endpoints
    cluster.apply(
        ENDPOINT_SLICE, "MODIFIED", endpoint_slice(endpoints=[ep("10.1.0.1"), ep("10.1.0.2")])
    )
    [upsert] = cluster.changes()
    assert isinstance(upsert, Upsert)
    assert upsert.service.hostname == "web.shop.svc.cluster.local"
    assert [e.address for e in upsert.endpoints] == ["10.1.0.1", "10.1.0.2"]

    # an unchanged object changes nothing
    cluster.apply(SERVICE, "MODIFIED", service("web"))
    assert cluster.changes() == []

    # the slice goes: the service stays, empty
    cluster.apply(ENDPOINT_SLICE, "DELETED", endpoint_slice())
    [upsert] = cluster.changes()
    assert isinstance(upsert, Upsert) and upsert.endpoints == ()

    # the service goes
    cluster.apply(SERVICE, "DELETED", service("db"))
    assert cluster.changes() == [Delete(hostname="db.shop.svc.cluster.local")]


def test_state_slice_moving_to_another_service_updates_both() -> None:
    cluster = state()
    cluster.reset(SERVICE, [service("web"), service("api", cluster_ip="10.96.0.12")])
    cluster.reset(ENDPOINT_SLICE, [endpoint_slice("s1", service_name="web")])
    cluster.replace()
    cluster.apply(ENDPOINT_SLICE, "MODIFIED", endpoint_slice("s1", service_name="api"))
    changes = cluster.changes()
    assert [(u.service.hostname, len(u.endpoints)) for u in changes if isinstance(u, Upsert)] == [
        ("api.shop.svc.cluster.local", 1),
        ("web.shop.svc.cluster.local", 0),
    ]


def test_state_relist_removes_what_is_gone() -> None:
    cluster = state()
    cluster.reset(SERVICE, [service("web"), service("db", cluster_ip="10.96.0.11")])
    cluster.replace()
    cluster.reset(SERVICE, [service("web", labels={"v": "2"}), service("new", cluster_ip=None)])
    changes = cluster.changes()
    assert [type(u).__name__ for u in changes] == ["Upsert", "Upsert", "Delete"]
    assert [u.service.hostname for u in changes if isinstance(u, Upsert)] == [
        "new.shop.svc.cluster.local",
        "web.shop.svc.cluster.local",
    ]
    assert changes[-1] == Delete(hostname="db.shop.svc.cluster.local")


def test_state_relist_of_one_namespace_keeps_the_others() -> None:
    cluster = state()
    cluster.reset(SERVICE, [service("a", "ns1")], "ns1")
    cluster.reset(SERVICE, [service("b", "ns2")], "ns2")
    cluster.replace()
    cluster.reset(SERVICE, [], "ns1")
    assert cluster.changes() == [Delete(hostname="a.ns1.svc.cluster.local")]
    assert cluster.hostnames == ["b.ns2.svc.cluster.local"]


def test_state_node_labels_move_endpoint_localities() -> None:
    cluster = state()
    cluster.reset(SERVICE, [service()])
    pod_endpoint = ep("10.1.0.1", node="n1", pod="web-1")
    cluster.reset(ENDPOINT_SLICE, [endpoint_slice(endpoints=[pod_endpoint])])
    cluster.reset(NODE, [node("n1", {"topology.kubernetes.io/region": "r1"})])
    full = cluster.replace()
    assert full.endpoints[0].locality == Locality(region="r1")
    cluster.apply(NODE, "MODIFIED", node("n1", {"topology.kubernetes.io/region": "r2"}))
    [upsert] = cluster.changes()
    assert isinstance(upsert, Upsert)
    assert upsert.endpoints[0].locality == Locality(region="r2")
    cluster.apply(NODE, "MODIFIED", node("n1", {"topology.kubernetes.io/region": "r2", "x": "y"}))
    assert cluster.changes() == []  # other labels do not matter


def test_state_malformed_update_keeps_the_last_good_version() -> None:
    cluster = state()
    cluster.reset(SERVICE, [service()])
    cluster.replace()
    broken = service(ports=[{"name": "http"}])
    cluster.apply(SERVICE, "MODIFIED", broken)
    assert cluster.changes() == []
    errors = cluster.problems().errors
    assert list(errors) == ["Service/shop/web"]
    assert "no port number" in errors["Service/shop/web"]
    assert "last good version" in errors["Service/shop/web"]
    assert cluster.hostnames == ["web.shop.svc.cluster.local"]
    cluster.apply(SERVICE, "MODIFIED", service(ports=[{"name": "http", "port": 81}]))
    [upsert] = cluster.changes()
    assert isinstance(upsert, Upsert) and upsert.service.ports[0].number == 81
    assert cluster.problems().errors == {}


def test_state_any_exception_reading_one_object_is_that_objects_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a parser bug, or a shape no check foresaw, must not stop the cluster's watch
    def parse(obj: Any) -> Any:
        if obj["metadata"]["name"] == "odd":
            raise TypeError("unhashable type: 'list'")
        return real(obj)

    real = PARSERS[SERVICE]
    monkeypatch.setitem(PARSERS, SERVICE, parse)
    cluster = state()
    cluster.reset(SERVICE, [service("ok"), service("odd")])
    cluster.reset(ENDPOINT_SLICE, [{"metadata": []}])  # object_key cannot even read it
    assert hosts(cluster.replace()) == ["ok.shop.svc.cluster.local"]
    errors = cluster.problems().errors
    assert errors["Service/shop/odd"] == (
        "Service/shop/odd: TypeError: unhashable type: 'list'; skipped"
    )
    assert list(errors) == ["EndpointSlice/?", "Service/shop/odd"]


def test_state_malformed_new_objects_are_skipped_and_reported() -> None:
    cluster = state()
    cluster.reset(
        SERVICE,
        [service("ok"), service("bad", ports=[{"name": "x"}]), {"metadata": {}, "spec": {}}],
    )
    cluster.reset(
        ENDPOINT_SLICE, [endpoint_slice("bad-slice", service_name="ok", address_type="X")]
    )
    assert hosts(cluster.replace()) == ["ok.shop.svc.cluster.local"]
    errors = cluster.problems().errors
    assert sorted(errors) == ["EndpointSlice/shop/bad-slice", "Service/?", "Service/shop/bad"]
    assert all("skipped" in message for message in errors.values())
    cluster.apply(SERVICE, "DELETED", service("bad"))
    cluster.changes()
    assert "Service/shop/bad" not in cluster.problems().errors


def test_state_problem_sources_summarise_each_service() -> None:
    cluster = state()
    cluster.reset(SERVICE, [service()])
    cluster.reset(ENDPOINT_SLICE, [endpoint_slice()])
    cluster.replace()
    problems = cluster.problems()
    assert problems.sources == {
        "Service/shop/web": {
            "hostname": "web.shop.svc.cluster.local",
            "type": "ClusterIP",
            "resolution": "STATIC",
            "clusterIPs": ["10.96.0.10"],
            "endpointSlices": ["web-abc"],
            "ports": ["80/HTTP http -> 8080"],
        }
    }
    cluster.apply(ENDPOINT_SLICE, "MODIFIED", endpoint_slice(endpoints=[ep("10.1.0.9")]))
    cluster.changes()
    assert cluster.problems() is problems  # only endpoints changed: same summary


def test_state_namespaces_list_selects_services() -> None:
    cluster = state(namespaces=["shop"])
    cluster.reset(SERVICE, [service("web", "shop"), service("web", "other")])
    assert hosts(cluster.replace()) == ["web.shop.svc.cluster.local"]


def test_state_namespace_selector_follows_namespace_labels() -> None:
    selector = parse_selector({"matchLabels": {"mesh": "on"}})
    cluster = state(selector=selector)
    cluster.reset(SERVICE, [service("web", "shop"), service("web", "lab")])
    cluster.reset(
        ENDPOINT_SLICE, [endpoint_slice("bad", "lab", address_type="X")]
    )  # an error in a namespace that is not selected: not reported
    cluster.reset(NAMESPACE, [namespace("shop", {"mesh": "on"}), namespace("lab")])
    assert hosts(cluster.replace()) == ["web.shop.svc.cluster.local"]
    assert cluster.problems().errors == {}

    cluster.apply(NAMESPACE, "MODIFIED", namespace("lab", {"mesh": "on"}))
    [upsert] = cluster.changes()
    assert isinstance(upsert, Upsert) and upsert.service.hostname == "web.lab.svc.cluster.local"
    assert list(cluster.problems().errors) == ["EndpointSlice/lab/bad"]

    cluster.apply(NAMESPACE, "MODIFIED", namespace("shop", {"mesh": "off"}))
    assert cluster.changes() == [Delete(hostname="web.shop.svc.cluster.local")]
    cluster.apply(NAMESPACE, "DELETED", namespace("lab", {"mesh": "on"}))
    assert cluster.changes() == [Delete(hostname="web.lab.svc.cluster.local")]


def test_state_namespaces_and_selector_both_apply() -> None:
    cluster = state(namespaces=["shop"], selector=parse_selector("mesh=on"))
    cluster.reset(SERVICE, [service("web", "shop"), service("web", "lab")])
    cluster.reset(NAMESPACE, [namespace("shop", {"mesh": "on"}), namespace("lab", {"mesh": "on"})])
    assert hosts(cluster.replace()) == ["web.shop.svc.cluster.local"]
