"""Kubernetes Services, EndpointSlices, Pods, Nodes and Namespaces -> registryd's model.
Pure.

Input is the JSON of the API objects as dicts (what the API server sends); nothing here
does I/O.  :class:`ClusterState` keeps the objects of one cluster, fed by full listings
(:meth:`~ClusterState.reset`) and watch events (:meth:`~ClusterState.apply`), converts
only the services an event may have changed, and hands out the full state
(:meth:`~ClusterState.replace`), the increments since the last hand-out
(:meth:`~ClusterState.changes`: one ``Upsert`` per new or changed hostname, then one
``Delete`` per vanished one, each sorted) and the problems
(:meth:`~ClusterState.problems`).

Mapping, as istiod does it:

* One :class:`~registryd.model.Service` per Kubernetes Service of a selected namespace:
  hostname ``<name>.<namespace>.svc.<domain>``; namespace and labels the Service's;
  location ``MESH_INTERNAL``; addresses the ``clusterIPs`` (``clusterIP`` when the list
  is absent; ``None`` and empty ones left out); ``exportTo`` from the annotation
  ``networking.istio.io/exportTo`` (comma-separated).  A Service without endpoints is
  still served (an empty cluster).
* Ports: one per Service port: number ``port``, name ``name``; ``targetPort`` as a number
  becomes ``target_port`` (a named targetPort leaves it unset: the EndpointSlices carry
  the resolved number; an absent one means ``port``, as the API server defaults it).
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
* Locality: region from the endpoint's node label ``topology.kubernetes.io/region``
  (else ``failure-domain.beta.kubernetes.io/region``), zone from the endpoint's ``zone``
  else the node's ``topology.kubernetes.io/zone`` (else the beta label), subzone from the
  node label ``topology.istio.io/subzone``.  Unknown node: no region.
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

Malformed objects (a Service port without number, a bad IP, a field of the wrong type,
an unknown ``addressType``...) are reported under ``<kind>/<namespace>/<name>``
(``<kind>/<name>`` for Nodes and Namespaces) and skipped; the last good version of that
object, if any, stays in use.  ``Problems.sources`` carries a small summary per served
Service (``Service/<namespace>/<name>``): hostname, type, cluster IPs, ports, skipped
ports and slice names; no object bodies, nothing secret.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from registryd.adapter import Delete, Problems, Published, Replace, Upsert
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

from .pods import PodLabels
from .protocol import port_protocol
from .selector import Selector

__all__ = [
    "CLUSTER_LABEL",
    "ENDPOINT_SLICE",
    "NAMESPACE",
    "NODE",
    "POD",
    "SERVICE",
    "SERVICE_NAME_LABEL",
    "Built",
    "ClusterState",
    "KubeService",
    "KubeSlice",
    "NodeLocality",
    "ObjectError",
    "Options",
    "SliceEndpoint",
    "SlicePort",
    "build_service",
    "endpoint_health",
    "hostname_for",
    "object_source",
    "parse_namespace",
    "parse_node",
    "parse_pod",
    "parse_service",
    "parse_slice",
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

SERVICE_TYPES = frozenset({"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"})
PORT_PROTOCOLS = frozenset({"TCP", "UDP", "SCTP"})
ADDRESS_TYPES = frozenset({"IPv4", "IPv6", "FQDN"})
SLICE_PORT_PROTOCOLS = frozenset({"TCP", "UDP"})
_HEALTH_RANK = {Health.HEALTHY: 0, Health.UNHEALTHY: 1}
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


class ObjectError(ValueError):
    """An API object that cannot be used; the message says what is wrong."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """What the mapping depends on."""

    domain: str = "cluster.local"
    cluster_id: str = ""
    eds_for_headless: bool = False  # istiod PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES


# -- parsed objects -----------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Built:
    """One converted Service: what is served, and its summary for the debug port."""

    service: Service
    endpoints: tuple[Endpoint, ...]
    summary: Mapping[str, Any]


# -- small checks -------------------------------------------------------------------------


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _mapping(value: Any, what: str, *, optional: bool = True) -> Mapping[str, Any]:
    if value is None and optional:
        return {}
    if not isinstance(value, Mapping):
        raise ObjectError(f"{what} is not an object ({_kind(value)})")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ObjectError(f"{what} is not a list ({_kind(value)})")
    return value


def _string(value: Any, what: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise ObjectError(f"{what} is not a string ({_kind(value)})")
    return value


def _flag(value: Any, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ObjectError(f"{what} is not true/false ({value!r})")


def _string_map(value: Any, what: str) -> dict[str, str]:
    data = _mapping(value, what)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ObjectError(f"{what} must map strings to strings")
    return dict(data)


def _port_number(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ObjectError(f"{what}: no port number ({value!r})")
    if not 0 < value < 65536:
        raise ObjectError(f"{what}: port {value} out of range 1-65535")
    return value


def _ip(value: Any, what: str, version: int | None = None) -> str:
    try:
        address = ipaddress.ip_address(value) if isinstance(value, str) else None
    except ValueError:
        address = None
    if address is None or (version is not None and address.version != version):
        family = f"an IPv{version}" if version else "an IP"
        raise ObjectError(f"{what} {value!r} is not {family} address")
    return str(address)


def is_dns_name(name: str) -> bool:
    return len(name) <= 253 and _DNS_NAME.fullmatch(name) is not None


# -- identity -------------------------------------------------------------------------------


def object_key(kind: str, obj: Any) -> Key:
    """``(namespace, name)`` of an object (namespace "" for Nodes and Namespaces)."""
    metadata = _mapping(obj.get("metadata") if isinstance(obj, Mapping) else None, "metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise ObjectError("metadata.name is missing")
    if kind in CLUSTER_SCOPED:
        return ("", name)
    namespace = metadata.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        raise ObjectError(f"{name}: metadata.namespace is missing")
    return (namespace, name)


def source_of(kind: str, key: Key) -> str:
    """``<kind>/<namespace>/<name>``, or ``<kind>/<name>`` for cluster-scoped kinds."""
    namespace, name = key
    return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"


def object_source(kind: str, obj: Any) -> str:
    """The problem key of ``obj``, as far as its metadata tells."""
    try:
        return source_of(kind, object_key(kind, obj))
    except ObjectError:
        metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        return f"{kind}/{name if isinstance(name, str) and name else '?'}"


def _labels_of(obj: Mapping[str, Any]) -> Labels:
    metadata = _mapping(obj.get("metadata"), "metadata")
    return Labels(_string_map(metadata.get("labels"), "metadata.labels"))


# -- hostnames ------------------------------------------------------------------------------


def hostname_for(name: str, namespace: str, domain: str) -> str:
    return f"{name}.{namespace}.svc.{domain}"


# -- Services -------------------------------------------------------------------------------


def _service_port(raw: Any, index: int) -> tuple[Port, str]:
    """One ``spec.ports`` entry -> (the Port, its Kubernetes protocol)."""
    entry = _mapping(raw, f"spec.ports[{index}]", optional=False)
    name = _string(entry.get("name"), f"spec.ports[{index}].name")
    what = f"spec.ports[{index}]" + (f" ({name})" if name else "")
    number = _port_number(entry.get("port"), what)
    protocol = _string(entry.get("protocol"), f"{what}.protocol", "TCP").upper()
    if protocol not in PORT_PROTOCOLS:
        raise ObjectError(f"{what}: protocol {protocol!r} is not TCP, UDP or SCTP")
    raw_app = entry.get("appProtocol")
    app_protocol = None if raw_app is None else _string(raw_app, f"{what}.appProtocol")
    target = entry.get("targetPort")
    if target is None:
        target_port: int | None = number
    elif isinstance(target, str):
        if not target:
            raise ObjectError(f"{what}: targetPort is an empty name")
        target_port = None  # a named container port: the slices carry the number
    else:
        target_port = _port_number(target, f"{what} targetPort")
    served = port_protocol(number, name, protocol, app_protocol)
    return Port(number=number, name=name, protocol=served, target_port=target_port), protocol


def _port_text(port: Port, protocol: str) -> str:
    return f"{port.number}/{protocol}" + (f" {port.name}" if port.name else "")


def _service_ports(value: Any) -> tuple[tuple[Port, ...], tuple[str, ...]]:
    """The served ports and notes on the skipped ones: SCTP ports (no proxy here carries
    SCTP), and a UDP port whose number a TCP port of the Service also has (one port per
    number in the model; the TCP one is served)."""
    parsed: list[tuple[Port, str]] = []
    names: set[str] = set()
    entries = _list(value, "spec.ports")
    for index, raw in enumerate(entries):
        port, protocol = _service_port(raw, index)
        if not port.name and len(entries) > 1:
            raise ObjectError(f"spec.ports[{index}]: several ports, so each needs a name")
        if port.name in names:
            raise ObjectError(f"spec.ports: port name {port.name!r} appears twice")
        names.add(port.name)
        if any(p.number == port.number and k == protocol for p, k in parsed):
            raise ObjectError(f"spec.ports: port {port.number}/{protocol} appears twice")
        parsed.append((port, protocol))
    tcp = {p.number: p for p, k in parsed if k == "TCP"}
    ports: list[Port] = []
    skipped: list[str] = []
    for port, protocol in parsed:
        if protocol == "SCTP":
            skipped.append(_port_text(port, protocol))
        elif protocol == "UDP" and port.number in tcp:
            served = _port_text(tcp[port.number], "TCP")
            skipped.append(f"{_port_text(port, protocol)} ({served} is served)")
        else:
            ports.append(port)
    return tuple(ports), tuple(skipped)


def _cluster_ips(spec: Mapping[str, Any]) -> tuple[tuple[str, ...], bool]:
    """(addresses, headless) from ``clusterIPs`` (else ``clusterIP``)."""
    values = spec.get("clusterIPs")
    if values is None:
        single = spec.get("clusterIP")
        values = [] if single is None else [single]
    addresses: list[str] = []
    headless = False
    for index, value in enumerate(_list(values, "spec.clusterIPs")):
        text = _string(value, f"spec.clusterIPs[{index}]")
        if text == "None":
            headless = True
        elif text:
            addresses.append(_ip(text, "spec.clusterIPs"))
    return tuple(addresses), headless


def _external_name(value: Any) -> str:
    text = _string(value, "spec.externalName").lower().rstrip(".")
    if not text:
        raise ObjectError("type ExternalName without spec.externalName")
    if not is_dns_name(text):
        raise ObjectError(f"spec.externalName {value!r} is not a DNS name")
    return text


def _export_to(annotations: Mapping[str, str]) -> tuple[str, ...]:
    value = annotations.get(EXPORT_TO_ANNOTATION, "")
    return tuple(sorted({v.strip() for v in value.split(",") if v.strip()}))


def parse_service(obj: Any) -> KubeService:
    """A Service's JSON -> :class:`KubeService`, or :class:`ObjectError`."""
    namespace, name = object_key(SERVICE, obj)
    metadata = _mapping(obj.get("metadata"), "metadata")
    annotations = _string_map(metadata.get("annotations"), "metadata.annotations")
    spec = _mapping(obj.get("spec"), "spec", optional=False)
    kind = _string(spec.get("type"), "spec.type", "ClusterIP") or "ClusterIP"
    if kind not in SERVICE_TYPES:
        raise ObjectError(f"spec.type {kind!r} is not one of {sorted(SERVICE_TYPES)}")
    ports, skipped = _service_ports(spec.get("ports"))
    external = _external_name(spec.get("externalName")) if kind == "ExternalName" else ""
    addresses, headless = ((), False) if external else _cluster_ips(spec)
    return KubeService(
        namespace=namespace,
        name=name,
        type=kind,
        labels=_labels_of(obj),
        cluster_ips=addresses,
        headless=headless,
        external_name=external,
        ports=ports,
        skipped_ports=skipped,
        export_to=_export_to(annotations),
    )


