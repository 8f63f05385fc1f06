"""Parsed ServiceEntries / WorkloadEntries -> registryd's service model.  Pure: no I/O.

Contract:

* :func:`build_model` converts a set of parsed files (see :mod:`.schema`) into a
  :class:`Model`, deterministically: files in path order, documents in file order.  Each
  host of a ServiceEntry is one :class:`~registryd.model.Service`; its endpoints come from
  ``spec.endpoints`` or from the WorkloadEntries of the same namespace that
  ``spec.workloadSelector`` matches: one endpoint per workload and service port
  (workloads without an address, reached through a network gateway, give none).  When
  several ServiceEntries define one hostname, they are taken oldest first
  (``metadata.creationTimestamp``; entries without one after those with one, in file
  order), as istiod takes them: the first one's attributes win; a later entry of the same
  namespace, resolution, labels, workload selector and exportTo adds the ports it has and
  the first has not (istiod's sidecar scope merges such services:
  ``model/sidecar.go`` ``appendSidecarServices``, ``canMergeServices``); the endpoints
  are combined, each entry's in order (an endpoint written twice is served twice, as
  istiod serves it), and a note says so.  A port without a protocol is auto-detected
  (``AUTO``), as istiod does: a ServiceEntry's port name implies no protocol.
  WorkloadEntry labels are ``spec.labels`` merged with ``metadata.labels`` (metadata
  winning).
* :func:`diff_models` gives the Upsert/Delete increments from one model to the next,
  over every hostname or only over those that may have changed.
* :class:`ModelBuilder` gives the result of :func:`build_model` one changed file at a time
  (:class:`~.state.FileTable` feeds it).
"""

from __future__ import annotations

import dataclasses
from bisect import insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from registryd.adapter import Delete, Replace, Upsert, increments
from registryd.model import AUTO, Endpoint, Health, Labels, Locality, Port, Resolution, Service

from .schema import (
    UNIX_PREFIX,
    Document,
    ParsedFile,
    ServiceEntry,
    ServicePort,
    WorkloadEntry,
    WorkloadSpec,
)

__all__ = ["Model", "ModelBuilder", "build_model", "diff_models", "mergeable"]

DocKey = tuple[str, int]  # (file, position in the file): sorts in document order
_EPOCH = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True, slots=True)
class Model:
    """The converted state: services and their endpoints by hostname, plus notes."""

    services: Mapping[str, Service] = field(default_factory=dict)
    endpoints: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def replace(self) -> Replace:
        """The full state as the adapter contract's first update."""
        hosts = sorted(self.services)
        return Replace(
            services=tuple(self.services[h] for h in hosts),
            endpoints=tuple(e for h in hosts for e in self.endpoints.get(h, ())),
        )


def _port(port: ServicePort) -> Port:
    """istiod's serviceentry/conversion.go ``convertPort``: the protocol is what the entry
    declares; none declared is auto-detected (its port *name* implies nothing)."""
    protocol = port.protocol or AUTO
    return Port(number=port.number, name=port.name, protocol=protocol, target_port=port.target_port)


def _document_name(doc: Document) -> str:
    return f"{doc.kind} {doc.meta.namespace}/{doc.meta.name} ({doc.where})"


def _duplicate_note(host: str, first: ServiceEntry, entry: ServiceEntry) -> str:
    outcome = (
        "endpoints are combined"
        if first.meta.namespace == entry.meta.namespace
        else "the other namespace's endpoints are left out"
    )
    return (
        f"host {host} is defined by {_document_name(first)} and {_document_name(entry)}: the "
        f"first's attributes are used, {outcome}"
    )


def hosts_of(entry: ServiceEntry) -> tuple[str, ...]:
    """The entry's hosts lower-cased, each once: hostnames are case-insensitive, and a
    route configuration with one domain twice is rejected by Envoy as a whole."""
    return tuple(dict.fromkeys(h.lower() for h in entry.spec.hosts))


def _twice_note(host: str, entry: ServiceEntry) -> str:
    spellings = [h for h in entry.spec.hosts if h.lower() == host]
    return (
        f"{_document_name(entry)}: host {host} is listed {len(spellings)} times ({spellings}); "
        f"hostnames are case-insensitive, so it is served once"
    )


