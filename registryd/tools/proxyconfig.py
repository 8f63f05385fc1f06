"""What one proxy is served, as ``istioctl proxy-config`` tables: pure functions of the
JSON of ``/debug/config_dump`` (Envoy's admin ``ConfigDump``, snake_case field names).

Columns and the way each cell is described follow istioctl's writers
(istioctl/pkg/writer/envoy/configdump: cluster.go ``PrintClusterSummary``, endpoint.go
``PrintEndpointsSummary``, listener.go ``PrintListenerSummary`` with its verbose
MATCH/DESTINATION columns, route.go ``PrintRouteSummary`` verbose).  Values missing from
the JSON are the proto defaults (JSON leaves them out): a cluster without ``type`` is
STATIC, an endpoint without ``health_status`` is UNKNOWN (which Envoy balances to as if
healthy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from registryd.tools.tables import format_table

__all__ = ["KINDS", "dump_resources", "render", "table"]

JSON = Mapping[str, Any]

# kind -> (the dump section's type, its list of entries, where the resource is in an entry)
_SECTIONS: Mapping[str, tuple[str, str, tuple[str, ...]]] = {
    "clusters": ("ClustersConfigDump", "dynamic_active_clusters", ("cluster",)),
    "listeners": ("ListenersConfigDump", "dynamic_listeners", ("active_state", "listener")),
    "routes": ("RoutesConfigDump", "dynamic_route_configs", ("route_config",)),
    "endpoints": ("EndpointsConfigDump", "dynamic_endpoint_configs", ("endpoint_config",)),
}
KINDS = tuple(_SECTIONS)
_HCM = "envoy.filters.network.http_connection_manager"
_TCP = "envoy.filters.network.tcp_proxy"


def dump_resources(dump: JSON, kind: str) -> list[tuple[str, JSON]]:
    """``(version_info, resource)`` of every ``kind`` entry of a config dump, in its
    order; empty when the proxy did not subscribe to that type."""
    section_type, entries, path = _SECTIONS[kind]
    out: list[tuple[str, JSON]] = []
    for section in dump.get("configs", ()):
        if not str(section.get("@type", "")).endswith("." + section_type):
            continue
        for entry in section.get(entries, ()):
            holder: JSON = entry
            for step in path[:-1]:
                holder = holder.get(step, {})
            if path[-1] in holder:
                out.append((str(holder.get("version_info", "")), holder[path[-1]]))
    return out


def _resources(dump: JSON, kind: str) -> list[JSON]:
    return [resource for _, resource in dump_resources(dump, kind)]


# -- clusters ----------------------------------------------------------------------------
def _subset_key(name: str) -> tuple[str, str, str, int]:
    """(direction, subset, hostname, port) of ``direction|port|subset|hostname``
    (istio pilot/pkg/model/service.go ``ParseSubsetKey``); other names are their own
    hostname with no port."""
    parts = name.split("|")
    if len(parts) < 4 or not parts[1].isdigit():
        return "", "", name, 0
    return parts[0], parts[2], parts[3], int(parts[1])


def _cluster_type(cluster: JSON) -> str:
    if "type" in cluster:
        return str(cluster["type"])
    if "cluster_type" in cluster:
        return str(cluster["cluster_type"].get("name", "CUSTOM"))
    return "STATIC"


def _cluster_rows(dump: JSON) -> list[list[str]]:
    """Sorted by hostname, subset, port, direction (istioctl cluster.go
    ``retrieveSortedClusterSlice``)."""
    keyed = []
    for cluster in _resources(dump, "clusters"):
        direction, subset, host, port = _subset_key(str(cluster.get("name", "")))
        row = [host, str(port) if port else "-", subset or "-", direction or "-"]
        keyed.append(((host, subset, port, direction), [*row, _cluster_type(cluster)]))
    return [row for _, row in sorted(keyed)]


# -- endpoints ---------------------------------------------------------------------------
def _address(address: JSON) -> str:
    socket = address.get("socket_address")
    if socket is not None:
        return f"{socket.get('address', '')}:{socket.get('port_value', 0)}"
    if "pipe" in address:
        return str(address["pipe"].get("path", ""))
    return "unknown"


def _locality(locality: JSON) -> str:
    parts = [locality.get(k, "") for k in ("region", "zone", "sub_zone")]
    return "/".join(parts).rstrip("/") or "-"


def _endpoint_rows(dump: JSON) -> list[list[str]]:
    rows = []
    for assignment in _resources(dump, "endpoints"):
        cluster = str(assignment.get("cluster_name", ""))
        for group in assignment.get("endpoints", ()):
            locality = _locality(group.get("locality", {}))
            for lb in group.get("lb_endpoints", ()):
                address = _address(lb.get("endpoint", {}).get("address", {}))
                health = str(lb.get("health_status", "UNKNOWN"))
                rows.append([address, health, locality, cluster])
    return rows


# -- listeners ---------------------------------------------------------------------------
def _chain_match(match: JSON | None) -> str:
    """istioctl listener.go ``getMatches``: what a filter chain matches, ``ALL`` if
    nothing in particular."""
    match = match or {}
    described = []
    if match.get("server_names"):
        described.append("SNI: " + ",".join(match["server_names"]))
    if match.get("transport_protocol"):
        described.append("Trans: " + str(match["transport_protocol"]))
    if match.get("application_protocols"):
        described.append("App: " + ",".join(match["application_protocols"]))
    port = f":{match['destination_port']}" if "destination_port" in match else ""
    if match.get("prefix_ranges"):
        ranges = ",".join(
            f"{r.get('address_prefix', '')}/{r.get('prefix_len', 0)}"
            for r in match["prefix_ranges"]
        )
        described.append(f"Addr: {ranges}{port}")
    elif port:
        described.append(f"Addr: *{port}")
    return "; ".join(described) or "ALL"


def _cluster_target(cluster: str) -> str:
    return cluster if "Cluster" in cluster else f"Cluster: {cluster}"


def _http_target(manager: JSON) -> str:
    if "route_config" in manager:
        return "Inline Route: " + _inline_routes(manager["route_config"])
    name = manager.get("rds", {}).get("route_config_name", "")
    return f"Route: {name}" if name else "HTTP"


def _inline_routes(config: JSON) -> str:
    hosts = []
    for vhost in config.get("virtual_hosts", ()):
        matches = ", ".join(_route_match(r.get("match", {})) for r in vhost.get("routes", ()))
        domains = vhost.get("domains", [])
        hosts.append(matches if domains == ["*"] else f"{'/'.join(domains)} {matches}")
    return "; ".join(hosts)


def _chain_target(filters: Sequence[JSON]) -> str:
    """istioctl listener.go ``getFilterType``: where a filter chain sends traffic."""
    for network_filter in filters:
        config = network_filter.get("typed_config", {})
        if network_filter.get("name") == _HCM:
            return _http_target(config)
        if network_filter.get("name") == _TCP and config.get("cluster") != "BlackHoleCluster":
            if "cluster" in config:
                return _cluster_target(str(config["cluster"]))
            weighted = config.get("weighted_clusters", {}).get("clusters", ())
            return "Cluster: " + ",".join(str(c.get("name", "")) for c in weighted)
    return "Non-HTTP/Non-TCP"


def _socket(listener: JSON) -> tuple[int, str]:
    socket = listener.get("address", {}).get("socket_address", {})
    return int(socket.get("port_value", 0)), str(socket.get("address", "-"))


def _listener_rows(dump: JSON) -> list[list[str]]:
    """Sorted by port, then address (istioctl listener.go ``PrintListenerSummary``)."""
    rows = []
    for listener in sorted(_resources(dump, "listeners"), key=_socket):
        name = str(listener.get("name", ""))
        number, address = _socket(listener)
        port = str(number)
        if "api_listener" in listener:  # proxyless gRPC: no socket, the name is dialled
            target = _http_target(listener["api_listener"].get("api_listener", {}))
            rows.append([name, address, port, "API", target])
            continue
        chains = [*listener.get("filter_chains", ())]
        if "default_filter_chain" in listener:
            chains.append(listener["default_filter_chain"])
        described = sorted(
            (
                (_chain_match(c.get("filter_chain_match")), _chain_target(c.get("filters", ())))
                for c in chains
            ),
            key=lambda pair: pair[1],
            reverse=True,
        )
        rows.extend([name, address, port, match, target] for match, target in described)
    return rows


# -- routes ------------------------------------------------------------------------------
def _route_match(match: JSON) -> str:
    """istioctl listener.go ``describeMatch`` (headers are left out, as there)."""
    conditions = []
    if match.get("prefix"):
        conditions.append(f"{match['prefix']}*")
    if match.get("path_separated_prefix"):
        conditions.append(f"PathPrefix:{match['path_separated_prefix']}")
    if match.get("path"):
        conditions.append(str(match["path"]))
    if "safe_regex" in match:
        conditions.append(f"regex {match['safe_regex'].get('regex', '')}")
    return " ".join(conditions)


def _domains(domains: Sequence[str]) -> str:
    """istioctl route.go ``describeRouteDomains``: the names without ports, the
    ``.svc.cluster.local`` / ``.svc`` spellings of a shorter one left out, at most two."""
    if len(domains) <= 1:
        return "".join(domains)
    bare = [d for d in domains if ":" not in d or (d.count(":") > 2 and d.endswith("]"))]
    unique = set(bare)
    shorter = [
        d
        for d in bare
        if any(
            d.endswith(suffix) and d.removesuffix(suffix) in unique
            for suffix in (".svc.cluster.local", ".svc")
        )
    ]
    kept = [d for d in bare if d not in shorter]
    if len(kept) > 2:
        return f"{', '.join(kept[:2])} + {len(kept) - 2} more..."
    return ", ".join(kept)


def _virtual_service(route: JSON) -> str:
    """istioctl route.go ``describeManagement``: the VirtualService a route came from,
    ``name.namespace``; ``-`` for routes registryd builds from services alone."""
    config = route.get("metadata", {}).get("filter_metadata", {}).get("istio", {}).get("config")
    if not config:
        return "-"
    parts = str(config).split("/")
    return f"{parts[-1]}.{parts[-3]}" if len(parts) >= 3 else str(config)


def _is_passthrough(route: JSON) -> bool:
    return route.get("route", {}).get("cluster") == "PassthroughCluster"


def _route_rows(dump: JSON) -> list[list[str]]:
    rows = []
    for config in _resources(dump, "routes"):
        name = str(config.get("name", ""))
        for vhost in config.get("virtual_hosts", ()):
            domains = _domains(vhost.get("domains", ()))
            routes = vhost.get("routes", ())
            if not routes:
                rows.append([name, domains, "/*", "404"])
            rows.extend(
                [name, domains, _route_match(r.get("match", {})), _virtual_service(r)]
                for r in routes
                if not _is_passthrough(r)
            )
    return rows


_TABLES: Mapping[str, tuple[tuple[str, ...], Callable[[JSON], list[list[str]]]]] = {
    "clusters": (("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"), _cluster_rows),
    "endpoints": (("ENDPOINT", "STATUS", "LOCALITY", "CLUSTER"), _endpoint_rows),
    "listeners": (("NAME", "ADDRESS", "PORT", "MATCH", "DESTINATION"), _listener_rows),
    "routes": (("NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"), _route_rows),
}


def table(dump: JSON, kind: str) -> tuple[tuple[str, ...], list[list[str]]]:
    """The header and rows of the ``kind`` table (one of :data:`KINDS`) of a dump."""
    header, rows = _TABLES[kind]
    return header, rows(dump)


def render(dump: JSON, kind: str) -> str:
    """The ``kind`` table of a dump as text."""
    return format_table(*table(dump, kind))
