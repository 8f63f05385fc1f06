"""RouteConfigurations for Envoy sidecars, as istiod builds route ``<port>`` (and route
``<hostname>:<port>``, :func:`build_service_route_config`).

One route configuration per port, shared by every HTTP listener chain on that port.  The
rules and the istiod code they follow (networking/core/httproute.go):

* a virtual host per service whose port speaks HTTP (HTTP, HTTP2, GRPC, GRPC-WEB) or has
  no declared protocol (sniffed as HTTP), named ``<hostname>:<port>``
  (``BuildSidecarOutboundVirtualHosts``);
* its domains (``generateVirtualHostDomains``), without ports since the route
  configuration ignores the port in Host matching (``ignore_port_in_host_matching``:
  ``SidecarIgnorePort``): the hostname and its absolute form ``<hostname>.``
  (``PILOT_ENABLE_ABSOLUTE_FQDN_VHOST_DOMAIN``, on by default), the names of the aliases
  that point at it (Kubernetes ExternalName) likewise, their Kubernetes short names
  (``GenerateAltVirtualHosts``: ``<name>``, ``<name>.<ns>.svc``, ``<name>.<ns>`` in the
  service's namespace, ``<name>.<ns>``, ``<name>.<ns>.svc`` elsewhere), ``*.``-prefixed
  forms for Kubernetes headless services, and every IP address of the service (the
  VIP, a ClusterIP).  A domain already taken by an earlier service (by hostname order)
  is left out, since Envoy rejects a route configuration with a domain twice;
* every virtual host counts request attempts (``include_request_attempt_count``), and
  the configuration ends with istiod's ``allow_any`` virtual host: any other Host goes
  to ``PassthroughCluster`` (``buildCatchAllVirtualHost``, ``ALLOW_ANY`` outbound traffic
  policy); direct responses are capped at 1 MiB (``DefaultMaxDirectResponseBodySizeBytes``);
* one route, ``default``, prefix ``/`` to the service's cluster, with istiod's defaults:
  no timeout, ``max_grpc_timeout`` 0 and the default retry policy
  (route/route.go ``BuildDefaultHTTPOutboundRoute``, route/retry/retry.go
  ``DefaultPolicy``).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from registryd.build.pieces import kube_parts, pack
from registryd.model import AUTO, Port, Resolution, Service, is_http
from registryd.xds.resources import PASSTHROUGH_CLUSTER, cluster_name

__all__ = [
    "build_route_config",
    "build_service_route_config",
    "routed_ports",
    "service_domains",
    "service_virtual_host",
]

_NO_TIMEOUT = duration_pb2.Duration(seconds=0)
_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"


def routed_ports(service: Service) -> list[Port]:
    """The ports of ``service`` that get a virtual host in route ``<port>``."""
    if service.resolution is Resolution.ALIAS:
        return []
    return [p for p in service.ports if is_http(p.protocol) or p.protocol == AUTO]


_MAX_DIRECT_RESPONSE = 1024 * 1024  # route.DefaultMaxDirectResponseBodySizeBytes


def _absolute(name: str) -> tuple[str, ...]:
    """A name and its absolute (trailing-dot) form."""
    return (name, f"{name}.")


def _kube_alt_names(hostname: str, namespace: str) -> tuple[str, ...]:
    """The short names of a Kubernetes-style hostname for a client in ``namespace``, in
    istiod's order (``generateAltVirtualHostsForKubernetesService``)."""
    parts = kube_parts(hostname)
    if parts is None:
        return ()
    name, ns, _ = parts
    if namespace == ns:
        return (name, f"{name}.{ns}.svc", f"{name}.{ns}")
    return (f"{name}.{ns}", f"{name}.{ns}.svc")


