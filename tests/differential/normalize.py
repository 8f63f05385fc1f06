"""What is taken out of both servers' answers before they are compared: a short list of
rules, each naming what it removes or rewrites and why, and each one a row of the
"Where registryd differs from istiod" table of docs/xds.md (``row``: the text its first cell
starts with; a test checks the table has it).  Nothing else is normalized away: any
other difference fails the comparison.

A rule is a pure function of one side's served resources (a deep copy of them) and of
which side it is: it may drop resources or rewrite fields, in place.  A *pair rule*
(:data:`PAIR_RULES`) sees both sides at once, for a difference that is recognised only
by comparing them.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from tests.differential.collect import Served

__all__ = [
    "KUBE_RULES",
    "MARKER_PORT",
    "MCP_RULES",
    "PAIR_RULES",
    "RULES",
    "KubeFacts",
    "KubeRule",
    "PairRule",
    "Rule",
    "normalize",
    "normalize_pair",
]

MARKER_PORT = 1  # the harness's sync marker ServiceEntry listens here (never an input's)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    what: str  # what it removes or rewrites
    why: str
    row: str  # the docs/xds.md row it corresponds to ("" only for the harness's own marker)
    apply: Callable[[Served, str], None]


def _marker(served: Served, side: str) -> None:
    """The harness's own sync marker (a ServiceEntry on port 1) and what it makes."""
    suffix = f"|{MARKER_PORT}||"
    for kind in ("cds", "eds"):
        for name in [n for n in served.get(kind, {}) if suffix in n]:
            del served[kind][name]
    listeners = served.get("lds", {})
    for name in [
        n for n in listeners if n.endswith(f"_{MARKER_PORT}") or n.endswith(f":{MARKER_PORT}")
    ]:
        del listeners[name]
    routes = served.get("rds", {})
    for name in [n for n in routes if n == str(MARKER_PORT) or suffix in n]:
        del routes[name]


def _inbound(served: Served, side: str) -> None:
    """istiod's inbound side: what it builds from the proxy's own workload."""
    clusters = served.get("cds", {})
    for name in [
        n for n in clusters if n.startswith("inbound|") or n == "InboundPassthroughCluster"
    ]:
        del clusters[name]
    for name in [n for n in served.get("eds", {}) if n.startswith("inbound|")]:
        del served["eds"][name]
    served.get("lds", {}).pop("virtualInbound", None)
    for name in [n for n in served.get("rds", {}) if n.startswith("inbound|")]:
        del served["rds"][name]


def _resources(served: Served, kind: str) -> list[dict[str, Any]]:
    return list(served.get(kind, {}).values())


def _managers(served: Served) -> list[dict[str, Any]]:
    """Every HTTP connection manager of the listeners (Envoy's and proxyless gRPC's)."""
    found = []
    for listener in _resources(served, "lds"):
        api = listener.get("api_listener", {}).get("api_listener")
        if api:
            found.append(api)
        for chain in [*listener.get("filter_chains", []), listener.get("default_filter_chain")]:
            for f in (chain or {}).get("filters", []):
                if f.get("name") == "envoy.filters.network.http_connection_manager":
                    found.append(f["typed_config"])
    return found


_TELEMETRY_FILTERS = {"envoy.filters.http.grpc_stats"}
_VIRTUAL_SERVICE_FILTERS = {"envoy.filters.http.fault", "envoy.filters.http.cors"}


def _drop_http_filters(served: Served, names: set[str]) -> None:
    for manager in _managers(served):
        if "http_filters" in manager:
            manager["http_filters"] = [
                f for f in manager["http_filters"] if f.get("name") not in names
            ]


def _telemetry(served: Served, side: str) -> None:
    """Istio's telemetry: the gRPC stats filter, tracing and its request id, and the
    ``istio`` metadata its stats read on clusters and endpoints."""
    if side != "istiod":
        return
    _drop_http_filters(served, _TELEMETRY_FILTERS)
    for manager in _managers(served):
        manager.pop("tracing", None)
        manager.pop("request_id_extension", None)
    for cluster in _resources(served, "cds"):
        _drop_istio_metadata(cluster)
        for group in cluster.get("load_assignment", {}).get("endpoints", []):
            for lb in group.get("lb_endpoints", []):
                _drop_istio_metadata(lb)
    for assignment in _resources(served, "eds"):
        for group in assignment.get("endpoints", []):
            for lb in group.get("lb_endpoints", []):
                _drop_istio_metadata(lb)


