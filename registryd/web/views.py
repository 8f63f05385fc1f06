"""What the debug endpoints show: pure functions from daemon state to JSON-ready data.

Every function here only reads the objects it is given and returns plain dicts and
lists (strings, numbers, booleans), so the HTTP layer can serialize them as they are.
Times are RFC 3339 UTC strings; durations are milliseconds.  Settings, raw registry config
and node metadata are passed through :func:`registryd.settings.redact` (one rule for
every view) so that tokens and passwords never leave the process, and text a client
sent is clipped (:func:`registryd.base.logs.clip`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from registryd.base.logs import clip
from registryd.build import pieces
from registryd.model import Endpoint, Resolution, Service, ShardKey
from registryd.registry.merge import Conflict, MergedService
from registryd.registry.store import RegistryStore, ShardState, View
from registryd.settings import redact
from registryd.xds import resources as res
from registryd.xds.tracking import Delivery, PushRecord, PushTrace
from registryd.xds.views import CLIENT_TEXT, rfc3339

__all__ = [
    "ServiceRows",
    "configz",
    "console",
    "endpointz",
    "push_status",
    "pushz",
    "redact",
    "registryz",
]

JSON = dict[str, Any]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# -- registry -------------------------------------------------------------------------
def _service(service: Service) -> JSON:
    return {
        "hostname": service.hostname,
        "namespace": service.namespace,
        "ports": [
            {
                "name": p.name,
                "port": p.number,
                "protocol": p.protocol,
                **({"targetPort": p.target_port} if p.target_port else {}),
            }
            for p in service.ports
        ],
        "resolution": str(service.resolution),
        "location": str(service.location),
        "addresses": list(service.addresses),
        "labels": dict(service.labels),
        "exportTo": list(service.export_to),
    }


def _endpoint(endpoint: Endpoint) -> JSON:
    return {
        "address": endpoint.address,
        "port": endpoint.port,
        "servicePort": endpoint.service_port,
        "locality": str(endpoint.locality),
        "weight": endpoint.weight,
        "health": str(endpoint.health),
        "labels": dict(endpoint.labels),
        "network": endpoint.network,
        "clusterID": endpoint.cluster_id,
        "registry": str(endpoint.source) if endpoint.source else "",
    }


def _conflict(conflict: Conflict) -> JSON:
    return {
        "hostname": conflict.hostname,
        "winner": str(conflict.winner),
        "losers": [str(k) for k in conflict.losers],
        "fields": list(conflict.fields),
        "rule": conflict.rule,
    }


def registryz(
    services: Mapping[str, MergedService], hostname: str = "", namespace: str = ""
) -> list[JSON]:
    """The merged services as served, sorted by hostname; ``registry`` and ``priority``
    name the winning registry, ``registries`` every registry that defines the hostname
    (winner first) and ``priorities`` each one's merge priority."""
    out = []
    for host in sorted(services):
        merged = services[host]
        if (hostname and host != hostname) or (namespace and merged.service.namespace != namespace):
            continue
        out.append(
            {
                **_service(merged.service),
                "registry": str(merged.winner),
                "priority": merged.priorities[0],
                "registries": [str(k) for k in merged.shards],
                "priorities": {
                    str(k): p for k, p in zip(merged.shards, merged.priorities, strict=True)
                },
                "endpoints": len(merged.endpoints),
                **({"conflict": _conflict(merged.conflict)} if merged.conflict else {}),
            }
        )
    return out


def endpointz(store: RegistryStore, hostname: str = "") -> JSON:
    """hostname -> namespace -> ``provider/instance`` -> that registry's endpoints, with
    how the merge treated that registry's definition of the service (provenance, with the
    registry's merge priority and, when it lost, the winner's)."""
    merged = store.view.services
    out: dict[str, dict[str, dict[str, JSON]]] = {}
    for key, shard in sorted(store.shards.items()):
        for host in sorted(set(shard.services) | set(shard.endpoints)):
            if hostname and host != hostname:
                continue
            service = shard.services.get(host)
            namespace = service.namespace if service is not None else ""
            served = merged.get(host)
            out.setdefault(host, {}).setdefault(namespace, {})[str(key)] = {
                "attributes": _provenance(key, shard.effective_priority, served),
                "endpoints": [_endpoint(e) for e in shard.endpoints.get(host, ())],
            }
    return out


