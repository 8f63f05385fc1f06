"""Pure conversion of the merged registry model into Envoy v3 resources.

Only this module knows both the model and the Envoy protos.  Every function is pure: it
takes model values and returns a proto message; the caller serializes.  Names follow
Istio's conventions (see README):

* Cluster and ClusterLoadAssignment ``outbound|<port>||<hostname>``
* sidecar Listener ``0.0.0.0_<port>`` (bound to 0.0.0.0, or 127.0.0.1 for proxies that
  declare ``INTERCEPTION_MODE: NONE``), HTTP ports → RDS route ``<port>``, TCP → tcp_proxy
* RouteConfiguration ``<port>``: one virtual host per service, domains ``<hostname>`` and
  ``<hostname>:<port>``
* proxyless gRPC Listener ``<hostname>:<port>``: an ApiListener whose connection manager
  carries its route inline and ends with the router filter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    health_check_pb2,
    protocol_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from registryd.model import Endpoint, Health, Port, Resolution, Service, is_http, is_ip

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "build_cla",
    "build_cluster",
    "build_grpc_listener",
    "build_route_config",
    "build_sidecar_listener",
    "cluster_name",
    "grpc_listener_name",
    "in_eds",
    "short_type",
    "sidecar_listener_name",
]

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
_SHORT_TYPES = {CLUSTER_TYPE: "cds", ENDPOINT_TYPE: "eds", LISTENER_TYPE: "lds", ROUTE_TYPE: "rds"}


def short_type(type_url: str) -> str:
    """``cds``/``eds``/``lds``/``rds`` for a type URL, as istiod names types in its metrics
    and debug output (any other type: its message name, lower-cased)."""
    return _SHORT_TYPES.get(type_url, type_url.rsplit(".", 1)[-1].lower())


_HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HEALTH = {
    Health.HEALTHY: health_check_pb2.HEALTHY,
    Health.UNHEALTHY: health_check_pb2.UNHEALTHY,
    Health.DRAINING: health_check_pb2.DRAINING,
}
_CONNECT_TIMEOUT = duration_pb2.Duration(seconds=10)


def cluster_name(hostname: str, port: int) -> str:
    return f"outbound|{port}||{hostname}"


def sidecar_listener_name(port: int) -> str:
    return f"0.0.0.0_{port}"


def grpc_listener_name(hostname: str, port: int) -> str:
    return f"{hostname}:{port}"


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def in_eds(endpoint: Endpoint) -> bool:
    """Whether EDS can carry ``endpoint``: only IP addresses (see :func:`build_cla`)."""
    return is_ip(endpoint.address)


def _socket(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address, port_value=port)
    )


def _lb_endpoints(
    endpoints: Iterable[Endpoint],
) -> list[endpoint_components_pb2.LocalityLbEndpoints]:
    """Group endpoints by locality; each locality weighs the sum of its endpoints."""
    groups: dict[tuple[str, str, str], list[Endpoint]] = {}
    for e in endpoints:
        key = (e.locality.region, e.locality.zone, e.locality.subzone)
        groups.setdefault(key, []).append(e)
    result = []
    for (region, zone, subzone), members in sorted(groups.items()):
        members.sort(key=lambda e: (e.address, e.port))
        lb = [
            endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(address=_socket(e.address, e.port)),
                health_status=_HEALTH[e.health],
                load_balancing_weight=wrappers_pb2.UInt32Value(value=max(e.weight, 1)),
            )
            for e in members
        ]
        result.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                # grpc clients reject a locality group without the field, even empty
                locality=base_pb2.Locality(region=region, zone=zone, sub_zone=subzone),
                lb_endpoints=lb,
                load_balancing_weight=wrappers_pb2.UInt32Value(
                    value=sum(max(e.weight, 1) for e in members)
                ),
            )
        )
    return result


def port_endpoints(port: Port, endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    """The endpoints serving ``port`` of a service."""
    return [e for e in endpoints if e.service_port == port.number]


def build_cla(name: str, endpoints: Iterable[Endpoint]) -> endpoint_pb2.ClusterLoadAssignment:
    """EDS for one cluster.  Endpoints that are not IP addresses are left out (Envoy would
    reject the whole assignment); an empty assignment is valid and clears the cluster."""
    usable = [e for e in endpoints if in_eds(e)]
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=_lb_endpoints(usable))


def build_cluster(
    service: Service, port: Port, endpoints: Sequence[Endpoint] = ()
) -> cluster_pb2.Cluster:
    """One outbound cluster per service port.

    STATIC services are EDS clusters over ADS; DNS → STRICT_DNS and DNS_ROUND_ROBIN →
    LOGICAL_DNS with the endpoints (or the hostname itself) inline; NONE → ORIGINAL_DST.
    ``endpoints`` matters only for the DNS kinds.
    """
    name = cluster_name(service.hostname, port.number)
    cluster = cluster_pb2.Cluster(name=name, connect_timeout=_CONNECT_TIMEOUT)
    resolution = service.resolution
    if resolution is Resolution.STATIC:
        cluster.type = cluster_pb2.Cluster.EDS
        cluster.eds_cluster_config.eds_config.CopyFrom(_ads())
        cluster.lb_policy = cluster_pb2.Cluster.ROUND_ROBIN
    elif resolution in (Resolution.DNS, Resolution.DNS_ROUND_ROBIN):
        strict = resolution is Resolution.DNS
        cluster.type = cluster_pb2.Cluster.STRICT_DNS if strict else cluster_pb2.Cluster.LOGICAL_DNS
        cluster.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
        cluster.lb_policy = cluster_pb2.Cluster.ROUND_ROBIN
        targets = [(e.address, e.port) for e in endpoints] or [
            (service.hostname, port.target_port or port.number)
        ]
        if not strict:
            targets = targets[:1]  # LOGICAL_DNS takes exactly one address
        cluster.load_assignment.cluster_name = name
        group = cluster.load_assignment.endpoints.add()
        group.locality.SetInParent()
        for address, number in targets:
            group.lb_endpoints.add().endpoint.address.CopyFrom(_socket(address, number))
    else:
        cluster.type = cluster_pb2.Cluster.ORIGINAL_DST
        cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    if port.protocol in ("HTTP2", "GRPC"):
        options = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        )
        cluster.typed_extension_protocol_options[_HTTP_OPTIONS_KEY].CopyFrom(_pack(options))
    return cluster


def _router_filter() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(
        name="envoy.filters.http.router", typed_config=_pack(router_pb2.Router())
    )


def _virtual_host(
    service: Service, port: Port, domains: list[str]
) -> route_components_pb2.VirtualHost:
    return route_components_pb2.VirtualHost(
        name=f"{service.hostname}:{port.number}",
        domains=domains,
        routes=[
            route_components_pb2.Route(
                match=route_components_pb2.RouteMatch(prefix="/"),
                route=route_components_pb2.RouteAction(
                    cluster=cluster_name(service.hostname, port.number)
                ),
            )
        ],
    )


def short_names(service: Service, namespace: str = "") -> tuple[str, ...]:
    """Shorter names of a Kubernetes-style hostname ``<name>.<ns>.svc.<domain>``, as
    Kubernetes DNS resolves them: ``<name>.<ns>.svc`` and ``<name>.<ns>`` for everyone,
    and ``<name>`` too for clients in the service's own ``namespace``."""
    parts = service.hostname.split(".")
    if len(parts) < 4 or parts[2] != "svc" or parts[1] != service.namespace:
        return ()
    name, ns = parts[0], parts[1]
    own = (name,) if namespace == ns else ()
    return (f"{name}.{ns}.svc", f"{name}.{ns}", *own)


