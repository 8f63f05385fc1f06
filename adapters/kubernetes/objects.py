"""The parts of Kubernetes API objects the registry reads, as frozen values, and the
names it reads them by.  :mod:`.parse` makes them from the JSON, :mod:`.mapping` turns
them into services.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from registryd.model import Labels, Port

__all__ = [
    "CLUSTER_LABEL",
    "CLUSTER_SCOPED",
    "ENDPOINT_SLICE",
    "EXPORT_TO_ANNOTATION",
    "KINDS",
    "LOCALITY_LABELS",
    "NAMESPACE",
    "NODE",
    "NODE_LABEL",
    "POD",
    "REGION_LABELS",
    "SERVICE",
    "SERVICE_NAME_LABEL",
    "SUBZONE_LABEL",
    "ZONE_LABELS",
    "Key",
    "KubeService",
    "KubeSlice",
    "NodeLocality",
    "SliceEndpoint",
    "SlicePort",
]

SERVICE = "Service"
ENDPOINT_SLICE = "EndpointSlice"
NODE = "Node"
NAMESPACE = "Namespace"
POD = "Pod"
KINDS = (SERVICE, ENDPOINT_SLICE, NODE, NAMESPACE, POD)
CLUSTER_SCOPED = frozenset({NODE, NAMESPACE})

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"
REGION_LABELS = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")
ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
SUBZONE_LABEL = "topology.istio.io/subzone"
CLUSTER_LABEL = "topology.istio.io/cluster"
NODE_LABEL = "kubernetes.io/hostname"
# a workload's own locality, "region/zone/subzone" ("." for "/" in a label value): the
# first wins (pkg/model/proxy.go GetLocalityLabel)
LOCALITY_LABELS = ("topology.istio.io/locality", "istio-locality")

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeService:
    """The parts of a Service the mapping reads."""

    namespace: str
    name: str
    type: str = "ClusterIP"
    labels: Labels = field(default_factory=Labels)
    cluster_ips: tuple[str, ...] = ()
    headless: bool = False
    external_name: str = ""
    ports: tuple[Port, ...] = ()
    skipped_ports: tuple[str, ...] = ()  # "53/UDP dns (53/TCP dns-tcp is served)"
    export_to: tuple[str, ...] = ()
    created: float | None = None  # metadata.creationTimestamp, POSIX seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class SlicePort:
    name: str
    number: int | None
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceEndpoint:
    addresses: tuple[str, ...]
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None
    zone: str = ""
    node: str = ""
    pod: Key | None = None  # targetRef (namespace, name) when it names a Pod


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeSlice:
    """The parts of an EndpointSlice the mapping reads; ``service`` is its
    ``kubernetes.io/service-name`` label ("" without)."""

    namespace: str
    name: str
    service: str
    address_type: str
    ports: tuple[SlicePort, ...] = ()
    endpoints: tuple[SliceEndpoint, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeLocality:
    region: str = ""
    zone: str = ""
    subzone: str = ""