# -- EndpointSlices, Nodes, Namespaces -------------------------------------------------------


def _slice_port(raw: Any, index: int) -> SlicePort:
    entry = _mapping(raw, f"ports[{index}]", optional=False)
    number = entry.get("port")
    return SlicePort(
        name=_string(entry.get("name"), f"ports[{index}].name"),
        number=None if number is None else _port_number(number, f"ports[{index}]"),
        protocol=_string(entry.get("protocol"), f"ports[{index}].protocol", "TCP").upper(),
    )


def _target_pod(value: Any, what: str, namespace: str) -> Key | None:
    """``targetRef`` -> (namespace, name) of the Pod it names (its namespace defaults to
    the slice's), or None when it names something else or nothing."""
    ref = _mapping(value, what)
    if _string(ref.get("kind"), f"{what}.kind") != POD:
        return None
    name = _string(ref.get("name"), f"{what}.name")
    if not name:
        return None
    return (_string(ref.get("namespace"), f"{what}.namespace") or namespace, name)


def _slice_endpoint(raw: Any, index: int, address_type: str, namespace: str) -> SliceEndpoint:
    what = f"endpoints[{index}]"
    entry = _mapping(raw, what, optional=False)
    addresses = _list(entry.get("addresses"), f"{what}.addresses")
    if not addresses:
        raise ObjectError(f"{what}: no addresses")
    version = {"IPv4": 4, "IPv6": 6}.get(address_type)
    if version is None:  # FQDN: not used, just strings
        parsed = tuple(_string(a, f"{what}.addresses") for a in addresses)
    else:
        parsed = tuple(
            _ip(a, f"{what}.addresses: {address_type} slice:", version) for a in addresses
        )
    conditions = _mapping(entry.get("conditions"), f"{what}.conditions")
    return SliceEndpoint(
        addresses=parsed,
        ready=_flag(conditions.get("ready"), f"{what}.conditions.ready"),
        serving=_flag(conditions.get("serving"), f"{what}.conditions.serving"),
        terminating=_flag(conditions.get("terminating"), f"{what}.conditions.terminating"),
        zone=_string(entry.get("zone"), f"{what}.zone"),
        node=_string(entry.get("nodeName"), f"{what}.nodeName"),
        pod=_target_pod(entry.get("targetRef"), f"{what}.targetRef", namespace),
    )


