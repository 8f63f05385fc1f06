"""From merged services to the Istio config istiod reads over MCP: pure conversions.

An istiod whose ``meshConfig.configSources`` lists ``xds://<registryd>`` asks for every
Istio config type and stores what it gets in an in-memory config store, validating each
config with its schema (``pilot/pkg/bootstrap/configcontroller.go`` ``initConfigSources``;
``pkg/adsc/adsc.go`` ``handleMCP``).  This module says what registryd sends for one
hostname of the exported view (docs/istio.md, "The mapping", has the table):

* **one ServiceEntry per hostname**, named :func:`config_name` of the hostname (the
  hostname itself whenever it is a valid object name), in the service's namespace:
  hosts, addresses, ports (name, number, protocol, targetPort), location, resolution,
  exportTo of the service;
* **its endpoints as WorkloadEntries** in the same namespace, selected by the
  ServiceEntry's ``workloadSelector`` (label :data:`SERVICE_LABEL`), not inline
  endpoints: istiod's ``isHealthy`` (``serviceentry/conversion.go``) treats a
  WorkloadEntry annotated ``proxy.istio.io/health-checks-enabled: "true"`` that has no
  ``Healthy`` condition (an MCP resource carries no status) as unhealthy and keeps it out
  of every ServiceEntry's endpoints (``controller.go`` ``buildCollections``), while an
  inline endpoint has no health at all.  So a HEALTHY endpoint becomes a plain
  WorkloadEntry, an UNHEALTHY one a WorkloadEntry with that annotation (istiod knows it
  and sends it no traffic), a DRAINING one nothing.  Endpoint changes are then
  WorkloadEntry changes and leave the ServiceEntry as it is, which istiod pushes as an
  endpoint (EDS) update, not a full push (``controller.go`` ``pushServiceEndpointUpdates``);
* a passthrough service (resolution NONE) and a DNS service without endpoints get no
  selector: istiod then resolves the hostname itself, as registryd does;
* an ALIAS service (a Kubernetes ExternalName) is not exported: it has no resources of
  its own;
* every config carries the labels :data:`REGISTRY_LABEL` (the registry instance that
  defined it; for a ServiceEntry the one whose attributes won the merge) and
  :data:`PROVIDER_LABEL` (that registry's type).

Everything sent must pass istiod's validation (an invalid config is dropped there with
only a warning in istiod's log), so names, label keys and values and port names are
made valid here: names by :func:`config_name`, labels that are not valid Kubernetes
labels are left out (:func:`valid_labels`), a port without a valid name is named
``<protocol>-<number>``, a protocol Istio does not know is sent as unset (detected).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from registryd.build import istio_pb
from registryd.model import (
    AUTO,
    Endpoint,
    Health,
    Labels,
    Locality,
    Location,
    Port,
    Resolution,
    Service,
    ShardKey,
)
from registryd.registry.merge import MergedService

__all__ = [
    "HEALTH_CHECKS_ANNOTATION",
    "PROVIDER_LABEL",
    "REGISTRY_LABEL",
    "SERVICE_LABEL",
    "Config",
    "Workload",
    "config_name",
    "label_value",
    "namespace_name",
    "port_name",
    "resource",
    "service_entry",
    "valid_labels",
    "version",
    "workload_entries",
    "workload_entry",
    "workloads",
]

REGISTRY_LABEL = "registryd.io/registry"
PROVIDER_LABEL = "registryd.io/provider"
SERVICE_LABEL = "registryd.io/service"  # selects a ServiceEntry's WorkloadEntries
HEALTH_CHECKS_ANNOTATION = "proxy.istio.io/health-checks-enabled"

# istio pkg/config/protocol/instance.go Parse: what ValidateProtocol accepts
_ISTIO_PROTOCOLS = frozenset(
    {"TCP", "UDP", "GRPC", "GRPC-WEB", "HTTP", "HTTP_PROXY", "HTTP2", "HTTPS", "TLS"}
    | {"MONGO", "REDIS", "MYSQL"}
)
_RESOLUTIONS = {
    Resolution.NONE: 0,
    Resolution.STATIC: 1,
    Resolution.DNS: 2,
    Resolution.DNS_ROUND_ROBIN: 3,
}
_LOCATIONS = {Location.MESH_EXTERNAL: 0, Location.MESH_INTERNAL: 1}
_MAX_WEIGHT = 2**32 - 1

# Kubernetes names and labels, as istio pkg/config/labels/instance.go checks them
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_KEY_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NOT_NAME = re.compile(r"[^a-z0-9-]+")
_HASH = 10  # hex digits of the hash that makes a changed name unique


@dataclass(frozen=True, slots=True)
class Config:
    """One Istio config as sent over MCP, before its version and creation time are
    stamped on it (:func:`resource`)."""

    namespace: str
    name: str
    body: object  # istio_pb.ServiceEntry or istio_pb.WorkloadEntry
    labels: Mapping[str, str]
    annotations: Mapping[str, str]

    @property
    def key(self) -> str:
        """``namespace/name``: the name istiod stores it under (``mcpToPilot``)."""
        return f"{self.namespace}/{self.name}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH]


def _hashed(head: str, text: str, empty: str) -> str:
    """``head`` (what was kept of ``text``) made unique by a hash of ``text``; ``empty``
    before the hash when nothing was kept."""
    return f"{head or empty}-{_digest(text)}" if head or empty else _digest(text)


def _clean_label(text: str) -> str:
    return _NOT_NAME.sub("-", text.lower()).strip("-")


def config_name(text: str, limit: int = 253) -> str:
    """A valid Kubernetes object name (DNS-1123 subdomain, at most ``limit``
    characters) for ``text``: ``text`` itself when it is one, else its labels cleaned
    (invalid characters become ``-``, empty labels go), cut to fit, and a hash of
    ``text`` appended, so two different texts never get the same name."""
    labels = text.split(".")
    if len(text) <= limit and all(_DNS_LABEL.fullmatch(p) and len(p) <= 63 for p in labels):
        return text
    cleaned = ".".join(c for c in (_clean_label(p)[:63].strip("-") for p in labels) if c)
    return _hashed(cleaned[: limit - _HASH - 1].rstrip("-."), text, "x")


def namespace_name(text: str) -> str:
    """A valid namespace (DNS-1123 label) for ``text``: itself when it is one."""
    if _DNS_LABEL.fullmatch(text) and len(text) <= 63:
        return text
    return _hashed(_clean_label(text)[: 63 - _HASH - 1].rstrip("-"), text, "x")


def label_value(text: str) -> str:
    """A valid label value for ``text``: itself when it is one, else cleaned, cut to
    fit and made unique by a hash, as :func:`config_name`."""
    if _valid_value(text):
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    return _hashed(cleaned[: 63 - _HASH - 1].rstrip("-_."), text, "")


def _valid_value(value: str) -> bool:
    """A valid label value (empty, or at most 63 characters of istio's qualified name)."""
    return value == "" or (len(value) <= 63 and _QUALIFIED.fullmatch(value) is not None)


def _valid_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= 253 and _KEY_PREFIX.fullmatch(prefix)):
        return False
    return len(name) <= 63 and _QUALIFIED.fullmatch(name) is not None


