"""What the served xDS resources are called: type URLs and Istio's names.

The serving side (snapshots, streams, debug views) and the builders agree on these;
nothing here builds a resource (the builders are :mod:`registryd.build.builder`).  Names follow
Istio's conventions (see README):

* Cluster and ClusterLoadAssignment ``outbound|<port>||<hostname>``
* sidecar Listener ``<bind>_<port>``
* RouteConfiguration ``<port>`` for Envoy and ``outbound|<port>||<hostname>`` for
  proxyless gRPC
* proxyless gRPC Listener ``<name>:<port>``
* the resources every snapshot holds whatever the registries do: the clusters
  ``PassthroughCluster`` and ``BlackHoleCluster`` and the listener ``virtualOutbound``.
"""

from __future__ import annotations

__all__ = [
    "BLACKHOLE_CLUSTER",
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "PASSTHROUGH_CLUSTER",
    "ROUTE_TYPE",
    "VIRTUAL_OUTBOUND",
    "cluster_name",
    "grpc_listener_name",
    "listener_name",
    "short_type",
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


PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"
VIRTUAL_OUTBOUND = "virtualOutbound"