def _provenance(key: ShardKey, priority: int, served: MergedService | None) -> JSON:
    if served is None:
        return {
            "served": False,
            "priority": priority,
            "rule": "no service definition: endpoints not served",
        }
    if served.winner == key:
        rule = (
            "sole registry for this hostname"
            if len(served.shards) == 1
            else "highest-priority registry: its ports and attributes are served; "
            "endpoints of every registry are combined"
        )
        return {"served": True, "winner": True, "priority": priority, "rule": rule}
    differs = served.conflict is not None and key in served.conflict.losers
    winning = served.priorities[0]
    why = (
        f"priority {winning} > {priority}"
        if winning != priority
        else f"equal priority {priority}, its name sorts first"
    )
    return {
        "served": True,
        "winner": False,
        "priority": priority,
        "winnerPriority": winning,
        "rule": f"attributes from {served.winner} ({why}); endpoints combined",
        **(
            {"conflictingFields": list(served.conflict.fields)}
            if differs and served.conflict
            else {}
        ),
    }


def configz(
    store: RegistryStore,
    registries: Iterable[tuple[ShardKey, Mapping[str, Any]]],
    restarts: Mapping[ShardKey, int],
    registry: str = "",
    next_retry: Mapping[ShardKey, float] | None = None,
) -> list[JSON]:
    """Per registry: its (redacted) settings, state, per-source errors and raw config,
    when a failed registry is retried next (``nextRetry``, while it waits), and whether
    istiods reading registryd over MCP get its services (``exported``)."""
    retries = next_retry or {}
    out = []
    for key, settings in registries:
        if registry and registry not in (key.instance, str(key)):
            continue
        shard = store.shards.get(key) or ShardState(key)
        out.append(
            {
                "registry": str(key),
                "name": key.instance,
                "type": key.provider,
                "priority": shard.effective_priority,
                "exported": shard.exported,
                "settings": redact(dict(settings)),
                "synced": shard.synced,
                "lastSync": rfc3339(shard.last_sync),
                "lastError": redact(shard.last_error),
                "restarts": restarts.get(key, 0),
                "nextRetry": rfc3339(retries.get(key)),
                "events": shard.events,
                "errors": redact(dict(sorted(shard.problems.items()))),
                "warnings": redact(list(shard.warnings)),
                "status": redact(dict(shard.status)),
                "sources": redact(dict(sorted(shard.sources.items()))),
            }
        )
    return out


# -- pushes -----------------------------------------------------------------------------
def _delivery(d: Delivery, started: float) -> JSON:
    out: JSON = {
        "resources": d.resources,
        "bytes": d.bytes,
        "sentMs": _ms(d.sent_at - started),
        "ackedMs": _ms(d.acked_at - started) if d.acked_at is not None else None,
    }
    if d.nacked_at is not None:
        out["nackedMs"] = _ms(d.nacked_at - started)
        out["error"] = d.error
    return out


def pushz(
    records: Iterable[PushRecord],
    traces: Iterable[PushTrace],
    proxy_id: str = "",
    limit: int = 20,
) -> list[JSON]:
    """The last pushes, newest first: trigger, debounce, build, and per proxy what was
    sent and how long after the first registry event it was sent and ACKed (or NACKed)."""
    by_version = {t.version: t for t in traces}
    out = []
    for record in sorted(records, key=lambda r: -r.version)[:limit]:
        item: JSON = {
            "version": record.version,
            "at": rfc3339(record.at),
            "trigger": {
                "registries": list(record.triggers),
                "events": record.events,
                "hostnames": record.hostnames,
                "sample": list(record.sample),
                "kind": "endpoints" if record.endpoints_only else "full",
            },
            "debounceMs": _ms(record.debounce_seconds),
            "buildMs": _ms(record.build_seconds),
        }
        trace = by_version.get(record.version)
        if trace is not None:
            item.update(_trace(trace, proxy_id))
        out.append(item)
    return out


