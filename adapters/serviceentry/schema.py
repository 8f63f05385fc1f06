"""Istio ServiceEntry / WorkloadEntry YAML -> typed, validated objects.  Pure: no I/O.

Contract:

* :func:`parse_file` turns the content of one file (YAML, ``---``-separated documents,
  loaded within :class:`~.yamlsafe.Limits`; a mapping key given twice is an error of its
  document) into a :class:`ParsedFile`, validating every document on its own with
  Istio's rules.
  If any document is broken it raises :class:`InvalidConfig`, whose message names the
  file, each broken document (number, kind, namespace/name) and every reason: a file is
  used all or nothing.  Empty documents are skipped.
* :func:`parse_document` validates a single document into a :class:`ServiceEntry` or a
  :class:`WorkloadEntry` (frozen, comparable values).

Values from the input are quoted in messages only in short (:func:`~.yamlsafe.show`);
a document that is not a mapping is described by its type, never by its content.
Unknown fields (:mod:`.fields`) do not break a document, as in istiod; a document broken
anyway names them first in its error.  Istio's defaults apply: resolution ``NONE``, location
``MESH_EXTERNAL``, namespace ``default``, endpoint weight 1 (also for weight 0).  A port's
protocol is kept as written (upper-cased, ``""`` when unset); :mod:`.convert` derives the
default from the port name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from registryd.model import Labels, Location, Resolution

from .fields import unknown_fields, with_json_names
from .yamlsafe import DEFAULT_LIMITS, DocumentProblem, FileProblem, Limits, load_documents, show

__all__ = [
    "API_VERSIONS",
    "PROTOCOLS",
    "UNIX_PREFIX",
    "InvalidConfig",
    "Metadata",
    "ParsedFile",
    "ServiceEntry",
    "ServiceEntrySpec",
    "ServicePort",
    "WorkloadEntry",
    "WorkloadSpec",
    "parse_document",
    "parse_file",
]

API_VERSIONS = frozenset(f"networking.istio.io/{v}" for v in ("v1", "v1beta1", "v1alpha3"))
PROTOCOLS = frozenset(
    "HTTP HTTPS HTTP2 HTTP_PROXY GRPC GRPC-WEB TCP TLS UDP MONGO MYSQL REDIS".split()
)
UNIX_PREFIX = "unix://"
_LABEL = r"[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PORT_NAME = re.compile(_LABEL)
_K8S_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_K8S_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
_MAX_WEIGHT = 2**32 - 1


class InvalidConfig(ValueError):
    """A file or document that cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Metadata:
    name: str
    namespace: str = "default"
    labels: Labels = field(default_factory=Labels)
    created: datetime | None = None  # metadata.creationTimestamp, when the file has one


@dataclass(frozen=True, slots=True)
class ServicePort:
    number: int
    name: str
    protocol: str  # as written, upper-cased; "" when unset
    target_port: int | None = None


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """A WorkloadEntry spec, or one inline endpoint of a ServiceEntry."""

    address: str = ""
    ports: Mapping[str, int] = field(default_factory=dict)
    labels: Labels = field(default_factory=Labels)
    locality: str = ""
    weight: int = 1
    network: str = ""


@dataclass(frozen=True, slots=True)
class ServiceEntrySpec:
    hosts: tuple[str, ...]
    addresses: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    location: Location = Location.MESH_EXTERNAL
    resolution: Resolution = Resolution.NONE
    endpoints: tuple[WorkloadSpec, ...] = ()
    workload_selector: Labels | None = None  # None: not set; empty: selects every workload
    export_to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    kind: ClassVar[str] = "ServiceEntry"
    meta: Metadata
    spec: ServiceEntrySpec
    where: str = ""  # file and document number, for notes


@dataclass(frozen=True, slots=True)
class WorkloadEntry:
    kind: ClassVar[str] = "WorkloadEntry"
    meta: Metadata
    spec: WorkloadSpec
    where: str = ""


