"""Clusters and ClusterLoadAssignments, rule by rule against istiod
(networking/core/cluster.go, cluster_builder.go, cluster_traffic_policy.go,
xds/endpoints/endpoint_builder.go)."""

from __future__ import annotations

import logging

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from registryd.build.clusters import (
    MAX_WEIGHT,
    BuildOptions,
    blackhole_cluster,
    build_cla,
    build_cluster,
    passthrough_cluster,
)
from registryd.model import AUTO, Health, Port, Resolution
from registryd.xds import resources as res
from tests.unit.factories import ep, svc

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
NO_UNHEALTHY = BuildOptions(send_unhealthy=False)


def addresses(cluster: cluster_pb2.Cluster) -> list[tuple[str, int]]:
    return [
        (lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value)
        for group in cluster.load_assignment.endpoints
        for lb in group.lb_endpoints
    ]


def built(*args: object, **kwargs: object) -> cluster_pb2.Cluster:
    cluster = build_cluster(*args, **kwargs)  # type: ignore[arg-type]
    assert cluster is not None
    return cluster


def test_names() -> None:
    assert res.cluster_name("a.example", 80) == "outbound|80||a.example"
    assert res.listener_name("0.0.0.0", 80) == "0.0.0.0_80"
    assert res.grpc_listener_name("a.example", 80) == "a.example:80"


# -- load balancing: cluster_traffic_policy.go applyLoadBalancer / defaultLBAlgorithm ----
def test_default_lb_algorithm_is_least_request_for_eds_and_dns_clusters() -> None:
    assert built(svc(), Port(number=8080)).lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    dns = svc(resolution=Resolution.DNS)
    assert built(dns, Port(number=8080), [ep()]).lb_policy == cluster_pb2.Cluster.LEAST_REQUEST


def test_apply_load_balancer_original_dst_is_cluster_provided() -> None:
    cluster = built(svc(resolution=Resolution.NONE), Port(number=8080))
    assert cluster.type == cluster_pb2.Cluster.ORIGINAL_DST
    assert cluster.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED


def test_apply_load_balancer_panic_threshold_zero_while_unhealthy_endpoints_are_sent() -> None:
    assert built(svc(), Port(number=8080)).common_lb_config.HasField("healthy_panic_threshold")
    quiet = built(svc(), Port(number=8080), options=NO_UNHEALTHY)
    assert not quiet.common_lb_config.HasField("healthy_panic_threshold")


def test_default_circuit_breakers_are_unlimited_and_track_nothing() -> None:
    (thresholds,) = built(svc(), Port(number=8080)).circuit_breakers.thresholds
    assert thresholds.max_connections.value == MAX_WEIGHT
    assert thresholds.max_requests.value == MAX_WEIGHT
    assert not thresholds.track_remaining  # as istiod's getDefaultCircuitBreakerThresholds


# -- discovery type: cluster.go convertResolution ------------------------------------------
def test_convert_resolution_static_is_eds_over_ads() -> None:
    cluster = built(svc(), Port(number=8080))
    assert cluster.type == cluster_pb2.Cluster.EDS
    assert cluster.eds_cluster_config.eds_config.HasField("ads")
    assert cluster.connect_timeout.seconds == 10


def test_convert_resolution_dns_is_strict_dns_and_round_robin_logical_dns() -> None:
    endpoints = [ep(address="b.example", port=80), ep(address="a.example", port=80)]
    strict = built(svc(resolution=Resolution.DNS), Port(number=8080), endpoints)
    assert strict.type == cluster_pb2.Cluster.STRICT_DNS
    assert strict.respect_dns_ttl
    logical = built(svc(resolution=Resolution.DNS_ROUND_ROBIN), Port(number=8080), endpoints)
    assert logical.type == cluster_pb2.Cluster.LOGICAL_DNS
    assert addresses(logical) == [("b.example", 80)]  # LOGICAL_DNS takes the first only


def test_build_outbound_clusters_skips_alias_services_and_udp_ports() -> None:
    assert build_cluster(svc(alias_for="b.example"), Port(number=8080)) is None
    assert build_cluster(svc(), Port(number=53, protocol="UDP")) is None