def _address_domain(address: str) -> str | None:
    """An IP address as a Host header names it (IPv6 in brackets); CIDRs and the
    unspecified address are no domain."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.is_unspecified:
        return None
    return f"[{ip}]" if ip.version == 6 else str(ip)


def service_domains(
    service: Service,
    port: int,
    namespace: str = "",
    aliases: Sequence[Service] = (),
    *,
    with_port: bool = False,
) -> list[str]:
    """Every Host a client in ``namespace`` may use for ``service``, in istiod's order
    (``generateVirtualHostDomains``): names (hostname, then each alias), each with its
    absolute form and its short forms, the ``*.`` forms of a headless Kubernetes
    service, then its IP addresses.  An Envoy's route ignores ports in Host matching,
    so these are bare; ``with_port`` (a proxyless gRPC client's route, which does not:
    ``SidecarIgnorePort``) adds ``<domain>:<port>`` after each."""
    names: list[str] = []
    for hostname in (service.hostname, *(a.hostname for a in aliases)):
        names.extend(_absolute(hostname))
        names.extend(_kube_alt_names(hostname, namespace))
    # httproute.go generateVirtualHostDomains: Passthrough from the Kubernetes registry
    if service.resolution is Resolution.NONE and service.kubernetes:
        names.extend([f"*.{name}" for name in names])
    for address in service.addresses:
        domain = _address_domain(address)
        if domain is not None:
            names.append(domain)
    if with_port:
        return [d for name in names for d in (name, f"{name}:{port}")]
    return names


def service_virtual_host(
    service: Service, port: int, domains: Sequence[str]
) -> route_components_pb2.VirtualHost:
    """The virtual host ``<hostname>:<port>`` of one service: its default route, request
    attempts counted (``BuildSidecarOutboundVirtualHosts``)."""
    return route_components_pb2.VirtualHost(
        name=f"{service.hostname}:{port}",
        domains=domains,
        routes=[_default_route(service, port)],
        include_request_attempt_count=True,
    )


@functools.cache
def _retry_policy() -> route_components_pb2.RetryPolicy:
    """istiod's default retry policy (one shared message: copied into each route)."""
    return route_components_pb2.RetryPolicy(
        retry_on=_RETRY_ON,
        num_retries=wrappers_pb2.UInt32Value(value=2),
        host_selection_retry_max_attempts=5,
        retry_host_predicate=[
            route_components_pb2.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
    )


def _default_route(service: Service, port: int) -> route_components_pb2.Route:
    return route_components_pb2.Route(
        name="default",
        match=route_components_pb2.RouteMatch(prefix="/"),
        decorator=route_components_pb2.Decorator(operation=f"{service.hostname}:{port}/*"),
        route=route_components_pb2.RouteAction(
            cluster=cluster_name(service.hostname, port),
            timeout=_NO_TIMEOUT,
            max_grpc_timeout=_NO_TIMEOUT,
            retry_policy=_retry_policy(),
        ),
    )


def build_route_config(
    port: int,
    services: Iterable[Service],
    namespace: str = "",
    aliases: Mapping[str, Sequence[Service]] | None = None,
) -> route_pb2.RouteConfiguration:
    """Route ``<port>`` as a proxy in ``namespace`` sees it.  ``aliases`` maps a
    hostname to the ALIAS services that stand for it."""
    aliases = aliases or {}
    # by virtual host name, <hostname>:<port> (util.SortVirtualHosts): "a.example.com:80"
    # comes before "a.example:80"
    chosen = [
        service
        for service in sorted(services, key=lambda s: f"{s.hostname}:{port}")
        if any(p.number == port for p in routed_ports(service))
    ]
    # a service's own hostname beats anyone's alias or short name for it
    taken = {d for service in chosen for d in _absolute(service.hostname)}
    hosts = []
    for service in chosen:
        domains = list(_absolute(service.hostname))
        for domain in service_domains(service, port, namespace, aliases.get(service.hostname, ())):
            if domain not in taken:
                taken.add(domain)
                domains.append(domain)
        hosts.append(service_virtual_host(service, port, domains))
    hosts.append(_allow_any())
    return route_pb2.RouteConfiguration(
        name=str(port),
        virtual_hosts=hosts,
        validate_clusters=wrappers_pb2.BoolValue(value=False),
        max_direct_response_body_size_bytes=wrappers_pb2.UInt32Value(value=_MAX_DIRECT_RESPONSE),
        ignore_port_in_host_matching=True,
    )


def build_service_route_config(service: Service, port: int) -> route_pb2.RouteConfiguration:
    """Route ``<hostname>:<port>``: the one service of a listener of its own with an
    auto-detected port, whatever the Host (httproute.go
    ``buildSidecarOutboundHTTPRouteConfig`` for a ``host:port`` route name: the service's
    virtual host with domain ``*``, no ``allow_any``)."""
    return route_pb2.RouteConfiguration(
        name=f"{service.hostname}:{port}",
        virtual_hosts=[service_virtual_host(service, port, ["*"])],
        validate_clusters=wrappers_pb2.BoolValue(value=False),
        max_direct_response_body_size_bytes=wrappers_pb2.UInt32Value(value=_MAX_DIRECT_RESPONSE),
        ignore_port_in_host_matching=True,
    )


def _allow_any() -> route_components_pb2.VirtualHost:
    """istiod's catch-all virtual host for the ``ALLOW_ANY`` outbound traffic policy
    (httproute.go ``buildCatchAllVirtualHost``): any other Host passes through."""
    action = route_components_pb2.RouteAction(
        cluster=PASSTHROUGH_CLUSTER, timeout=_NO_TIMEOUT, max_grpc_timeout=_NO_TIMEOUT
    )
    return route_components_pb2.VirtualHost(
        name="allow_any",
        domains=["*"],
        routes=[
            route_components_pb2.Route(
                name="allow_any", match=route_components_pb2.RouteMatch(prefix="/"), route=action
            )
        ],
        include_request_attempt_count=True,
    )