Document = ServiceEntry | WorkloadEntry  # one parsed document


@dataclass(frozen=True, slots=True)
class ParsedFile:
    source: str
    documents: tuple[ServiceEntry | WorkloadEntry, ...] = ()
    raw: tuple[Any, ...] = ()  # the YAML documents as loaded


# -- field readers: append "field: reason" to errs and return a usable value ------------


_KINDS = {str: "a string", int: "an integer", list: "a list", dict: "a mapping"}


def _get(obj: Mapping[str, Any], key: str, kind: type, where: str, errs: list[str]) -> Any:
    """``obj[key]`` if it has type ``kind``; None when absent, null or of another type."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        errs.append(f"{where}{key}: must be {_KINDS[kind]}, got {show(value)}")
        return None
    return value


def _colon_scalar(value: Any) -> Any:
    """Undo one YAML reading difference: ``[2001:db8::]`` is ``[{"2001:db8:": None}]`` to
    a YAML 1.1/1.2 parser but the string ``"2001:db8::"`` to Kubernetes' (and Istio's)."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, rest),) = value.items()
        if isinstance(key, str) and rest is None:
            return key + ":"
    return value


def _strings(obj: Mapping[str, Any], key: str, where: str, errs: list[str]) -> tuple[str, ...]:
    items = [_colon_scalar(v) for v in _get(obj, key, list, where, errs) or []]
    bad = [v for v in items if not isinstance(v, str) or not v]
    if bad:
        errs.append(f"{where}{key}: entries must be non-empty strings, got {show(bad[0])}")
    return tuple(v for v in items if isinstance(v, str) and v)


def _labels(obj: Mapping[str, Any], key: str, where: str, errs: list[str]) -> Labels:
    items = _get(obj, key, dict, where, errs) or {}
    good = {k: v for k, v in items.items() if isinstance(k, str) and k and isinstance(v, str)}
    for k, v in items.items():
        if k not in good:
            errs.append(f"{where}{key}: keys and values must be strings, got {show(k)}: {show(v)}")
            break
    return Labels(good)


def _enum(obj: Mapping[str, Any], key: str, kind: Any, default: Any, errs: list[str]) -> Any:
    value = _get(obj, key, str, "spec.", errs)
    if value is None:
        return default
    try:
        return kind(value)
    except ValueError:
        errs.append(f"spec.{key}: {show(value)} is not one of {', '.join(kind)}")
        return default