# -- DNS endpoints: cluster_builder.go buildCluster ----------------------------------------
def test_build_cluster_dns_endpoints_grouped_by_locality_with_weights() -> None:
    endpoints = [
        ep(address="a.example", port=80, locality="us/east", weight=3),
        ep(address="b.example", port=80, locality="us/east", weight=2),
        ep(address="c.example", port=81, locality="eu", weight=5),
    ]
    cluster = built(svc(resolution=Resolution.DNS), Port(number=8080), endpoints)
    groups = cluster.load_assignment.endpoints
    assert [(g.locality.region, g.locality.zone) for g in groups] == [("eu", ""), ("us", "east")]
    assert [g.load_balancing_weight.value for g in groups] == [5, 5]
    assert [lb.load_balancing_weight.value for lb in groups[1].lb_endpoints] == [3, 2]
    assert addresses(cluster) == [("c.example", 81), ("a.example", 80), ("b.example", 80)]


def test_build_cluster_dns_without_endpoints_is_dropped() -> None:
    # a DNS ServiceEntry whose workloadSelector selects nothing: istiod returns nil
    assert build_cluster(svc(resolution=Resolution.DNS), Port(number=8080), []) is None


def test_build_cluster_dns_leaves_out_unhealthy_endpoints_when_not_sent() -> None:
    endpoints = [ep(address="a.example", health=Health.UNHEALTHY)]
    dns = svc(resolution=Resolution.DNS)
    assert build_cluster(dns, Port(number=8080), endpoints, NO_UNHEALTHY) is None
    assert build_cluster(dns, Port(number=8080), endpoints) is not None


# -- passthrough: cluster_builder.go buildCluster PassthroughTargetPorts --------------------
def test_passthrough_target_port_overrides_the_original_destination_port() -> None:
    port = Port(number=8080, target_port=9090)
    cluster = built(svc(resolution=Resolution.NONE), port)
    assert cluster.original_dst_lb_config.upstream_port_override.value == 9090
    plain = built(svc(resolution=Resolution.NONE), Port(number=8080))
    assert not plain.HasField("original_dst_lb_config")


# -- upstream protocol: cluster_builder.go setUpstreamProtocol -----------------------------
@pytest.mark.parametrize("protocol", ["HTTP2", "GRPC", "GRPC-WEB"])
def test_set_upstream_protocol_http2_ports(protocol: str) -> None:
    cluster = built(svc(), Port(number=8080, protocol=protocol))
    options = http_protocol_options_pb2.HttpProtocolOptions()
    cluster.typed_extension_protocol_options[HTTP_OPTIONS].Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")


def test_set_upstream_protocol_auto_uses_downstream_protocol() -> None:
    cluster = built(svc(), Port(number=8080, protocol=AUTO))
    options = http_protocol_options_pb2.HttpProtocolOptions()
    cluster.typed_extension_protocol_options[HTTP_OPTIONS].Unpack(options)
    config = options.use_downstream_protocol_config
    assert config.HasField("http_protocol_options") and config.HasField("http2_protocol_options")


@pytest.mark.parametrize("protocol", ["HTTP", "TCP", "TLS", "HTTPS"])
def test_set_upstream_protocol_leaves_http1_and_tcp_alone(protocol: str) -> None:
    assert not built(svc(), Port(number=8080, protocol=protocol)).typed_extension_protocol_options


def test_default_passthrough_and_blackhole_clusters() -> None:
    passthrough = passthrough_cluster()
    assert passthrough.name == "PassthroughCluster"
    assert passthrough.type == cluster_pb2.Cluster.ORIGINAL_DST
    assert passthrough.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED
    blackhole = blackhole_cluster()
    assert (blackhole.name, blackhole.type) == ("BlackHoleCluster", cluster_pb2.Cluster.STATIC)
    assert not blackhole.HasField("load_assignment")


# -- EDS: endpoint_builder.go generate / filterIstioEndpoint -------------------------------
def test_cla_groups_by_locality_with_summed_weights() -> None:
    endpoints = [
        ep(address="10.0.0.2", locality="us/east/1", weight=2),
        ep(address="10.0.0.1", locality="us/east/1", weight=3),
        ep(address="10.0.0.3", locality="eu/west", weight=1),
    ]
    cla = build_cla("c", endpoints)
    assert cla.cluster_name == "c"
    regions = [(g.locality.region, g.locality.zone, g.locality.sub_zone) for g in cla.endpoints]
    assert regions == [("eu", "west", ""), ("us", "east", "1")]
    assert [g.load_balancing_weight.value for g in cla.endpoints] == [1, 5]
    us = cla.endpoints[1].lb_endpoints
    # within a locality, the order given (istiod keeps its registry's order)
    assert [lb.endpoint.address.socket_address.address for lb in us] == ["10.0.0.2", "10.0.0.1"]
    assert [lb.load_balancing_weight.value for lb in us] == [2, 3]