def _trace(trace: PushTrace, proxy_id: str) -> JSON:
    proxies: dict[str, JSON] = {}
    for d in trace.deliveries.values():
        if proxy_id and proxy_id not in (d.proxy, d.conn_id):
            continue
        entry = proxies.setdefault(
            d.conn_id,
            {
                "proxyID": clip(d.proxy, CLIENT_TEXT),
                "connectionID": d.conn_id,
                "type": "delta" if d.delta else "sotw",
            },
        )
        entry.setdefault("types", {})[res.short_type(d.type_url)] = _delivery(d, trace.started)
    acked: list[float] = []
    nacked = pending = 0
    for entry in proxies.values():
        types = entry["types"].values()
        if any("error" in t for t in types):
            entry["state"] = "nacked"
            nacked += 1
        elif all(t["ackedMs"] is not None for t in types):
            entry["state"] = "acked"
            entry["ackedMs"] = max(t["ackedMs"] for t in types)
            acked.append(entry["ackedMs"])
        else:
            entry["state"] = "pending"
            pending += 1
    return {
        "publishedMs": _ms(trace.published - trace.started),
        "summary": {
            "proxies": len(proxies),
            "acked": len(acked),
            "nacked": nacked,
            "pending": pending,
            "ackedMsP50": statistics.median(acked) if acked else None,
            "ackedMsMax": max(acked) if acked else None,
        },
        "proxies": sorted(proxies.values(), key=lambda e: e["proxyID"]),
    }


def push_status(store: RegistryStore) -> JSON:
    """Problems in the current view, under istiod's push_status keys where one exists."""
    services = store.view.services
    no_instances = sorted(
        f"outbound|{p.number}||{h}"
        for h, m in services.items()
        if m.service.resolution == Resolution.STATIC  # DNS services resolve the hostname
        for p in m.service.ports
        if not any(e.service_port == p.number and pieces.in_eds(e) for e in m.endpoints)
    )
    duplicates = {
        h: [str(k) for k in m.shards] for h, m in sorted(services.items()) if len(m.shards) > 1
    }
    conflicts = [_conflict(m.conflict) for _, m in sorted(services.items()) if m.conflict]
    left_out = {
        h: sorted(f"{e.address}:{e.port} ({e.source})" for e in dropped)
        for h, m in sorted(services.items())
        if m.service.resolution == Resolution.STATIC
        and (dropped := [e for e in m.endpoints if not pieces.in_eds(e)])
    }
    errors = {str(k): dict(s.problems) for k, s in sorted(store.shards.items()) if s.problems}
    warnings = {str(k): list(s.warnings) for k, s in sorted(store.shards.items()) if s.warnings}
    return {
        "version": store.view.version,
        "services": len(services),
        "pilot_eds_no_instances": no_instances,
        "pilot_duplicate_envoy_clusters": duplicates,
        "registryd_conflicting_hostnames": conflicts,
        "registryd_endpoints_not_in_eds": left_out,
        "registryd_config_errors": errors,
        "registryd_registry_warnings": warnings,
        "registryd_registries_not_synced": [
            str(k) for k, s in sorted(store.shards.items()) if not s.synced
        ],
    }


# -- the console (/ui) -------------------------------------------------------------------
CONSOLE_PUSHES = 60  # pushes on the console's timeline
CONSOLE_NAMED = 20  # proxies named per push (pending, NACKed); the rest are counted


class ServiceRows:
    """The console's service rows of the store's current view, made again only when the
    view changed (a view is immutable: a change makes a new one), so that polling costs
    little while the registries are quiet.  Holds one view's rows at a time."""

    def __init__(self) -> None:
        self._view: View | None = None
        self._rows: list[JSON] = []

    def rows(self, view: View) -> list[JSON]:
        if view is not self._view:
            self._rows = [_console_service(m) for _, m in sorted(view.services.items())]
            self._view = view
        return self._rows