def _ports_note(host: str, entry: ServiceEntry, extra: list[int]) -> str:
    return (
        f"{_document_name(entry)}: host {host} has no port {extra} in its first definition, "
        f"and this entry's namespace, resolution, labels, workload selector or exportTo "
        f"differ from it, so its ports are not added; endpoints for those ports are left out"
    )


def _workload_endpoints(host: str, entry: ServiceEntry, workload: WorkloadSpec) -> list[Endpoint]:
    """One endpoint per service port for ``workload`` (none without an address)."""
    if not workload.address:
        return []  # reached through a network gateway, which this registry does not model
    result = []
    for port in entry.spec.ports:
        if workload.address.startswith(UNIX_PREFIX):
            number = port.number  # unix sockets have no port; Istio allows one service port
        else:
            number = workload.ports.get(port.name) or port.target_port or port.number
        result.append(
            Endpoint(
                hostname=host,
                address=workload.address,
                port=number,
                service_port=port.number,
                locality=Locality.parse(workload.locality),
                weight=workload.weight,
                labels=workload.labels,
                network=workload.network,
                health=Health.UNKNOWN,  # a ServiceEntry says nothing of health, as istiod
            )
        )
    return result


def _service(host: str, entry: ServiceEntry) -> Service:
    spec = entry.spec
    return Service(
        hostname=host,
        namespace=entry.meta.namespace,
        ports=tuple(_port(p) for p in spec.ports),
        resolution=spec.resolution,
        location=spec.location,
        labels=entry.meta.labels,
        addresses=spec.addresses,
        export_to=spec.export_to,
        created=entry.meta.created.timestamp() if entry.meta.created else None,
    )


def mergeable(first: ServiceEntry, later: ServiceEntry) -> bool:
    """Whether ``later`` adds its ports to the hostname ``first`` defines: the same
    namespace, resolution, labels, workload selector and exportTo (``model/sidecar.go``
    ``canMergeServices``; an unset selector is an empty one there)."""
    a, b = first.spec, later.spec
    return (
        first.meta.namespace == later.meta.namespace
        and a.resolution == b.resolution
        and first.meta.labels == later.meta.labels
        and (a.workload_selector or Labels()) == (b.workload_selector or Labels())
        and set(a.export_to) == set(b.export_to)
    )


def build_model(files: Iterable[ParsedFile]) -> Model:
    """Convert parsed files into services and endpoints, from scratch (see the module
    docstring); :class:`ModelBuilder` gives the same result incrementally."""
    documents: dict[str, list[Document]] = {}
    for parsed in files:
        documents.setdefault(parsed.source, []).extend(parsed.documents)
    builder = ModelBuilder()
    for source, docs in documents.items():
        builder.set_file(source, tuple(docs))
    builder.update()
    return builder.model()


def diff_models(
    old: Model, new: Model, hosts: Iterable[str] | None = None
) -> list[Upsert | Delete]:
    """Upserts for new or changed hostnames, then Deletes for removed ones (sorted).

    ``hosts`` limits the comparison to the hostnames that may differ (default: all).
    """
    return increments(old.services, old.endpoints, new.services, new.endpoints, hosts)


@dataclass(frozen=True, slots=True)
class _Part:
    """What one ServiceEntry contributes to one of its hosts."""

    entry: ServiceEntry
    service: Service
    endpoints: tuple[Endpoint, ...]  # in istiod's order, repeats kept
    numbers: frozenset[int]  # the entry's port numbers


_DNS = (Resolution.DNS, Resolution.DNS_ROUND_ROBIN)


def _parts(entry: ServiceEntry, selected: list[WorkloadSpec]) -> dict[str, _Part]:
    numbers = frozenset(p.number for p in entry.spec.ports)
    parts = {}
    spec = entry.spec
    by_name = spec.workload_selector is None and not spec.endpoints and spec.resolution in _DNS
    for host in hosts_of(entry):
        # conversion.go convertServiceEntryToInstances: a DNS entry with no endpoints and no
        # selector resolves its own hostname (on each port's targetPort, else the port).
        # An endpoint written twice is served twice, as istiod serves it.
        workloads = [WorkloadSpec(address=host)] if by_name else selected
        found = tuple(e for w in workloads for e in _workload_endpoints(host, entry, w))
        parts[host] = _Part(entry, _service(host, entry), found, numbers)
    return parts


