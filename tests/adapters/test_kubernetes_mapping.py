"""The Kubernetes mapping (:mod:`registryd.adapters.kubernetes.mapping`), pure: a Service and
its EndpointSlices -> a service and its endpoints, as istiod converts them."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from registryd.adapters.kubernetes.mapping import (
    Options,
    build_service,
    endpoint_health,
    resolution_for,
)
from registryd.adapters.kubernetes.objects import (
    CLUSTER_LABEL,
    SliceEndpoint,
)
from registryd.adapters.kubernetes.parse import (
    ObjectError,
    parse_node,
    parse_service,
    parse_slice,
)
from registryd.build.clusters import build_cluster
from registryd.model import Health, Labels, Locality, Location, Port, Resolution
from tests.adapters.kube_objects import OPTIONS, endpoint_slice, ep, node, service


def build(svc: dict[str, Any], *slices: dict[str, Any], nodes: Any = None) -> Any:
    return build_service(parse_service(svc), [parse_slice(s) for s in slices], nodes or {}, OPTIONS)


def test_udp_ports_are_kept_as_istiod_convert_port_does_sctp_skipped() -> None:
    built = build(
        service(
            ports=[
                {"name": "syslog", "port": 514, "protocol": "UDP"},
                {"name": "sig", "port": 2905, "protocol": "SCTP"},
            ]
        ),
        endpoint_slice(
            ports=[
                {"name": "syslog", "port": 5514, "protocol": "UDP"},
                {"name": "sig", "port": 2905, "protocol": "SCTP"},
            ]
        ),
    )
    assert built.service.ports == (Port(number=514, name="syslog", protocol="UDP"),)
    assert [(e.port, e.service_port) for e in built.endpoints] == [(5514, 514)]
    assert built.summary["skippedPorts"] == ["2905/SCTP sig"]


def test_a_udp_port_sharing_its_number_with_a_tcp_port_is_skipped() -> None:
    built = build(
        service(
            ports=[
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ]
        ),
        endpoint_slice(
            ports=[
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ]
        ),
    )
    assert built.service.ports == (Port(number=53, name="dns-tcp", protocol="TCP"),)
    assert [(e.port, e.service_port) for e in built.endpoints] == [(53, 53)]
    assert built.summary["skippedPorts"] == ["53/UDP dns (53/TCP dns-tcp is served)"]


def test_cluster_ip_service_maps_as_istiod() -> None:
    obj = service(labels={"app": "web"}, clusterIPs=["10.96.0.10", "fd00::10"])
    obj["metadata"]["annotations"] = {"networking.istio.io/exportTo": ".,  istio-system"}
    built = build(obj)
    svc = built.service
    assert svc.hostname == "web.shop.svc.cluster.local"
    assert svc.namespace == "shop"
    assert svc.labels == {"app": "web"}
    assert svc.location is Location.MESH_INTERNAL
    assert svc.resolution is Resolution.STATIC
    assert svc.addresses == ("10.96.0.10", "fd00::10")
    assert svc.export_to == (".", "istio-system")


def test_domain_option_sets_the_suffix() -> None:
    parsed = parse_service(service())
    built = build_service(parsed, (), {}, Options(domain="corp.example", cluster_id="c"))
    assert built.service.hostname == "web.shop.svc.corp.example"


def test_a_headless_kubernetes_service_has_no_port_override() -> None:
    # istiod: kube/conversion.go ConvertService sets no PassthroughTargetPorts (only
    # serviceentry/conversion.go convertServices does), so cluster_builder.go buildCluster
    # gives a headless Service's ORIGINAL_DST cluster no upstream_port_override
    obj = service(
        "db", cluster_ip="None", ports=[{"name": "tcp-pg", "port": 5433, "targetPort": 5432}]
    )
    piece = endpoint_slice(service_name="db", ports=[{"name": "tcp-pg", "port": 5432}])
    built = build(obj, piece)
    assert built.service.resolution is Resolution.NONE
    assert built.service.ports == (Port(number=5433, name="tcp-pg", protocol="TCP"),)
    assert built.summary["ports"] == ["5433/TCP tcp-pg -> 5432"]  # still shown
    assert [(e.port, e.service_port) for e in built.endpoints] == [(5432, 5433)]
    cluster = build_cluster(built.service, built.service.ports[0], built.endpoints)
    assert cluster is not None
    assert cluster.type == cluster_pb2.Cluster.ORIGINAL_DST
    assert not cluster.HasField("original_dst_lb_config")


def test_target_ports_by_name_come_from_the_slices() -> None:
    svc = service(ports=[{"name": "http", "port": 80, "targetPort": "web"}])
    built = build(svc, endpoint_slice(ports=[{"name": "http", "port": 8081}]))
    assert built.service.ports[0].target_port is None
    assert [(e.address, e.port, e.service_port) for e in built.endpoints] == [
        ("10.1.0.1", 8081, 80)
    ]


def test_slice_ports_match_service_ports_by_name() -> None:
    svc = service(
        ports=[
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "metrics", "port": 9100, "targetPort": 9100},
        ]
    )
    piece = endpoint_slice(
        ports=[
            {"name": "metrics", "port": 9102},  # the number differs: the slice's is used
            {"name": "http", "port": 8080},
            {"name": "other", "port": 7000},  # no such service port: ignored
            {"name": "noport"},  # no number: ignored
        ]
    )
    built = build(svc, piece)
    assert sorted((e.service_port, e.port) for e in built.endpoints) == [(80, 8080), (9100, 9102)]


def test_unnamed_single_port_matches_unnamed_slice_port() -> None:
    svc = service(ports=[{"port": 5432, "targetPort": 5432}])
    built = build(svc, endpoint_slice(ports=[{"port": 5432, "protocol": "TCP", "name": ""}]))
    assert [(e.port, e.service_port) for e in built.endpoints] == [(5432, 5432)]
    built = build(svc, endpoint_slice(ports=[{"port": 5432}]))  # name absent
    assert len(built.endpoints) == 1


def test_multiple_slices_and_addresses_are_combined() -> None:
    built = build(
        service(),
        endpoint_slice("web-a", endpoints=[ep("10.1.0.1"), ep("10.1.0.2", "10.1.0.3")]),
        endpoint_slice("web-b", endpoints=[ep("10.1.0.4")]),
        endpoint_slice("other-x", service_name="other", endpoints=[ep("10.9.9.9")]),
        endpoint_slice("web-c", namespace="elsewhere", endpoints=[ep("10.9.9.8")]),
    )
    assert [e.address for e in built.endpoints] == ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"]
    assert {e.hostname for e in built.endpoints} == {"web.shop.svc.cluster.local"}
    assert {e.cluster_id for e in built.endpoints} == {"east"}
    assert {e.network for e in built.endpoints} == {""}
    assert built.summary["endpointSlices"] == ["web-a", "web-b"]


def test_the_same_endpoint_in_two_slices_is_one_the_healthiest() -> None:
    built = build(
        service(),
        endpoint_slice("web-a", endpoints=[ep("10.1.0.1", ready=False, terminating=False)]),
        endpoint_slice("web-b", endpoints=[ep("10.1.0.1", ready=True)]),
    )
    assert [(e.address, e.health) for e in built.endpoints] == [("10.1.0.1", Health.HEALTHY)]


def test_ipv6_slices() -> None:
    built = build(
        service(clusterIPs=["fd00::10"], cluster_ip="fd00::10"),
        endpoint_slice(address_type="IPv6", endpoints=[ep("FD00:0:0:0:0:0:1:1")]),
    )
    assert [e.address for e in built.endpoints] == ["fd00::1:1"]  # canonical form
    with pytest.raises(ObjectError, match="IPv6"):
        parse_slice(endpoint_slice(address_type="IPv6", endpoints=[ep("10.1.0.1")]))
    with pytest.raises(ObjectError, match="IPv4"):
        parse_slice(endpoint_slice(address_type="IPv4", endpoints=[ep("fd00::1")]))


def test_fqdn_slices_are_ignored() -> None:
    piece = endpoint_slice(address_type="FQDN", endpoints=[ep("db.example.com")])
    assert build(service(), piece).endpoints == ()


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ({}, Health.HEALTHY),
        ({"ready": True}, Health.HEALTHY),
        ({"ready": True, "serving": True, "terminating": True}, Health.HEALTHY),
        ({"ready": False}, None),  # terminating unset counts as terminating
        ({"ready": False, "terminating": True}, None),
        ({"ready": False, "serving": True, "terminating": True}, None),
        ({"ready": False, "serving": False, "terminating": True}, None),
        ({"ready": False, "terminating": False}, Health.UNHEALTHY),
        ({"ready": False, "serving": True, "terminating": False}, Health.UNHEALTHY),
        ({"ready": False, "serving": False, "terminating": False}, Health.UNHEALTHY),
    ],
)
def test_health_as_istiod_endpointslice_go_endpointHealthStatus(
    conditions: dict[str, bool], expected: Health | None
) -> None:
    item = SliceEndpoint(addresses=("10.1.0.1",), **conditions)
    assert endpoint_health(item) is expected


def test_terminating_endpoints_are_never_sent_as_endpoint_builder_go_filterIstioEndpoint() -> None:
    built = build(
        service(),
        endpoint_slice(
            endpoints=[
                ep("10.1.0.1"),
                ep("10.1.0.2", ready=False, serving=True, terminating=True),
                ep("10.1.0.3", ready=False, terminating=False),
                ep("10.1.0.4", ready=False),
            ]
        ),
    )
    assert [(e.address, e.health) for e in built.endpoints] == [
        ("10.1.0.1", Health.HEALTHY),
        ("10.1.0.3", Health.UNHEALTHY),
    ]


def test_locality_from_endpoint_zone_and_node_labels() -> None:
    nodes = {
        "n1": parse_node(
            node(
                "n1",
                {
                    "topology.kubernetes.io/region": "eu-west-1",
                    "topology.kubernetes.io/zone": "eu-west-1b",
                    "topology.istio.io/subzone": "rack7",
                },
            )
        ),
        "n2": parse_node(
            node(
                "n2",
                {
                    "failure-domain.beta.kubernetes.io/region": "us-east-1",
                    "failure-domain.beta.kubernetes.io/zone": "us-east-1c",
                },
            )
        ),
    }
    built = build(
        service(),
        endpoint_slice(
            endpoints=[
                ep("10.1.0.1", node="n1", zone="eu-west-1a", pod="p1"),  # the endpoint's zone
                ep("10.1.0.2", node="n1", pod="p2"),  # the node's zone
                ep("10.1.0.3", node="n2", pod="p3"),  # the beta labels
                ep("10.1.0.4", zone="z9", pod="p4"),  # no node: zone only
                ep("10.1.0.5", node="gone", pod="p5"),  # unknown node
                ep("10.1.0.6", node="n1", zone="eu-west-1a"),  # no pod: no locality
            ]
        ),
        nodes=nodes,
    )
    localities = {e.address: e.locality for e in built.endpoints}
    assert localities == {
        "10.1.0.1": Locality(region="eu-west-1", zone="eu-west-1a", subzone="rack7"),
        "10.1.0.2": Locality(region="eu-west-1", zone="eu-west-1b", subzone="rack7"),
        "10.1.0.3": Locality(region="us-east-1", zone="us-east-1c"),
        "10.1.0.4": Locality(zone="z9"),
        "10.1.0.5": Locality(),
        "10.1.0.6": Locality(),  # endpoint_builder.go NewEndpointBuilder without a Pod
    }
    labels = {e.address: dict(e.labels) for e in built.endpoints}
    assert labels["10.1.0.1"] == {
        CLUSTER_LABEL: "east",
        "kubernetes.io/hostname": "n1",
        "topology.kubernetes.io/region": "eu-west-1",
        "topology.kubernetes.io/zone": "eu-west-1a",
        "topology.istio.io/subzone": "rack7",
    }
    assert labels["10.1.0.5"] == {CLUSTER_LABEL: "east", "kubernetes.io/hostname": "gone"}
    assert labels["10.1.0.6"] == {CLUSTER_LABEL: "east"}  # nor a node


def test_headless_is_passthrough_as_istiod_conversion_go_ConvertService() -> None:
    built = build(
        service(cluster_ip="None", clusterIPs=["None"]),
        endpoint_slice(endpoints=[ep("10.1.0.1"), ep("10.1.0.2")]),
    )
    assert built.service.resolution is Resolution.NONE
    assert built.service.location is Location.MESH_INTERNAL
    assert built.service.addresses == ()
    assert [e.address for e in built.endpoints] == ["10.1.0.1", "10.1.0.2"]  # still there
    assert built.summary["clusterIPs"] == ["None"]
    assert built.summary["resolution"] == "NONE"


def test_headless_with_eds_for_headless_is_static_as_cluster_go_convertResolution() -> None:
    options = Options(cluster_id="east", eds_for_headless=True)
    headless = parse_service(service(cluster_ip="None", clusterIPs=["None"]))
    built = build_service(headless, [parse_slice(endpoint_slice())], {}, options)
    assert built.service.resolution is Resolution.STATIC
    assert [e.address for e in built.endpoints] == ["10.1.0.1"]
    assert resolution_for(parse_service(service()), options) is Resolution.STATIC
    assert resolution_for(parse_service(service()), OPTIONS) is Resolution.STATIC


def test_external_name_is_an_alias_as_istiod_conversion_go_ConvertService() -> None:
    obj = service(
        "db",
        cluster_ip=None,
        type="ExternalName",
        externalName="DB.Example.COM.",
        ports=[{"name": "tcp-pg", "port": 5432}, {"name": "http", "port": 80, "targetPort": 8080}],
        labels={"app": "db"},
    )
    built = build(obj, endpoint_slice(service_name="db"))  # slices are not read
    svc = built.service
    assert svc.resolution is Resolution.ALIAS
    assert svc.alias_for == "db.example.com"
    assert svc.location is Location.MESH_EXTERNAL
    assert svc.addresses == ()
    assert svc.ports == (
        Port(number=5432, name="tcp-pg", protocol="TCP"),
        Port(number=80, name="http", protocol="HTTP"),
    )
    assert svc.labels == {"app": "db"}
    assert built.endpoints == ()
    assert built.summary["externalName"] == "db.example.com"
    assert built.summary["resolution"] == "ALIAS"
    eds = Options(cluster_id="east", eds_for_headless=True)  # no say over aliases
    assert resolution_for(parse_service(obj), eds) is Resolution.ALIAS


def test_a_service_without_endpoints_is_still_served() -> None:
    built = build(service())
    assert built.service.hostname == "web.shop.svc.cluster.local"
    assert built.endpoints == ()


def test_the_service_is_as_old_as_its_kubernetes_service() -> None:
    # SortServicesByCreationTime gives a shared listener port to the oldest service
    obj = service()
    obj["metadata"]["creationTimestamp"] = "2026-12-07T08:30:01Z"
    assert build(obj).service.created == 1796632201.0
    assert build(service()).service.created is None


def test_a_pod_pins_its_locality_with_a_label_before_its_nodes() -> None:
    # kube/controller/controller.go getPodLocality; pkg/model/proxy.go GetLocalityLabel
    nodes = {"n1": parse_node(node("n1", {"topology.kubernetes.io/region": "eu-west-1"}))}
    pods = {
        ("shop", "a"): Labels({"istio-locality": "us-east-1.us-east-1c"}),
        ("shop", "b"): Labels({"topology.istio.io/locality": "ap/ap-1/r2", "istio-locality": "x"}),
        ("shop", "c"): Labels({"app": "web"}),
    }
    built = build_service(
        parse_service(service()),
        [
            parse_slice(
                endpoint_slice(
                    endpoints=[
                        ep("10.1.0.1", node="n1", pod="a"),
                        ep("10.1.0.2", node="n1", pod="b"),
                        ep("10.1.0.3", node="n1", pod="c"),
                    ]
                )
            )
        ],
        nodes,
        OPTIONS,
        pods,
    )
    localities = {e.address: e.locality for e in built.endpoints}
    assert localities == {
        "10.1.0.1": Locality(region="us-east-1", zone="us-east-1c"),
        "10.1.0.2": Locality(region="ap", zone="ap-1", subzone="r2"),
        "10.1.0.3": Locality(region="eu-west-1"),
    }
    (first, *_) = built.endpoints
    assert first.labels["topology.kubernetes.io/zone"] == "us-east-1c"