def parse_slice(obj: Any) -> KubeSlice:
    """An EndpointSlice's JSON -> :class:`KubeSlice`, or :class:`ObjectError`."""
    namespace, name = object_key(ENDPOINT_SLICE, obj)
    address_type = obj.get("addressType")
    if address_type not in ADDRESS_TYPES:
        raise ObjectError(f"addressType {address_type!r} is not IPv4, IPv6 or FQDN")
    return KubeSlice(
        namespace=namespace,
        name=name,
        service=_labels_of(obj).get(SERVICE_NAME_LABEL, ""),
        address_type=address_type,
        ports=tuple(_slice_port(p, i) for i, p in enumerate(_list(obj.get("ports"), "ports"))),
        endpoints=tuple(
            _slice_endpoint(e, i, address_type, namespace)
            for i, e in enumerate(_list(obj.get("endpoints"), "endpoints"))
        ),
    )


def _first_label(labels: Mapping[str, str], keys: Iterable[str]) -> str:
    return next((labels[k] for k in keys if labels.get(k)), "")


def parse_node(obj: Any) -> NodeLocality:
    """A Node's JSON -> its locality (the only thing read from Nodes)."""
    object_key(NODE, obj)
    labels = _labels_of(obj)
    return NodeLocality(
        region=_first_label(labels, REGION_LABELS),
        zone=_first_label(labels, ZONE_LABELS),
        subzone=labels.get(SUBZONE_LABEL, ""),
    )


def parse_namespace(obj: Any) -> Labels:
    """A Namespace's JSON -> its labels (what a namespace selector reads)."""
    object_key(NAMESPACE, obj)
    return _labels_of(obj)


def parse_pod(obj: Any) -> Labels:
    """A Pod's JSON -> its labels (the only thing read from Pods)."""
    object_key(POD, obj)
    return _labels_of(obj)


_PARSERS = {
    SERVICE: parse_service,
    ENDPOINT_SLICE: parse_slice,
    NODE: parse_node,
    NAMESPACE: parse_namespace,
    POD: parse_pod,
}


# -- building ---------------------------------------------------------------------------------


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


def _locality(endpoint: SliceEndpoint, nodes: Mapping[str, NodeLocality]) -> Locality:
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
                locality = _locality(item, nodes)
                pod = pods.get(item.pod) if item.pod is not None else None
                labels = _endpoint_labels(item.node, locality, options.cluster_id, pod)
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
        ports=service.ports,
        resolution=resolution,
        location=Location.MESH_EXTERNAL if alias else Location.MESH_INTERNAL,
        labels=service.labels,
        addresses=service.cluster_ips,
        export_to=service.export_to,
        alias_for=service.external_name,
    )
    endpoints: tuple[Endpoint, ...] = ()
    if not alias:
        endpoints = _slice_endpoints(hostname, service, own, nodes or {}, options, pods or {})
    summary = _summary(hostname, service, resolution, own)
    return Built(service=served, endpoints=endpoints, summary=summary)


