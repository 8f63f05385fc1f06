"""Route ``<port>`` for Envoy, rule by rule against istiod (networking/core/httproute.go
BuildSidecarOutboundVirtualHosts, generateVirtualHostDomains; route/route.go
BuildDefaultHTTPOutboundRoute)."""

from __future__ import annotations

import dataclasses

from envoy.config.route.v3 import route_pb2

from registryd.build.routes import build_route_config
from registryd.model import AUTO, Port, Resolution
from tests.unit.factories import svc

K8S = "greeter.shop.svc.cluster.local"


def domains(route: route_pb2.RouteConfiguration) -> dict[str, list[str]]:
    """The services' virtual hosts (not istiod's catch-all ``allow_any``) and domains."""
    return {vh.name: list(vh.domains) for vh in route.virtual_hosts if vh.name != "allow_any"}


def test_a_virtual_host_per_http_or_sniffed_service_on_the_port() -> None:
    services = [
        svc("b.example"),
        svc("a.example", Port(number=8080, protocol=AUTO)),
        svc("tcp.example", Port(number=8080, protocol="TCP")),
        svc("other.example", Port(number=9090, protocol="HTTP")),
    ]
    route = build_route_config(8080, services)
    assert route.name == "8080"
    assert not route.validate_clusters.value
    assert list(domains(route)) == ["a.example:8080", "b.example:8080"]


def test_default_route_has_istiod_timeouts_and_retry_policy() -> None:
    vhost, _ = build_route_config(8080, [svc("a.example")]).virtual_hosts
    (route,) = vhost.routes
    assert route.name == "default"
    assert route.match.prefix == "/"
    assert route.route.cluster == "outbound|8080||a.example"
    assert route.route.timeout.ToTimedelta().total_seconds() == 0
    assert route.route.HasField("max_grpc_timeout")
    retry = route.route.retry_policy
    assert retry.num_retries.value == 2
    assert (
        retry.retry_on
        == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    )
    assert [p.name for p in retry.retry_host_predicate] == [
        "envoy.retry_host_predicates.previous_hosts"
    ]
    assert route.decorator.operation == "a.example:8080/*"


def test_vip_is_a_domain_and_ports_are_ignored_in_host_matching() -> None:
    # generateVirtualHostDomains: every address of the service, not 0.0.0.0 or a CIDR;
    # SidecarIgnorePort: no :port forms, the route ignores the port
    service = svc("a.example", addresses=("10.1.0.1", "10.2.0.0/16", "fd00::1"))
    route = build_route_config(8080, [service])
    assert route.ignore_port_in_host_matching
    assert domains(route) == {
        "a.example:8080": ["a.example", "a.example.", "10.1.0.1", "[fd00::1]"]
    }


def test_unknown_hosts_pass_through_and_attempts_are_counted() -> None:
    # buildCatchAllVirtualHost with the default ALLOW_ANY outbound traffic policy
    route = build_route_config(8080, [svc("a.example")])
    *_, catch_all = route.virtual_hosts
    assert (catch_all.name, list(catch_all.domains)) == ("allow_any", ["*"])
    assert catch_all.routes[0].route.cluster == "PassthroughCluster"
    assert all(vh.include_request_attempt_count for vh in route.virtual_hosts)
    assert route.max_direct_response_body_size_bytes.value == 1024 * 1024


def test_kubernetes_short_names_depend_on_the_proxy_namespace() -> None:
    # GenerateAltVirtualHosts
    service = svc(K8S, namespace="shop", addresses=("10.96.0.10",))
    mine = domains(build_route_config(8080, [service], "shop"))[f"{K8S}:8080"]
    theirs = domains(build_route_config(8080, [service], "other"))[f"{K8S}:8080"]
    assert "greeter" in mine and "greeter.shop" in mine and "10.96.0.10" in mine
    assert "greeter" not in theirs and "greeter.shop" in theirs and "greeter.shop.svc" in theirs


def test_headless_kubernetes_service_also_matches_pod_subdomains() -> None:
    # httproute.go generateVirtualHostDomains: Passthrough *from the Kubernetes registry*
    service = dataclasses.replace(
        svc(K8S, namespace="shop", resolution=Resolution.NONE), kubernetes=True
    )
    got = domains(build_route_config(8080, [service], "other"))[f"{K8S}:8080"]
    assert f"*.{K8S}" in got and f"*.{K8S}." in got and "*.greeter.shop" in got
    # a ServiceEntry with the same hostname and resolution NONE has no pods under it
    entry = dataclasses.replace(service, kubernetes=False)
    got = domains(build_route_config(8080, [entry], "other"))[f"{K8S}:8080"]
    assert not any(d.startswith("*") for d in got)


def test_alias_names_route_to_the_service_they_stand_for() -> None:
    # push_context.go resolveServiceAliases + generateVirtualHostDomains (Attributes.Aliases)
    target = svc(K8S, namespace="shop")
    alias = svc("legacy.shop.svc.cluster.local", namespace="shop", alias_for=K8S)
    got = domains(build_route_config(8080, [target], "shop", {K8S: [alias]}))
    assert list(got) == [f"{K8S}:8080"]  # the alias has no virtual host of its own
    assert {"legacy.shop.svc.cluster.local", "legacy", "legacy.shop"} <= set(got[f"{K8S}:8080"])


def test_a_domain_is_claimed_once_so_envoy_accepts_the_route() -> None:
    # two services sharing a VIP, and a hostname that is someone else's alias
    a = svc("a.example", addresses=("10.1.0.1",))
    b = svc("b.example", addresses=("10.1.0.1",))
    alias = svc("b.example", alias_for="a.example")
    got = domains(build_route_config(8080, [a, b], aliases={"a.example": [alias]}))
    assert got["a.example:8080"] == ["a.example", "a.example.", "10.1.0.1"]
    assert got["b.example:8080"] == ["b.example", "b.example."]
    everything = [d for ds in got.values() for d in ds]
    assert len(everything) == len(set(everything))


def test_short_names_follow_the_hostname_not_the_registry_namespace() -> None:
    # generateAltVirtualHostsForKubernetesService reads the hostname alone: a
    # ServiceEntry in "default" for x.static.svc.cluster.local still has short names
    service = svc("x.static.svc.cluster.local")  # the factory's namespace is "default"
    other = domains(build_route_config(8080, [service], "default"))
    assert other["x.static.svc.cluster.local:8080"][2:] == ["x.static", "x.static.svc"]
    home = domains(build_route_config(8080, [service], "static"))
    assert home["x.static.svc.cluster.local:8080"][2:] == ["x", "x.static.svc", "x.static"]


def test_virtual_hosts_are_ordered_by_their_names_as_istiod_sorts_them() -> None:
    # util.SortVirtualHosts compares "<hostname>:<port>": "." sorts before ":"
    short, long = svc("web.example"), svc("web.example.com")
    names = list(domains(build_route_config(8080, [short, long])))
    assert names[:2] == ["web.example.com:8080", "web.example:8080"]