def _port(value: Any, where: str, errs: list[str]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        errs.append(f"{where}: port must be a number between 1 and 65535, got {show(value)}")
        return None
    return value


def _host_error(host: str) -> str | None:
    if host == "*":
        return "the full wildcard '*' is not allowed as a host"
    # a wildcard only in the first label: "*", "*<label>" or "*-<label>" (istiod's
    # validation/agent ValidateWildcardDomain, labels.IsWildcardDNS1123Label)
    name = host[2:] if host.startswith(("*.", "*-")) else host[1:] if host.startswith("*") else host
    if len(host) > 253 or not _DNS_NAME.fullmatch(name):
        return f"{show(host)} is not a valid DNS name (a leading '*' wildcard is allowed)"
    return None


def _address_error(address: str, *, dns: bool, unix: bool) -> str | None:
    if address.startswith(UNIX_PREFIX):
        path = address[len(UNIX_PREFIX) :]
        if not unix:
            return f"unix socket address {show(address)} needs resolution STATIC"
        if path.startswith("@") and len(path) > 1:
            return None
        if not path.startswith("/"):
            return f"unix socket {show(address)} must be an absolute path or an abstract @name"
        return (
            f"unix socket {show(address)} must not be a directory" if path.endswith("/") else None
        )
    try:
        ipaddress.ip_address(address)
        return None
    except ValueError:
        pass
    if "*" in address:
        return f"address {show(address)} must not contain a wildcard"
    if not dns:
        return f"address {show(address)} is not an IP address (resolution STATIC needs IPs)"
    if len(address) > 253 or not _DNS_NAME.fullmatch(address):
        return f"address {show(address)} is not an IP address or DNS name"
    return None


def _workload(
    raw: Any, where: str, errs: list[str], *, dns: bool = True, unix: bool = True
) -> WorkloadSpec:
    if not isinstance(raw, dict):
        errs.append(f"{where.rstrip('.')}: must be a mapping, got {show(raw)}")
        return WorkloadSpec()
    address = _get(raw, "address", str, where, errs) or ""
    network = _get(raw, "network", str, where, errs) or ""
    if not address and not network:
        errs.append(f"{where}address: required (unless network is set)")
    elif address and (problem := _address_error(address, dns=dns, unix=unix)):
        errs.append(f"{where}address: {problem}")
    ports: dict[str, int] = {}
    for name, number in (_get(raw, "ports", dict, where, errs) or {}).items():
        if not isinstance(name, str) or not _PORT_NAME.fullmatch(name):
            errs.append(f"{where}ports: invalid port name {show(name)} (a DNS label)")
        elif (checked := _port(number, f"{where}ports.{name}", errs)) is not None:
            ports[name] = checked
    if address.startswith(UNIX_PREFIX) and ports:
        errs.append(f"{where}ports: unix socket addresses must not have ports")
    locality = _get(raw, "locality", str, where, errs) or ""
    if locality and (locality.count("/") > 2 or "" in locality.split("/")):
        errs.append(f"{where}locality: {show(locality)} must be region[/zone[/subzone]]")
    weight = _get(raw, "weight", int, where, errs) or 1  # 0 means unset, as in Istio
    if not 0 < weight <= _MAX_WEIGHT:
        errs.append(f"{where}weight: must be between 0 and {_MAX_WEIGHT}, got {weight}")
        weight = 1
    labels = _labels(raw, "labels", where, errs)
    return WorkloadSpec(address, ports, labels, locality, weight, network)


def _service_ports(spec: Mapping[str, Any], errs: list[str]) -> tuple[ServicePort, ...]:
    result: list[ServicePort] = []
    names: set[str] = set()
    for i, raw in enumerate(_get(spec, "ports", list, "spec.", errs) or []):
        where = f"spec.ports[{i}]"
        if not isinstance(raw, dict):
            errs.append(f"{where}: must be a mapping, got {show(raw)}")
            continue
        number = _port(raw.get("number"), f"{where}.number", errs)
        if number is not None and any(p.number == number for p in result):
            errs.append(f"{where}.number: port number {number} is duplicated")
        name = _get(raw, "name", str, f"{where}.", errs) or ""
        if not _PORT_NAME.fullmatch(name):
            errs.append(f"{where}.name: required, a DNS label, got {show(name)}")
        elif name in names:
            errs.append(f"{where}.name: port name {show(name)} is duplicated")
        names.add(name)
        protocol = (_get(raw, "protocol", str, f"{where}.", errs) or "").upper()
        if protocol and protocol not in PROTOCOLS:
            errs.append(f"{where}.protocol: unsupported protocol {show(raw['protocol'])}")
        target = raw.get("targetPort") or None  # 0 means unset
        if target is not None:
            target = _port(target, f"{where}.targetPort", errs)
        if number is not None:
            result.append(ServicePort(number, name, protocol, target))
    return tuple(result)


# protocol.Instance IsHTTP or IsTLS (istio pkg/config/protocol/instance.go)
_HOST_TELLING_PROTOCOLS = frozenset(
    {"HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY", "HTTPS", "TLS"}
)


def _service_entry_spec(spec: Mapping[str, Any], errs: list[str]) -> ServiceEntrySpec:
    hosts = _strings(spec, "hosts", "spec.", errs)
    if not hosts:
        errs.append("spec.hosts: required, at least one host")
    if len(set(hosts)) != len(hosts):
        errs.append(f"spec.hosts: duplicate hosts in {list(hosts)}")
    errs.extend(f"spec.hosts: {p}" for h in hosts if (p := _host_error(h)))
    addresses = _strings(spec, "addresses", "spec.", errs)
    for address in addresses:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            errs.append(f"spec.addresses: {show(address)} is not an IP address or CIDR")
    location = _enum(spec, "location", Location, Location.MESH_EXTERNAL, errs)
    resolution = _enum(spec, "resolution", Resolution, Resolution.NONE, errs)
    if resolution not in (Resolution.NONE, Resolution.STATIC) and any("/" in a for a in addresses):
        errs.append("spec.addresses: CIDR addresses are allowed only for NONE/STATIC resolution")
    ports = _service_ports(spec, errs)
    selector: Labels | None = None
    raw_selector = _get(spec, "workloadSelector", dict, "spec.", errs)
    if raw_selector is not None:
        selector = _labels(raw_selector, "labels", "spec.workloadSelector.", errs)
        if any("*" in k or "*" in v for k, v in selector.items()):
            errs.append("spec.workloadSelector.labels: wildcards are not supported in selectors")
    raw_endpoints = _get(spec, "endpoints", list, "spec.", errs) or []
    if raw_endpoints and raw_selector is not None:
        errs.append("spec: only one of workloadSelector or endpoints can be set")
    if raw_endpoints and resolution is Resolution.NONE:
        errs.append("spec.endpoints: resolution NONE cannot have endpoints")
    if len(raw_endpoints) > 1 and resolution is Resolution.DNS_ROUND_ROBIN:
        errs.append("spec.endpoints: resolution DNS_ROUND_ROBIN allows at most one endpoint")
    static = resolution is Resolution.STATIC
    endpoints = tuple(
        _workload(raw, f"spec.endpoints[{i}].", errs, dns=not static, unix=static)
        for i, raw in enumerate(raw_endpoints)
    )
    names = {p.name for p in ports}
    for i, endpoint in enumerate(endpoints):
        for name in sorted(set(endpoint.ports) - names):
            errs.append(
                f"spec.endpoints[{i}].ports: {show(name)} is not a port name of the service"
            )
    if any(e.address.startswith(UNIX_PREFIX) for e in endpoints) and len(ports) != 1:
        errs.append("spec.ports: unix socket endpoints need exactly one service port")
    if resolution in (Resolution.DNS, Resolution.DNS_ROUND_ROBIN) and not endpoints:
        if raw_selector is None and any(h.startswith("*") for h in hosts):
            errs.append(f"spec.hosts: resolution {resolution} without endpoints needs plain hosts")
    if resolution is not Resolution.NONE and len(hosts) > 1:
        # validation.go ValidateServiceEntry: plain TCP cannot tell the hosts apart (HTTP
        # by Host, TLS by SNI), so istiod refuses the entry; an unset protocol counts
        # as not HTTP (protocol.Parse("") is Unsupported)
        if any(p.protocol not in _HOST_TELLING_PROTOCOLS for p in ports):
            errs.append("spec.ports: multiple hosts provided with non-HTTP, non-TLS ports")
    export_to = _strings(spec, "exportTo", "spec.", errs)
    for name in export_to:
        if name not in (".", "*", "~") and not _K8S_LABEL.fullmatch(name):
            errs.append(f"spec.exportTo: {show(name)} is not '.', '*', '~' or a namespace name")
    if len(set(export_to)) != len(export_to):
        errs.append(f"spec.exportTo: duplicate entries in {list(export_to)}")
    return ServiceEntrySpec(
        hosts, addresses, ports, location, resolution, endpoints, selector, export_to
    )


def parse_document(
    raw: Any, *, index: int = 1, where: str = "", name_unknown: bool = True
) -> ServiceEntry | WorkloadEntry:
    """Validate one YAML document (``index`` numbers it in messages, ``where`` in notes).
    Unknown fields alone do not make it invalid; with ``name_unknown`` the error of a
    document that is invalid anyway lists them first (:func:`.fields.unknown_fields`)."""
    label = f"document {index}"
    original, raw = raw, with_json_names(raw)  # export_to is exportTo, as in protojson
    if not isinstance(raw, dict):
        got = type(raw).__name__
        raise InvalidConfig(f"{label}: expected a mapping with apiVersion/kind, got a {got}")
    kind, api = raw.get("kind"), raw.get("apiVersion")
    errs: list[str] = []
    meta_raw = _get(raw, "metadata", dict, "", errs) or {}
    name = _get(meta_raw, "name", str, "metadata.", errs) or ""
    namespace = _get(meta_raw, "namespace", str, "metadata.", errs) or "default"
    label = f"{label} ({kind if isinstance(kind, str) else '?'} {namespace}/{name or '?'})"
    if kind not in (ServiceEntry.kind, WorkloadEntry.kind):
        raise InvalidConfig(f"{label}: unsupported kind {show(kind)} (ServiceEntry, WorkloadEntry)")
    if not isinstance(api, str) or api not in API_VERSIONS:
        raise InvalidConfig(f"{label}: unsupported apiVersion {show(api)} for {kind}")
    if not _K8S_NAME.fullmatch(name) or len(name) > 253:
        errs.append(f"metadata.name: required, a lowercase DNS name, got {show(name)}")
    if not _K8S_LABEL.fullmatch(namespace):
        errs.append(f"metadata.namespace: {show(namespace)} is not a valid namespace name")
    created = _created(meta_raw.get("creationTimestamp"), errs)
    meta = Metadata(name, namespace, _labels(meta_raw, "labels", "metadata.", errs), created)
    spec = raw.get("spec")
    doc: ServiceEntry | WorkloadEntry
    if not isinstance(spec, dict):
        errs.append(
            "spec: required" if spec is None else f"spec: must be a mapping, got {show(spec)}"
        )
        doc = WorkloadEntry(meta, WorkloadSpec())
    elif kind == ServiceEntry.kind:
        doc = ServiceEntry(meta, _service_entry_spec(spec, errs), where)
    else:
        doc = WorkloadEntry(meta, _workload(spec, "spec.", errs), where)
    if errs:
        unknown = [f.message() for f in unknown_fields(original)] if name_unknown else []
        raise InvalidConfig(f"{label}: {'; '.join([*unknown, *errs])}")
    return doc


def _created(raw: object, errs: list[str]) -> datetime | None:
    """``metadata.creationTimestamp`` (RFC 3339; YAML may have made it a datetime
    already), in UTC; ``None`` when absent."""
    if raw is None:
        return None
    try:
        when = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
    except ValueError:
        errs.append(f"metadata.creationTimestamp: not an RFC 3339 time, got {show(raw)}")
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_file(data: bytes | str, source: str, limits: Limits = DEFAULT_LIMITS) -> ParsedFile:
    """Parse and validate one file; :class:`InvalidConfig` if any document is broken."""
    try:
        raws = load_documents(data, limits)
    except FileProblem as exc:
        raise InvalidConfig(f"{source}: {exc}") from None
    documents, problems = [], []
    for index, raw in enumerate(raws, 1):
        if raw is None:  # an empty document, e.g. after a trailing ---
            continue
        if isinstance(raw, DocumentProblem):
            problems.append(f"document {index}: {raw.message}")
            continue
        try:
            documents.append(parse_document(raw, index=index, where=f"{source} #{index}"))
        except InvalidConfig as exc:
            problems.append(str(exc))
    if problems:
        raise InvalidConfig(f"{source}: {' | '.join(problems)}")
    return ParsedFile(source, tuple(documents), tuple(r for r in raws if r is not None))