def console(
    store: RegistryStore,
    registries: Iterable[tuple[ShardKey, Mapping[str, Any]]],
    restarts: Mapping[ShardKey, int],
    next_retry: Mapping[ShardKey, float],
    records: Iterable[PushRecord],
    traces: Iterable[PushTrace],
    proxies: list[JSON],
    unanswered: list[str],
    services: ServiceRows | None = None,
) -> JSON:
    """Everything the web console shows, in one compact answer: per registry its state
    and counts (``/debug/configz`` without settings and raw config), per served service
    its ports, registries and endpoint counts (``/debug/registryz`` without labels and
    addresses; endpoints themselves are ``/debug/endpointz?hostname=``), the clients
    (:func:`registryd.xds.views.console`, as given) and the last pushes with, per push,
    the proxies reached, ACKed, NACKed and still pending (the first
    :data:`CONSOLE_NAMED` of each named).  ``unanswered``: serving processes whose
    clients are missing from ``proxies``.  ``services``: the rows kept from the last
    call, if any."""
    return {
        "version": store.view.version,
        "registries": _console_registries(store, registries, restarts, next_retry),
        "services": (services or ServiceRows()).rows(store.view),
        "proxies": proxies,
        "pushes": _console_pushes(records, traces),
        "unanswered": unanswered,
    }


def _console_registries(
    store: RegistryStore,
    registries: Iterable[tuple[ShardKey, Mapping[str, Any]]],
    restarts: Mapping[ShardKey, int],
    next_retry: Mapping[ShardKey, float],
) -> list[JSON]:
    out = []
    for key, _ in registries:
        shard = store.shards.get(key) or ShardState(key)
        out.append(
            {
                "registry": str(key),
                "type": key.provider,
                "priority": shard.effective_priority,
                "exported": shard.exported,
                "synced": shard.synced,
                "lastSync": rfc3339(shard.last_sync),
                "lastError": redact(shard.last_error),
                "errors": len(shard.problems),
                "restarts": restarts.get(key, 0),
                "nextRetry": rfc3339(next_retry.get(key)),
                "services": len(shard.services),
                "endpoints": sum(len(e) for e in shard.endpoints.values()),
            }
        )
    return out


def _console_service(merged: MergedService) -> JSON:
    service = merged.service
    healthy = sum(1 for e in merged.endpoints if pieces.in_eds(e))
    return {
        "hostname": service.hostname,
        "namespace": service.namespace,
        "ports": [f"{p.number}/{p.protocol}" for p in service.ports],
        "registry": str(merged.winner),
        "registries": [str(k) for k in merged.shards],
        "endpoints": len(merged.endpoints),
        "served": healthy,
        **({"conflict": _conflict(merged.conflict)} if merged.conflict else {}),
    }


def _console_pushes(records: Iterable[PushRecord], traces: Iterable[PushTrace]) -> list[JSON]:
    by_version = {t.version: t for t in traces}
    out = []
    for record in sorted(records, key=lambda r: -r.version)[:CONSOLE_PUSHES]:
        item: JSON = {
            "version": record.version,
            "at": rfc3339(record.at),
            "registries": list(record.triggers),
            "events": record.events,
            "hostnames": record.hostnames,
            "sample": list(record.sample),
            "kind": "endpoints" if record.endpoints_only else "full",
        }
        trace = by_version.get(record.version)
        if trace is not None:
            item.update(_console_trace(trace))
        out.append(item)
    return out


def _console_trace(trace: PushTrace) -> JSON:
    """Per proxy (by connection) of one push: ACKed (and when), NACKed or pending."""
    acked: list[float] = []
    pending: list[str] = []
    nacked: list[JSON] = []
    by_conn: dict[str, list[Delivery]] = {}
    for d in trace.deliveries.values():
        by_conn.setdefault(d.conn_id, []).append(d)
    for deliveries in by_conn.values():
        proxy = clip(deliveries[0].proxy, CLIENT_TEXT)
        failed = next((d for d in deliveries if d.nacked_at is not None), None)
        if failed is not None:
            nacked.append({"proxyID": proxy, "error": clip(failed.error, CLIENT_TEXT)})
        elif all(d.acked_at is not None for d in deliveries):
            acked.append(max(d.acked_at or 0.0 for d in deliveries) - trace.started)
        else:
            pending.append(proxy)
    return {
        "proxies": len(by_conn),
        "acked": len(acked),
        "lastAckMs": _ms(max(acked)) if acked else None,
        "pending": len(pending),
        "pendingProxies": sorted(pending)[:CONSOLE_NAMED],
        "nacked": len(nacked),
        "nackedProxies": sorted(nacked, key=lambda n: n["proxyID"])[:CONSOLE_NAMED],
    }
