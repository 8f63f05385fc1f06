"""Pod labels on Kubernetes endpoints, pure: the merge istiod does, the increments a pod
label change causes, what is kept of a Pod, and the ``eds_for_headless`` setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from registryd.adapter import AdapterContext, ConfigError, Upsert
from registryd.adapters.kubernetes import state
from registryd.adapters.kubernetes.mapping import build_service
from registryd.adapters.kubernetes.objects import CLUSTER_LABEL, ENDPOINT_SLICE, NODE, POD, SERVICE
from registryd.adapters.kubernetes.parse import parse_node, parse_pod, parse_service, parse_slice
from registryd.adapters.kubernetes.pods import PodLabels, shrink_pod
from registryd.adapters.kubernetes.settings import parse_settings
from registryd.adapters.kubernetes.state import ClusterState
from registryd.model import Labels
from tests.adapters.kube_objects import (
    OPTIONS,
    endpoint_slice,
    ep,
    node,
    pod,
    service,
)

WEB = "web.shop.svc.cluster.local"
API = "api.shop.svc.cluster.local"


def labels_by_address(endpoints: Any) -> dict[str, dict[str, str]]:
    return {e.address: dict(e.labels) for e in endpoints}


def cluster_with(*slices: dict[str, Any], pods: tuple[dict[str, Any], ...] = ()) -> ClusterState:
    cluster = ClusterState(OPTIONS)
    cluster.reset(SERVICE, [service("web"), service("api", cluster_ip="10.96.0.11")])
    cluster.reset(ENDPOINT_SLICE, list(slices))
    cluster.reset(NODE, [])
    cluster.reset(POD, list(pods))
    return cluster


# -- the merge ---------------------------------------------------------------------------------


def test_pod_labels_under_topology_labels_as_istiod_label_go_AugmentLabels() -> None:
    nodes = {"n1": parse_node(node("n1", {"topology.kubernetes.io/region": "eu"}))}
    pods = {
        ("shop", "web-1"): parse_pod(
            pod("web-1", app="web", version="v2", **{CLUSTER_LABEL: "spoofed"})
        ),
    }
    built = build_service(
        parse_service(service()),
        [parse_slice(endpoint_slice(endpoints=[ep("10.1.0.1", node="n1", pod="web-1")]))],
        nodes,
        OPTIONS,
        pods,
    )
    assert labels_by_address(built.endpoints)["10.1.0.1"] == {
        "app": "web",
        "version": "v2",
        CLUSTER_LABEL: "east",  # the topology label wins over the pod's
        "kubernetes.io/hostname": "n1",
        "topology.kubernetes.io/region": "eu",
    }


def test_endpoints_without_a_known_pod_keep_the_topology_labels_only() -> None:
    piece = endpoint_slice(
        endpoints=[ep("10.1.0.1", pod="unknown"), ep("10.1.0.2")]  # no targetRef
    )
    piece["endpoints"].append(
        {"addresses": ["10.1.0.3"], "targetRef": {"kind": "Node", "name": "web-1"}}
    )
    pods = {("shop", "web-1"): Labels({"app": "web"})}
    built = build_service(parse_service(service()), [parse_slice(piece)], {}, OPTIONS, pods)
    assert labels_by_address(built.endpoints) == {
        address: {CLUSTER_LABEL: "east"} for address in ("10.1.0.1", "10.1.0.2", "10.1.0.3")
    }


def test_target_ref_namespace_defaults_to_the_slice_namespace() -> None:
    piece = endpoint_slice()
    piece["endpoints"] = [{"addresses": ["10.1.0.1"], "targetRef": {"kind": "Pod", "name": "p"}}]
    assert parse_slice(piece).endpoints[0].pod == ("shop", "p")
    piece["endpoints"][0]["targetRef"]["namespace"] = "other"
    assert parse_slice(piece).endpoints[0].pod == ("other", "p")


# -- increments -------------------------------------------------------------------------------


def test_a_pod_label_change_re_emits_only_the_hostnames_it_backs() -> None:
    cluster = cluster_with(
        endpoint_slice("web-a", endpoints=[ep("10.1.0.1", pod="web-1")]),
        endpoint_slice("api-a", service_name="api", endpoints=[ep("10.1.0.9", pod="api-1")]),
        pods=(pod("web-1", app="web"), pod("api-1", app="api")),
    )
    full = cluster.replace()
    assert labels_by_address(full.endpoints)["10.1.0.1"]["app"] == "web"

    cluster.apply(POD, "MODIFIED", pod("web-1", app="web", version="v2"))
    [upsert] = cluster.changes()
    assert isinstance(upsert, Upsert) and upsert.service.hostname == WEB
    assert labels_by_address(upsert.endpoints)["10.1.0.1"]["version"] == "v2"

    modified = pod("web-1", app="web", version="v2")
    modified["status"]["phase"] = "Succeeded"  # not a label: nothing to say
    cluster.apply(POD, "MODIFIED", modified)
    assert cluster.changes() == []

    cluster.apply(POD, "ADDED", pod("lonely", app="x"))  # backs no endpoint
    assert cluster.changes() == []

    cluster.apply(POD, "DELETED", pod("api-1"))
    [upsert] = cluster.changes()
    assert isinstance(upsert, Upsert) and upsert.service.hostname == API
    assert "app" not in labels_by_address(upsert.endpoints)["10.1.0.9"]


def test_a_pod_seen_after_its_slice_labels_the_endpoint_then() -> None:
    cluster = cluster_with(endpoint_slice(endpoints=[ep("10.1.0.1", pod="web-1")]))
    cluster.replace()
    cluster.apply(POD, "ADDED", pod("web-1", app="web"))
    [upsert] = cluster.changes()
    assert isinstance(upsert, Upsert) and upsert.service.hostname == WEB
    assert labels_by_address(upsert.endpoints)["10.1.0.1"]["app"] == "web"


def test_a_slice_that_stops_naming_a_pod_is_no_longer_re_emitted_for_it() -> None:
    cluster = cluster_with(
        endpoint_slice(endpoints=[ep("10.1.0.1", pod="web-1")]), pods=(pod("web-1", app="web"),)
    )
    cluster.replace()
    cluster.apply(ENDPOINT_SLICE, "MODIFIED", endpoint_slice(endpoints=[ep("10.1.0.2", pod="w2")]))
    assert len(cluster.changes()) == 1
    cluster.apply(POD, "MODIFIED", pod("web-1", app="other"))
    assert cluster.changes() == []


def test_a_pod_relist_forgets_pods_that_are_gone() -> None:
    cluster = cluster_with(
        endpoint_slice(endpoints=[ep("10.1.0.1", pod="web-1")]), pods=(pod("web-1", app="web"),)
    )
    cluster.replace()
    cluster.reset(POD, [])
    [upsert] = cluster.changes()
    assert isinstance(upsert, Upsert)
    assert labels_by_address(upsert.endpoints)["10.1.0.1"] == {CLUSTER_LABEL: "east"}


def test_a_malformed_pod_is_reported_under_its_name() -> None:
    cluster = cluster_with()
    bad = pod("web-1")
    bad["metadata"]["labels"] = {"app": 3}
    cluster.apply(POD, "ADDED", bad)
    assert "Pod/shop/web-1" in cluster.problems().errors


# -- what is kept ------------------------------------------------------------------------------


def test_shrink_pod_keeps_name_namespace_labels_and_version_only() -> None:
    obj = pod("web-1", app="web")
    obj["metadata"] |= {"resourceVersion": "42", "uid": "u", "annotations": {"big": "x" * 100}}
    assert shrink_pod(obj) == {
        "metadata": {
            "name": "web-1",
            "namespace": "shop",
            "labels": {"app": "web"},
            "resourceVersion": "42",
        }
    }
    assert shrink_pod({"kind": "Status", "code": 410}) == {"kind": "Status", "code": 410}


def test_equal_label_sets_are_stored_once() -> None:
    pods = PodLabels()
    shared = [pods.intern(Labels({"app": "web", "hash": "abc"})) for _ in range(100)]
    assert all(labels is shared[0] for labels in shared)
    assert pods.distinct == 1
    other = pods.intern(Labels({"app": "web", "hash": "def"}))
    assert pods.distinct == 2
    for labels in shared[1:]:
        pods.release(labels)
    assert pods.distinct == 2  # one user of the first set is left
    pods.release(shared[0])
    pods.release(other)
    assert pods.distinct == 0


def test_replicas_of_a_workload_share_one_label_set() -> None:
    state = ClusterState(OPTIONS)
    for index in range(3):
        state.apply(POD, "ADDED", pod(f"web-{index}", app="web"))
    state.apply(POD, "MODIFIED", pod("web-2", app="web", canary="yes"))
    state.apply(POD, "DELETED", pod("web-1", app="web"))
    assert state._pods.distinct == 2
    state.reset(POD, [], "shop")
    assert state._pods.distinct == 0


def test_slices_of_a_pod() -> None:
    pods = PodLabels()
    pods.link(("shop", "a"), [("shop", "p"), ("shop", "p")])
    pods.link(("shop", "b"), [("shop", "p")])
    assert pods.slices_of(("shop", "p")) == (("shop", "a"), ("shop", "b"))
    pods.unlink(("shop", "a"), [("shop", "p")])
    pods.unlink(("shop", "b"), [("shop", "p")])
    assert pods.slices_of(("shop", "p")) == ()


# -- eds_for_headless --------------------------------------------------------------------------


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\n")
    return path


def test_eds_for_headless_is_a_setting_the_adapter_does_not_read_from_the_environment(
    kubeconfig: Path,
) -> None:
    # PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES is the daemon's to read: it arrives as the
    # setting's default (tests/unit/test_configure.py), never from the environment here
    values = {"kubeconfig": str(kubeconfig)}
    environ = {"PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES": "true"}
    assert not parse_settings("east", values, AdapterContext(), environ).eds_for_headless
    on = {**values, "eds_for_headless": True}
    assert parse_settings("east", on, AdapterContext(), {}).eds_for_headless
    null = {**values, "eds_for_headless": None}  # null counts as not set
    assert not parse_settings("east", null, AdapterContext(), {}).eds_for_headless
    with pytest.raises(ConfigError, match="'eds_for_headless' must be true or false") as caught:
        parse_settings("east", {**values, "eds_for_headless": "yes"}, AdapterContext(), {})
    assert "registry 'east' (kubernetes)" in str(caught.value)


def test_a_pod_change_converts_again_only_the_services_it_backs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With 100k pods, a pod event must not convert every Service again."""
    cluster = cluster_with(
        endpoint_slice("web-a", endpoints=[ep("10.1.0.1", pod="web-1")]),
        endpoint_slice("api-a", service_name="api", endpoints=[ep("10.1.0.9", pod="api-1")]),
        pods=(pod("web-1", app="web"), pod("api-1", app="api")),
    )
    cluster.replace()
    converted: list[str] = []

    def counting(service: Any, *args: Any) -> Any:
        converted.append(service.name)
        return build_service(service, *args)

    monkeypatch.setattr(state, "build_service", counting)
    cluster.apply(POD, "MODIFIED", pod("api-1", app="api", version="v2"))
    cluster.apply(POD, "ADDED", pod("lonely", app="x"))
    cluster.changes()
    assert converted == ["api"]
