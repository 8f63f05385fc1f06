"""Clusters and ClusterLoadAssignments for Envoy, as istiod builds them for a sidecar.

Pure functions of the model.  The rules and the istiod code they follow:

* discovery type by resolution (networking/core/cluster.go ``convertResolution``):
  STATIC → EDS over ADS, DNS → STRICT_DNS, DNS_ROUND_ROBIN → LOGICAL_DNS, NONE →
  ORIGINAL_DST; ALIAS services and UDP ports get no cluster
  (cluster.go ``buildOutboundClusters``);
* load balancing (cluster_traffic_policy.go ``applyLoadBalancer``,
  ``defaultLBAlgorithm``): LEAST_REQUEST, ORIGINAL_DST clusters CLUSTER_PROVIDED; the
  panic threshold is 0 while unhealthy endpoints are sent;
* DNS clusters carry their endpoints inline, grouped by locality with locality and
  endpoint weights like EDS, and are not built at all without endpoints
  (cluster_builder.go ``buildCluster``);
* ORIGINAL_DST clusters of a port with a ``target_port`` override the destination port
  (``buildCluster``, ``PassthroughTargetPorts``), which only ServiceEntries set, as in
  istiod (serviceentry/conversion.go ``convertServices``): a headless Kubernetes
  Service's ports carry none;
* upstream protocol (cluster_builder.go ``setUpstreamProtocol``): HTTP2, GRPC and
  GRPC-WEB ports speak HTTP/2; ports with no declared protocol use the downstream one;
* default circuit breakers (cluster_traffic_policy.go ``getDefaultCircuitBreakerThresholds``:
  every threshold at its maximum, nothing tracked);
* EDS clusters name their service (``eds_cluster_config.service_name``, the cluster's
  name) and wait for no first answer (``initial_fetch_timeout: 0s``: cluster_builder.go
  ``buildCluster``, ``ConfigSource`` of ``buildDefaultCluster``);
* DNS clusters resolve with c-ares at most 100 UDP queries at once and a 100 ms jitter
  (cluster_builder.go ``setDNSConfig``: ``PILOT_DNS_CARES_UDP_MAX_QUERIES``,
  ``PILOT_DNS_JITTER_DURATION`` defaults);
* ``PassthroughCluster`` uses the downstream protocol and closes idle connections after
  300 s (``buildDefaultPassthroughCluster``, ``passthroughHttpProtocolOptions``);
* endpoints (xds/endpoints/endpoint_builder.go ``filterIstioEndpoint``, ``generate``):
  UNHEALTHY endpoints are sent only while :attr:`BuildOptions.send_unhealthy`, DRAINING
  ones never; locality weights are sums clamped to 2^32-1 (``addUint32``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.network.dns_resolver.cares.v3 import cares_dns_resolver_pb2 as cares_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as http_options_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from registryd.build.pieces import ads, in_eds, pack, socket
from registryd.model import (
    AUTO,
    HTTP2_PROTOCOLS,
    Endpoint,
    Health,
    Port,
    Resolution,
    Service,
)
from registryd.xds.resources import BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER, cluster_name

__all__ = [
    "MAX_WEIGHT",
    "BuildOptions",
    "blackhole_cluster",
    "build_cla",
    "build_cluster",
    "locality_endpoints",
    "passthrough_cluster",
    "served_endpoints",
]

log = logging.getLogger("registryd.push")

MAX_WEIGHT = 2**32 - 1
_HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_CONNECT_TIMEOUT = duration_pb2.Duration(seconds=10)  # MeshConfig connectTimeout default
_DNS_JITTER = duration_pb2.Duration(nanos=100_000_000)  # PILOT_DNS_JITTER_DURATION default
_DNS_UDP_MAX_QUERIES = 100  # PILOT_DNS_CARES_UDP_MAX_QUERIES default
_PASSTHROUGH_IDLE = duration_pb2.Duration(seconds=300)
_DNS_REFRESH = duration_pb2.Duration(seconds=60)  # MeshConfig dnsRefreshRate default
_HEALTH = {
    Health.HEALTHY: health_check_pb2.HEALTHY,
    Health.UNHEALTHY: health_check_pb2.UNHEALTHY,
    Health.DRAINING: health_check_pb2.DRAINING,
    Health.UNKNOWN: health_check_pb2.UNKNOWN,  # served as healthy; the proto's default
}


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildOptions:
    """Process-wide switches of the resource builders, istiod's feature flags.

    ``send_unhealthy``: UNHEALTHY endpoints are sent (marked unhealthy) rather than left
    out, and clusters disable Envoy's panic threshold so they never get traffic.  istiod:
    ``PILOT_SEND_UNHEALTHY_ENDPOINTS`` (default false) or
    ``PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS`` (default true), features/experimental.go.
    The daemon reads those into :class:`~registryd.daemon.config.Settings`
    (:func:`registryd.daemon.configure.send_unhealthy`) and hands them here: the builders never
    read the environment.
    """

    send_unhealthy: bool = True


DEFAULT_OPTIONS = BuildOptions()


def served_endpoints(endpoints: Iterable[Endpoint], options: BuildOptions) -> list[Endpoint]:
    """The endpoints a proxy is sent (endpoint_builder.go ``filterIstioEndpoint``)."""
    out = []
    for e in endpoints:
        if e.health is Health.DRAINING:
            continue
        if e.health is Health.UNHEALTHY and not options.send_unhealthy:
            continue
        out.append(e)
    return out


def _weight(e: Endpoint) -> int:
    return min(max(e.weight, 1), MAX_WEIGHT)


def locality_endpoints(
    endpoints: Iterable[Endpoint], name: str = ""
) -> list[endpoint_components_pb2.LocalityLbEndpoints]:
    """Group endpoints by locality (sorted); within a locality endpoints keep the order
    given (the merge's: shards in precedence order, each in its adapter's order), as
    istiod's EndpointBuilder.generate keeps its shards' order.  Each locality weighs the
    sum of its endpoints' weights, clamped to 2^32-1 with a warning as istiod does."""
    groups: dict[tuple[str, str, str], list[Endpoint]] = {}
    for e in endpoints:
        key = (e.locality.region, e.locality.zone, e.locality.subzone)
        groups.setdefault(key, []).append(e)
    result = []
    for (region, zone, subzone), members in sorted(groups.items()):
        weights = [_weight(e) for e in members]
        total = sum(weights)
        if total > MAX_WEIGHT:
            log.warning(
                "cluster %s: locality %r weighs %d, more than 2^32-1; clamped",
                name,
                "/".join((region, zone, subzone)),
                total,
            )
            total = MAX_WEIGHT
        lb = [
            endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(address=socket(e.address, e.port)),
                health_status=_HEALTH[e.health],
                load_balancing_weight=wrappers_pb2.UInt32Value(value=weight),
            )
            for e, weight in zip(members, weights, strict=True)
        ]
        result.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                # grpc clients reject a locality group without the field, even empty
                locality=base_pb2.Locality(region=region, zone=zone, sub_zone=subzone),
                lb_endpoints=lb,
                load_balancing_weight=wrappers_pb2.UInt32Value(value=total),
            )
        )
    return result