def valid_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels istiod's validation accepts (``labels.Instance.Validate``); the rest
    are left out, since one invalid label would make istiod drop the whole config."""
    return {k: v for k, v in labels.items() if _valid_key(k) and _valid_value(v)}


def port_name(port: Port) -> str:
    """The port's name when it is a valid DNS-1123 label (istio ``ValidatePortName``),
    else ``<protocol>-<number>`` (``tcp-5432``; ``port-80`` for an undeclared protocol)."""
    if port.name and len(port.name) <= 63 and _DNS_LABEL.fullmatch(port.name):
        return port.name
    protocol = _clean_label(port.protocol) if port.protocol != AUTO else ""
    return f"{protocol or 'port'}-{port.number}"


def _ports(service: Service) -> list[tuple[Port, str]]:
    """Each port with a name unique within the service."""
    out: list[tuple[Port, str]] = []
    seen: set[str] = set()
    for port in service.ports:
        name = port_name(port)
        if name in seen:
            name = f"port-{port.number}"  # numbers are unique within a service
        seen.add(name)
        out.append((port, name))
    return out


def _source_labels(key: ShardKey | None) -> dict[str, str]:
    """The labels naming the registry a config came from (none when unknown)."""
    if key is None:
        return {}
    return {REGISTRY_LABEL: label_value(key.instance), PROVIDER_LABEL: label_value(key.provider)}


def _selects(service: Service, endpoints: Iterable[Endpoint]) -> bool:
    """Whether the ServiceEntry takes its endpoints from WorkloadEntries (see module)."""
    if service.resolution is Resolution.NONE:
        return False
    if service.resolution in (Resolution.DNS, Resolution.DNS_ROUND_ROBIN):
        return any(e.health is not Health.DRAINING for e in endpoints)
    return True


def service_entry(merged: MergedService) -> Config | None:
    """The ServiceEntry of one merged hostname; ``None`` for an ALIAS service."""
    service = merged.service
    if service.resolution is Resolution.ALIAS:
        return None
    body = istio_pb.ServiceEntry(
        hosts=[service.hostname],
        addresses=list(service.addresses),
        location=_LOCATIONS[service.location],
        resolution=_RESOLUTIONS[service.resolution],
        export_to=list(service.export_to),
    )
    for port, name in _ports(service):
        protocol = port.protocol if port.protocol in _ISTIO_PROTOCOLS else ""
        body.ports.add(
            number=port.number, name=name, protocol=protocol, target_port=port.target_port or 0
        )
    if _selects(service, merged.endpoints):
        body.workload_selector.labels[SERVICE_LABEL] = label_value(service.hostname)
    labels = {**valid_labels(service.labels), **_source_labels(merged.winner)}
    return Config(
        namespace=namespace_name(service.namespace),
        name=config_name(service.hostname),
        body=body,
        labels=labels,
        annotations={},
    )


@dataclass(frozen=True, slots=True)
class Workload:
    """Everything one WorkloadEntry of a hostname is made of: endpoints that share all
    of these but the service port are one workload (:func:`workloads`).  Hashable, so
    a builder can keep what it built from one."""

    address: str
    locality: Locality
    weight: int
    health: Health
    labels: Labels
    network: str
    source: ShardKey | None
    ports: tuple[tuple[str, int], ...]  # (service port name, workload port), sorted
    index: int  # among the workloads of one address that share everything else


def workloads(merged: MergedService) -> list[Workload]:
    """The workloads of one merged hostname's endpoints, each a WorkloadEntry (none when
    its ServiceEntry selects none).  Endpoints that share everything but the service
    port (one address serving several ports) are one workload with a port per service
    port; an address serving one service port on several workload ports (two instances
    on one host) is one workload per instance.  DRAINING endpoints are none."""
    service = merged.service
    if service.resolution is Resolution.ALIAS or not _selects(service, merged.endpoints):
        return []
    names = {port.number: name for port, name in _ports(service)}
    groups: dict[tuple[Any, ...], dict[str, set[int]]] = {}
    for e in merged.endpoints:
        name = names.get(e.service_port)
        if name is None or e.health is Health.DRAINING:
            continue
        key = (e.address, e.locality, e.weight, e.health, e.labels, e.network, e.source)
        found = groups.get(key)
        if found is None:
            groups[key] = {name: {e.port}}
        else:
            found.setdefault(name, set()).add(e.port)
    out = []
    for key, by_name in groups.items():
        if len(by_name) == 1:  # the common case: one port, one instance
            ((name, numbers),) = by_name.items()
            if len(numbers) == 1:
                out.append(Workload(*key, ports=((name, min(numbers)),), index=0))
                continue
        ports = {name: sorted(numbers) for name, numbers in by_name.items()}
        for i in range(max(len(p) for p in ports.values())):
            picked = tuple(sorted((n, ns[i]) for n, ns in ports.items() if i < len(ns)))
            out.append(Workload(*key, ports=picked, index=i))
    return out


def workload_entry(service: Service, workload: Workload) -> Config:
    """The WorkloadEntry of one workload of ``service``, in its namespace, selected by
    its ServiceEntry."""
    w = workload
    body = istio_pb.WorkloadEntry(
        address=w.address,
        ports=dict(w.ports),
        network=w.network,
        locality=str(w.locality),
        weight=min(w.weight, _MAX_WEIGHT) if w.weight > 1 else 0,
    )
    labels = {
        **valid_labels(w.labels),
        **_source_labels(w.source),
        SERVICE_LABEL: label_value(service.hostname),
    }
    body.labels.update(labels)
    base = config_name(f"{service.hostname}-{w.address}", 253 - _HASH - 1)
    annotations = {HEALTH_CHECKS_ANNOTATION: "true"} if w.health is Health.UNHEALTHY else {}
    return Config(
        namespace=namespace_name(service.namespace),
        name=f"{base}-{_digest(f'{service.hostname}|{w!r}')}",  # w tells them apart
        body=body,
        labels=labels,
        annotations=annotations,
    )


def workload_entries(merged: MergedService) -> list[Config]:
    """Every WorkloadEntry of one merged hostname (:func:`workloads`)."""
    return [workload_entry(merged.service, w) for w in workloads(merged)]


def version(config: Config) -> str:
    """A function of the config's content (name, labels, annotations, body): it changes
    when, and only when, the config does.  istiod stores a config again only when its
    version differs from the stored one (``handleMCP``), so an unchanged config costs
    istiod nothing, even after registryd restarted."""
    content = istio_pb.Metadata(
        name=config.key, labels=dict(config.labels), annotations=dict(config.annotations)
    ).SerializeToString(deterministic=True)
    body = config.body.SerializeToString(deterministic=True)  # type: ignore[attr-defined]
    return hashlib.sha256(content + b"\0" + body).hexdigest()[:16]


def resource(config: Config, created: float) -> Any:
    """The ``istio.mcp.v1alpha1.Resource`` of ``config``, created at ``created`` (wall
    clock seconds: when registryd first built it)."""
    metadata = istio_pb.Metadata(
        name=config.key,
        version=version(config),
        labels=dict(config.labels),
        annotations=dict(config.annotations),
    )
    metadata.create_time.FromNanoseconds(int(created * 1e9))
    out = istio_pb.Resource(metadata=metadata)
    out.body.Pack(config.body)
    return out