def _drop_istio_metadata(holder: dict[str, Any]) -> None:
    metadata = holder.get("metadata", {}).get("filter_metadata", {})
    metadata.pop("istio", None)
    if not metadata:
        holder.pop("metadata", None)


def _virtual_service_filters(served: Served, side: str) -> None:
    """The fault-injection and CORS filters istiod puts in every HTTP chain for
    VirtualServices (no-ops without one)."""
    if side == "istiod":
        _drop_http_filters(served, _VIRTUAL_SERVICE_FILTERS)


def _stat_delimiter(served: Served, side: str) -> None:
    """The ``;`` istiod ends stat prefixes and alternative stat names with (a delimiter
    for the stats tag regexes of Istio's own proxy bootstrap), and the alternative stat
    name that is only the cluster's name with it."""
    if side != "istiod":
        return
    for cluster in _resources(served, "cds"):
        if cluster.get("alt_stat_name") == f"{cluster.get('name')};":
            del cluster["alt_stat_name"]
    for manager in _managers(served):
        prefix = manager.get("stat_prefix")
        if isinstance(prefix, str) and prefix.endswith(";"):
            manager["stat_prefix"] = prefix[:-1]


def _local_blackhole(served: Served, side: str) -> None:
    """registryd's ``BlackHoleCluster`` where istiod falls through to
    ``PassthroughCluster`` on a listener bound to loopback (``INTERCEPTION_MODE: NONE``)."""
    if side != "registryd":
        return
    for name, listener in served.get("lds", {}).items():
        chain = listener.get("default_filter_chain", {})
        if not name.startswith("127.0.0.1_") or chain.get("name") != "PassthroughFilterChain":
            continue
        for f in chain.get("filters", []):
            proxy = f.get("typed_config", {})
            if proxy.get("cluster") == "BlackHoleCluster":
                proxy["cluster"] = proxy["stat_prefix"] = "PassthroughCluster"


def _tls_mode(served: Served, side: str) -> None:
    """istiod's ``envoy.transport_socket_match`` metadata of endpoints (``tlsMode:
    istio``, from a workload's ``security.istio.io/tlsMode`` label)."""
    if side != "istiod":
        return
    for lb in _lb_endpoints(served):
        metadata = lb.get("metadata", {}).get("filter_metadata", {})
        metadata.pop("envoy.transport_socket_match", None)
        if not metadata:
            lb.pop("metadata", None)


def _assignments(served: Served) -> list[dict[str, Any]]:
    """Every ClusterLoadAssignment: EDS's and those inside clusters."""
    inside = [c["load_assignment"] for c in _resources(served, "cds") if "load_assignment" in c]
    return _resources(served, "eds") + inside


def _lb_endpoints(served: Served) -> list[dict[str, Any]]:
    return [
        lb
        for assignment in _assignments(served)
        for group in assignment.get("endpoints", [])
        for lb in group.get("lb_endpoints", [])
    ]


def _dns_family(served: Served, side: str) -> None:
    """The DNS lookup family of DNS clusters (istiod picks it from the proxy's IPs)."""
    for cluster in _resources(served, "cds"):
        cluster.pop("dns_lookup_family", None)


def _cidr_addresses(served: Served, side: str) -> None:
    """A CIDR range among a service's addresses, where istiod uses it as a name: route
    domains (``<cidr>``, ``<cidr>:<port>``), and the address of a proxyless gRPC
    listener (registryd's ``0.0.0.0`` there)."""
    if side != "istiod":
        return
    for route in _resources(served, "rds"):
        for host in route.get("virtual_hosts", []):
            if "domains" in host:
                host["domains"] = [d for d in host["domains"] if "/" not in d]
    for listener in _resources(served, "lds"):
        if "api_listener" not in listener:
            continue
        socket = listener.get("address", {}).get("socket_address", {})
        if "/" in str(socket.get("address", "")):
            socket["address"] = "0.0.0.0"


def _grpc_overlapping_wildcards(served: Served, side: str) -> None:
    """istiod's virtual hosts, in a proxyless gRPC route ``outbound|<port>||<host>``, of
    other hostnames that overlap ``<host>`` by wildcard.  Where ``<host>`` has none of
    its own (a port not declared HTTP), the route is left empty, as the ``grpc-non-http``
    rule expects it."""
    if side != "istiod":
        return
    for name, route in served.get("rds", {}).items():
        if not name.startswith("outbound|"):
            continue
        port, host = name.split("|")[1], name.split("|")[3]
        own = [h for h in route.get("virtual_hosts", []) if h.get("name") == f"{host}:{port}"]
        if own:
            route["virtual_hosts"] = own
        else:
            route.pop("virtual_hosts", None)  # as served JSON has an empty list


