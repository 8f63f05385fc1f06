"""Resources for proxyless gRPC clients (node metadata ``GENERATOR: grpc``), as istiod's
grpc generator builds them (pilot/pkg/networking/grpcgen).

* Listener ``<name>:<port>`` (lds.go ``buildOutboundListeners``): an ApiListener whose
  HttpConnectionManager takes its routes over RDS, route ``outbound|<port>||<fqdn>``, and
  ends with the router filter.  ``<name>`` is the full hostname or, for a client in the
  service's own namespace, a short Kubernetes name (``greeter``, ``greeter.shop``,
  ``greeter.shop.svc``: lds.go ``tryFindFQDN``); the short-name listeners are placed in
  that namespace's table only, so a client elsewhere gets nothing for them.
* RouteConfiguration ``outbound|<port>||<fqdn>`` (rds.go ``buildHTTPRoute``): one virtual
  host whose domains are every name a client may dial, route ``/`` to the cluster with no
  stream timeout.
* Cluster ``outbound|<port>||<fqdn>`` (cds.go ``edsCluster``): EDS over ADS.  gRPC accepts
  only EDS, LOGICAL_DNS and aggregate clusters, so a DNS service becomes LOGICAL_DNS on its
  endpoint's hostname and port (istiod sends an empty EDS cluster there: a deliberate
  improvement); a DNS service with nothing to resolve (a workload selector that selects
  nothing) keeps istiod's EDS cluster, its assignment empty; passthrough, alias and UDP
  ports get nothing at all.  A headless Kubernetes Service is no passthrough here: its
  endpoints are its pods, and istiod's ``BuildClusters`` (cds.go) makes an EDS cluster
  of every service port whatever its resolution, so a client balances over the pods as
  over a STATIC service's.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import duration_pb2

from registryd.build.clusters import BuildOptions, served_endpoints
from registryd.build.pieces import alt_names, grpc_ads, kube_namespace, pack, router_filter, socket
from registryd.build.routes import service_domains, service_virtual_host
from registryd.model import Endpoint, Port, Resolution, Service
from registryd.xds.resources import cluster_name, grpc_listener_name

__all__ = ["build_cluster", "build_listener", "build_route", "dial_names", "eds", "serves"]

_CONNECT_TIMEOUT = duration_pb2.Duration(seconds=10)
_NO_TIMEOUT = duration_pb2.Duration(seconds=0)


def serves(service: Service, port: Port) -> bool:
    """Whether a proxyless client gets anything for this service port."""
    if port.protocol == "UDP" or service.resolution is Resolution.ALIAS:
        return False
    return service.resolution is not Resolution.NONE or service.kubernetes


def eds(service: Service) -> bool:
    """Whether a proxyless client's cluster of ``service`` takes its endpoints over EDS:
    a STATIC service's, and a headless Kubernetes Service's (its pods)."""
    return service.resolution is Resolution.STATIC or (
        service.resolution is Resolution.NONE and service.kubernetes
    )


def dial_names(service: Service) -> tuple[tuple[str, str], ...]:
    """``(name, namespace)``: the names a gRPC client may dial for ``service`` and which
    namespace's clients may (``""``: everyone the service is visible to)."""
    ns = kube_namespace(service.hostname)
    own = tuple((n, ns) for n in alt_names(service.hostname, ns))
    return ((service.hostname, ""), *own)


def build_listener(service: Service, port: Port, name: str) -> listener_pb2.Listener:
    """ApiListener ``<name>:<port>`` for a client dialing ``xds:///<name>:<port>``."""
    manager = hcm_pb2.HttpConnectionManager(
        rds=hcm_pb2.Rds(
            config_source=grpc_ads(),
            route_config_name=cluster_name(service.hostname, port.number),
        ),
        http_filters=[router_filter()],
    )
    listener = listener_pb2.Listener(
        name=grpc_listener_name(name, port.number),
        api_listener=api_listener_pb2.ApiListener(api_listener=pack(manager)),
    )
    address = next((a for a in service.addresses if "/" not in a), "0.0.0.0")
    listener.address.CopyFrom(socket(address, port.number))
    return listener


def build_route(
    service: Service, port: Port, namespace: str = "", aliases: Sequence[Service] = ()
) -> route_pb2.RouteConfiguration:
    """Route ``outbound|<port>||<hostname>`` for a client in ``namespace``: the service's
    virtual host as an Envoy sidecar's route has it (its ``aliases``' names too), with
    ``:<port>`` forms of every domain (grpcgen/rds.go ``buildHTTPRoute``:
    ``BuildSidecarOutboundVirtualHosts``, filtered to the hostname; the port is not
    ignored for proxyless clients)."""
    domains = service_domains(service, port.number, namespace, aliases, with_port=True)
    vhost = service_virtual_host(service, port.number, domains)
    return route_pb2.RouteConfiguration(
        name=cluster_name(service.hostname, port.number), virtual_hosts=[vhost]
    )


def build_cluster(
    service: Service, port: Port, endpoints: Sequence[Endpoint], options: BuildOptions
) -> cluster_pb2.Cluster | None:
    """Cluster ``outbound|<port>||<hostname>`` of a type gRPC accepts (EDS or
    LOGICAL_DNS), or ``None`` where the port gets nothing."""
    if not serves(service, port):
        return None
    name = cluster_name(service.hostname, port.number)
    served = sorted(served_endpoints(endpoints, options), key=lambda e: (e.address, e.port))
    if eds(service) or not served:  # grpcgen/cds.go edsCluster
        cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
        cluster.eds_cluster_config.eds_config.CopyFrom(grpc_ads())
        cluster.eds_cluster_config.service_name = name
        return cluster
    cluster = cluster_pb2.Cluster(name=name, connect_timeout=_CONNECT_TIMEOUT)
    target = served[0]  # gRPC resolves one name and balances over what it returns
    cluster.type = cluster_pb2.Cluster.LOGICAL_DNS
    cluster.load_assignment.cluster_name = name
    group = cluster.load_assignment.endpoints.add()
    group.locality.SetInParent()
    group.lb_endpoints.append(
        endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=socket(target.address, target.port))
        )
    )
    return cluster
