"""Names and shared pieces of the xDS resources built from the merged registry model.

Only the builder modules of this package know both the model and the Envoy protos.  Every
function is pure: it takes model values and returns a proto message; the caller
serializes.  Names follow Istio's conventions (see README):

* Cluster and ClusterLoadAssignment ``outbound|<port>||<hostname>``
* sidecar Listener ``<bind>_<port>`` (:mod:`registryd.xds.listeners`)
* RouteConfiguration ``<port>`` for Envoy (:mod:`registryd.xds.routes`) and
  ``outbound|<port>||<hostname>`` for proxyless gRPC (:mod:`registryd.xds.grpcgen`)
* proxyless gRPC Listener ``<name>:<port>``.

This module holds the names and the small pieces every builder shares; the builders live
beside it, one module per resource kind, each citing the istiod code it follows.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2

from registryd.model import Endpoint, Port, Service, is_ip

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "ads",
    "alt_names",
    "cluster_name",
    "grpc_listener_name",
    "in_eds",
    "kube_parts",
    "listener_name",
    "pack",
    "port_endpoints",
    "router_filter",
    "short_names",
    "short_type",
    "socket",
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


def cluster_name(hostname: str, port: int) -> str:
    return f"outbound|{port}||{hostname}"


def listener_name(bind: str, port: int) -> str:
    """istiod's ``getListenerName``: ``<bind>_<port>`` (``0.0.0.0_80``, ``10.0.0.5_3306``)."""
    return f"{bind}_{port}"


def grpc_listener_name(hostname: str, port: int) -> str:
    return f"{hostname}:{port}"


def pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


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


def router_filter() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(
        name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())
    )


def kube_parts(hostname: str, namespace: str) -> tuple[str, str, str] | None:
    """``(name, namespace, domain)`` of a Kubernetes-style hostname
    ``<name>.<namespace>.svc.<domain>`` in ``namespace``, else ``None``."""
    parts = hostname.split(".", 3)
    if len(parts) < 4 or parts[2] != "svc" or parts[1] != namespace or not parts[0]:
        return None
    return parts[0], parts[1], parts[3]


def short_names(service: Service, namespace: str = "") -> tuple[str, ...]:
    """Shorter names of a Kubernetes-style hostname ``<name>.<ns>.svc.<domain>``, as
    Kubernetes DNS resolves them: ``<name>.<ns>.svc`` and ``<name>.<ns>`` for everyone,
    and ``<name>`` too for clients in the service's own ``namespace``
    (networking/core/httproute.go ``GenerateAltVirtualHosts``)."""
    return alt_names(service.hostname, service.namespace, namespace)


def alt_names(hostname: str, service_namespace: str, namespace: str = "") -> tuple[str, ...]:
    """:func:`short_names` for any hostname and its namespace."""
    parts = kube_parts(hostname, service_namespace)
    if parts is None:
        return ()
    name, ns, _ = parts
    own = (name,) if namespace == ns else ()
    return (f"{name}.{ns}.svc", f"{name}.{ns}", *own)
