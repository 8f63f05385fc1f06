"""What the served xDS resources are called: type URLs and Istio's names.

The serving side (snapshots, streams, debug views) and the builders agree on these;
nothing here builds a resource (the builders are :mod:`registryd.build.builder`).  Names follow
Istio's conventions (see docs/xds.md):

* Cluster and ClusterLoadAssignment ``outbound|<port>||<hostname>``
* sidecar Listener ``<bind>_<port>``
* RouteConfiguration ``<port>`` for Envoy and ``outbound|<port>||<hostname>`` for
  proxyless gRPC
* proxyless gRPC Listener ``<name>:<port>``
* the resources every snapshot holds whatever the registries do: the clusters
  ``PassthroughCluster`` and ``BlackHoleCluster`` and the listener ``virtualOutbound``.

Istio config types (what an istiod asks a ``configSources`` server for over MCP) are
named ``<group>/<version>/<Kind>`` rather than by a protobuf type URL
(``networking.istio.io/v1/ServiceEntry``, ``core/v1alpha1/MeshConfig``): see
:func:`is_config_type`.  Their resources are ``istio.mcp.v1alpha1.Resource`` s
(``MCP_RESOURCE_TYPE``) named ``<namespace>/<name>``.
"""

from __future__ import annotations

import re

__all__ = [
    "BLACKHOLE_CLUSTER",
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "MCP_RESOURCE_TYPE",
    "PASSTHROUGH_CLUSTER",
    "ROUTE_TYPE",
    "SERVICE_ENTRY_KIND",
    "VIRTUAL_OUTBOUND",
    "WORKLOAD_ENTRY_KIND",
    "cluster_name",
    "config_kind",
    "grpc_listener_name",
    "is_config_type",
    "listener_name",
    "short_type",
]

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
_SHORT_TYPES = {CLUSTER_TYPE: "cds", ENDPOINT_TYPE: "eds", LISTENER_TYPE: "lds", ROUTE_TYPE: "rds"}


MCP_RESOURCE_TYPE = "type.googleapis.com/istio.mcp.v1alpha1.Resource"
SERVICE_ENTRY_KIND = ("networking.istio.io", "ServiceEntry")
WORKLOAD_ENTRY_KIND = ("networking.istio.io", "WorkloadEntry")
# group (a DNS name, or "core" for MeshConfig) / version / Kind, as istio's
# config.GroupVersionKind.String() writes them
_CONFIG_TYPE = re.compile(
    r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/v[0-9][a-z0-9]{0,30}/[A-Z][A-Za-z0-9]{0,62}"
)


def is_config_type(type_url: str) -> bool:
    """Whether ``type_url`` names an Istio config type (``group/version/Kind``)."""
    return _CONFIG_TYPE.fullmatch(type_url) is not None


def config_kind(type_url: str) -> tuple[str, str]:
    """``(group, Kind)`` of a config type URL, whatever its version (istiod asks
    ``networking.istio.io/v1/ServiceEntry``, older ones ``.../v1alpha3/...``)."""
    group, _, rest = type_url.partition("/")
    return group, rest.rpartition("/")[2]


def short_type(type_url: str) -> str:
    """``cds``/``eds``/``lds``/``rds`` for a type URL, as istiod names types in its metrics
    and debug output; a config type keeps its whole name, as istiod's metrics do
    (``networking.istio.io/v1/ServiceEntry``); any other type: its message name,
    lower-cased."""
    if is_config_type(type_url):
        return type_url
    return _SHORT_TYPES.get(type_url, type_url.rsplit(".", 1)[-1].lower())


def cluster_name(hostname: str, port: int) -> str:
    return f"outbound|{port}||{hostname}"


def listener_name(bind: str, port: int) -> str:
    """istiod's ``getListenerName``: ``<bind>_<port>`` (``0.0.0.0_80``, ``10.0.0.5_3306``)."""
    return f"{bind}_{port}"


def grpc_listener_name(hostname: str, port: int) -> str:
    return f"{hostname}:{port}"


PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"
VIRTUAL_OUTBOUND = "virtualOutbound"