RULES: tuple[Rule, ...] = (
    Rule(
        "marker",
        "the cluster, endpoints, listener and route of the harness's sync marker (port 1)",
        "the harness writes it with each input to know both servers read the input",
        "",
        _marker,
    ),
    Rule(
        "inbound",
        "istiod's `inbound|…` clusters, `InboundPassthroughCluster` and `virtualInbound`",
        "built from the proxy's own workload; registryd serves outbound discovery only",
        "no `virtualInbound` (15006), no inbound listeners or clusters",
        _inbound,
    ),
    Rule(
        "telemetry",
        "istiod's gRPC stats filter, tracing and request-id settings of HTTP connection "
        "managers, and the `istio` filter metadata of clusters and endpoints",
        "Istio's telemetry (its stats and tracing) has nothing to read without Istio's proxy",
        "telemetry: no gRPC stats filter, tracing or `istio` metadata",
        _telemetry,
    ),
    Rule(
        "virtual-service-filters",
        "istiod's `envoy.filters.http.fault` and `envoy.filters.http.cors` HTTP filters",
        "they act only on VirtualService fault and CORS policies, which registryd has not",
        "no DestinationRule, VirtualService, Sidecar, mTLS",
        _virtual_service_filters,
    ),
    Rule(
        "stat-delimiter",
        "the `;` at the end of istiod's stat prefixes and alternative stat names, and an "
        "alternative stat name that is the cluster's own name with it",
        "the delimiter is for the stats tag regexes of Istio's proxy bootstrap",
        "stat names",
        _stat_delimiter,
    ),
    Rule(
        "cidr-addresses",
        "istiod's route domains that are CIDR ranges, and a CIDR range as a proxyless gRPC "
        "listener's address",
        "no Host header is a range, and a gRPC API listener's address is not used",
        "a ServiceEntry address that is a CIDR range",
        _cidr_addresses,
    ),
    Rule(
        "local-blackhole",
        "registryd's `BlackHoleCluster` in the fall-through chain of a loopback listener, "
        "where istiod has `PassthroughCluster`",
        "without capture the original destination is the proxy's own listener: passing "
        "through would loop",
        "`INTERCEPTION_MODE: NONE`, unmatched connections",
        _local_blackhole,
    ),
    Rule(
        "grpc-overlapping-wildcards",
        "in istiod's proxyless gRPC route for a hostname, the virtual hosts of other "
        "hostnames that overlap it by wildcard (its own virtual host kept)",
        "a call's authority matches its own hostname's domains, which win over wildcard "
        "ones: the others are never chosen, except for a port not declared HTTP, where "
        "istiod's call would go to the other hostname's cluster",
        "proxyless gRPC, hostnames a wildcard host overlaps",
        _grpc_overlapping_wildcards,
    ),
    Rule(
        "tls-mode",
        "istiod's `envoy.transport_socket_match` endpoint metadata (`tlsMode: istio` of "
        "workloads labelled `security.istio.io/tlsMode`)",
        "it selects Istio's mTLS transport socket, which registryd does not configure; "
        "without transport socket matches on the cluster nothing reads it",
        "endpoint `tlsMode` metadata",
        _tls_mode,
    ),
    Rule(
        "dns-family",
        "`dns_lookup_family` of DNS clusters",
        "istiod picks it per proxy from its IP families; registryd builds once for all",
        "DNS lookup family",
        _dns_family,
    ),
)


def _mcp_health(served: Served, side: str) -> None:
    """Through MCP (registries other than files, exported to istiod as WorkloadEntries):
    registryd's HEALTHY status, and its UNHEALTHY endpoints with their share of their
    locality's weight (a locality left empty goes too)."""
    if side != "registryd":
        return
    for assignment in _resources(served, "eds"):
        _drop_unhealthy(assignment)
    for cluster in _resources(served, "cds"):
        if "load_assignment" in cluster:
            _drop_unhealthy(cluster["load_assignment"])


