"""Consul catalog/health replies -> validated instances (:func:`convert_entry`).  Pure:
no I/O.

* Malformed *replies* (not a JSON object or list) raise :class:`ValueError`: the agent
  is not one this adapter can follow.

Mapping (one entry of ``/v1/health/service/<name>`` is one Consul service instance;
:mod:`.mapping` makes services of them: ports, duplicate endpoints):

* hostname: the ``hostname`` template with ``{service}`` (the Consul service name) and
  ``{datacenter}``, lower-cased; default ``<service>.service.consul``.  Services of
  several datacenters (or names differing only in case) that give the same hostname are
  one service whose endpoints are combined.  A hostname exists while it has at least
  one usable instance.
* address: ``Service.Address``, else ``Node.Address``; an IP address or a DNS name.  The
  service resolves ``STATIC`` (EDS) when every address is an IP, else ``DNS``.
* location: ``MESH_INTERNAL``; ``MESH_EXTERNAL`` when an instance has a non-empty
  ``Service.Meta["external"]`` (Istio's rule).  Namespace: the ``namespace`` setting.
* endpoint labels: the ``key|value`` tags (Istio's rule: split at ``|``, the first part
  is the key and the second the value, further parts are dropped), then
  ``Service.Meta`` on top (meta wins).  Plain tags (no ``|``) are not labels, as in
  Istio; they stay visible in the raw entries.
* locality: region = the datacenter (the configured one, else ``Node.Datacenter``).
* health, from all checks of the entry (node and service checks) with Consul's own
  aggregation (maintenance > critical > warning > passing, no checks = passing):
  passing → HEALTHY with weight ``Weights.Passing``; warning → HEALTHY with weight
  ``Weights.Warning`` when ``warning_is_healthy`` (the default, as Consul DNS and
  ``?passing`` treat warning), but UNHEALTHY when that weight is 0 or the setting is
  false; critical or an unknown status → UNHEALTHY; maintenance (``_node_maintenance``,
  ``_service_maintenance:<id>``) → DRAINING.  Weights default to 1/1.
* the ``consul`` service, which Consul registers for its servers (their RPC port) in
  every datacenter's catalog, is not a mesh service: it is neither watched nor served.
* service kinds: only instances whose ``Service.Kind`` is in ``kinds`` count; by default
  only typical services (empty ``Kind``), so Connect sidecar proxies and gateways that
  Consul lists beside them (``web-sidecar-proxy``...) give no hostname.  Their raw
  entries stay visible.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from registryd.model import Health, Labels, is_ip

__all__ = [
    "DEFAULT_HOSTNAME",
    "PROTOCOLS",
    "SERVER_SERVICE",
    "EntryError",
    "Instance",
    "Options",
    "aggregate_status",
    "catalog_names",
    "check_states",
    "convert_entry",
    "entry_names",
    "health_entries",
    "hostname_for",
    "is_dns_name",
    "public_entry",
    "service_kind",
    "tag_labels",
]

DEFAULT_HOSTNAME = "{service}.service.consul"
SERVER_SERVICE = "consul"  # the Consul servers' own service, in every datacenter's catalog
PROTOCOLS = frozenset(
    "HTTP HTTPS HTTP2 HTTP_PROXY GRPC GRPC-WEB TCP TLS UDP MONGO MYSQL REDIS".split()
)
NODE_MAINTENANCE = "_node_maintenance"
SERVICE_MAINTENANCE_PREFIX = "_service_maintenance:"
_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_NODE_FIELDS = ("ID", "Node", "Address", "Datacenter", "TaggedAddresses", "Meta")
_SERVICE_FIELDS = (
    "ID",
    "Service",
    "Kind",
    "Tags",
    "Address",
    "TaggedAddresses",
    "Port",
    "Meta",
    "Weights",
    "Namespace",
    "Partition",
)
_CHECK_FIELDS = ("CheckID", "Name", "Status", "ServiceID", "ServiceName", "Type")


class EntryError(ValueError):
    """A catalog entry (or service name) that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """What the mapping depends on.  ``prefix_datacenter``: several datacenters are
    read, so problem and source keys start with ``<datacenter>/``."""

    hostname: str = DEFAULT_HOSTNAME
    namespace: str = "default"
    warning_is_healthy: bool = True
    prefix_datacenter: bool = False
    kinds: frozenset[str] = frozenset({""})  # Service.Kind values to use; "" = typical


@dataclass(frozen=True, slots=True, kw_only=True)
class Instance:
    """One usable Consul service instance."""

    service: str
    id: str
    node: str
    datacenter: str
    address: str
    port: int
    protocol: str
    labels: Labels
    health: Health
    weight: int
    external: bool = False
    notes: tuple[str, ...] = ()

    @property
    def order(self) -> tuple[str, str, str]:
        return (self.datacenter, self.node, self.id)


