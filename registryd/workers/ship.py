"""Snapshots in transit to xDS worker processes.  Pure: no I/O.

The main process builds every snapshot; worker processes serve them (see
:mod:`registryd.workers.pool`).  A worker is sent a :class:`Shipment`: once the whole
snapshot (when it starts, or when it is too far behind for the history to say what
changed), then only the resources that changed since the version it has.  Resources
travel as ``(version, body)``: the worker frames them again (:meth:`Resource.make`), so
the bytes it writes to clients are exactly the main process' and every resource keeps
the version in which its content last changed; version strings and nonces therefore
mean the same on every worker, and a client that reconnects to another worker is known
to be current.

Contract: for any snapshots ``a`` (what the worker has) and ``b`` (newer),
``receive(a, ship(b, a.version))`` has the same version and the same resources as ``b``,
and its history names at least every resource that changed since each version it covers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from registryd.xds.snapshot import HISTORY, TABLE_TYPES, Resource, Snapshot

__all__ = ["Shipment", "receive", "ship"]

Wire = tuple[int, bytes]  # a resource as shipped: (version, serialized body)


@dataclass(frozen=True, slots=True)
class Shipment:
    """Snapshot ``version``, as a change from ``base`` (0: the whole snapshot).
    ``tables`` maps table -> name -> the resource, or None where it was removed;
    ``history`` holds the snapshot's change sets of the versions after ``base``."""

    version: int
    base: int
    tables: Mapping[str, Mapping[str, Wire | None]]
    history: tuple[tuple[int, Mapping[str, frozenset[str]]], ...]
    mcp: bool = False  # Snapshot.mcp


def _wire(resource: Resource) -> Wire:
    return (resource.version, resource.body)


def ship(snapshot: Snapshot, have: int) -> Shipment:
    """What a worker that has version ``have`` (0: nothing) needs to hold ``snapshot``:
    the changed resources, or everything if its history does not reach back to ``have``."""
    history = snapshot.history
    if have and history and history[0][0] <= have + 1:
        newer = tuple(entry for entry in history if entry[0] > have)
        tables: dict[str, dict[str, Wire | None]] = {}
        for _, changes in newer:
            for table, names in changes.items():
                current = snapshot.tables.get(table, {})
                out = tables.setdefault(table, {})
                for name in names:
                    found = current.get(name)
                    out[name] = None if found is None else _wire(found)
        return Shipment(snapshot.version, have, tables, newer, snapshot.mcp)
    whole = {t: {n: _wire(r) for n, r in rs.items()} for t, rs in snapshot.tables.items()}
    return Shipment(snapshot.version, 0, whole, snapshot.history, snapshot.mcp)


def _type_of(table: str) -> str:
    return TABLE_TYPES[table.partition("@")[0]]


def receive(current: Snapshot, shipment: Shipment) -> Snapshot:
    """The snapshot ``shipment`` describes, given the worker's ``current`` one.  Raises
    ``ValueError`` if ``shipment`` is a change from a version the worker does not have."""
    if shipment.base and shipment.base != current.version:
        raise ValueError(
            f"snapshot {shipment.version} is a change from {shipment.base}, "
            f"but this worker has {current.version}"
        )
    tables: dict[str, Mapping[str, Resource]]
    if shipment.base:
        tables = dict(current.tables)
        for table, changes in shipment.tables.items():
            type_url = _type_of(table)
            updated = dict(tables.get(table, {}))
            for name, wire in changes.items():
                if wire is None:
                    updated.pop(name, None)
                else:
                    updated[name] = Resource.make(type_url, name, wire[0], wire[1])
            tables[table] = MappingProxyType(updated)
    else:
        tables = {
            table: MappingProxyType(
                {n: Resource.make(_type_of(table), n, w[0], w[1]) for n, w in rs.items() if w}
            )
            for table, rs in shipment.tables.items()
        }
    history = (*current.history, *shipment.history) if shipment.base else shipment.history
    return Snapshot(
        shipment.version, MappingProxyType(tables), history[-HISTORY:], mcp=shipment.mcp
    )