def _drop_unhealthy(assignment: dict[str, Any]) -> None:
    _drop_endpoints(assignment, lambda lb: lb.get("health_status") == "UNHEALTHY")
    for group in assignment.get("endpoints", []):
        for lb in group["lb_endpoints"]:
            if lb.get("health_status") == "HEALTHY":
                del lb["health_status"]


def _drop_endpoints(assignment: dict[str, Any], drop: Callable[[dict[str, Any]], bool]) -> None:
    """Take the endpoints ``drop`` picks out of ``assignment``: their locality's weight is
    recomputed without them, and a locality left empty goes (as istiod never had them)."""
    groups = []
    for group in assignment.get("endpoints", []):
        before = group.get("lb_endpoints", [])
        kept = [lb for lb in before if not drop(lb)]
        if len(kept) != len(before):
            group["lb_endpoints"] = kept
            group["load_balancing_weight"] = sum(lb.get("load_balancing_weight", 1) for lb in kept)
        if kept:
            groups.append(group)
    if groups:
        assignment["endpoints"] = groups
    else:
        assignment.pop("endpoints", None)


def _mcp_endpoint_order(served: Served, side: str) -> None:
    """Through MCP: the order of endpoints within a locality (both sides sorted by
    address and port)."""
    assignments = _resources(served, "eds") + [
        c["load_assignment"] for c in _resources(served, "cds") if "load_assignment" in c
    ]
    for assignment in assignments:
        for group in assignment.get("endpoints", []):
            group.get("lb_endpoints", []).sort(key=_socket)


def _socket(lb: dict[str, Any]) -> tuple[str, int]:
    socket = lb.get("endpoint", {}).get("address", {}).get("socket_address", {})
    return str(socket.get("address", "")), int(socket.get("port_value", 0))


# only where istiod reads registryd's state over MCP (tests/differential/mcp.py)
MCP_RULES: tuple[Rule, ...] = (
    Rule(
        "mcp-endpoint-order",
        "the order of endpoints within a locality",
        "istiod orders the WorkloadEntries a ServiceEntry selects by name; their names "
        "stay the same while an endpoint lives (no renames, no churn), so they cannot "
        "follow the registry's order",
        "endpoint order within a locality, through MCP",
        _mcp_endpoint_order,
    ),
    Rule(
        "mcp-health",
        "registryd's `health_status: HEALTHY`, and its UNHEALTHY endpoints (their "
        "locality's weight recomputed without them)",
        "a WorkloadEntry has no health: istiod serves an exported endpoint with no status "
        "and leaves an unhealthy one out",
        "registry endpoint health, through MCP",
        _mcp_health,
    ),
)


def normalize(served: Served, side: str, rules: tuple[Rule, ...] = RULES) -> Served:
    """A normalized copy of ``served`` (``side``: ``istiod`` or ``registryd``)."""
    out = copy.deepcopy(served)
    for rule in rules:
        rule.apply(out, side)
    return out


@dataclass(frozen=True, slots=True)
class PairRule:
    """A rule that needs both sides (see the module)."""

    name: str
    what: str
    why: str
    row: str
    apply: Callable[[Served, Served], None]  # (istiod's, registryd's), in place


def _grpc_dns(istiod: Served, ours: Served) -> None:
    """A DNS service for a proxyless gRPC client: istiod's EDS cluster (with an empty
    assignment) against registryd's LOGICAL_DNS cluster of the same name."""
    theirs, mine, assignments = istiod.get("cds", {}), ours.get("cds", {}), istiod.get("eds", {})
    for name in [n for n in theirs if n in mine]:
        empty = not assignments.get(name, {}).get("endpoints")
        if theirs[name].get("type") == "EDS" and mine[name].get("type") == "LOGICAL_DNS" and empty:
            del theirs[name], mine[name]
            assignments.pop(name, None)


def _grpc_non_http(istiod: Served, ours: Served) -> None:
    """A proxyless gRPC route for a service on a port that is not HTTP: istiod's route
    configuration with no virtual host against registryd's one, and the cluster (and
    assignment) only registryd's virtual host leads to."""
    theirs, mine = istiod.get("rds", {}), ours.get("rds", {})
    for name in [n for n in theirs if n.startswith("outbound|") and n in mine]:
        if theirs[name].get("virtual_hosts") or not mine[name].get("virtual_hosts"):
            continue
        for host in mine[name].pop("virtual_hosts"):
            for route in host.get("routes", []):
                cluster = route.get("route", {}).get("cluster")
                if cluster and cluster not in istiod.get("cds", {}):
                    ours.get("cds", {}).pop(cluster, None)
                    ours.get("eds", {}).pop(cluster, None)


