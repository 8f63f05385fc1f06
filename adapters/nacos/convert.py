"""Nacos instance lists -> registryd services and endpoints.  Pure: no I/O.

One Nacos service (``serviceName`` in ``groupName`` of ``namespaceId``) is one registryd
service whose hostname comes from the ``hostname_template`` (default
``{service}.{group}.{namespace}.nacos``), lower-cased with ``_`` turned into ``-``.
Its answer to ``GET /nacos/v1/ns/instance/list`` maps as follows:

==========================  ===========================================================
Nacos                       registryd
==========================  ===========================================================
``ip``, ``port``            endpoint address and port; the service has one port per
                            distinct instance port (``service_port`` = ``port``)
``weight`` (float)          endpoint weight ``weight * weight_scale`` rounded, at
                            least 1 (scale 1 by default: Nacos' default 1.0 weighs
                            what every other registry's default endpoint weighs);
                            ``0`` means no traffic, as Nacos' clients read it
``healthy``                 ``HEALTHY`` / ``UNHEALTHY``
``enabled: false``          not served
``clusterName``             locality zone (``zone_from``: ``clusterName``,
                            ``metadata:<key>`` or ``none``)
``metadata``                endpoint labels (values as strings)
``metadata.protocol``       the port's protocol (``http``, ``grpc``…; else TCP with a
                            warning); instances that disagree: the first by address wins
==========================  ===========================================================

A malformed instance is left out with a note; the rest of the service is served.  A
malformed answer as a whole raises :class:`ValueError` (that service's error).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from registryd.model import Endpoint, Health, Labels, Locality, Location, Port, Service

__all__ = [
    "PROTOCOLS",
    "Converted",
    "Instance",
    "convert_service",
    "hostname",
    "parse_instance",
]

MAX_WEIGHT = 10000.0  # Nacos' servers refuse or cap anything above
PROTOCOLS = frozenset("HTTP HTTPS HTTP2 GRPC GRPC-WEB TCP TLS UDP MONGO MYSQL REDIS".split())
_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


@dataclass(frozen=True, slots=True)
class Instance:
    """The fields of one Nacos instance that registryd reads, checked."""

    ip: str
    port: int
    weight: float
    healthy: bool
    enabled: bool
    cluster: str
    metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Converted:
    """One Nacos service as registryd sees it; ``notes`` are warnings about it."""

    service: Service
    endpoints: tuple[Endpoint, ...]
    notes: tuple[str, ...] = ()


def hostname(template: str, *, service: str, group: str, namespace: str) -> str:
    """The hostname of a Nacos service; ValueError when it is not a DNS name."""
    name = template.format(service=service, group=group, namespace=namespace)
    name = name.lower().replace("_", "-")
    if len(name) > 253 or not _DNS_NAME.fullmatch(name):
        raise ValueError(f"hostname {name!r} is not a DNS name")
    return name


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _flag(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key, True)
    if not isinstance(value, bool):
        raise ValueError(f"{key!r} must be true or false, got {value!r}")
    return value


def parse_instance(raw: Any) -> Instance:
    """One entry of ``hosts``; ValueError naming the bad field."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"not an object: {raw!r}")
    ip, port, weight = raw.get("ip"), raw.get("port"), raw.get("weight", 1.0)
    if not isinstance(ip, str) or not ip:
        raise ValueError(f"'ip' must be a non-empty string, got {ip!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"{ip}: 'port' must be 1-65535, got {port!r}")
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise ValueError(f"{ip}:{port}: 'weight' must be a number, got {weight!r:.40}")
    if not 0 <= weight <= MAX_WEIGHT:  # also NaN and infinities (JSON's Infinity)
        raise ValueError(f"{ip}:{port}: 'weight' must be 0-{MAX_WEIGHT:g}, got {weight!r:.40}")
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"{ip}:{port}: 'metadata' must be an object, got {metadata!r}")
    return Instance(
        ip=ip,
        port=port,
        weight=float(weight),
        healthy=_flag(raw, "healthy"),
        enabled=_flag(raw, "enabled"),
        cluster=_text(raw.get("clusterName") or ""),
        metadata={str(k): _text(v) for k, v in metadata.items() if v is not None},
    )


def _protocols(instances: Sequence[Instance]) -> tuple[dict[int, str], list[str]]:
    """Port -> protocol from ``metadata.protocol`` (first instance by address wins)."""
    chosen: dict[int, str] = {}
    seen: dict[int, set[str]] = {}
    notes = []
    for inst in instances:
        value = inst.metadata.get("protocol", "tcp")
        seen.setdefault(inst.port, set()).add(value)
        if inst.port not in chosen:
            upper = value.upper()
            if upper not in PROTOCOLS:
                notes.append(f"port {inst.port}: unknown protocol {value!r}, using TCP")
                upper = "TCP"
            chosen[inst.port] = upper
    for port, values in sorted(seen.items()):
        if len(values) > 1:
            notes.append(
                f"port {port}: instances disagree on the protocol {sorted(values)}, "
                f"using {chosen[port]}"
            )
    return chosen, notes


def _zone(inst: Instance, zone_from: str) -> str:
    if zone_from == "clusterName":
        return inst.cluster
    if zone_from.startswith("metadata:"):
        return inst.metadata.get(zone_from[len("metadata:") :], "")
    return ""


def _scaled_weight(weight: float, scale: float) -> int:
    """Envoy's integer weight for a Nacos weight (> 0): rounded half up, at least 1."""
    return max(1, int(weight * scale + 0.5))


def _endpoint(host: str, inst: Instance, zone_from: str, weight_scale: float) -> Endpoint:
    return Endpoint(
        hostname=host,
        address=inst.ip,
        port=inst.port,
        service_port=inst.port,
        locality=Locality(zone=_zone(inst, zone_from)),
        weight=_scaled_weight(inst.weight, weight_scale),
        health=Health.HEALTHY if inst.healthy else Health.UNHEALTHY,
        labels=Labels(inst.metadata),
    )


def convert_service(
    document: Any,
    *,
    host: str,
    namespace: str,
    zone_from: str = "clusterName",
    weight_scale: float = 1.0,
) -> Converted:
    """The service ``host`` from one instance-list answer; ValueError if it is not one.

    Ports come from every listed instance, served or not, so that disabling the last
    instance of a port does not change the service's ports."""
    if not isinstance(document, Mapping) or not isinstance(document.get("hosts", []), list):
        raise ValueError("the answer must be an object with a 'hosts' list")
    instances, notes = [], []
    for index, raw in enumerate(document.get("hosts") or []):
        try:
            instances.append(parse_instance(raw))
        except ValueError as exc:
            notes.append(f"instance #{index} left out: {exc}")
    instances.sort(key=lambda i: (i.ip, i.port, i.cluster))
    protocols, protocol_notes = _protocols(instances)
    service = Service(
        hostname=host,
        namespace=namespace.lower().replace("_", "-"),
        ports=tuple(
            Port(number=number, name=f"{protocol.lower()}-{number}", protocol=protocol)
            for number, protocol in sorted(protocols.items())
        ),
        location=Location.MESH_INTERNAL,
    )
    endpoints = tuple(
        _endpoint(host, inst, zone_from, weight_scale)
        for inst in instances
        if inst.enabled and inst.weight > 0
    )
    return Converted(service, endpoints, (*notes, *protocol_notes))