# -- replies ----------------------------------------------------------------------------


CHECK_FIELDS = ("Node", "CheckID", "Status", "ServiceName")


def catalog_names(data: Any) -> list[str]:
    """The service names of a ``/v1/catalog/services`` reply (name -> tags)."""
    if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
        raise ValueError(f"/v1/catalog/services: expected an object of names, got {_kind(data)}")
    return sorted(data)


def health_entries(data: Any) -> list[Any]:
    """The entries of a ``/v1/health/service/<name>`` reply (a list)."""
    if not isinstance(data, list):
        raise ValueError(f"/v1/health/service: expected a list of entries, got {_kind(data)}")
    return data


def check_states(data: Any) -> dict[tuple[str, str], tuple[str, str]]:
    """The checks of a ``/v1/health/state/<state>`` reply: (node, check id) -> (status,
    service name; "" for a node's own check)."""
    if not isinstance(data, list):
        raise ValueError(f"/v1/health/state: expected a list of checks, got {_kind(data)}")
    states: dict[tuple[str, str], tuple[str, str]] = {}
    for check in data:
        fields = [check.get(k) for k in CHECK_FIELDS] if isinstance(check, Mapping) else []
        strings = [f for f in fields if isinstance(f, str)]
        if len(strings) != len(CHECK_FIELDS):
            raise ValueError(f"/v1/health/state: a check without {', '.join(CHECK_FIELDS)}")
        node, check_id, status, service = strings
        states[(node, check_id)] = (status, service)
    return states


def _kind(data: Any) -> str:
    return "null" if data is None else type(data).__name__


# -- pure mapping -----------------------------------------------------------------------


def is_dns_name(name: str) -> bool:
    """A lower-case DNS name: dot-separated labels of letters, digits and inner hyphens."""
    return len(name) <= 253 and _DNS_NAME.fullmatch(name) is not None


def hostname_for(template: str, service: str, datacenter: str = "") -> str:
    """The hostname of Consul service ``service`` (see the module docstring)."""
    hostname = template.format(service=service, datacenter=datacenter).lower()
    if not is_dns_name(hostname):
        raise EntryError(
            f"service name {service!r} gives hostname {hostname!r}, which is not a DNS name"
        )
    return hostname


def tag_labels(tags: Iterable[str]) -> dict[str, str]:
    """Istio's rule: ``key|value`` tags are labels (later tags win); others are not."""
    labels: dict[str, str] = {}
    for tag in tags:
        parts = tag.split("|")
        if len(parts) > 1 and parts[0]:
            labels[parts[0]] = parts[1]
    return labels


def aggregate_status(checks: Iterable[Mapping[str, Any]]) -> str:
    """Consul's ``HealthChecks.AggregatedStatus``: ``maintenance`` > ``critical`` >
    ``warning`` > ``passing`` (also for no checks); ``""`` for an unknown status."""
    seen = set()
    for check in checks:
        check_id = check.get("CheckID")
        if check_id == NODE_MAINTENANCE or (
            isinstance(check_id, str) and check_id.startswith(SERVICE_MAINTENANCE_PREFIX)
        ):
            seen.add("maintenance")
            continue
        status = check.get("Status")
        if status not in ("passing", "warning", "critical"):
            return ""
        seen.add(status)
    for status in ("maintenance", "critical", "warning"):
        if status in seen:
            return status
    return "passing"


def service_kind(entry: Any) -> str:
    """The ``Service.Kind`` of a health entry (``""``: a typical service, also when the
    entry is too malformed to tell; :func:`convert_entry` reports those)."""
    service = entry.get("Service") if isinstance(entry, Mapping) else None
    kind = service.get("Kind") if isinstance(service, Mapping) else None
    return kind if isinstance(kind, str) else ""


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise EntryError(f"{what} is not an object ({_kind(value)})")
    return value


def _meta(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()
    ):
        raise EntryError("Service.Meta must map non-empty strings to strings")
    return dict(value)


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise EntryError("Service.Tags must be a list of strings")
    return value


def _port(value: Any) -> int:
    if value is None:  # Consul leaves Port out of an instance registered without one (0)
        raise EntryError("no Service.Port: the instance has no port")
    if isinstance(value, bool) or not isinstance(value, int):
        raise EntryError(f"Service.Port {value!r} is not a port number")
    if value == 0:
        raise EntryError("Service.Port is 0: the instance has no port")
    if not 0 < value < 65536:
        raise EntryError(f"Service.Port {value} is out of range 1-65535")
    return value


