"""Model → Envoy resource conversion."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from registryd.model import Health, Port, Resolution
from registryd.xds import resources as res
from tests.unit.factories import ep, svc

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
ROUTER = "envoy.filters.http.router"


def addresses(cluster: cluster_pb2.Cluster) -> list[tuple[str, int]]:
    return [
        (lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value)
        for group in cluster.load_assignment.endpoints
        for lb in group.lb_endpoints
    ]


def test_names() -> None:
    assert res.cluster_name("a.example", 80) == "outbound|80||a.example"
    assert res.sidecar_listener_name(80) == "0.0.0.0_80"
    assert res.grpc_listener_name("a.example", 80) == "a.example:80"


def test_cla_groups_by_locality_with_summed_weights() -> None:
    endpoints = [
        ep(address="10.0.0.2", locality="r1/z1", weight=3),
        ep(address="10.0.0.1", locality="r1/z1", weight=0),  # counts as 1
        ep(address="10.0.1.1", locality="r2/z2/s2", weight=5),
    ]
    cla = res.build_cla("c", endpoints)
    assert cla.cluster_name == "c"
    groups = {(g.locality.region, g.locality.zone, g.locality.sub_zone): g for g in cla.endpoints}
    assert set(groups) == {("r1", "z1", ""), ("r2", "z2", "s2")}
    r1 = groups[("r1", "z1", "")]
    assert r1.load_balancing_weight.value == 4
    assert [lb.load_balancing_weight.value for lb in r1.lb_endpoints] == [1, 3]
    assert [lb.endpoint.address.socket_address.address for lb in r1.lb_endpoints] == [
        "10.0.0.1",
        "10.0.0.2",
    ]
    assert groups[("r2", "z2", "s2")].load_balancing_weight.value == 5


def test_cla_without_locality_still_has_the_locality_field() -> None:
    (group,) = res.build_cla("c", [ep()]).endpoints
    assert group.HasField("locality")


def test_cla_health_mapping() -> None:
    endpoints = [
        ep(address="10.0.0.1", health=Health.HEALTHY),
        ep(address="10.0.0.2", health=Health.UNHEALTHY),
        ep(address="10.0.0.3", health=Health.DRAINING),
    ]
    (group,) = res.build_cla("c", endpoints).endpoints
    assert [lb.health_status for lb in group.lb_endpoints] == [
        health_check_pb2.HEALTHY,
        health_check_pb2.UNHEALTHY,
        health_check_pb2.DRAINING,
    ]


def test_cla_leaves_out_non_ip_addresses() -> None:
    endpoints = [ep(address="vm.example"), ep(address="10.0.0.1"), ep(address="fd00::1")]
    (group,) = res.build_cla("c", endpoints).endpoints
    got = sorted(lb.endpoint.address.socket_address.address for lb in group.lb_endpoints)
    assert got == ["10.0.0.1", "fd00::1"]
    assert res.build_cla("c", [ep(address="vm.example")]).endpoints == []


def test_port_endpoints_selects_by_service_port() -> None:
    on_80 = ep(service_port=80)
    assert res.port_endpoints(Port(number=80), [on_80, ep(service_port=81)]) == [on_80]


def test_static_cluster_is_eds_over_ads() -> None:
    cluster = res.build_cluster(svc(), Port(number=8080, protocol="HTTP"), [ep()])
    assert cluster.name == "outbound|8080||a.example"
    assert cluster.type == cluster_pb2.Cluster.EDS
    assert cluster.eds_cluster_config.eds_config.HasField("ads")
    assert not cluster.HasField("load_assignment")
    assert cluster.connect_timeout.seconds > 0


def test_dns_cluster_is_strict_dns_with_inline_endpoints() -> None:
    service = svc(resolution=Resolution.DNS)
    port = Port(number=8080)
    endpoints = [ep(address="vm1.example", port=9000), ep(address="10.0.0.2", port=9001)]
    cluster = res.build_cluster(service, port, endpoints)
    assert cluster.type == cluster_pb2.Cluster.STRICT_DNS
    assert cluster.load_assignment.cluster_name == cluster.name
    assert addresses(cluster) == [("vm1.example", 9000), ("10.0.0.2", 9001)]


def test_dns_cluster_without_endpoints_resolves_the_hostname() -> None:
    service = svc(resolution=Resolution.DNS)
    assert addresses(res.build_cluster(service, Port(number=443))) == [("a.example", 443)]
    mapped = Port(number=443, target_port=8443)
    assert addresses(res.build_cluster(service, mapped)) == [("a.example", 8443)]


def test_dns_round_robin_is_logical_dns_with_one_address() -> None:
    service = svc(resolution=Resolution.DNS_ROUND_ROBIN)
    endpoints = [ep(address="one.example"), ep(address="two.example")]
    cluster = res.build_cluster(service, Port(number=8080), endpoints)
    assert cluster.type == cluster_pb2.Cluster.LOGICAL_DNS
    assert addresses(cluster) == [("one.example", 9000)]
    bare = res.build_cluster(service, Port(number=8080))
    assert addresses(bare) == [("a.example", 8080)]


def test_resolution_none_is_original_dst() -> None:
    cluster = res.build_cluster(svc(resolution=Resolution.NONE), Port(number=8080), [ep()])
    assert cluster.type == cluster_pb2.Cluster.ORIGINAL_DST
    assert cluster.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED
    assert not cluster.HasField("load_assignment")


def test_grpc_and_http2_ports_get_http2_options() -> None:
    for protocol in ("grpc", "HTTP2"):
        cluster = res.build_cluster(svc(), Port(number=8080, protocol=protocol))
        packed = cluster.typed_extension_protocol_options[HTTP_OPTIONS]
        options = http_protocol_options_pb2.HttpProtocolOptions()
        assert packed.Unpack(options)
        assert options.explicit_http_config.HasField("http2_protocol_options")
    for protocol in ("HTTP", "TCP"):
        cluster = res.build_cluster(svc(), Port(number=8080, protocol=protocol))
        assert HTTP_OPTIONS not in cluster.typed_extension_protocol_options


def only_filter(listener: listener_pb2.Listener) -> tuple[str, object]:
    (chain,) = listener.filter_chains
    (filt,) = chain.filters
    return filt.name, filt.typed_config


def test_tcp_only_port_gets_tcp_proxy_to_first_service() -> None:
    services = [svc("b.example", Port(number=5432)), svc("a.example", Port(number=5432))]
    listener = res.build_sidecar_listener(5432, services)
    assert listener.name == "0.0.0.0_5432"
    assert listener.address.socket_address.port_value == 5432
    name, typed = only_filter(listener)
    assert name == "envoy.filters.network.tcp_proxy"
    proxy = tcp_proxy_pb2.TcpProxy()
    assert typed.Unpack(proxy)  # type: ignore[attr-defined]
    assert proxy.cluster == "outbound|5432||a.example"


def test_http_port_gets_hcm_with_rds_and_router_last() -> None:
    services = [
        svc("a.example", Port(number=80, protocol="TCP")),
        svc("b.example", Port(number=80, protocol="http")),
    ]
    listener = res.build_sidecar_listener(80, services, "127.0.0.1")
    assert listener.address.socket_address.address == "127.0.0.1"
    name, typed = only_filter(listener)
    assert name == "envoy.filters.network.http_connection_manager"
    manager = hcm_pb2.HttpConnectionManager()
    assert typed.Unpack(manager)  # type: ignore[attr-defined]
    assert manager.rds.route_config_name == "80"
    assert manager.rds.config_source.HasField("ads")
    assert manager.http_filters[-1].name == ROUTER


def test_route_config_has_a_virtual_host_per_http_service() -> None:
    services = [
        svc("b.example", Port(number=80, protocol="HTTP")),
        svc("a.example", Port(number=80, protocol="GRPC")),
        svc("c.example", Port(number=80, protocol="TCP")),
        svc("d.example", Port(number=81, protocol="HTTP")),
    ]
    route = res.build_route_config(80, services)
    assert route.name == "80"
    assert [vh.name for vh in route.virtual_hosts] == ["a.example:80", "b.example:80"]
    vhost = route.virtual_hosts[0]
    assert list(vhost.domains) == ["a.example", "a.example:80"]
    assert vhost.routes[0].route.cluster == "outbound|80||a.example"


def test_grpc_api_listener_routes_inline_and_ends_with_router() -> None:
    listener = res.build_grpc_listener(svc("a.example"), Port(number=8080, protocol="GRPC"))
    assert listener.name == "a.example:8080"
    manager = hcm_pb2.HttpConnectionManager()
    assert listener.api_listener.api_listener.Unpack(manager)
    assert manager.http_filters[-1].name == ROUTER
    (vhost,) = manager.route_config.virtual_hosts
    assert set(vhost.domains) == {"a.example:8080", "a.example"}
    assert vhost.routes[0].route.cluster == "outbound|8080||a.example"
