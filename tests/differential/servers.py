"""istiod and registryd reading the same ServiceEntry/WorkloadEntry files, one input at a
time, and what each serves the same nodes.

:class:`Pair` starts a real istiod (its file config source ``fs://``) and a registryd
process (``--configDir``) on one directory, once; :meth:`Pair.serve` replaces the
directory's content with one input, then a *sync marker* (a ServiceEntry with a unique
hostname on port 1, written after the input), and collects CDS/EDS/LDS/RDS from both
for each node of :data:`NODES` once each serves the marker.  :func:`istio_inputs`
picks the files of a tree that are Istio ServiceEntry/WorkloadEntry config.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import AsyncIterator, Awaitable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from registryd.adapters.serviceentry.convert import hosts_of, mergeable
from registryd.adapters.serviceentry.schema import InvalidConfig, ServiceEntry, parse_file
from tests.differential.collect import Node, Served, collect
from tests.differential.normalize import MARKER_PORT
from tests.support.istiod import ISTIO_VERSION, Istiod, fs_source, istiod_binary, start_istiod
from tests.support.procs import Registryd, http_get, start_registryd

__all__ = [
    "NODES",
    "Ambiguous",
    "IstiodRefused",
    "Pair",
    "ambiguity",
    "grpc_names",
    "istio_inputs",
    "marker_entry",
]

# what istiod's file source logs when one document of the directory is invalid (it then
# keeps what it had: pkg/kube/krt/files/files.go)
_REFUSED = "unable to reload file configuration"


class IstiodRefused(Exception):
    """istiod did not take the input: its file source refuses a whole directory when
    one document is invalid, and keeps what it had.  ``registryd_errors``: what
    registryd's ``/debug/configz`` says of the same input (empty: it took it all)."""

    def __init__(self, registryd_errors: dict[str, str]) -> None:
        super().__init__(f"istiod refused the input; registryd: {registryd_errors or 'took it'}")
        self.registryd_errors = registryd_errors


class Ambiguous(Exception):
    """istiod serves the input differently from one push to the next (see
    :func:`ambiguity`): there is nothing exact to compare."""


def ambiguity(text: str) -> str | None:
    """Why istiod's answer to ``text`` is not defined, if it is not: istiod keeps one
    Service per hostname and namespace in a proxy's scope, the first of its service list
    (``model/sidecar.go`` ``appendSidecarServices``), ordered by creation time only;
    among equal times the order is that of a map (``serviceentry/controller.go``
    ``Services``), so it changes from push to push.  That happens with a ServiceEntry of
    several addresses (one Service per address) and with several ServiceEntries of one
    hostname and namespace created at the same time (files read together).  Entries of
    one hostname that do not merge (``canMergeServices``) are not compared either: istiod
    takes their clusters from the oldest, but builds listeners from all of them; nor are
    entries that merge but disagree (:func:`_split`), nor a hostname of several namespaces
    whose oldest entry is not the one istiod gives the nodes' namespace (:func:`_picked`):
    registryd serves one definition per hostname.  ``None``
    when the input is fine, or when registryd refuses it (so does istiod, then)."""
    try:
        parsed = parse_file(text, "input.yaml")
    except InvalidConfig:
        return None
    entries: dict[tuple[str, str], list[ServiceEntry]] = {}
    for doc in parsed.documents:
        if not isinstance(doc, ServiceEntry):
            continue
        if len(doc.spec.addresses) > 1 and doc.spec.hosts:
            return f"ServiceEntry {doc.meta.name} has several addresses"
        for host in hosts_of(doc):
            entries.setdefault((doc.meta.namespace, host), []).append(doc)
    for (namespace, host), found in sorted(entries.items()):
        times = [e.meta.created for e in found]
        if len(times) != len(set(times)):
            return f"{host} is defined in {namespace} by ServiceEntries of one creation time"
        by_age = sorted(found, key=lambda e: e.meta.created or datetime.max.replace(tzinfo=UTC))
        oldest = by_age[0]
        if any(not mergeable(oldest, e) for e in by_age[1:]):
            # clusters come from the oldest (appendSidecarServices), listeners from every
            # entry, route virtual hosts from the last one a map kept
            return f"{host} is defined in {namespace} by ServiceEntries that do not merge"
        if _split(by_age):
            return f"{host} is defined in {namespace} by ServiceEntries that merge but disagree"
    by_host: dict[str, list[ServiceEntry]] = {}
    for (_, host), found in sorted(entries.items()):
        by_host.setdefault(host, []).extend(found)
    for host, found in by_host.items():
        if len({e.meta.namespace for e in found}) < 2:
            continue
        if len({e.meta.namespace for e in found if _visible(e)}) > 1:
            # entries of several namespaces never merge (canMergeServices): as above
            return f"{host} is defined in several namespaces the proxies see"
        if _picked(found) not in (None, _oldest(found)):
            return f"{host} is defined in several namespaces and {PROXY_NAMESPACE} sees another"
    return None


PROXY_NAMESPACE = "default"  # the namespace of every node of NODES


def _oldest(found: list[ServiceEntry]) -> ServiceEntry:
    return min(found, key=lambda e: e.meta.created or datetime.max.replace(tzinfo=UTC))


def _picked(found: list[ServiceEntry]) -> ServiceEntry | None:
    """The entry of a hostname istiod gives a proxy of :data:`PROXY_NAMESPACE`: the
    oldest of those exported to that namespace by name (or private to it), else the
    oldest public one (``push_context.go`` ``servicesExportedToNamespace`` lists them in
    that order, ``model/sidecar.go`` ``appendSidecarServices`` keeps the first)."""
    public = [e for e in found if _public(e)]
    named = [e for e in found if _visible(e) and not _public(e)]
    return _oldest(named) if named else _oldest(public) if public else None


def _public(entry: ServiceEntry) -> bool:
    return not entry.spec.export_to or "*" in entry.spec.export_to


def _visible(entry: ServiceEntry) -> bool:
    """Whether proxies of :data:`PROXY_NAMESPACE` see the entry."""
    export = set(entry.spec.export_to)
    own = "." in export and entry.meta.namespace == PROXY_NAMESPACE
    return _public(entry) or PROXY_NAMESPACE in export or own


def _split(by_age: list[ServiceEntry]) -> bool:
    """Whether entries of one hostname that merge (oldest first) disagree on what
    istiod's listener and route builders read from each entry on its own: its addresses,
    or a port number or name declared again with another name, protocol or number.  istiod
    builds clusters from the merged Service (``model/sidecar.go``
    ``appendSidecarServices`` adds a later entry's ports by *name*), listeners from every
    entry as it is, and route virtual hosts from the newest entry with the port
    (``httproute.go`` ``BuildSidecarOutboundVirtualHosts``: ``servicesByName``)."""
    addresses = set(by_age[0].spec.addresses)
    by_number: dict[int, tuple[str, str]] = {}
    by_name: dict[str, int] = {}
    for entry in by_age:
        if set(entry.spec.addresses) != addresses:
            return True
        for port in entry.spec.ports:
            kind = (port.name, port.protocol)
            if by_number.setdefault(port.number, kind) != kind:
                return True
            if by_name.setdefault(port.name, port.number) != port.number:
                return True
    return False


_NODE_ID = "sidecar~10.1.0.1~app-1.default~default.svc.cluster.local"
_META = {"NAMESPACE": PROXY_NAMESPACE, "ISTIO_VERSION": ISTIO_VERSION, "CLUSTER_ID": "Kubernetes"}
NODES = (
    Node("sidecar", _NODE_ID, _META),
    Node("local", _NODE_ID, {**_META, "INTERCEPTION_MODE": "NONE"}),
    Node("grpc", _NODE_ID, {**_META, "GENERATOR": "grpc"}),
)


def grpc_names(documents: Iterable[Any]) -> list[str]:
    """``host:port`` for every host and port of the ServiceEntries among ``documents``:
    what a proxyless gRPC client would dial."""
    out = set()
    for doc in documents:
        if not isinstance(doc, dict) or doc.get("kind") != "ServiceEntry":
            continue
        spec = doc.get("spec") or {}
        for host in spec.get("hosts") or ():
            for port in spec.get("ports") or ():
                if isinstance(port, dict) and "number" in port:
                    out.add(f"{host}:{port['number']}")
    return sorted(out)


def istio_inputs(paths: Iterable[Path]) -> list[Path]:
    """The YAML files under ``paths`` (files or directories) whose documents are all
    ``networking.istio.io`` ServiceEntries or WorkloadEntries (at least one)."""
    found: list[Path] = []
    for path in paths:
        for file in sorted(path.rglob("*.yaml")) if path.is_dir() else [path]:
            try:
                docs = [d for d in yaml.safe_load_all(file.read_text()) if d is not None]
            except (yaml.YAMLError, UnicodeDecodeError):
                continue
            if docs and all(
                isinstance(d, dict)
                and str(d.get("apiVersion", "")).startswith("networking.istio.io/")
                and d.get("kind") in ("ServiceEntry", "WorkloadEntry")
                for d in docs
            ):
                found.append(file)
    return found


def marker_entry(n: int) -> tuple[str, str]:
    """The ``n``-th sync marker: its cluster's name and its ServiceEntry (YAML)."""
    host = f"m{n}.sync.registryd.test"
    doc = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": f"sync-marker-{n}", "namespace": "default"},
        "spec": {
            "hosts": [host],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": MARKER_PORT, "name": "http-marker", "protocol": "HTTP"}],
        },
    }
    return f"outbound|{MARKER_PORT}||{host}", yaml.safe_dump(doc)


class Pair:
    """istiod and registryd on one directory (see the module)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.dir = workdir / "inputs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._count = itertools.count(1)
        binary = istiod_binary()
        self.istiod: Istiod = start_istiod(
            workdir, workdir / "istiod.log", config_sources=[fs_source(self.dir)], binary=binary
        )
        try:
            self.registryd: Registryd = start_registryd(self.dir, workdir / "registryd.log")
        except BaseException:
            self.istiod.stop()
            raise

    async def serve(
        self, text: str, nodes: Iterable[Node] = NODES
    ) -> AsyncIterator[tuple[Node, Served, Served]]:
        """Load ``text`` (YAML documents) alone, then per node what each server serves.
        Raises :class:`Ambiguous` first if istiod's answer is not defined."""
        why = ambiguity(text)
        if why:
            raise Ambiguous(why)
        marker, marker_doc = marker_entry(next(self._count))
        seen = len(self.istiod.output())  # istiod's log so far: a refusal shows after it
        for old in self.dir.iterdir():
            old.unlink()
        # the input first, then the marker in a file of its own (istiod drops a whole
        # file when one of its documents is invalid): whoever reads the marker has the
        # input in the directory already
        for name, content in (("input.yaml", text), ("marker.yaml", marker_doc)):
            staging = self.workdir / f"{name}.tmp"
            staging.write_text(content)
            os.replace(staging, self.dir / name)
        try:
            names = grpc_names(yaml.safe_load_all(text))
        except yaml.YAMLError:
            names = []
        for i, node in enumerate(nodes):
            options = {"grpc_listeners": names} if node.kind == "grpc" else {}
            target = f"127.0.0.1:{self.istiod.grpc_port}"
            # the first time, istiod either serves the marker or says it refused the input
            collecting = collect(target, node, marker, **options)
            istiod = await (self._unless_refused(collecting, seen) if i == 0 else collecting)
            if istiod is None:
                # registryd has read the input once it serves the marker: its errors are
                # then those of this input
                await collect(f"127.0.0.1:{self.registryd.grpc_port}", node, marker)
                raise IstiodRefused(self._registryd_errors())
            ours = await collect(f"127.0.0.1:{self.registryd.grpc_port}", node, marker, **options)
            yield node, istiod, ours

    async def _unless_refused(self, collecting: Awaitable[Served], seen: int) -> Served | None:
        """What ``collecting`` returns, or ``None`` as soon as istiod's log (after its
        first ``seen`` characters) says it refused the input directory."""
        task = asyncio.ensure_future(collecting)
        try:
            while not task.done():
                if _REFUSED in self.istiod.output()[seen:]:
                    return None
                await asyncio.wait({task}, timeout=0.05)
            return task.result()
        finally:
            task.cancel()

    def _registryd_errors(self) -> dict[str, str]:
        status, body = http_get(self.registryd.http_port, "/debug/configz")
        if status != 200:
            return {"/debug/configz": f"{status} {body[:200]}"}
        errors: dict[str, str] = {}
        for registry in json.loads(body):
            errors.update(registry.get("errors") or {})
        return errors

    def stop(self) -> None:
        self.registryd.stop()
        self.istiod.stop()