def _address(service: Mapping[str, Any], node: Mapping[str, Any]) -> str:
    for where, value in (
        ("Service.Address", service.get("Address")),
        ("Node.Address", node.get("Address")),
    ):
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            raise EntryError(f"{where} {value!r} is not a string")
        if is_ip(value) or is_dns_name(value.lower().rstrip(".")):
            return value if is_ip(value) else value.lower().rstrip(".")
        raise EntryError(f"{where} {value!r} is neither an IP address nor a DNS name")
    raise EntryError("no address: Service.Address and Node.Address are both empty")


def _weights(value: Any) -> tuple[int, int]:
    if value is None:
        return (1, 1)
    if not isinstance(value, Mapping):
        raise EntryError("Service.Weights must be an object with Passing and Warning")
    passing, warning = value.get("Passing", 1), value.get("Warning", 1)
    for name, weight in (("Passing", passing), ("Warning", warning)):
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise EntryError(f"Service.Weights.{name} {weight!r} is not a weight (integer >= 0)")
    if passing < 1:
        raise EntryError("Service.Weights.Passing must be at least 1")
    return (passing, warning)


def _checks(value: Any) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(c, Mapping) for c in value):
        raise EntryError("Checks must be a list of objects")
    return value


def _protocol(meta: Mapping[str, str], tags: Mapping[str, str]) -> tuple[str, str | None]:
    """The protocol and, for an unknown value, a note."""
    value = meta.get("protocol") or tags.get("protocol") or "tcp"
    upper = value.upper()
    if upper in PROTOCOLS:
        return upper, None
    return "TCP", f"unknown protocol {value!r}, using TCP"


def _health(status: str, weights: tuple[int, int], warning_is_healthy: bool) -> tuple[Health, int]:
    passing, warning = weights
    if status == "passing":
        return Health.HEALTHY, passing
    if status == "warning":
        if warning_is_healthy and warning > 0:
            return Health.HEALTHY, warning
        return Health.UNHEALTHY, passing
    if status == "maintenance":
        return Health.DRAINING, passing
    return Health.UNHEALTHY, passing  # critical, or a status Consul does not define


def entry_names(entry: Any, fallback: str) -> tuple[str, str]:
    """(service id, node name) for messages, as far as the entry tells."""
    service = entry.get("Service") if isinstance(entry, Mapping) else None
    node = entry.get("Node") if isinstance(entry, Mapping) else None
    service_id = service.get("ID") if isinstance(service, Mapping) else None
    node_name = node.get("Node") if isinstance(node, Mapping) else None
    return (
        service_id if isinstance(service_id, str) and service_id else fallback,
        node_name if isinstance(node_name, str) else "",
    )


def convert_entry(entry: Any, *, service: str, datacenter: str, options: Options) -> Instance:
    """One ``/v1/health/service/<service>`` entry -> :class:`Instance`, or EntryError."""
    body = _mapping(entry, "the entry")
    node = _mapping(body.get("Node"), "Node")
    svc = _mapping(body.get("Service"), "Service")
    service_id, node_name = entry_names(entry, service)
    port = _port(svc.get("Port"))
    meta = _meta(svc.get("Meta"))
    from_tags = tag_labels(_tags(svc.get("Tags")))
    protocol, note = _protocol(meta, from_tags)
    status = aggregate_status(_checks(body.get("Checks")))
    health, weight = _health(status, _weights(svc.get("Weights")), options.warning_is_healthy)
    region = datacenter or node.get("Datacenter") or ""
    if not isinstance(region, str):
        raise EntryError(f"Node.Datacenter {region!r} is not a string")
    return Instance(
        service=service,
        id=service_id,
        node=node_name,
        datacenter=region,
        address=_address(svc, node),
        port=port,
        protocol=protocol,
        labels=Labels({**from_tags, **meta}),
        health=health,
        weight=weight,
        external=bool(meta.get("external")),
        notes=() if note is None else (f"{service}/{service_id}: {note}",),
    )


def public_entry(entry: Any) -> Any:
    """``entry`` for the debug port: only the fields the mapping reads, nothing secret."""
    if not isinstance(entry, Mapping):
        return f"<malformed entry: {_kind(entry)}>"
    result: dict[str, Any] = {}
    for name, fields in (("Node", _NODE_FIELDS), ("Service", _SERVICE_FIELDS)):
        part = entry.get(name)
        result[name] = _pick(part, fields) if isinstance(part, Mapping) else part
    checks = entry.get("Checks")
    if isinstance(checks, list):
        result["Checks"] = [
            _pick(c, _CHECK_FIELDS) if isinstance(c, Mapping) else c for c in checks
        ]
    return result


def _pick(part: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    return {f: part[f] for f in fields if f in part}
