"""Proxyless gRPC resources, rule by rule against istiod's grpc generator
(pilot/pkg/networking/grpcgen: lds.go, rds.go, cds.go)."""

from __future__ import annotations

import dataclasses

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from registryd.build import grpcgen
from registryd.build.clusters import BuildOptions
from registryd.model import Health, Port, Resolution
from tests.unit.factories import ep, svc

K8S = "greeter.shop.svc.cluster.local"
OPTIONS = BuildOptions()
GRPC = Port(number=7070, name="grpc", protocol="GRPC")


def test_build_outbound_listeners_api_listener_takes_routes_over_rds() -> None:
    listener = grpcgen.build_listener(svc(K8S, GRPC, namespace="shop"), GRPC, "greeter")
    assert listener.name == "greeter:7070"
    manager = hcm_pb2.HttpConnectionManager()
    listener.api_listener.api_listener.Unpack(manager)
    assert manager.rds.route_config_name == f"outbound|7070||{K8S}"
    assert manager.rds.config_source.HasField("ads")
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.router"]


def test_try_find_fqdn_short_names_are_for_the_services_own_namespace() -> None:
    names = grpcgen.dial_names(svc(K8S, GRPC, namespace="shop"))
    assert names == (
        (K8S, ""),
        ("greeter.shop.svc", "shop"),
        ("greeter.shop", "shop"),
        ("greeter", "shop"),
    )
    assert grpcgen.dial_names(svc("a.example", GRPC)) == (("a.example", ""),)


def test_build_http_route_one_virtual_host_for_every_dialable_name() -> None:
    # grpcgen/rds.go buildHTTPRoute: the sidecar's virtual host, with :<port> forms
    service = svc(K8S, GRPC, namespace="shop")
    route = grpcgen.build_route(service, GRPC, "shop")
    assert route.name == f"outbound|7070||{K8S}"
    (vhost,) = route.virtual_hosts
    assert list(vhost.domains) == [
        K8S, f"{K8S}:7070", f"{K8S}.", f"{K8S}.:7070",
        "greeter", "greeter:7070", "greeter.shop.svc", "greeter.shop.svc:7070",
        "greeter.shop", "greeter.shop:7070",
    ]  # fmt: skip
    elsewhere = grpcgen.build_route(service, GRPC, "default").virtual_hosts[0].domains
    assert "greeter" not in elsewhere and "greeter.shop:7070" in elsewhere
    (default,) = vhost.routes
    assert default.route.cluster == f"outbound|7070||{K8S}"
    assert default.route.max_grpc_timeout.seconds == 0 and default.route.HasField("retry_policy")
    assert vhost.include_request_attempt_count


def test_eds_cluster_for_static_services() -> None:
    cluster = grpcgen.build_cluster(svc("a.example", GRPC), GRPC, [ep()], OPTIONS)
    assert cluster is not None
    assert cluster.type == cluster_pb2.Cluster.EDS
    assert cluster.eds_cluster_config.service_name == "outbound|7070||a.example"
    assert cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN  # what every gRPC accepts


def test_dns_service_is_logical_dns_on_its_endpoint_name() -> None:
    service = svc("ext.example", GRPC, resolution=Resolution.DNS)
    endpoints = [ep("ext.example", "localhost", port=50051, service_port=7070)]
    cluster = grpcgen.build_cluster(service, GRPC, endpoints, OPTIONS)
    assert cluster is not None
    assert cluster.type == cluster_pb2.Cluster.LOGICAL_DNS
    (group,) = cluster.load_assignment.endpoints
    assert group.HasField("locality")
    (lb,) = group.lb_endpoints
    address = lb.endpoint.address.socket_address
    assert (address.address, address.port_value) == ("localhost", 50051)


def test_headless_kubernetes_service_is_an_eds_cluster_of_its_pods() -> None:
    # grpcgen/cds.go BuildClusters: an EDS cluster for every port, whatever the resolution
    headless = dataclasses.replace(svc(K8S, GRPC, resolution=Resolution.NONE), kubernetes=True)
    assert grpcgen.serves(headless, GRPC) and grpcgen.eds(headless)
    pods = [ep(K8S, "10.4.0.1", service_port=7070)]
    cluster = grpcgen.build_cluster(headless, GRPC, pods, OPTIONS)
    assert cluster is not None and cluster.type == cluster_pb2.Cluster.EDS
    assert cluster.eds_cluster_config.service_name == f"outbound|7070||{K8S}"
    udp = Port(number=53, protocol="UDP")
    assert not grpcgen.serves(dataclasses.replace(headless, ports=(udp,)), udp)


def test_nothing_grpc_would_reject_passthrough_alias_or_udp() -> None:
    none = svc("a.example", GRPC, resolution=Resolution.NONE)
    assert grpcgen.build_cluster(none, GRPC, [ep()], OPTIONS) is None
    assert not grpcgen.serves(none, GRPC)
    alias = svc("b.example", GRPC, alias_for="a.example")
    assert grpcgen.build_cluster(alias, GRPC, [], OPTIONS) is None
    udp = Port(number=53, protocol="UDP")
    assert grpcgen.build_cluster(svc("a.example", udp), udp, [], OPTIONS) is None


def test_a_dns_service_with_nothing_to_resolve_is_an_empty_eds_cluster() -> None:
    """As istiod's (grpcgen/cds.go): the call fails for want of endpoints, not for a
    route to a cluster that does not exist."""
    dns = svc("ext.example", GRPC, resolution=Resolution.DNS)
    down = [ep("ext.example", "x.example", service_port=7070, health=Health.UNHEALTHY)]
    cluster = grpcgen.build_cluster(dns, GRPC, down, BuildOptions(send_unhealthy=False))
    assert cluster is not None and cluster.type == cluster.EDS
    assert cluster.eds_cluster_config.service_name == "outbound|7070||ext.example"