def build_route_config(
    port: int, services: Iterable[Service], namespace: str = ""
) -> route_pb2.RouteConfiguration:
    """Route ``<port>``: a virtual host for every HTTP service on that port, with domains
    ``<hostname>``, ``<hostname>:<port>`` and, for Kubernetes services, their short names
    (:func:`short_names`, for clients in ``namespace``) where no other service claims them."""
    chosen = [
        (service, p)
        for service in sorted(services, key=lambda s: s.hostname)
        if (p := service.port(port)) is not None and is_http(p.protocol)
    ]
    taken = {d for service, _ in chosen for d in (service.hostname, f"{service.hostname}:{port}")}
    hosts = []
    for service, p in chosen:
        domains = [service.hostname, f"{service.hostname}:{port}"]
        for short in short_names(service, namespace):
            for domain in (short, f"{short}:{port}"):
                if domain not in taken:
                    taken.add(domain)
                    domains.append(domain)
        hosts.append(_virtual_host(service, p, domains))
    return route_pb2.RouteConfiguration(
        name=str(port),
        virtual_hosts=hosts,
        validate_clusters=wrappers_pb2.BoolValue(value=False),
    )


def build_sidecar_listener(
    port: int, services: Sequence[Service], bind_address: str = "0.0.0.0"
) -> listener_pb2.Listener:
    """Listener ``0.0.0.0_<port>`` for the services on ``port``.

    If any service speaks HTTP on that port the listener is HTTP (RDS route ``<port>``);
    otherwise it proxies TCP to the first service by hostname (one TCP service per port).
    """
    name = sidecar_listener_name(port)
    on_port = sorted((s for s in services if s.port(port) is not None), key=lambda s: s.hostname)
    http = any(is_http(s.port(port).protocol) for s in on_port)  # type: ignore[union-attr]
    if http:
        manager = hcm_pb2.HttpConnectionManager(
            stat_prefix=name,
            rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=str(port)),
            http_filters=[_router_filter()],
        )
        filt = listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=_pack(manager)
        )
    else:
        target = on_port[0] if on_port else None
        proxy = tcp_proxy_pb2.TcpProxy(
            stat_prefix=name,
            cluster=cluster_name(target.hostname, port) if target else "BlackHoleCluster",
        )
        filt = listener_components_pb2.Filter(
            name="envoy.filters.network.tcp_proxy", typed_config=_pack(proxy)
        )
    return listener_pb2.Listener(
        name=name,
        address=_socket(bind_address, port),
        filter_chains=[listener_components_pb2.FilterChain(filters=[filt])],
    )


def build_grpc_listener(service: Service, port: Port) -> listener_pb2.Listener:
    """ApiListener ``<hostname>:<port>`` for proxyless gRPC clients (route inline)."""
    name = grpc_listener_name(service.hostname, port.number)
    vhost = route_components_pb2.VirtualHost(
        name=name,
        domains=[name, service.hostname],
        routes=[
            route_components_pb2.Route(
                match=route_components_pb2.RouteMatch(prefix=""),
                route=route_components_pb2.RouteAction(
                    cluster=cluster_name(service.hostname, port.number)
                ),
            )
        ],
    )
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        route_config=route_pb2.RouteConfiguration(name=name, virtual_hosts=[vhost]),
        http_filters=[_router_filter()],
    )
    return listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=_pack(manager))
    )