def build_cla(
    name: str, endpoints: Iterable[Endpoint], options: BuildOptions = DEFAULT_OPTIONS
) -> endpoint_pb2.ClusterLoadAssignment:
    """EDS for one cluster.  Endpoints that are not IP addresses are left out (Envoy would
    reject the whole assignment); an empty assignment is valid and clears the cluster."""
    usable = [e for e in served_endpoints(endpoints, options) if in_eds(e)]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name, endpoints=locality_endpoints(usable, name)
    )


@functools.cache
def _circuit_breakers() -> circuit_breaker_pb2.CircuitBreakers:
    """istiod's unlimited thresholds (one shared message: copied into each cluster)."""
    unlimited = wrappers_pb2.UInt32Value(value=MAX_WEIGHT)
    return circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            circuit_breaker_pb2.CircuitBreakers.Thresholds(
                max_connections=unlimited,
                max_pending_requests=unlimited,
                max_requests=unlimited,
                max_retries=unlimited,
            )
        ]
    )


def _upstream_protocol(cluster: cluster_pb2.Cluster, port: Port) -> None:
    if port.protocol in HTTP2_PROTOCOLS:
        config = http_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
        options = http_options_pb2.HttpProtocolOptions(explicit_http_config=config)
    elif port.protocol == AUTO:
        downstream = http_options_pb2.HttpProtocolOptions.UseDownstreamHttpConfig(
            http_protocol_options=protocol_pb2.Http1ProtocolOptions(),
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions(),
        )
        options = http_options_pb2.HttpProtocolOptions(use_downstream_protocol_config=downstream)
    else:
        return
    cluster.typed_extension_protocol_options[_HTTP_OPTIONS_KEY].CopyFrom(pack(options))