def test_cla_without_locality_still_has_the_locality_field() -> None:
    (group,) = build_cla("c", [ep()]).endpoints
    assert group.HasField("locality")


def test_add_uint32_clamps_a_locality_weight_sum_past_2_32(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoints = [
        ep(address="10.0.0.1", weight=MAX_WEIGHT),
        ep(address="10.0.0.2", weight=MAX_WEIGHT),
        ep(address="10.0.0.3", weight=2**40),
    ]
    with caplog.at_level(logging.WARNING, "registryd.push"):
        (group,) = build_cla("c", endpoints).endpoints
    assert group.load_balancing_weight.value == MAX_WEIGHT
    assert [lb.load_balancing_weight.value for lb in group.lb_endpoints] == [MAX_WEIGHT] * 3
    assert "clamped" in caplog.text
    group.SerializeToString()  # fits the wire types


def test_filter_istio_endpoint_health() -> None:
    endpoints = [
        ep(address="10.0.0.1", health=Health.HEALTHY),
        ep(address="10.0.0.2", health=Health.UNHEALTHY),
        ep(address="10.0.0.3", health=Health.DRAINING),
    ]
    (group,) = build_cla("c", endpoints).endpoints
    assert [lb.health_status for lb in group.lb_endpoints] == [
        health_check_pb2.HEALTHY,
        health_check_pb2.UNHEALTHY,
    ]  # draining endpoints are never sent without persistent sessions
    (group,) = build_cla("c", endpoints, NO_UNHEALTHY).endpoints
    assert [lb.health_status for lb in group.lb_endpoints] == [health_check_pb2.HEALTHY]


def test_cla_leaves_out_non_ip_addresses() -> None:
    endpoints = [ep(address="vm.example"), ep(address="10.0.0.1")]
    (group,) = build_cla("c", endpoints).endpoints
    assert [lb.endpoint.address.socket_address.address for lb in group.lb_endpoints] == ["10.0.0.1"]


def test_eds_clusters_name_their_service_and_wait_for_no_first_answer() -> None:
    cluster = built(svc(), Port(number=8080))
    assert cluster.eds_cluster_config.service_name == cluster.name
    source = cluster.eds_cluster_config.eds_config
    assert source.HasField("initial_fetch_timeout") and source.initial_fetch_timeout.seconds == 0


def test_dns_clusters_resolve_with_cares_and_jitter() -> None:
    from envoy.extensions.network.dns_resolver.cares.v3 import cares_dns_resolver_pb2

    service = svc("db.example", resolution=Resolution.DNS)
    cluster = built(service, Port(number=8080), [ep("db.example", "db.internal")])
    assert cluster.dns_jitter.nanos == 100_000_000
    assert cluster.typed_dns_resolver_config.name == "envoy.network.dns_resolver.cares"
    cares = cares_dns_resolver_pb2.CaresDnsResolverConfig()
    cluster.typed_dns_resolver_config.typed_config.Unpack(cares)
    assert cares.udp_max_queries.value == 100


def test_passthrough_uses_the_downstream_protocol_and_an_idle_timeout() -> None:
    options = http_protocol_options_pb2.HttpProtocolOptions()
    packed = passthrough_cluster().typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    packed.Unpack(options)
    assert options.common_http_protocol_options.idle_timeout.seconds == 300
    assert options.HasField("use_downstream_protocol_config")


def test_endpoints_whose_source_says_nothing_of_health_are_served_unknown() -> None:
    # istiod leaves a ServiceEntry endpoint's HealthStatus unset: Envoy's UNKNOWN (healthy)
    (group,) = build_cla("c", [ep(health=Health.UNKNOWN)]).endpoints
    (lb,) = group.lb_endpoints
    assert lb.health_status == health_check_pb2.UNKNOWN
