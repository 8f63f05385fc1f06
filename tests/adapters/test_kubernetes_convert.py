"""The Kubernetes mapping, pure: Service/EndpointSlice/Node/Namespace dicts -> services,
endpoints, problems and increments; label selectors and settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from registryd.adapter import AdapterContext, ConfigError, Delete, Replace, Upsert
from registryd.adapters.kubernetes.mapping import (
    Options,
    build_service,
    endpoint_health,
    resolution_for,
)
from registryd.adapters.kubernetes.objects import (
    CLUSTER_LABEL,
    ENDPOINT_SLICE,
    NAMESPACE,
    NODE,
    SERVICE,
    NodeLocality,
    SliceEndpoint,
)
from registryd.adapters.kubernetes.parse import (
    PARSERS,
    ObjectError,
    object_source,
    parse_node,
    parse_service,
    parse_slice,
)
from registryd.adapters.kubernetes.protocol import port_protocol
from registryd.adapters.kubernetes.selector import parse_selector
from registryd.adapters.kubernetes.settings import parse_settings
from registryd.adapters.kubernetes.state import ClusterState
from registryd.model import AUTO, Health, Locality, Location, Port, Resolution

OPTIONS = Options(domain="cluster.local", cluster_id="east")


# -- fixtures -------------------------------------------------------------------------------


def service(
    name: str = "web",
    namespace: str = "shop",
    *,
    ports: Any = None,
    cluster_ip: Any = "10.96.0.10",
    labels: Any = None,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
        if ports is None
        else ports
    }
    if cluster_ip is not None:
        body["clusterIP"] = cluster_ip
    body.update(spec)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "resourceVersion": "7"}
    if labels is not None:
        metadata["labels"] = labels
    return {"metadata": metadata, "spec": body}


def ep(
    *addresses: str,
    ready: Any = True,
    serving: Any = None,
    terminating: Any = None,
    zone: str | None = None,
    node: str | None = None,
    pod: str | None = None,
) -> dict[str, Any]:
    conditions = {"ready": ready, "serving": serving, "terminating": terminating}
    item: dict[str, Any] = {
        "addresses": list(addresses),
        "conditions": {k: v for k, v in conditions.items() if v is not None},
    }
    if zone is not None:
        item["zone"] = zone
    if node is not None:
        item["nodeName"] = node
    if pod is not None:
        item["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "shop", "uid": "u-" + pod}
    return item


def endpoint_slice(
    name: str = "web-abc",
    namespace: str = "shop",
    *,
    service_name: str | None = "web",
    endpoints: Any = None,
    ports: Any = None,
    address_type: Any = "IPv4",
) -> dict[str, Any]:
    labels = {"kubernetes.io/service-name": service_name} if service_name else {}
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "addressType": address_type,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}] if ports is None else ports,
        "endpoints": [ep("10.1.0.1")] if endpoints is None else endpoints,
    }


def node(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}}


def pod(name: str, namespace: str = "shop", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running", "podIP": "10.1.0.1"},
    }


def build(svc: dict[str, Any], *slices: dict[str, Any], nodes: Any = None) -> Any:
    return build_service(parse_service(svc), [parse_slice(s) for s in slices], nodes or {}, OPTIONS)


# -- protocols ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "name", "kube_protocol", "app_protocol", "expected"),
    [
        (80, "http", "TCP", None, "HTTP"),
        (80, "http-web", "TCP", None, "HTTP"),
        (80, "HTTP-Web", "TCP", None, "HTTP"),
        (80, "http2-api", "TCP", None, "HTTP2"),
        (80, "grpc", "TCP", None, "GRPC"),
        (80, "grpc-api", "TCP", None, "GRPC"),
        (80, "grpc-web", "TCP", None, "GRPC-WEB"),
        (80, "GRPC-Web-ui", "TCP", None, "GRPC-WEB"),
        (80, "https-admin", "TCP", None, "HTTPS"),
        (80, "tcp-db", "TCP", None, "TCP"),
        (80, "tls-passthrough", "TCP", None, "TLS"),
        (80, "mongo-main", "TCP", None, "MONGO"),
        (80, "redis", "TCP", None, "REDIS"),
        (80, "mysql-primary", "TCP", None, "MYSQL"),
        (80, "http_proxy", "TCP", None, "HTTP_PROXY"),
        (80, "udp-stats", "TCP", None, "UDP"),  # protocol.Parse knows "udp" too
        (80, "web", "TCP", None, AUTO),  # protocol.Unsupported: sniffed
        (80, "", "TCP", None, AUTO),
        (80, "httpx", "TCP", None, AUTO),
        (80, "web", "SCTP", None, AUTO),
        (25, "web", "TCP", None, "TCP"),  # wellKnownPorts: never sniffed
        (53, "", "TCP", None, "TCP"),
        (3306, "db", "TCP", None, "TCP"),
        (27017, "db", "TCP", None, "TCP"),
        (3306, "http", "TCP", None, "HTTP"),  # a name still wins on a well-known port
        (53, "dns", "UDP", None, "UDP"),
        (80, "http", "UDP", "http", "UDP"),  # UDP whatever the names say
        (80, "tcp", "TCP", "http", "HTTP"),  # appProtocol wins over the name
        (80, "web", "TCP", "HTTP2", "HTTP2"),
        (80, "web", "TCP", "grpc", "GRPC"),
        (80, "web", "TCP", "grpc-web", "GRPC-WEB"),
        (80, "web", "TCP", "https", "HTTPS"),
        (80, "http", "TCP", "tcp", "TCP"),
        (80, "web", "TCP", "kubernetes.io/h2c", "HTTP2"),
        (80, "web", "TCP", "kubernetes.io/ws", "HTTP"),
        (80, "web", "TCP", "kubernetes.io/wss", "HTTPS"),
        (80, "web", "TCP", "Kubernetes.io/H2C", AUTO),  # the Kubernetes names: exact case
        (80, "grpc", "TCP", "example.com/custom", AUTO),  # appProtocol set: name not read
        (80, "http", "TCP", "", AUTO),
        (3306, "http", "TCP", "example.com/custom", "TCP"),
    ],
)
def test_convert_protocol_as_istiod_kube_conversion_go_ConvertProtocol(
    number: int, name: str, kube_protocol: str, app_protocol: str | None, expected: str
) -> None:
    assert port_protocol(number, name, kube_protocol, app_protocol) == expected


def test_service_ports_take_app_protocol_and_name() -> None:
    parsed = parse_service(
        service(
            ports=[
                {"name": "http-web", "port": 80, "targetPort": 8080},
                {"name": "api", "port": 81, "targetPort": 9090, "appProtocol": "grpc"},
                {"name": "h2c", "port": 82, "appProtocol": "kubernetes.io/h2c"},
                {"name": "raw", "port": 83, "targetPort": "raw"},
            ]
        )
    )
    assert parsed.ports == (
        Port(number=80, name="http-web", protocol="HTTP", target_port=8080),
        Port(number=81, name="api", protocol="GRPC", target_port=9090),
        Port(number=82, name="h2c", protocol="HTTP2", target_port=82),  # absent: = port
        Port(number=83, name="raw", protocol=AUTO, target_port=None),  # named targetPort
    )


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
    assert built.service.ports == (
        Port(number=514, name="syslog", protocol="UDP", target_port=514),
    )
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
    assert built.service.ports == (Port(number=53, name="dns-tcp", protocol="TCP", target_port=53),)
    assert [(e.port, e.service_port) for e in built.endpoints] == [(53, 53)]
    assert built.summary["skippedPorts"] == ["53/UDP dns (53/TCP dns-tcp is served)"]


# -- services --------------------------------------------------------------------------------


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
                ep("10.1.0.1", node="n1", zone="eu-west-1a"),  # the endpoint's zone wins
                ep("10.1.0.2", node="n1"),  # the node's zone
                ep("10.1.0.3", node="n2"),  # the beta labels
                ep("10.1.0.4", zone="z9"),  # no node: zone only
                ep("10.1.0.5", node="gone"),  # unknown node
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
        Port(number=5432, name="tcp-pg", protocol="TCP", target_port=5432),
        Port(number=80, name="http", protocol="HTTP", target_port=8080),
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


# -- malformed objects -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (service(ports=[{"name": "http"}]), "no port number"),
        (service(ports=[{"name": "http", "port": "80"}]), "no port number"),
        (service(ports=[{"name": "http", "port": 70000}]), "out of range"),
        (service(ports=[{"name": "a", "port": 80}, {"port": 81}]), "needs a name"),
        (service(ports=[{"name": "a", "port": 80}, {"name": "a", "port": 81}]), "twice"),
        (service(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}]), "twice"),
        (service(ports=[{"name": "a", "port": 80, "targetPort": 0}]), "out of range"),
        (service(ports=[{"name": "a", "port": 80, "protocol": "QUIC"}]), "protocol"),
        (service(ports="80"), "not a list"),
        (service(cluster_ip="10.96.0.300"), "not an IP"),
        (service(type="Magic"), "spec.type"),
        (service(type="ExternalName", cluster_ip=None), "externalName"),
        (service(type="ExternalName", externalName="not a name!"), "not a DNS name"),
        (service(labels={"app": 7}), "labels"),
        ({"metadata": {"namespace": "shop"}, "spec": {}}, "metadata.name"),
        ({"metadata": {"name": "web"}, "spec": {}}, "namespace"),
        ({"metadata": {"name": "web", "namespace": "shop"}}, "spec"),
    ],
)
def test_malformed_services_are_errors(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(ObjectError, match=message):
        parse_service(obj)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (endpoint_slice(address_type="IPX"), "addressType"),
        (endpoint_slice(address_type=None), "addressType"),
        (endpoint_slice(address_type=[]), "addressType"),  # unhashable: found by the fuzzer
        (endpoint_slice(endpoints=[{"addresses": []}]), "no addresses"),
        (endpoint_slice(endpoints=[ep("10.1.0")]), "not an IPv4"),
        (endpoint_slice(endpoints=[ep("10.1.0.1", ready="yes")]), "ready"),
        (endpoint_slice(endpoints=[{"addresses": ["10.1.0.1"], "zone": 3}]), "zone"),
        (endpoint_slice(ports=[{"name": "http", "port": -1}]), "out of range"),
        (endpoint_slice(endpoints="x"), "not a list"),
    ],
)
def test_malformed_slices_are_errors(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(ObjectError, match=message):
        parse_slice(obj)


def test_object_sources_name_kind_namespace_and_name() -> None:
    assert object_source(SERVICE, service()) == "Service/shop/web"
    assert object_source(NODE, node("n1", {})) == "Node/n1"
    assert object_source(SERVICE, {"metadata": {"name": "x"}}) == "Service/x"
    assert object_source(SERVICE, "junk") == "Service/?"


# -- the state: increments, problems, selection --------------------------------------------------


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
    cluster.reset(ENDPOINT_SLICE, [endpoint_slice(endpoints=[ep("10.1.0.1", node="n1")])])
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


# -- label selectors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("mesh=on", {"mesh": "on"}, True),
        ("mesh==on", {"mesh": "off"}, False),
        ("mesh!=off", {}, True),  # absent keys match !=
        ("mesh", {"mesh": ""}, True),
        ("!mesh", {"mesh": "on"}, False),
        ("env in (prod, staging)", {"env": "staging"}, True),
        ("env notin (prod)", {}, True),
        ("env in (prod),team=a", {"env": "prod", "team": "b"}, False),
        (
            "istio.io/rev=canary, example.com/x",
            {"istio.io/rev": "canary", "example.com/x": ""},
            True,
        ),
    ],
)
def test_string_selectors(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


def test_object_selectors() -> None:
    selector = parse_selector(
        {
            "matchLabels": {"mesh": "on"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector.matches({"mesh": "on", "env": "dev"})
    assert not selector.matches({"mesh": "on", "env": "dev", "legacy": "1"})
    assert str(selector) == "mesh=on,env in (dev,prod),!legacy"


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "a=b,",
        "a in ()",
        "bad key=1",
        "a=b=c",
        7,
        {},
        {"matchLabels": {"a": "b c"}},
        {"matchExpressions": [{"key": "a", "operator": "Near"}]},
        {"matchExpressions": [{"key": "a", "operator": "In"}]},
        {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
        {"matchLabel": {"a": "b"}},
    ],
)
def test_bad_selectors(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_selector(value)


# -- settings --------------------------------------------------------------------------------------


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\n")
    return path


def test_settings_defaults(kubeconfig: Path) -> None:
    context = AdapterContext(domain="corp.example")
    settings = parse_settings("east", {"kubeconfig": str(kubeconfig)}, context)
    assert settings.kubeconfig == str(kubeconfig)
    assert settings.context is None
    assert settings.cluster_id == "east"  # the registry's name
    assert settings.namespaces == ()
    assert settings.namespace_selector is None
    assert (settings.qps, settings.burst) == (80.0, 160)  # istiod's flag defaults
    assert settings.domain == "corp.example"  # --domain, from the context
    assert settings.max_response_bytes == 16 * 2**20


def test_settings_given(kubeconfig: Path) -> None:
    settings = parse_settings(
        "east",
        {
            "kubeconfig": str(kubeconfig),
            "context": "prod",
            "cluster_id": "cluster-1",
            "namespaces": ["shop", "billing"],
            "namespace_selector": "mesh=on",
            "qps": 10,
            "burst": 20,
            "domain": "Corp.Example.",
        },
        AdapterContext(),
    )
    assert settings.context == "prod"
    assert settings.cluster_id == "cluster-1"
    assert settings.namespaces == ("billing", "shop")
    assert settings.namespace_selector is not None and str(settings.namespace_selector) == "mesh=on"
    assert (settings.qps, settings.burst, settings.domain) == (10.0, 20, "corp.example")


def test_settings_in_cluster_needs_the_pod_environment() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    settings = parse_settings("local", {}, AdapterContext(), env)
    assert settings.kubeconfig is None and settings.source == "in-cluster config"
    with pytest.raises(ConfigError, match="not running in a pod"):
        parse_settings("local", {}, AdapterContext(), {})
    with pytest.raises(ConfigError, match="'context' needs a kubeconfig"):
        parse_settings("local", {"context": "x"}, AdapterContext(), env)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"bogus": 1}, "unknown settings"),
        ({"kubeconfig": "/no/such/kubeconfig"}, "no such file"),
        ({"kubeconfig": 3}, "file path"),
        ({"context": ""}, "context"),
        ({"cluster_id": "has space"}, "cluster_id"),
        ({"cluster_id": ""}, "cluster_id"),
        ({"namespaces": "shop"}, "namespaces"),
        ({"namespaces": []}, "namespaces"),
        ({"namespaces": ["Shop"]}, "namespace name"),
        ({"namespaces": ["a", "a"]}, "twice"),
        ({"namespace_selector": "a in ()"}, "namespace_selector"),
        ({"namespace_selector": ""}, "namespace_selector"),
        ({"qps": 0}, "qps"),
        ({"qps": "fast"}, "qps"),
        ({"burst": 0}, "burst"),
        ({"burst": 1.5}, "burst"),
        ({"domain": "not a domain"}, "domain"),
        ({"max_response_bytes": 512}, "'max_response_bytes' must be a whole number >= 1024"),
        ({"max_response_bytes": 1.5e6}, "'max_response_bytes' must be a whole number"),
    ],
)
def test_bad_settings_name_the_registry(
    kubeconfig: Path, settings: dict[str, Any], message: str
) -> None:
    values = {"kubeconfig": str(kubeconfig), **settings}
    with pytest.raises(ConfigError, match=message) as caught:
        parse_settings("east", values, AdapterContext())
    assert "registry 'east' (kubernetes)" in str(caught.value)


def test_a_registry_name_that_is_no_cluster_id_needs_one(kubeconfig: Path) -> None:
    with pytest.raises(ConfigError, match="registry name"):
        parse_settings("east/1", {"kubeconfig": str(kubeconfig)}, AdapterContext())
    settings = parse_settings("east/1", {"kubeconfig": str(kubeconfig), "cluster_id": "e1"})
    assert settings.cluster_id == "e1"


def test_node_locality_parsing() -> None:
    assert parse_node(node("n", {})) == NodeLocality()
    with pytest.raises(ObjectError):
        parse_node({"metadata": {"name": "n", "labels": {"a": 1}}})