def _grpc_passthrough(istiod: Served, ours: Served) -> None:
    """A passthrough service for a proxyless gRPC client: istiod's listener, route and
    EDS cluster with no endpoints, where registryd serves none of them."""
    for name, listener in list(istiod.get("lds", {}).items()):
        if "api_listener" not in listener or name in ours.get("lds", {}):
            continue
        # the cluster of its route (a short name's listener is named after that name)
        manager = listener["api_listener"].get("api_listener", {})
        host, _, port = name.rpartition(":")
        cluster = manager.get("rds", {}).get("route_config_name") or f"outbound|{port}||{host}"
        assignment = istiod.get("eds", {}).get(cluster, {})
        if cluster in ours.get("cds", {}) or assignment.get("endpoints"):
            continue
        del istiod["lds"][name]
        if not any(_route_of(other) == cluster for other in istiod["lds"].values()):
            for kind in ("rds", "cds", "eds"):
                istiod.get(kind, {}).pop(cluster, None)


def _route_of(listener: dict[str, Any]) -> str:
    manager = listener.get("api_listener", {}).get("api_listener", {})
    return str(manager.get("rds", {}).get("route_config_name", ""))


def _shared_loopback(istiod: Served, ours: Served) -> None:
    """A loopback listener (``127.0.0.1_<port>``) that registryd shares between several
    services, on both sides, and the routes only such listeners name."""
    mine, routes = ours.get("lds", {}), ours.get("rds", {})
    shared = [
        n
        for n, listener in mine.items()
        if n.startswith("127.0.0.1_") and _shared(listener, routes)
    ]
    for side in (istiod, ours):
        listeners = side.get("lds", {})
        dropped = {_route_names(listeners.pop(n)) for n in shared if n in listeners}
        still = {r for listener in listeners.values() for r in [_route_names(listener)]}
        for route in dropped - still - {""}:
            side.get("rds", {}).pop(route, None)


def _shared(listener: dict[str, Any], routes: dict[str, Any]) -> bool:
    """Whether a listener leads to more than one service: two clusters, or the port's
    shared route ``<port>`` (one sniffed service has its own route) and a cluster or
    another virtual host."""
    chains = [*listener.get("filter_chains", []), listener.get("default_filter_chain") or {}]
    configs = [f.get("typed_config", {}) for chain in chains for f in chain.get("filters", [])]
    clusters = {c["cluster"] for c in configs if c.get("cluster")} - _STATIC_CLUSTERS
    names = {str(c.get("rds", {}).get("route_config_name", "")) for c in configs}
    hosts = sum(len(routes.get(n, {}).get("virtual_hosts", [])) for n in names if n.isdigit())
    return len(clusters) > 1 or (hosts > 0 and bool(clusters)) or hosts > 1


_STATIC_CLUSTERS = {"PassthroughCluster", "BlackHoleCluster"}


def _route_names(listener: dict[str, Any]) -> str:
    chains = [*listener.get("filter_chains", []), listener.get("default_filter_chain") or {}]
    for chain in chains:
        for f in chain.get("filters", []):
            name = f.get("typed_config", {}).get("rds", {}).get("route_config_name")
            if name:
                return str(name)
    return ""


def _shared_address_domains(istiod: Served, ours: Served) -> None:
    """Route domains that are an address (``<ip>``, ``<ip>:<port>``, IPv6 in brackets)
    which, on either side, virtual hosts of more than one hostname carry: removed from
    every virtual host of both sides."""
    holders: dict[str, set[str]] = {}
    hosts = [h for side in (istiod, ours) for r in side.get("rds", {}).values() for h in _vhosts(r)]
    for vhost in hosts:
        for domain in vhost.get("domains", []):
            if (ip := _domain_address(domain)) is not None:
                holders.setdefault(ip, set()).add(str(vhost.get("name")))
    shared = {ip for ip, names in holders.items() if len(names) > 1}
    for vhost in hosts:
        if "domains" in vhost:
            vhost["domains"] = [d for d in vhost["domains"] if _domain_address(d) not in shared]


def _vhosts(route: dict[str, Any]) -> list[dict[str, Any]]:
    return list(route.get("virtual_hosts", []))


