"""Parsed Kubernetes objects -> registryd's services and endpoints (:func:`build_service`).
Pure: no I/O.

Mapping, as istiod does it:

* One :class:`~registryd.model.Service` per Kubernetes Service of a selected namespace:
  hostname ``<name>.<namespace>.svc.<domain>``; namespace and labels the Service's;
  location ``MESH_INTERNAL``; addresses the ``clusterIPs`` (``clusterIP`` when the list
  is absent; ``None`` and empty ones left out); ``exportTo`` from the annotation
  ``networking.istio.io/exportTo`` (comma-separated); created at the Service's
  ``creationTimestamp`` (istiod's ``ConvertService`` takes it as ``CreationTime``, and
  ``SortServicesByCreationTime`` gives a shared listener port to the oldest).  A
  Service without endpoints is still served (an empty cluster).
* Ports: one per Service port: number ``port``, name ``name``, no ``target_port``
  (:func:`served_ports`: the EndpointSlices carry the pods' ports, and a target port in
  the model would pass through a headless Service's ORIGINAL_DST cluster, which istiod
  does for ServiceEntries only).  The summary shows ``targetPort`` as a number (a named
  one is left out; an absent one means ``port``, as the API server defaults it).
  Protocol: :func:`~.protocol.port_protocol` (istiod's ``ConvertProtocol``; ``AUTO``
  when nothing names one).  UDP ports are kept (protocol ``UDP``), except one whose
  number a TCP port of the same Service has (the model has one port per number); SCTP
  ports are skipped.  The summary on the debug port lists the skipped ones.
* Endpoints: from the EndpointSlices labelled ``kubernetes.io/service-name=<name>`` in
  the Service's namespace (any number of slices; ``addressType`` IPv4 or IPv6; ``FQDN``
  slices, deprecated and written by no Kubernetes controller, are ignored as istiod
  does).  Every address of every endpoint, for every slice port whose name equals a
  Service port's name (an unnamed port matches the unnamed Service port), gives one
  endpoint: port = the slice port number, service port = the Service port's number.
  Slice ports without a number or with a protocol other than TCP or UDP are skipped.
  The same (service port, address, port) from two slices (a pod moving between slices)
  is one endpoint, the healthiest.
* Health from ``conditions`` (:func:`endpoint_health`, istiod's ``endpointHealthStatus``
  and ``filterIstioEndpoint``): ``ready`` true or absent → HEALTHY; not ready and
  ``terminating`` true or absent → no endpoint (terminating endpoints are never sent);
  otherwise UNHEALTHY.
* Locality: the one the endpoint's Pod pins with its label
  ``topology.istio.io/locality`` or ``istio-locality`` (:func:`pod_locality`), else
  region from the endpoint's node label ``topology.kubernetes.io/region``
  (else ``failure-domain.beta.kubernetes.io/region``), zone from the endpoint's ``zone``
  else the node's ``topology.kubernetes.io/zone`` (else the beta label), subzone from the
  node label ``topology.istio.io/subzone``.  Unknown node: no region.  An endpoint
  naming no Pod (``targetRef``) has no locality and no node (istiod reads both from
  the Pod).
* Endpoint labels: the labels of the Pod the endpoint's ``targetRef`` names (when that
  Pod is known), under the topology labels istiod adds (``AugmentLabels``):
  ``topology.istio.io/cluster`` (the cluster ID), ``kubernetes.io/hostname`` (the node),
  ``topology.kubernetes.io/region`` / ``zone`` and ``topology.istio.io/subzone`` when
  known; those win over a pod label of the same key.  A pod label change converts again
  only the Services whose slices name that pod.  Network ``""``; cluster ID the
  registry's.
* Headless Services (``clusterIP: None``): resolution ``NONE`` (passthrough), no
  addresses, the endpoints still the pod IPs from the slices; ``STATIC`` instead with
  ``Options.eds_for_headless`` (:func:`resolution_for`).
* ``type: ExternalName``: resolution ``ALIAS`` with ``alias_for`` = ``spec.externalName``
  (lower-cased, trailing dot removed), location ``MESH_EXTERNAL``, the ports as declared,
  no addresses, no endpoints (slices are not read), as istiod's ``ConvertService``.


The summary of a built Service (``Built.summary``, for the debug port) holds its hostname,
type, cluster IPs, ports, skipped ports and slice names; no object bodies, nothing secret.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from registryd.model import (
    NO_LOCALITY,
    Endpoint,
    Health,
    Labels,
    Locality,
    Location,
    Port,
    Resolution,
    Service,
)

from .objects import (
    CLUSTER_LABEL,
    LOCALITY_LABELS,
    NODE_LABEL,
    REGION_LABELS,
    SUBZONE_LABEL,
    ZONE_LABELS,
    Key,
    KubeService,
    KubeSlice,
    NodeLocality,
    SliceEndpoint,
)

__all__ = [
    "Built",
    "Options",
    "build_service",
    "endpoint_health",
    "hostname_for",
    "pod_locality",
    "resolution_for",
    "served_ports",
]

SLICE_PORT_PROTOCOLS = frozenset({"TCP", "UDP"})
_HEALTH_RANK = {Health.HEALTHY: 0, Health.UNHEALTHY: 1}


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """What the mapping depends on."""

    domain: str = "cluster.local"
    cluster_id: str = ""
    eds_for_headless: bool = False  # istiod PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES


@dataclass(frozen=True, slots=True, kw_only=True)
class Built:
    """One converted Service: what is served, and its summary for the debug port."""

    service: Service
    endpoints: tuple[Endpoint, ...]
    summary: Mapping[str, Any]


def hostname_for(name: str, namespace: str, domain: str) -> str:
    return f"{name}.{namespace}.svc.{domain}"


def endpoint_health(endpoint: SliceEndpoint) -> Health | None:
    """istiod's ``endpointHealthStatus`` (kube/controller/endpointslice.go) for Services
    without persistent sessions: ``ready`` unset or true → HEALTHY; not ready and
    ``terminating`` unset or true → None (Terminating: ``filterIstioEndpoint`` in
    xds/endpoints/endpoint_builder.go never sends those, so there is no endpoint);
    otherwise UNHEALTHY.  ``serving`` only matters for istiod's Draining, which needs
    persistent sessions."""
    if endpoint.ready is None or endpoint.ready:
        return Health.HEALTHY
    if endpoint.terminating is None or endpoint.terminating:
        return None
    return Health.UNHEALTHY


def pod_locality(labels: Mapping[str, str]) -> Locality | None:
    """The locality a pod's labels pin (``topology.istio.io/locality``, else
    ``istio-locality``: ``region.zone.subzone``, or with ``/``), or None: istiod's
    ``getPodLocality`` (kube/controller/controller.go) takes it before the node's,
    ``SanitizeLocalityLabel`` and ``SplitLocalityLabel`` read it."""
    for key in LOCALITY_LABELS:
        value = labels.get(key)
        if value:
            parts = (value if "/" in value else value.replace(".", "/")).split("/")
            region, zone, subzone = (*parts, "", "")[:3]
            return Locality(region=region, zone=zone, subzone=subzone)
    return None


def _locality(
    endpoint: SliceEndpoint, nodes: Mapping[str, NodeLocality], pod: Mapping[str, str] | None
) -> Locality:
    """The endpoint's locality: its Pod's (pinned by label, else its node's).  An
    endpoint that names no Pod has none, whatever node or zone the slice gives it: istiod
    takes a locality from the Pod only (``NewEndpointBuilder``,
    kube/controller/endpoint_builder.go, with no Pod)."""
    if endpoint.pod is None:
        return NO_LOCALITY
    pinned = pod_locality(pod) if pod else None
    if pinned is not None:
        return pinned
    node = nodes.get(endpoint.node) if endpoint.node else None
    region, subzone = (node.region, node.subzone) if node else ("", "")
    zone = endpoint.zone or (node.zone if node else "")
    if not (region or zone or subzone):
        return NO_LOCALITY
    return Locality(region=region, zone=zone, subzone=subzone)


def _endpoint_labels(
    node: str, locality: Locality, cluster_id: str, pod: Mapping[str, str] | None = None
) -> Labels:
    """The pod's labels with the topology labels istiod adds on top (``AugmentLabels``,
    serviceregistry/util/label/label.go): those win over a pod label of the same key."""
    labels = {
        CLUSTER_LABEL: cluster_id,
        NODE_LABEL: node,
        REGION_LABELS[0]: locality.region,
        ZONE_LABELS[0]: locality.zone,
        SUBZONE_LABEL: locality.subzone,
    }
    topology = {k: v for k, v in labels.items() if v}
    return Labels({**pod, **topology} if pod else topology)


def _slice_endpoints(
    hostname: str,
    service: KubeService,
    slices: Iterable[KubeSlice],
    nodes: Mapping[str, NodeLocality],
    options: Options,
    pods: Mapping[Key, Labels],
) -> tuple[Endpoint, ...]:
    by_name = {p.name: p for p in service.ports}
    found: dict[tuple[int, str, int], Endpoint] = {}
    for piece in sorted(slices, key=lambda s: s.name):
        if piece.address_type == "FQDN":
            continue
        for slice_port in piece.ports:
            port = by_name.get(slice_port.name)
            if port is None or slice_port.number is None:
                continue
            if slice_port.protocol not in SLICE_PORT_PROTOCOLS:
                continue
            for item in piece.endpoints:
                health = endpoint_health(item)
                if health is None:
                    continue
                pod = pods.get(item.pod) if item.pod is not None else None
                locality = _locality(item, nodes, pod)
                node = item.node if item.pod is not None else ""  # the Pod's node
                labels = _endpoint_labels(node, locality, options.cluster_id, pod)
                for address in item.addresses:
                    key = (port.number, address, slice_port.number)
                    before = found.get(key)
                    if before is not None and _HEALTH_RANK[before.health] <= _HEALTH_RANK[health]:
                        continue
                    found[key] = Endpoint(
                        hostname=hostname,
                        address=address,
                        port=slice_port.number,
                        service_port=port.number,
                        locality=locality,
                        health=health,
                        labels=labels,
                        cluster_id=options.cluster_id,
                    )
    return tuple(found[k] for k in sorted(found))


def _summary(
    hostname: str, service: KubeService, resolution: Resolution, slices: Iterable[KubeSlice]
) -> dict[str, Any]:
    summary: dict[str, Any] = {"hostname": hostname, "type": service.type}
    summary["resolution"] = str(resolution)
    if service.external_name:
        summary["externalName"] = service.external_name
    else:
        summary["clusterIPs"] = ["None"] if service.headless else list(service.cluster_ips)
        summary["endpointSlices"] = sorted(s.name for s in slices)
    summary["ports"] = [
        f"{p.number}/{p.protocol}"
        + (f" {p.name}" if p.name else "")
        + (f" -> {p.target_port}" if p.target_port is not None else "")
        for p in service.ports
    ]
    if service.skipped_ports:
        summary["skippedPorts"] = list(service.skipped_ports)
    return summary


def served_ports(service: KubeService) -> tuple[Port, ...]:
    """The Service's ports as served: without their target ports.  A ``target_port`` in
    the model passes through (an ORIGINAL_DST cluster sends its traffic there instead of
    the port the client dialled), and istiod passes target ports through for
    ServiceEntries only: ``convertServices`` (serviceentry/conversion.go) fills
    ``PassthroughTargetPorts``, ``ConvertService`` (kube/conversion.go) does not, and
    ``buildCluster`` (networking/core/cluster_builder.go) reads it for ORIGINAL_DST
    clusters.  A Kubernetes Service's target ports reach proxies through its
    EndpointSlices instead."""
    return tuple(
        p if p.target_port is None else dataclasses.replace(p, target_port=None)
        for p in service.ports
    )


def resolution_for(service: KubeService, options: Options) -> Resolution:
    """istiod's ``ConvertService`` (serviceregistry/kube/conversion.go) and
    ``convertResolution`` (networking/core/cluster.go): an ExternalName is an ALIAS of its
    name; a headless Service (``clusterIP: None``) passes through to the address the
    client dialled (NONE), unless ``eds_for_headless`` (istiod's
    ``PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES``) load-balances over its pods (STATIC);
    any other is STATIC."""
    if service.external_name:
        return Resolution.ALIAS
    if service.headless and not options.eds_for_headless:
        return Resolution.NONE
    return Resolution.STATIC


def build_service(
    service: KubeService,
    slices: Iterable[KubeSlice] = (),
    nodes: Mapping[str, NodeLocality] | None = None,
    options: Options | None = None,
    pods: Mapping[Key, Labels] | None = None,
) -> Built:
    """The served form of ``service`` with the endpoints of ``slices`` (its slices; other
    services' slices are ignored), node localities ``nodes`` and pod labels ``pods``."""
    options = options or Options()
    own = [s for s in slices if s.namespace == service.namespace and s.service == service.name]
    hostname = hostname_for(service.name, service.namespace, options.domain)
    resolution = resolution_for(service, options)
    alias = resolution is Resolution.ALIAS
    served = Service(
        hostname=hostname,
        namespace=service.namespace,
        ports=served_ports(service),
        resolution=resolution,
        location=Location.MESH_EXTERNAL if alias else Location.MESH_INTERNAL,
        labels=service.labels,
        addresses=service.cluster_ips,
        export_to=service.export_to,
        alias_for=service.external_name,
        kubernetes=True,
        created=service.created,
    )
    endpoints: tuple[Endpoint, ...] = ()
    if not alias:
        endpoints = _slice_endpoints(hostname, service, own, nodes or {}, options, pods or {})
    summary = _summary(hostname, service, resolution, own)
    return Built(service=served, endpoints=endpoints, summary=summary)