def workload_spec(entry: WorkloadEntry) -> WorkloadSpec:
    """The WorkloadEntry's spec with its labels merged as istiod merges them: ``spec.labels``
    and ``metadata.labels``, metadata winning (serviceentry/conversion.go
    ``ConvertWorkloadEntry``).  Selectors and endpoint labels both see the merged set."""
    if not entry.meta.labels:
        return entry.spec
    merged = Labels({**entry.spec.labels, **entry.meta.labels})
    return dataclasses.replace(entry.spec, labels=merged)


def _workload_specs(documents: Iterable[Document]) -> list[tuple[str, WorkloadSpec]]:
    return [(d.meta.namespace, workload_spec(d)) for d in documents if isinstance(d, WorkloadEntry)]


class ModelBuilder:
    """:func:`build_model`, kept up to date one file at a time.

    Every ServiceEntry is converted on its own (:class:`_Part` per host) and kept until its
    file changes or a WorkloadEntry its selector matches comes, goes or changes; a hostname
    is merged again from its parts only when one of them changed.
    """

    def __init__(self) -> None:
        self._files: dict[str, tuple[Document, ...]] = {}
        self._pending: dict[str, tuple[Document, ...]] = {}
        self._entries: dict[DocKey, ServiceEntry] = {}
        self._parts: dict[DocKey, dict[str, _Part]] = {}
        self._definers: dict[str, list[DocKey]] = {}  # host -> its ServiceEntries, in order
        self._selecting: dict[str, set[DocKey]] = {}  # namespace -> entries with a selector
        self._workloads: dict[str, dict[DocKey, WorkloadEntry]] = {}  # by namespace
        self._in_order: dict[str, list[WorkloadSpec]] = {}  # namespace -> specs, by name
        self._notes: dict[str, list[tuple[DocKey, int, int, str]]] = {}  # host -> sortable
        self.services: dict[str, Service] = {}
        self.endpoints: dict[str, tuple[Endpoint, ...]] = {}
        self.notes: tuple[str, ...] = ()

    def set_file(self, source: str, documents: tuple[Document, ...]) -> None:
        """``source`` now holds ``documents`` (none: it is gone); applied by :meth:`update`."""
        self._pending[source] = documents

    def update(self) -> set[str]:
        """Apply the files set since the last call; the hostnames that may have changed."""
        dirty: set[DocKey] = set()
        hosts: set[str] = set()
        moved: dict[str, list[WorkloadSpec]] = {}  # namespace -> workloads that came or went
        for source, documents in self._pending.items():
            old = self._files.pop(source, ())
            if documents:
                self._files[source] = documents
            old_workloads = _workload_specs(old)
            new_workloads = _workload_specs(documents)
            if old_workloads != new_workloads:  # same ones in the same order: nobody cares
                for namespace, spec in old_workloads + new_workloads:
                    moved.setdefault(namespace, []).append(spec)
            for position, doc in enumerate(old):
                self._remove((source, position), doc, hosts)
            for position, doc in enumerate(documents):
                self._add((source, position), doc, dirty)
        self._pending.clear()
        for namespace, specs in moved.items():
            self._in_order.pop(namespace, None)
            for key in self._selecting.get(namespace, ()):
                selector = self._entries[key].spec.workload_selector
                if selector is not None and any(s.labels.matches(selector) for s in specs):
                    dirty.add(key)
        for key in dirty:
            entry = self._entries[key]
            self._parts[key] = _parts(entry, self._selected(entry))
            hosts.update(hosts_of(entry))
        noted = False
        for host in hosts:
            noted |= self._merge(host)
        if noted:
            self.notes = tuple(n[-1] for n in sorted(n for ns in self._notes.values() for n in ns))
        return hosts

    def model(self) -> Model:
        return Model(services=dict(self.services), endpoints=dict(self.endpoints), notes=self.notes)

    def _remove(self, key: DocKey, doc: Document, hosts: set[str]) -> None:
        namespace = doc.meta.namespace
        if isinstance(doc, WorkloadEntry):
            del self._workloads[namespace][key]
            return
        del self._entries[key]
        self._parts.pop(key, None)
        if doc.spec.workload_selector is not None:
            self._selecting[namespace].discard(key)
        for host in hosts_of(doc):
            self._definers[host].remove(key)
            hosts.add(host)

    def _add(self, key: DocKey, doc: Document, dirty: set[DocKey]) -> None:
        namespace = doc.meta.namespace
        if isinstance(doc, WorkloadEntry):
            self._workloads.setdefault(namespace, {})[key] = doc
            return
        self._entries[key] = doc
        dirty.add(key)
        if doc.spec.workload_selector is not None:
            self._selecting.setdefault(namespace, set()).add(key)
        for host in hosts_of(doc):
            insort(self._definers.setdefault(host, []), key, key=self._age)

    def _age(self, key: DocKey) -> tuple[bool, datetime, DocKey]:
        """Sort key of a ServiceEntry among those of a hostname: oldest first, those
        without a creation time last, then in file order."""
        created = self._entries[key].meta.created
        return (created is None, created or _EPOCH, key)

    def _selected(self, entry: ServiceEntry) -> list[WorkloadSpec]:
        selector, namespace = entry.spec.workload_selector, entry.meta.namespace
        if selector is None:
            return list(entry.spec.endpoints)
        specs = self._in_order.get(namespace)
        if specs is None:
            # conversion.go services(): selected WorkloadEntries sorted by name (istiod's
            # index has no order of its own); the file position breaks a tie
            workloads = self._workloads.get(namespace, {})
            keys = sorted(workloads, key=lambda k: (workloads[k].meta.name, k))
            specs = [workload_spec(workloads[k]) for k in keys]
            self._in_order[namespace] = specs
        return [s for s in specs if s.labels.matches(selector)]

    def _merge(self, host: str) -> bool:
        """Merge ``host`` from its parts again; True if it has or had notes."""
        had_notes = self._notes.pop(host, None) is not None
        keys = self._definers.get(host)
        if not keys:
            self._definers.pop(host, None)
            self.services.pop(host, None)
            self.endpoints.pop(host, None)
            return had_notes
        parts = [self._parts[k][host] for k in keys]
        first = parts[0]
        self.services[host] = first.service
        twice = [
            (key, hosts_of(p.entry).index(host), 2, _twice_note(host, p.entry))
            for key, p in zip(keys, parts, strict=True)
            if sum(h.lower() == host for h in p.entry.spec.hosts) > 1
        ]
        if len(parts) == 1:
            self.endpoints[host] = first.endpoints
            if twice:
                self._notes[host] = twice
            return had_notes or bool(twice)
        ports = list(first.service.ports)
        numbers = set(first.numbers)
        for part in parts[1:]:
            if mergeable(first.entry, part.entry):
                added = [p for p in part.service.ports if p.number not in numbers]
                ports += added
                numbers.update(p.number for p in added)
        if len(ports) != len(first.service.ports):
            self.services[host] = dataclasses.replace(first.service, ports=tuple(ports))
        found: list[Endpoint] = []
        round_robin: set[int] = set()  # ports a DNS_ROUND_ROBIN endpoint already has
        notes = twice
        namespace = first.entry.meta.namespace
        for index, (key, part) in enumerate(zip(keys, parts, strict=True)):
            # conversion.go mergeServicesInstancesByNamespaceHost: the endpoints of every
            # entry of the first one's namespace (istiod keeps them per hostname and
            # namespace, and serves the first one's), but one per port of the
            # DNS_ROUND_ROBIN ones
            rr = part.entry.spec.resolution is Resolution.DNS_ROUND_ROBIN
            for endpoint in part.endpoints:
                if endpoint.service_port not in numbers or part.entry.meta.namespace != namespace:
                    continue
                if rr and endpoint.service_port in round_robin:
                    continue
                found.append(endpoint)
                round_robin.add(endpoint.service_port)
            at = hosts_of(part.entry).index(host)
            if index:
                notes.append((key, at, 0, _duplicate_note(host, first.entry, part.entry)))
            if extra := sorted(part.numbers - numbers):
                notes.append((key, at, 1, _ports_note(host, part.entry, extra)))
        self.endpoints[host] = tuple(found)
        self._notes[host] = notes
        return True
