"""Analysis of valid ServiceEntry/WorkloadEntry documents, like ``istioctl analyze``.  Pure.

Contract of :func:`analyze`: given every valid document (with where it came from), it
returns warnings, in document order, about configuration the daemon accepts but that
probably does not do what its author meant:

* ``duplicate-host``: a hostname defined by two ServiceEntries (or listed twice in one
  with different case).  The daemon serves the oldest definition's attributes (by
  ``metadata.creationTimestamp``, then files in path order, documents in file order),
  adds the ports of a compatible later one and combines the endpoints; the warning is on
  every later definition.
* ``unselected-workload``: a WorkloadEntry that no ``workloadSelector`` of a
  ServiceEntry in its namespace selects: it gives no endpoint to any service.
* ``selector-matches-nothing``: a ServiceEntry whose ``workloadSelector`` selects no
  WorkloadEntry of its namespace: its hosts have no endpoints.
* ``listener-conflict``: two services on one TCP (or auto-detected) port that a sidecar
  cannot tell apart, because neither has an address of its own: the real listener
  builder (:func:`registryd.build.listeners.build_listeners`, as for an iptables-captured
  sidecar) keeps the first hostname and leaves the other out of that listener.

Selection follows the daemon's conversion: WorkloadEntry labels are ``spec.labels``
merged with ``metadata.labels``, and a selector matches within one namespace.  Port
numbers outside 1-65535 are not analysed here: the parser rejects them as errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from registryd.adapters.serviceentry.convert import build_model, hosts_of, workload_spec
from registryd.adapters.serviceentry.schema import ParsedFile, ServiceEntry, WorkloadEntry
from registryd.build.builder import port_views
from registryd.build.listeners import Conflict, Mode, build_listeners
from registryd.model import Labels, Service

__all__ = ["Finding", "Located", "Severity", "analyze", "describe"]


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One problem: where (``source`` is a file or ``--config <file>``; ``document``
    counts from 1; ``line`` from 1, when known) and what."""

    severity: Severity
    code: str
    source: str
    message: str
    document: int | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Located:
    """A valid document and where it is: its file and its number in that file."""

    source: str
    index: int
    doc: ServiceEntry | WorkloadEntry


def describe(item: Located) -> str:
    """``ServiceEntry ns/name``: how findings name a document."""
    return f"{item.doc.kind} {item.doc.meta.namespace}/{item.doc.meta.name}"


def _where(item: Located) -> str:
    return f"{item.source}, document {item.index}"


def _warning(item: Located, code: str, message: str) -> Finding:
    return Finding(
        severity=Severity.WARNING,
        code=code,
        source=item.source,
        document=item.index,
        message=f"{describe(item)}: {message}",
    )


def analyze(documents: Sequence[Located]) -> list[Finding]:
    """Warnings about ``documents`` (see the module docstring), sorted by file and
    document."""
    entries = [d for d in documents if isinstance(d.doc, ServiceEntry)]
    found = [
        *_duplicate_hosts(entries),
        *_selection(documents),
        *_listener_conflicts(documents, entries),
    ]
    return sorted(found, key=lambda f: (f.source, f.document or 0, f.code, f.message))


def _duplicate_hosts(entries: Sequence[Located]) -> Iterable[Finding]:
    """convert.py's merge rule, said before it bites."""
    definers: dict[str, list[Located]] = {}
    for item in sorted(entries, key=_age):
        assert isinstance(item.doc, ServiceEntry)
        spellings = list(item.doc.spec.hosts)
        for host in hosts_of(item.doc):
            definers.setdefault(host, []).append(item)
            same = [h for h in spellings if h.lower() == host]
            if len(same) > 1:
                yield _warning(
                    item,
                    "duplicate-host",
                    f"host {host} is listed {len(same)} times ({same}); hostnames are "
                    "case-insensitive, so it is served once",
                )
    for host, items in definers.items():
        first = items[0]
        for item in items[1:]:
            yield _warning(
                item,
                "duplicate-host",
                f"host {host} is also defined by {describe(first)} ({_where(first)}); the "
                "oldest definition's attributes are used, the ports of this one only if "
                "its namespace, resolution, labels, selector and exportTo are the same, "
                "and the endpoints of both are combined",
            )


def _age(item: Located) -> tuple[bool, datetime, str, int]:
    """Oldest first (``metadata.creationTimestamp``), then file order: the daemon's
    order among the ServiceEntries of one hostname."""
    created = item.doc.meta.created
    return (created is None, created or datetime.fromtimestamp(0, UTC), item.source, item.index)


def _selection(documents: Sequence[Located]) -> Iterable[Finding]:
    """Selectors against WorkloadEntries, per namespace (convert.py ``ModelBuilder._selected``)."""
    workloads: dict[str, list[tuple[Located, Labels]]] = {}
    for item in documents:
        if isinstance(item.doc, WorkloadEntry):
            labels = workload_spec(item.doc).labels
            workloads.setdefault(item.doc.meta.namespace, []).append((item, labels))
    index = {ns: _LabelIndex(items) for ns, items in workloads.items()}
    selected: set[int] = set()
    for item in documents:
        doc = item.doc
        if not isinstance(doc, ServiceEntry) or doc.spec.workload_selector is None:
            continue
        namespace = doc.meta.namespace
        hits = index[namespace].select(doc.spec.workload_selector) if namespace in index else []
        selected.update(id(w) for w in hits)
        if not hits:
            shown = dict(doc.spec.workload_selector) or "{}"
            yield _warning(
                item,
                "selector-matches-nothing",
                f"workloadSelector {shown} selects no WorkloadEntry in namespace "
                f"{namespace}; its hosts have no endpoints",
            )
    for namespace, items in workloads.items():
        for item, labels in items:
            if id(item) not in selected:
                shown = dict(labels) or "{}"
                yield _warning(
                    item,
                    "unselected-workload",
                    f"no ServiceEntry in namespace {namespace} selects it (labels {shown}); "
                    "it is the endpoint of no service",
                )


class _LabelIndex:
    """WorkloadEntries of one namespace by label, so a selector looks at few of them."""

    def __init__(self, items: Sequence[tuple[Located, Labels]]) -> None:
        self.items = items
        self.by_pair: dict[tuple[str, str], list[int]] = {}
        for position, (_, labels) in enumerate(items):
            for pair in labels.items():
                self.by_pair.setdefault(pair, []).append(position)

    def select(self, selector: Mapping[str, str]) -> list[Located]:
        """The WorkloadEntries whose labels hold every pair of ``selector``."""
        if not selector:
            return [item for item, _ in self.items]
        candidates = min((self.by_pair.get(pair, []) for pair in selector.items()), key=len)
        return [self.items[p][0] for p in candidates if self.items[p][1].matches(selector)]


def _listener_conflicts(
    documents: Sequence[Located], entries: Sequence[Located]
) -> Iterable[Finding]:
    """Conflicts of the sidecar listeners the daemon would build (snapshot.py ``_port``,
    per exportTo scope); istiod: listener.go ``buildSidecarOutboundListener`` and
    ``mergeTCPFilterChains``, analysed by istioctl as IST0134
    ``ServiceEntryAddressesRequired``."""
    by_file: dict[str, list[ServiceEntry | WorkloadEntry]] = {}
    for item in sorted(documents, key=lambda d: (d.source, d.index)):
        by_file.setdefault(item.source, []).append(item.doc)
    model = build_model(ParsedFile(s, tuple(docs)) for s, docs in by_file.items())
    first: dict[str, Located] = {}
    for item in sorted(entries, key=_age):
        assert isinstance(item.doc, ServiceEntry)
        for host in hosts_of(item.doc):
            first.setdefault(host, item)
    ports: dict[int, list[Service]] = {}
    for service in model.services.values():
        for port in service.ports:
            ports.setdefault(port.number, []).append(service)
    conflicts: set[tuple[int, Conflict]] = set()
    for number, services in ports.items():
        for members in port_views(services).values():
            _, lost = build_listeners(number, members, Mode.SIDECAR, model.endpoints)
            conflicts.update((number, c) for c in lost)
    for number, conflict in sorted(conflicts, key=lambda c: (c[0], c[1].hostname)):
        yield _warning(
            first[conflict.hostname],
            "listener-conflict",
            f"port {number}: {conflict.hostname} and {conflict.winner} share listener "
            f"{conflict.listener} and nothing tells their connections apart (no "
            f"addresses); {conflict.hostname} gets none of that traffic. Give the "
            "services spec.addresses, or HTTP/TLS ports",
        )