def _domain_address(domain: str) -> str | None:
    """The IP address a route domain names, or ``None`` for a hostname (or ``*``)."""
    text = domain
    if text.startswith("["):
        text = text[1 : text.find("]")]
    elif text.count(":") == 1:
        text = text.split(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


PAIR_RULES: tuple[PairRule, ...] = (
    PairRule(
        "shared-loopback",
        "a loopback listener that registryd shares between several services (both sides' "
        "listener of that name), and the routes only such listeners name",
        "registryd keeps every service on the port reachable; istiod gives it to the first",
        "`INTERCEPTION_MODE: NONE`, several services on one port",
        _shared_loopback,
    ),
    PairRule(
        "shared-address-domain",
        "a route domain naming an address (with or without its port) that virtual hosts of "
        "several hostnames carry, on either side: taken out of every virtual host",
        "istiod gives such an address to one hostname's virtual host chosen in map order, "
        "another at the next push",
        "an address shared by several hostnames",
        _shared_address_domains,
    ),
    PairRule(
        "grpc-passthrough",
        "a proxyless gRPC listener istiod serves and registryd does not, with its route "
        "and its cluster, when that cluster has no endpoints",
        "a passthrough service has no endpoints: its call fails either way, with registryd "
        "at once (no such listener) instead of waiting for endpoints",
        "proxyless gRPC, passthrough services",
        _grpc_passthrough,
    ),
    PairRule(
        "grpc-non-http",
        "a proxyless gRPC route configuration where istiod has no virtual host and "
        "registryd has one, with the cluster and assignment only that virtual host names",
        "gRPC calls are HTTP/2 whatever protocol the port declares: istiod's empty route "
        "fails every call",
        "proxyless gRPC, services on ports not declared HTTP",
        _grpc_non_http,
    ),
    PairRule(
        "grpc-dns",
        "a cluster istiod serves as EDS with no endpoints where registryd serves a "
        "LOGICAL_DNS cluster of the same name (and istiod's empty assignment)",
        "gRPC resolves the name itself: the call works, where istiod's cluster has nothing",
        "proxyless gRPC, DNS services",
        _grpc_dns,
    ),
)


def _mcp_port_subsets(istiod: Served, ours: Served) -> None:
    """Through MCP: istiod's endpoints, on one port of a hostname, of addresses that
    registryd serves on other ports of that hostname only (their locality's weight
    recomputed without them; a locality left empty goes too)."""
    mine = ours.get("eds", {})
    by_host: dict[str, set[str]] = {}
    for name, assignment in mine.items():
        host = name.rsplit("|", 1)[-1]
        by_host.setdefault(host, set()).update(_addresses(assignment))
    for name, assignment in istiod.get("eds", {}).items():
        host = name.rsplit("|", 1)[-1]
        elsewhere = by_host.get(host, set()) - _addresses(mine.get(name, {}))
        if elsewhere:
            _drop_endpoints(assignment, partial(_at, elsewhere))


def _at(addresses: set[str], lb: dict[str, Any]) -> bool:
    return _address(lb) in addresses


def _address(lb: dict[str, Any]) -> str:
    return _socket(lb)[0]


def _addresses(assignment: dict[str, Any]) -> set[str]:
    return {_address(lb) for g in assignment.get("endpoints", []) for lb in g["lb_endpoints"]}


# only where istiod reads registryd's state over MCP (tests/differential/mcp.py)
MCP_PAIR_RULES: tuple[PairRule, ...] = (
    PairRule(
        "mcp-port-subsets",
        "istiod's endpoints on a port of a hostname at addresses registryd serves only on "
        "other ports of that hostname",
        "a ServiceEntry's endpoints serve every port of it: istiod cannot be told that an "
        "instance listens on some of its service's ports only",
        "an instance serving some of its service's ports, through MCP",
        _mcp_port_subsets,
    ),
)


@dataclass(frozen=True, slots=True)
class KubeFacts:
    """What the Kubernetes rules need to know of a cluster state that the served
    resources do not show."""

    node_local: frozenset[str] = frozenset()  # hostnames of `internalTrafficPolicy: Local`
    distributed: frozenset[str] = frozenset()  # hostnames with a `trafficDistribution`
    # hostname -> addresses of the WorkloadEntries its Service's selector matches
    selected: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KubeRule:
    """A rule of Kubernetes inputs (tests/differential/kube.py): one side's resources,
    which side, and the cluster state's :class:`KubeFacts`."""

    name: str
    what: str
    why: str
    row: str
    apply: Callable[[Served, str, KubeFacts], None]


def _kube_endpoint_order(served: Served, side: str, facts: KubeFacts) -> None:
    """The order of endpoints within a locality (both sides sorted by address and
    port)."""
    _mcp_endpoint_order(served, side)


def _node_local(served: Served, side: str, facts: KubeFacts) -> None:
    """Every endpoint of a node-local Service (both sides)."""
    for assignment in _assignments(served):
        host = str(assignment.get("cluster_name", "")).rsplit("|", 1)[-1]
        if host in facts.node_local:
            assignment.pop("endpoints", None)


def _traffic_distribution(served: Served, side: str, facts: KubeFacts) -> None:
    """istiod's locality-weighted load balancing of a Service with a traffic
    distribution, and the priorities of its localities (both sides)."""
    for cluster in _resources(served, "cds"):
        if str(cluster.get("name", "")).rsplit("|", 1)[-1] not in facts.distributed:
            continue
        common = cluster.get("common_lb_config", {})
        if side == "istiod":
            common.pop("locality_weighted_lb_config", None)
        if "common_lb_config" in cluster and not common:
            del cluster["common_lb_config"]
    for assignment in _assignments(served):
        host = str(assignment.get("cluster_name", "")).rsplit("|", 1)[-1]
        if host in facts.distributed:
            for group in assignment.get("endpoints", []):
                group.pop("priority", None)


def _selected_workload_entries(served: Served, side: str, facts: KubeFacts) -> None:
    """istiod's endpoints of a Kubernetes Service at the addresses of WorkloadEntries its
    selector matches (their locality's weight recomputed without them)."""
    if side != "istiod":
        return
    for assignment in _assignments(served):
        host = str(assignment.get("cluster_name", "")).rsplit("|", 1)[-1]
        addresses = facts.selected.get(host)
        if addresses:
            _drop_endpoints(assignment, partial(_at, set(addresses)))


# only where both read one Kubernetes cluster (tests/differential/kube.py)
KUBE_RULES: tuple[KubeRule, ...] = (
    KubeRule(
        "kube-endpoint-order",
        "the order of endpoints within a locality",
        "istiod gathers a Service's endpoints from a map of its EndpointSlices "
        "(`endpointSliceCache.get`), so their order changes from push to push; Envoy's "
        "load balancers do not depend on it",
        "Kubernetes endpoint order within a locality",
        _kube_endpoint_order,
    ),
    KubeRule(
        "node-local",
        "the endpoints of Services with `internalTrafficPolicy: Local`",
        "istiod serves each proxy the endpoints on its own node only; registryd builds "
        "one answer for every proxy and serves them all",
        "Kubernetes `internalTrafficPolicy: Local`",
        _node_local,
    ),
    KubeRule(
        "traffic-distribution",
        "istiod's `locality_weighted_lb_config` on the clusters of Services with a "
        "`trafficDistribution`, and the priorities of their localities",
        "istiod ranks localities by their distance from each proxy's own; registryd "
        "builds one answer for every proxy and ranks none",
        "Kubernetes `trafficDistribution`",
        _traffic_distribution,
    ),
    KubeRule(
        "selected-workload-entries",
        "istiod's endpoints of a Kubernetes Service at the addresses of WorkloadEntries "
        "its selector matches",
        "registryd's Kubernetes registry reads Pods' EndpointSlices only; a "
        "WorkloadEntry is an endpoint of the ServiceEntries that select it",
        "a Kubernetes Service whose selector matches WorkloadEntries",
        _selected_workload_entries,
    ),
)


def normalize_pair(
    istiod: Served,
    ours: Served,
    rules: tuple[Rule, ...] = RULES,
    pair_rules: tuple[PairRule, ...] = PAIR_RULES,
    kube: KubeFacts | None = None,
) -> tuple[Served, Served]:
    """Both sides normalized: each by ``rules`` (and, for a Kubernetes state, by
    :data:`KUBE_RULES` with its ``kube`` facts), then both by ``pair_rules``."""
    a, b = normalize(istiod, "istiod", rules), normalize(ours, "registryd", rules)
    if kube is not None:
        for kube_rule in KUBE_RULES:
            kube_rule.apply(a, "istiod", kube)
            kube_rule.apply(b, "registryd", kube)
    for rule in pair_rules:
        rule.apply(a, b)
    return a, b
