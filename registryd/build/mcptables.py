"""The MCP tables of a snapshot: what an istiod reads, kept up hostname by hostname.

:class:`McpTables` is the part of :class:`registryd.build.builder.SnapshotBuilder` that
places each exported hostname's ServiceEntry and WorkloadEntries (converted by
:mod:`registryd.build.mcp`) into the snapshot tables ``mcp/serviceentry`` and
``mcp/workloadentry``.  Two things it keeps between builds:

* each config's creation time (``create_time``): the ``clock`` time it was first built,
  kept while it exists, so that an unchanged config keeps its bytes;
* per hostname, the serialized WorkloadEntry of each workload it built: a hostname with
  thousands of endpoints is rebuilt on every change of any of them, and a workload that
  did not change is not converted, stamped and serialized again (a push of 3,000
  endpoints costs about as much as its EDS build, not seven times it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Protocol

from registryd.build import mcp
from registryd.model import Service
from registryd.registry.merge import MergedService
from registryd.xds.snapshot import MCP_SERVICE_ENTRIES, MCP_WORKLOAD_ENTRIES

__all__ = ["McpTables"]


class _Tables(Protocol):
    """The snapshot being written (the builder's ``_Writer``)."""

    def place(self, table: str, name: str, by_scope: Mapping[str, Any]) -> None: ...

    def place_group(
        self,
        table: str,
        wanted: Mapping[str, Mapping[str, Any]],
        known: MutableMapping[Any, frozenset[str]],
        key: Any,
    ) -> None: ...


class McpTables:
    """Places what istiod reads of each hostname (not thread-safe; one owner).

    Contract with the builder: what :meth:`place` wrote is in the tables it writes
    next, unless :meth:`forget_built` was called (after a build that was not
    committed, or before a full rebuild): then every workload is placed again on its
    next change, compared with what the table holds."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._created: dict[tuple[str, str], float] = {}  # (table, config) -> created
        self._names: dict[tuple[str, str], frozenset[str]] = {}  # (table, host) -> configs
        # host -> (the namespace they were built in, workload -> (config name, bytes))
        self._built: dict[str, tuple[str, dict[mcp.Workload, tuple[str, bytes]]]] = {}

    def forget_built(self) -> None:
        """Place every workload again on its hostname's next build (see the class)."""
        self._built.clear()

    def place(self, out: _Tables, host: str, merged: MergedService | None) -> None:
        """Place the configs of ``host`` as exported now (``merged`` None: it is not
        exported, or gone) and take out those it no longer has."""
        entries: dict[str, Any] = {}
        if merged is not None:
            entry = mcp.service_entry(merged)
            if entry is not None:
                born = self._born(MCP_SERVICE_ENTRIES, entry.key)
                entries[entry.key] = {"": mcp.resource(entry, born)}
        for gone in self._names.get((MCP_SERVICE_ENTRIES, host), frozenset()) - entries.keys():
            self._created.pop((MCP_SERVICE_ENTRIES, gone), None)
        out.place_group(MCP_SERVICE_ENTRIES, entries, self._names, (MCP_SERVICE_ENTRIES, host))
        self._workloads(out, host, merged)

    def _workloads(self, out: _Tables, host: str, merged: MergedService | None) -> None:
        """Place the WorkloadEntries of ``host`` that are new, take out those that are
        gone; a workload still there keeps what was built for it."""
        namespace, built = self._built.pop(host, ("", {}))
        known = self._names.pop((MCP_WORKLOAD_ENTRIES, host), frozenset())
        fresh: dict[mcp.Workload, tuple[str, bytes]] = {}
        if merged is not None:
            service = merged.service
            if namespace != service.namespace:
                built = {}
            for workload in mcp.workloads(merged):
                made = built.get(workload)
                if made is None:
                    made = self._workload(service, workload)
                    out.place(MCP_WORKLOAD_ENTRIES, made[0], {"": made[1]})
                fresh[workload] = made
            if fresh:
                self._built[host] = (service.namespace, fresh)
        names = frozenset(name for name, _ in fresh.values())
        for gone in known - names:
            out.place(MCP_WORKLOAD_ENTRIES, gone, {})
            self._created.pop((MCP_WORKLOAD_ENTRIES, gone), None)
        if names:
            self._names[(MCP_WORKLOAD_ENTRIES, host)] = names

    def _workload(self, service: Service, workload: mcp.Workload) -> tuple[str, bytes]:
        config = mcp.workload_entry(service, workload)
        resource = mcp.resource(config, self._born(MCP_WORKLOAD_ENTRIES, config.key))
        return config.key, resource.SerializeToString(deterministic=True)

    def _born(self, table: str, key: str) -> float:
        """When config ``key`` of ``table`` was first built (now, if it is new)."""
        created = self._created.get((table, key))
        if created is None:
            created = self._created[(table, key)] = self._clock()
        return created