def build_cluster(
    service: Service,
    port: Port,
    endpoints: Sequence[Endpoint] = (),
    options: BuildOptions = DEFAULT_OPTIONS,
) -> cluster_pb2.Cluster | None:
    """The outbound cluster of one service port for Envoy, or ``None`` where istiod sends
    none (ALIAS services, UDP ports, DNS services without endpoints).  ``endpoints`` are
    the service's endpoints on ``port``; they matter only for the DNS kinds."""
    if service.resolution is Resolution.ALIAS or port.protocol == "UDP":
        return None
    name = cluster_name(service.hostname, port.number)
    cluster = cluster_pb2.Cluster(
        name=name,
        connect_timeout=_CONNECT_TIMEOUT,
        common_lb_config=cluster_pb2.Cluster.CommonLbConfig(),
        circuit_breakers=_circuit_breakers(),
    )
    resolution = service.resolution
    if resolution is Resolution.STATIC:
        cluster.type = cluster_pb2.Cluster.EDS
        cluster.eds_cluster_config.eds_config.CopyFrom(ads())
        cluster.eds_cluster_config.service_name = name
    elif resolution in (Resolution.DNS, Resolution.DNS_ROUND_ROBIN):
        served = served_endpoints(endpoints, options)
        if resolution is Resolution.DNS_ROUND_ROBIN:
            served = served[:1]  # one address: the first (conversion.go mergeServices…)
        if not served:
            return None
        strict = resolution is Resolution.DNS
        cluster.type = cluster_pb2.Cluster.STRICT_DNS if strict else cluster_pb2.Cluster.LOGICAL_DNS
        cluster.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
        cluster.respect_dns_ttl = True
        cluster.dns_refresh_rate.CopyFrom(_DNS_REFRESH)
        cluster.dns_jitter.CopyFrom(_DNS_JITTER)
        cares = cares_pb2.CaresDnsResolverConfig()
        cares.udp_max_queries.value = _DNS_UDP_MAX_QUERIES
        cluster.typed_dns_resolver_config.name = "envoy.network.dns_resolver.cares"
        cluster.typed_dns_resolver_config.typed_config.CopyFrom(pack(cares))
        cluster.load_assignment.cluster_name = name
        cluster.load_assignment.endpoints.extend(locality_endpoints(served, name))
    else:
        cluster.type = cluster_pb2.Cluster.ORIGINAL_DST
        if port.target_port:
            cluster.original_dst_lb_config.upstream_port_override.value = port.target_port
    if options.send_unhealthy:
        cluster.common_lb_config.healthy_panic_threshold.CopyFrom(percent_pb2.Percent(value=0))
    if cluster.type == cluster_pb2.Cluster.ORIGINAL_DST:
        cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    else:
        cluster.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
    _upstream_protocol(cluster, port)
    return cluster


def passthrough_cluster() -> cluster_pb2.Cluster:
    """``PassthroughCluster``: traffic to a destination no service claims goes where it
    was headed (cluster_builder.go ``buildDefaultPassthroughCluster``)."""
    cluster = cluster_pb2.Cluster(
        name=PASSTHROUGH_CLUSTER,
        type=cluster_pb2.Cluster.ORIGINAL_DST,
        connect_timeout=_CONNECT_TIMEOUT,
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        circuit_breakers=_circuit_breakers(),
    )
    downstream = http_options_pb2.HttpProtocolOptions.UseDownstreamHttpConfig(
        http_protocol_options=protocol_pb2.Http1ProtocolOptions(),
        http2_protocol_options=protocol_pb2.Http2ProtocolOptions(),
    )
    options = http_options_pb2.HttpProtocolOptions(
        common_http_protocol_options=protocol_pb2.HttpProtocolOptions(
            idle_timeout=_PASSTHROUGH_IDLE
        ),
        use_downstream_protocol_config=downstream,
    )
    cluster.typed_extension_protocol_options[_HTTP_OPTIONS_KEY].CopyFrom(pack(options))
    return cluster


def blackhole_cluster() -> cluster_pb2.Cluster:
    """``BlackHoleCluster``: a static cluster without endpoints; what it gets is refused
    (cluster_builder.go ``buildBlackHoleCluster``)."""
    return cluster_pb2.Cluster(
        name=BLACKHOLE_CLUSTER,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=_CONNECT_TIMEOUT,
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )
