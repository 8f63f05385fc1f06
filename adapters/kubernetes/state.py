"""The watched objects of one Kubernetes cluster, converted incrementally.  Pure: no I/O.

Input is the JSON of the API objects as dicts (what the API server sends); nothing here
does I/O.  :class:`ClusterState` keeps the objects of one cluster, fed by full listings
(:meth:`~ClusterState.reset`) and watch events (:meth:`~ClusterState.apply`), converts
only the services an event may have changed, and hands out the full state
(:meth:`~ClusterState.replace`), the increments since the last hand-out
(:meth:`~ClusterState.changes`: one ``Upsert`` per new or changed hostname, then one
``Delete`` per vanished one, each sorted) and the problems
(:meth:`~ClusterState.problems`).

A malformed object (see :mod:`.parse`) is reported under its source and skipped; the
last good version of that object, if any, stays in use.  Any exception while reading
one object counts as that object being malformed.  ``Problems.sources`` carries
the summary of every served Service (``Service/<namespace>/<name>``, see
:mod:`.mapping`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from registryd.adapter import (
    Delete,
    LastGood,
    Problems,
    Published,
    Replace,
    Upsert,
    describe_error,
)

from .mapping import Built, Options, build_service
from .objects import ENDPOINT_SLICE, KINDS, NAMESPACE, NODE, POD, SERVICE, Key, NodeLocality
from .parse import PARSERS, ObjectError, object_key, object_source, source_of
from .pods import PodLabels
from .selector import Selector

__all__ = ["ClusterState"]

OWN_ERRORS = (ObjectError, ValueError)  # the parsers' own: their text says it all


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
        self._tables: dict[str, LastGood[Key, Any]] = {kind: LastGood() for kind in KINDS}
        self._pods = PodLabels()  # Pods: labels only, interned
        self._pods_changed: set[Key] = set()
        self._errors: dict[str, str] = {}  # source -> message: unreadable kinds, keyless objects
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
        except Exception as exc:  # ObjectError, or what a stranger object provokes
            if event != "DELETED":
                self._set_error(
                    object_source(kind, obj),
                    f"{describe_error(exc, own=OWN_ERRORS)}; skipped",
                )
            return
        if event == "DELETED":
            self._forget(kind, key)
            return
        table = self._tables[kind]
        try:
            parsed = PARSERS[kind](obj)
        except Exception as exc:  # ObjectError, or what a stranger object provokes
            kept = "; the last good version stays in use" if key in table.values else ""
            reason = describe_error(exc, own=OWN_ERRORS)
            message = f"{source_of(kind, key)}: {reason}; skipped{kept}"
            if table.errors.get(key) != message:
                table.fail(key, message)
                self._problems = None
            return
        if key in table.errors:
            self._problems = None
        self._store(kind, key, parsed)

    def unavailable(self, kind: str, message: str) -> None:
        """``kind`` cannot be read (e.g. forbidden): what was read of it before stays in
        use; ``message`` is reported under ``<kind>`` until a listing of it succeeds."""
        self._set_error(kind, message)

    def reset(self, kind: str, objects: Iterable[Any], namespace: str | None = None) -> None:
        """A full listing of ``kind`` (in ``namespace``; None: all namespaces): objects
        of that scope that it does not hold are gone."""
        self._clear_error(kind)
        listed = list(objects)
        keys: set[Key] = set()
        for obj in listed:
            try:
                keys.add(object_key(kind, obj))
            except Exception:  # reported by apply() below
                continue
        scope = None if namespace is None else (lambda key: key[0] == namespace)
        gone = self._tables[kind].reset(keys, scope)
        if gone:
            self._problems = None
        for key, before in gone.items():
            self._gone(kind, key, before)
        if namespace is None:  # objects without a key: only a listing of all can clear them
            for source in [s for s in self._errors if s.startswith(f"{kind}/")]:
                self._clear_error(source)
        for obj in listed:
            self.apply(kind, "ADDED", obj)

    def _store(self, kind: str, key: Key, parsed: Any) -> None:
        table = self._tables[kind]
        before = table.get(key)
        if before == parsed:
            table.good(key, before)  # clears an error; the stored value stays
            return
        if kind == POD:
            table.good(key, self._pods.intern(parsed))
            if before is not None:
                self._pods.release(before)
            self._pods_changed.add(key)
            return
        table.good(key, parsed)
        self._changed(kind, key, before, parsed)

    def _forget(self, kind: str, key: Key) -> None:
        table = self._tables[kind]
        if key in table.errors:
            self._problems = None
        self._gone(kind, key, table.forget(key))

    def _gone(self, kind: str, key: Key, before: Any) -> None:
        """The object ``key`` of ``kind``, parsed as ``before`` (None: never good), is gone."""
        if before is None:
            return
        if kind == POD:
            self._pods.release(before)
            self._pods_changed.add(key)
        else:
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

    def _set_error(self, source: str, message: str) -> None:
        if self._errors.get(source) != f"{source}: {message}":
            self._errors[source] = f"{source}: {message}"
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
        labels = self._tables[NAMESPACE].get(("", namespace))
        return labels is not None and self.selector.matches(labels)

    def _propagate(self) -> None:
        """Turn changed Nodes, Pods and Namespaces into dirty Services."""
        if self._nodes_changed:
            nodes, self._nodes_changed = self._nodes_changed, set()
            for piece in self._tables[ENDPOINT_SLICE].values.values():
                if piece.service and any(e.node in nodes for e in piece.endpoints):
                    self._dirty.add((piece.namespace, piece.service))
        if self._pods_changed:
            pods, self._pods_changed = self._pods_changed, set()
            slices = self._tables[ENDPOINT_SLICE].values
            for pod in pods:
                for slice_key in self._pods.slices_of(pod):
                    piece = slices.get(slice_key)
                    if piece is not None and piece.service:
                        self._dirty.add((piece.namespace, piece.service))
        if self._namespaces_changed:
            names, self._namespaces_changed = self._namespaces_changed, set()
            self._dirty.update(k for k in self._tables[SERVICE].values if k[0] in names)

    def _flush(self) -> set[Key]:
        """Convert the dirty Services again; return their keys."""
        self._propagate()
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            service = self._tables[SERVICE].get(key)
            if service is None or not self.selected(key[0]):
                if self._built.pop(key, None) is not None:
                    self._problems = None
                continue
            pieces = self._tables[ENDPOINT_SLICE].values
            slices = [pieces[k] for k in self._slices_of.get(key, ())]
            pods = self._tables[POD].values
            built = build_service(service, slices, self._nodes, self.options, pods)
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
            errors = dict(self._errors)
            for kind, table in self._tables.items():
                for key, message in table.errors.items():
                    if not key[0] or self.selected(key[0]):
                        errors[source_of(kind, key)] = message
            sources = {source_of(SERVICE, key): built.summary for key, built in self._built.items()}
            self._problems = Problems(
                errors=dict(sorted(errors.items())), sources=dict(sorted(sources.items()))
            )
        return self._problems

    @property
    def hostnames(self) -> list[str]:
        return sorted(b.service.hostname for b in self._built.values())
