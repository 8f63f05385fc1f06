"""Kubernetes API objects (their JSON as dicts, as the API server sends them) -> the
values of :mod:`.objects`.  Pure: no I/O.

Every ``parse_*`` function raises :class:`ObjectError` saying what is wrong with a
malformed object (a Service port without number, a bad IP, a field of the wrong type,
an unknown ``addressType``...); :func:`object_source` names the object in problems:
``<kind>/<namespace>/<name>`` (``<kind>/<name>`` for Nodes and Namespaces).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from registryd.model import Labels, Port

from .objects import (
    CLUSTER_SCOPED,
    ENDPOINT_SLICE,
    EXPORT_TO_ANNOTATION,
    NAMESPACE,
    NODE,
    POD,
    REGION_LABELS,
    SERVICE,
    SERVICE_NAME_LABEL,
    SUBZONE_LABEL,
    ZONE_LABELS,
    Key,
    KubeService,
    KubeSlice,
    NodeLocality,
    SliceEndpoint,
    SlicePort,
)
from .protocol import port_protocol

__all__ = [
    "PARSERS",
    "ObjectError",
    "is_dns_name",
    "object_key",
    "object_source",
    "parse_namespace",
    "parse_node",
    "parse_pod",
    "parse_service",
    "parse_slice",
    "source_of",
]

SERVICE_TYPES = frozenset({"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"})
PORT_PROTOCOLS = frozenset({"TCP", "UDP", "SCTP"})
ADDRESS_TYPES = frozenset({"IPv4", "IPv6", "FQDN"})
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")


class ObjectError(ValueError):
    """An API object that cannot be used; the message says what is wrong."""


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
    except Exception:  # ObjectError, or what a stranger object provokes
        metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        return f"{kind}/{name if isinstance(name, str) and name else '?'}"


def _labels_of(obj: Mapping[str, Any]) -> Labels:
    metadata = _mapping(obj.get("metadata"), "metadata")
    return Labels(_string_map(metadata.get("labels"), "metadata.labels"))


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
        created=_created(metadata.get("creationTimestamp")),
    )


def _created(value: Any) -> float | None:
    """``metadata.creationTimestamp`` (RFC 3339, set by the API server) in POSIX
    seconds; ``None`` when absent."""
    text = _string(value, "metadata.creationTimestamp")
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ObjectError(f"metadata.creationTimestamp is not an RFC 3339 time: {text!r}") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


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
    if not isinstance(address_type, str) or address_type not in ADDRESS_TYPES:
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


PARSERS = {
    SERVICE: parse_service,
    ENDPOINT_SLICE: parse_slice,
    NODE: parse_node,
    NAMESPACE: parse_namespace,
    POD: parse_pod,
}
