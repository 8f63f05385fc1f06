"""Small pieces every resource builder shares: packing, the ADS config source, sockets,
the router filter, which endpoints EDS can carry, and Kubernetes' short host names.

Pure functions of model values returning proto messages (or names); the builders of
this package compose them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, duration_pb2

from registryd.model import Endpoint, Port, is_ip

__all__ = [
    "ads",
    "alt_names",
    "in_eds",
    "kube_namespace",
    "kube_parts",
    "pack",
    "port_endpoints",
    "router_filter",
    "socket",
]


def pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def ads() -> config_source_pb2.ConfigSource:
    """ADS as an Envoy's config source: v3, and no wait for a first answer
    (``initial_fetch_timeout: 0s``), as istiod sets it for EDS clusters and RDS
    (cluster_builder.go ``buildCluster``; listener_builder.go
    ``buildHTTPConnectionManager``)."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
        initial_fetch_timeout=duration_pb2.Duration(),
    )


def grpc_ads() -> config_source_pb2.ConfigSource:
    """ADS as a proxyless gRPC client's config source: ``{ads: {}}`` alone, as istiod's
    gRPC generator sends it (grpcgen/lds.go ``buildInboundListeners``' and
    ``buildOutboundListeners``' RDS, grpcgen/cds.go ``build``)."""
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource())


def in_eds(endpoint: Endpoint) -> bool:
    """Whether EDS can carry ``endpoint``: only IP addresses."""
    return is_ip(endpoint.address)


def socket(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address, port_value=port)
    )


def port_endpoints(port: Port, endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    """The endpoints serving ``port`` of a service."""
    return [e for e in endpoints if e.service_port == port.number]


@functools.cache
def router_filter() -> hcm_pb2.HttpFilter:
    """The router filter (one shared message: callers copy it into theirs, never
    change it)."""
    return hcm_pb2.HttpFilter(
        name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())
    )


def kube_parts(hostname: str) -> tuple[str, str, str] | None:
    """``(name, namespace, domain)`` of a Kubernetes-style hostname
    ``<name>.<namespace>.svc.<domain>``, else ``None``.  Whatever registry the service
    comes from: istiod derives short names from the hostname's shape alone
    (httproute.go ``GenerateAltVirtualHosts``)."""
    parts = hostname.split(".", 3)
    if len(parts) < 4 or parts[2] != "svc" or not parts[1] or not parts[0]:
        return None
    return parts[0], parts[1], parts[3]


def kube_namespace(hostname: str) -> str:
    """The namespace of a Kubernetes-style hostname (its clients reach it by its bare
    name), else ``""``."""
    parts = kube_parts(hostname)
    return parts[1] if parts is not None else ""


def alt_names(hostname: str, namespace: str = "") -> tuple[str, ...]:
    """Shorter names of a Kubernetes-style hostname ``<name>.<ns>.svc.<domain>``, as
    Kubernetes DNS resolves them, for a client in ``namespace``: ``<name>.<ns>.svc`` and
    ``<name>.<ns>`` for everyone, and ``<name>`` too for clients in ``<ns>``, the
    hostname's own namespace (networking/core/httproute.go ``GenerateAltVirtualHosts``)."""
    parts = kube_parts(hostname)
    if parts is None:
        return ()
    name, ns, _ = parts
    own = (name,) if namespace == ns else ()
    return (f"{name}.{ns}.svc", f"{name}.{ns}", *own)