# -- state ------------------------------------------------------------------------------------


class ClusterState:
    """The watched objects of one cluster, converted incrementally (see the module
    docstring).  ``namespaces`` (empty: all) and ``selector`` (on Namespace labels; None:
    no selection) choose the namespaces whose Services are served."""

    def __init__(
        self,
        options: Options | None = None,
        *,
        namespaces: Collection[str] = (),
        selector: Selector | None = None,
    ) -> None:
        self.options = options or Options()
        self.namespaces = frozenset(namespaces)
        self.selector = selector
        self._objects: dict[str, dict[Key, Any]] = {kind: {} for kind in KINDS if kind != POD}
        self._pods = PodLabels()  # Pods: labels only, interned
        self._pods_changed: set[Key] = set()
        self._errors: dict[str, tuple[str, str]] = {}  # source -> (namespace, message)
        self._slices_of: dict[Key, set[Key]] = {}  # service key -> its slices' keys
        self._dirty: set[Key] = set()
        self._nodes: dict[str, NodeLocality] = {}  # node name -> locality
        self._nodes_changed: set[str] = set()
        self._namespaces_changed: set[str] = set()
        self._built: dict[Key, Built] = {}  # as converted now
        self._published: Published[Key] = Published()  # as last handed out
        self._problems: Problems | None = None

    # -- input ------------------------------------------------------------------------------

    def apply(self, kind: str, event: str, obj: Any) -> None:
        """One watch event (``ADDED``, ``MODIFIED`` or ``DELETED``) of ``kind``."""
        try:
            key = object_key(kind, obj)
        except ObjectError as exc:
            if event != "DELETED":
                self._set_error(object_source(kind, obj), "", f"{exc}; skipped")
            return
        if event == "DELETED":
            self._forget(kind, key)
            return
        try:
            parsed = _PARSERS[kind](obj)
        except (ObjectError, ValueError) as exc:
            kept = "; the last good version stays in use" if key in self._known(kind) else ""
            self._set_error(source_of(kind, key), key[0], f"{exc}; skipped{kept}")
            return
        self._clear_error(source_of(kind, key))
        self._store(kind, key, parsed)

    def unavailable(self, kind: str, message: str) -> None:
        """``kind`` cannot be read (e.g. forbidden): what was read of it before stays in
        use; ``message`` is reported under ``<kind>`` until a listing of it succeeds."""
        self._set_error(kind, "", message)

    def reset(self, kind: str, objects: Iterable[Any], namespace: str | None = None) -> None:
        """A full listing of ``kind`` (in ``namespace``; None: all namespaces): objects
        of that scope that it does not hold are gone."""
        self._clear_error(kind)
        listed = list(objects)
        keys: set[Key] = set()
        for obj in listed:
            try:
                keys.add(object_key(kind, obj))
            except ObjectError:
                continue
        in_scope = [k for k in self._known(kind) if namespace is None or k[0] == namespace]
        for key in in_scope:
            if key not in keys:
                self._forget(kind, key)
        prefix = f"{kind}/"
        for source, (where, _) in list(self._errors.items()):
            if source.startswith(prefix) and (namespace is None or where == namespace):
                self._clear_error(source)
        for obj in listed:
            self.apply(kind, "ADDED", obj)

    def _known(self, kind: str) -> Mapping[Key, Any]:
        return self._pods.mapping() if kind == POD else self._objects[kind]

    def _store(self, kind: str, key: Key, parsed: Any) -> None:
        if kind == POD:
            if self._pods.set(key, parsed):
                self._pods_changed.add(key)
            return
        before = self._objects[kind].get(key)
        if before == parsed:
            return
        self._objects[kind][key] = parsed
        self._changed(kind, key, before, parsed)

    def _forget(self, kind: str, key: Key) -> None:
        self._clear_error(source_of(kind, key))
        if kind == POD:
            if self._pods.forget(key):
                self._pods_changed.add(key)
            return
        before = self._objects[kind].pop(key, None)
        if before is not None:
            self._changed(kind, key, before, None)

    def _changed(self, kind: str, key: Key, before: Any, after: Any) -> None:
        if kind == SERVICE:
            self._dirty.add(key)
        elif kind == ENDPOINT_SLICE:
            for piece, add in ((before, False), (after, True)):
                if piece is None or not piece.service:
                    continue
                owner = (piece.namespace, piece.service)
                members = self._slices_of.setdefault(owner, set())
                (members.add if add else members.discard)(key)
                if not members:
                    del self._slices_of[owner]
                self._dirty.add(owner)
                pods = (e.pod for e in piece.endpoints if e.pod is not None)
                (self._pods.link if add else self._pods.unlink)(key, pods)
        elif kind == NODE:
            if after is None:
                self._nodes.pop(key[1], None)
            else:
                self._nodes[key[1]] = after
            self._nodes_changed.add(key[1])
        else:
            self._namespaces_changed.add(key[1])
            self._problems = None

    def _set_error(self, source: str, namespace: str, message: str) -> None:
        if self._errors.get(source) != (namespace, f"{source}: {message}"):
            self._errors[source] = (namespace, f"{source}: {message}")
            self._problems = None

    def _clear_error(self, source: str) -> None:
        if self._errors.pop(source, None) is not None:
            self._problems = None

    # -- selection and conversion -----------------------------------------------------------

    def selected(self, namespace: str) -> bool:
        """Whether Services of ``namespace`` are served."""
        if self.namespaces and namespace not in self.namespaces:
            return False
        if self.selector is None:
            return True
        labels = self._objects[NAMESPACE].get(("", namespace))
        return labels is not None and self.selector.matches(labels)

    def _propagate(self) -> None:
        """Turn changed Nodes, Pods and Namespaces into dirty Services."""
        if self._nodes_changed:
            nodes, self._nodes_changed = self._nodes_changed, set()
            for piece in self._objects[ENDPOINT_SLICE].values():
                if piece.service and any(e.node in nodes for e in piece.endpoints):
                    self._dirty.add((piece.namespace, piece.service))
        if self._pods_changed:
            pods, self._pods_changed = self._pods_changed, set()
            slices = self._objects[ENDPOINT_SLICE]
            for pod in pods:
                for slice_key in self._pods.slices_of(pod):
                    piece = slices.get(slice_key)
                    if piece is not None and piece.service:
                        self._dirty.add((piece.namespace, piece.service))
        if self._namespaces_changed:
            names, self._namespaces_changed = self._namespaces_changed, set()
            self._dirty.update(k for k in self._objects[SERVICE] if k[0] in names)

    def _flush(self) -> set[Key]:
        """Convert the dirty Services again; return their keys."""
        self._propagate()
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            service = self._objects[SERVICE].get(key)
            if service is None or not self.selected(key[0]):
                if self._built.pop(key, None) is not None:
                    self._problems = None
                continue
            slices = [self._objects[ENDPOINT_SLICE][k] for k in self._slices_of.get(key, ())]
            built = build_service(service, slices, self._nodes, self.options, self._pods.mapping())
            before = self._built.get(key)
            if before is None or before.summary != built.summary:
                self._problems = None
            self._built[key] = built
        return dirty

    # -- output ----------------------------------------------------------------------------------

    def replace(self) -> Replace:
        """The full state; what :meth:`changes` compares with from now on."""
        self._flush()
        return self._published.replace(self._built)

    def changes(self) -> list[Upsert | Delete]:
        """Upserts of new or changed hostnames, then Deletes, since the last call."""
        return self._published.changes(self._built, self._flush())

    def problems(self) -> Problems:
        """Errors of skipped objects (Services and slices of selected namespaces only) and
        a summary per served Service; the same object until either changes."""
        if self._problems is None:
            errors = {
                source: message
                for source, (namespace, message) in self._errors.items()
                if not namespace or self.selected(namespace)
            }
            sources = {source_of(SERVICE, key): built.summary for key, built in self._built.items()}
            self._problems = Problems(
                errors=dict(sorted(errors.items())), sources=dict(sorted(sources.items()))
            )
        return self._problems

    @property
    def hostnames(self) -> list[str]:
        return sorted(b.service.hostname for b in self._built.values())
