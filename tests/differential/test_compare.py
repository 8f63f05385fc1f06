"""The comparison and its normalization rules, on hand-made answers (no servers)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.differential.compare import ABSENT, Difference, compare, field_path
from tests.differential.normalize import (
    KUBE_RULES,
    MARKER_PORT,
    MCP_PAIR_RULES,
    MCP_RULES,
    PAIR_RULES,
    RULES,
    KubeFacts,
)
from tests.differential.servers import ambiguity

XDS_DOC = Path(__file__).resolve().parents[2] / "docs" / "xds.md"


def test_equal_answers_have_no_differences() -> None:
    served = {"cds": {"a": {"name": "a", "type": "EDS"}}, "lds": {}}
    assert compare(served, served) == []


def test_every_differing_field_and_every_lone_resource_is_reported() -> None:
    istiod = {"cds": {"a": {"name": "a", "x": {"y": [1, 2]}, "only_here": True}, "b": {}}}
    ours = {"cds": {"a": {"name": "a", "x": {"y": [1, 3]}}, "c": {}}}
    found = {(d.name, d.path): (d.istiod, d.registryd) for d in compare(istiod, ours)}
    assert found == {
        ("a", ".only_here"): (True, ABSENT),
        ("a", ".x.y[1]"): (2, 3),
        ("b", ""): ({}, ABSENT),
        ("c", ""): (ABSENT, {}),
    }
    assert field_path(".x.y[1].z[10]") == ".x.y[].z[]"
    assert "cds a .x.y[1]" in str(Difference("cds", "a", ".x.y[1]", 2, 3))


def test_lists_of_different_lengths_differ_as_a_whole() -> None:
    (d,) = compare({"rds": {"r": {"v": [1]}}}, {"rds": {"r": {"v": [1, 2]}}})
    assert (d.path, d.istiod, d.registryd) == (".v", [1], [1, 2])


def test_the_marker_and_istiods_inbound_side_are_normalized_away() -> None:
    marker = f"outbound|{MARKER_PORT}||m1.sync.registryd.test"
    istiod = {
        "cds": {marker: {}, "inbound|8080||": {}, "InboundPassthroughCluster": {}, "x": {}},
        "eds": {marker: {}},
        "lds": {f"0.0.0.0_{MARKER_PORT}": {}, "virtualInbound": {}},
        "rds": {str(MARKER_PORT): {}},
    }
    ours = {"cds": {marker: {}, "x": {}}, "lds": {f"0.0.0.0_{MARKER_PORT}": {}}}
    assert compare(istiod, ours) == []


def test_every_rule_is_a_row_of_the_documented_differences_table() -> None:
    text = XDS_DOC.read_text()
    table = text.split("### Where registryd differs from istiod", 1)[1].split("\n## ", 1)[0]
    first_cells = [
        re.split(r"\s*\|\s*", line)[1] for line in table.splitlines() if line.startswith("| ")
    ]
    for rule in (*RULES, *MCP_RULES, *PAIR_RULES, *MCP_PAIR_RULES, *KUBE_RULES):
        if rule.row:
            assert any(cell.startswith(rule.row) for cell in first_cells), rule.name


def test_a_proxyless_dns_service_is_compared_as_the_documented_difference() -> None:
    name = "outbound|80||db.example"
    istiod = {"cds": {name: {"name": name, "type": "EDS"}}, "eds": {name: {"cluster_name": name}}}
    ours = {"cds": {name: {"name": name, "type": "LOGICAL_DNS"}}}
    assert compare(istiod, ours) == []
    with_endpoints = {**istiod, "eds": {name: {"cluster_name": name, "endpoints": [{}]}}}
    assert compare(with_endpoints, ours) != []  # only the empty EDS cluster is that row


def test_a_proxyless_route_on_a_port_not_declared_http_is_the_documented_difference() -> None:
    route, cluster = "outbound|5432||db.example", "outbound|5432||db.example"
    vhost = {"name": "db.example:5432", "routes": [{"route": {"cluster": cluster}}]}
    istiod = {"rds": {route: {"name": route}}}
    ours = {
        "rds": {route: {"name": route, "virtual_hosts": [vhost]}},
        "cds": {cluster: {"name": cluster}},
        "eds": {cluster: {"cluster_name": cluster}},
    }
    assert compare(istiod, ours) == []
    # a virtual host istiod has too is compared as usual
    other = {"rds": {route: {"name": route, "virtual_hosts": [{**vhost, "routes": []}]}}}
    assert compare(other, ours) != []


def test_mcp_health_drops_unhealthy_endpoints_and_healthy_status_only_with_its_rules() -> None:
    def lb(address: str, health: str | None, weight: int) -> dict[str, object]:
        socket = {"address": {"socket_address": {"address": address}}}
        out: dict[str, object] = {"endpoint": socket, "load_balancing_weight": weight}
        return {**out, "health_status": health} if health else out

    name = "outbound|80||web.etcd.example"
    ours = {
        "eds": {
            name: {
                "endpoints": [
                    {
                        "lb_endpoints": [lb("a", "HEALTHY", 1), lb("b", "UNHEALTHY", 2)],
                        "load_balancing_weight": 3,
                    },
                    {"lb_endpoints": [lb("c", "UNHEALTHY", 1)], "load_balancing_weight": 1},
                ]
            }
        }
    }
    istiod = {
        "eds": {
            name: {"endpoints": [{"lb_endpoints": [lb("a", None, 1)], "load_balancing_weight": 1}]}
        }
    }
    assert compare(istiod, ours, mcp=True) == []
    assert compare(istiod, ours) != []  # file comparisons keep health as it is


def test_mcp_port_subsets_drops_istiods_endpoints_on_ports_registryd_does_not_serve() -> None:
    def group(*addresses: str) -> dict[str, object]:
        lbs = [
            {
                "endpoint": {"address": {"socket_address": {"address": a}}},
                "load_balancing_weight": 1,
            }
            for a in addresses
        ]
        return {"lb_endpoints": lbs, "load_balancing_weight": len(lbs)}

    http, grpc = "outbound|8080||orders.nacos", "outbound|9090||orders.nacos"
    ours = {"eds": {http: {"endpoints": [group("10.0.0.1", "10.0.0.2")]}, grpc: {}}}
    istiod = {
        "eds": {
            http: {"endpoints": [group("10.0.0.1", "10.0.0.2")]},
            grpc: {"endpoints": [group("10.0.0.1", "10.0.0.2")]},
        }
    }
    assert compare(istiod, ours, mcp=True) == []
    assert compare(istiod, ours) != []
    # an address registryd serves on no port of the hostname is still a difference
    stray = {"eds": {**istiod["eds"], grpc: {"endpoints": [group("10.0.0.9")]}}}
    assert compare(stray, ours, mcp=True) != []


def test_inputs_istiod_answers_at_random_are_recognised() -> None:
    def se(name: str, spec: str, created: str = "") -> str:
        stamp = f", creationTimestamp: '{created}'" if created else ""
        head = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        return f"{head}metadata: {{name: {name}{stamp}}}\nspec: {spec}\n---\n"

    one = "{hosts: [a.example], ports: [{number: 80, name: http}]}"
    assert ambiguity(se("a", one)) is None
    two = "{hosts: [a.example], addresses: [10.0.0.1, 10.0.0.2], ports: [{number: 80, name: http}]}"
    assert "several addresses" in str(ambiguity(se("a", two)))
    assert "one creation time" in str(ambiguity(se("a", one) + se("b", one)))
    assert ambiguity(se("a", one, "2024-01-01T00:00:00Z") + se("b", one)) is None
    assert ambiguity("not: [valid") is None  # refused by both: compared as a refusal


def test_entries_that_merge_but_disagree_are_not_compared() -> None:
    def se(name: str, created: str, spec: str) -> str:
        head = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        meta = f"metadata: {{name: {name}, creationTimestamp: '{created}'}}"
        return f"{head}{meta}\nspec: {{hosts: [a.example], {spec}}}\n---\n"

    def pair(first: str, later: str) -> str | None:
        return ambiguity(
            se("a", "2024-01-01T00:00:00Z", first) + se("b", "2024-01-02T00:00:00Z", later)
        )

    http = "ports: [{number: 80, name: http, protocol: HTTP}]"
    assert pair(http, http) is None
    assert pair(http, "ports: [{number: 81, name: web}]") is None  # a port added: agrees
    split = "merge but disagree"
    assert split in str(pair(http, "ports: [{number: 80, name: http, protocol: TCP}]"))
    assert split in str(pair(http, "ports: [{number: 80, name: tcp, protocol: HTTP}]"))
    assert split in str(pair(http, "ports: [{number: 81, name: http, protocol: HTTP}]"))
    assert split in str(pair(http, f"addresses: [10.0.0.1], {http}"))


def test_a_hostname_of_several_namespaces_is_compared_when_the_oldest_is_what_proxies_see() -> None:
    def se(namespace: str, created: str, export: str) -> str:
        head = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        meta = f"metadata: {{name: a, namespace: {namespace}, creationTimestamp: '{created}'}}"
        spec = f"spec: {{hosts: [a.example], ports: [{{number: 80, name: http}}], {export}}}"
        return f"{head}{meta}\n{spec}\n---\n"

    old, new = "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"
    public = "exportTo: ['*']"
    assert ambiguity(se("default", old, public) + se("other", new, "exportTo: [other]")) is None
    # both seen: they never merge, and istiod builds listeners from each
    assert "several namespaces" in str(ambiguity(se("other", old, public) + se("b", new, public)))
    assert ambiguity(se("other", old, "exportTo: [other]") + se("b", new, "exportTo: [b]")) is None
    # an entry exported to the proxies' namespace by name comes before an older public one
    named = se("other", old, public) + se("shop", new, "exportTo: [default]")
    assert "several namespaces" in str(ambiguity(named))
    hidden = se("other", old, "exportTo: ['.']") + se("default", new, public)
    assert "several namespaces" in str(ambiguity(hidden))


def test_an_address_domain_several_hostnames_carry_is_left_out_on_both_sides() -> None:
    def route(*hosts: tuple[str, list[str]]) -> dict[str, object]:
        return {"virtual_hosts": [{"name": n, "domains": d} for n, d in hosts]}

    istiod = {"rds": {"80": route(("a:80", ["a"]), ("b:80", ["b", "10.0.0.1", "10.0.0.1:80"]))}}
    ours = {"rds": {"80": route(("a:80", ["a", "10.0.0.1", "10.0.0.1:80"]), ("b:80", ["b"]))}}
    assert compare(istiod, ours) == []
    # held by one hostname on both sides, it is compared
    alone = {"rds": {"80": route(("a:80", ["a", "[2001:db8::1]"]), ("b:80", ["b"]))}}
    assert compare(alone, alone) == []
    assert compare(alone, {"rds": {"80": route(("a:80", ["a"]), ("b:80", ["b"]))}}) != []


def test_cidr_addresses_and_grpc_passthrough_services_are_documented_differences() -> None:
    route = {"virtual_hosts": [{"name": "a", "domains": ["a.example", "10.0.0.0/8"]}]}
    grpc = {"api_listener": {}, "address": {"socket_address": {"address": "10.0.0.0/8"}}}
    istiod = {"rds": {"80": route}, "lds": {"a.example:80": grpc}}
    ours = {
        "rds": {"80": {"virtual_hosts": [{"name": "a", "domains": ["a.example"]}]}},
        "lds": {"a.example:80": {**grpc, "address": {"socket_address": {"address": "0.0.0.0"}}}},
    }
    assert compare(istiod, ours) == []
    name = "outbound|443||db.example"
    passthrough = {
        "lds": {"db.example:443": {"api_listener": {}}},
        "rds": {name: {}},
        "cds": {name: {"type": "EDS"}},
        "eds": {name: {"cluster_name": name}},
    }
    assert compare(passthrough, {}) == []
    with_endpoints = {**passthrough, "eds": {name: {"endpoints": [{}]}}}
    assert compare(with_endpoints, {}) != []
    # a short name's listener is judged by the cluster of its route, not by its name
    route = {"rds": {"route_config_name": "outbound|80||web.shop.svc.cluster.local"}}
    short = {"lds": {"web:80": {"api_listener": {"api_listener": route}}}}
    web = {"eds": {"outbound|80||web.shop.svc.cluster.local": {"endpoints": [{}]}}}
    assert compare({**short, **web}, web) != []
    assert compare(short, {}) == []


def test_a_loopback_listener_registryd_shares_is_the_documented_difference() -> None:
    def tcp(cluster: str) -> dict[str, object]:
        return {"filters": [{"typed_config": {"cluster": cluster}}]}

    def http(route: str) -> dict[str, object]:
        return {"filters": [{"typed_config": {"rds": {"route_config_name": route}}}]}

    ours = {
        "lds": {
            "127.0.0.1_443": {"filter_chains": [tcp("outbound|443||a"), tcp("outbound|443||b")]}
        },
    }
    istiod = {"lds": {"127.0.0.1_443": {"filter_chains": [tcp("outbound|443||a")]}}}
    assert compare(istiod, ours) == []
    # one sniffed service (its own route) is not shared: compared as usual
    alone = {"lds": {"127.0.0.1_80": {"filter_chains": [http("a:80"), tcp("outbound|80||a")]}}}
    other = {"lds": {"127.0.0.1_80": {"filter_chains": [http("80"), tcp("outbound|80||a")]}}}
    assert compare(other, alone) != []


def test_overlapping_wildcard_virtual_hosts_of_a_grpc_route_are_left_out_of_istiods() -> None:
    name = "outbound|80||*-1.x.example"
    own = {"name": "*-1.x.example:80", "domains": ["*-1.x.example"]}
    other = {"name": "*.x.example:80", "domains": ["*.x.example"]}
    istiod = {"rds": {name: {"virtual_hosts": [other, own]}}}
    assert compare(istiod, {"rds": {name: {"virtual_hosts": [own]}}}) == []
    # without its own virtual host (a port not declared HTTP) istiod's route is empty,
    # and registryd's route to the hostname itself is the grpc-non-http row
    theirs = {"rds": {name: {"virtual_hosts": [other]}}}
    assert compare(theirs, {"rds": {name: {}}}) == []
    assert compare(theirs, {"rds": {name: {"virtual_hosts": [own]}}}) == []
    assert compare({"rds": {name: {"virtual_hosts": [own]}}}, {"rds": {name: {}}}) != []


def test_a_loopback_listener_whose_port_route_has_two_hosts_is_shared() -> None:
    def listener(route: str, default: str) -> dict[str, object]:
        manager = {"typed_config": {"rds": {"route_config_name": route}}}
        tcp = {"typed_config": {"cluster": default}}
        return {
            "filter_chains": [{"filters": [manager]}],
            "default_filter_chain": {"filters": [tcp]},
        }

    two = {"virtual_hosts": [{"name": "a:443"}, {"name": "b:443"}]}
    ours = {"lds": {"127.0.0.1_443": listener("443", "PassthroughCluster")}, "rds": {"443": two}}
    istiod = {
        "lds": {"127.0.0.1_443": listener("b:443", "outbound|443||b")},
        "rds": {"b:443": {"virtual_hosts": [{"name": "b:443"}]}},
    }
    assert compare(istiod, ours) == []
    one = {"virtual_hosts": [{"name": "a:443"}]}
    assert compare(istiod, {**ours, "rds": {"443": one}}) != []


def lb(address: str, **extra: object) -> dict[str, object]:
    return {"endpoint": {"address": {"socket_address": {"address": address}}}, **extra}


def test_istiods_tls_mode_metadata_is_a_documented_difference() -> None:
    name = "outbound|80||a.example"
    tls = {"filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}}
    istiod = {"eds": {name: {"endpoints": [{"lb_endpoints": [lb("10.0.0.1", metadata=tls)]}]}}}
    ours = {"eds": {name: {"endpoints": [{"lb_endpoints": [lb("10.0.0.1")]}]}}}
    assert compare(istiod, ours) == []
    assert compare(ours, istiod) != []  # registryd never sends it


def test_kubernetes_endpoint_order_and_node_local_services_are_documented_differences() -> None:
    name, local = "outbound|80||a.shop.svc.cluster.local", "outbound|80||l.shop.svc.cluster.local"
    one, two = lb("10.0.0.1"), lb("10.0.0.2")
    istiod = {
        "eds": {
            name: {"cluster_name": name, "endpoints": [{"lb_endpoints": [two, one]}]},
            local: {"cluster_name": local},
        }
    }
    ours = {
        "eds": {
            name: {"cluster_name": name, "endpoints": [{"lb_endpoints": [one, two]}]},
            local: {"cluster_name": local, "endpoints": [{"lb_endpoints": [one]}]},
        }
    }
    facts = KubeFacts(node_local=frozenset({"l.shop.svc.cluster.local"}))
    assert compare(istiod, ours, kube=facts) == []
    assert len(compare(istiod, ours, kube=KubeFacts())) == 1  # the node-local endpoints
    assert len(compare(istiod, ours)) == 3  # and the order, outside Kubernetes states


def test_istiods_locality_ranking_of_a_traffic_distribution_is_a_documented_difference() -> None:
    name = "outbound|80||a.shop.svc.cluster.local"
    common = {"locality_weighted_lb_config": {}}
    istiod = {
        "cds": {name: {"name": name, "common_lb_config": common}},
        "eds": {name: {"cluster_name": name, "endpoints": [{"priority": 1}]}},
    }
    ours = {"cds": {name: {"name": name}}, "eds": {name: {"cluster_name": name, "endpoints": [{}]}}}
    facts = KubeFacts(distributed=frozenset({"a.shop.svc.cluster.local"}))
    assert compare(istiod, ours, kube=facts) == []
    assert len(compare(istiod, ours, kube=KubeFacts())) == 2


def test_workload_entries_a_kubernetes_selector_matches_are_a_documented_difference() -> None:
    name = "outbound|80||a.shop.svc.cluster.local"

    def assignment(*addresses: str) -> dict[str, object]:
        group = {"lb_endpoints": [lb(a) for a in addresses], "load_balancing_weight": 2}
        return {"cluster_name": name, "endpoints": [group]}

    istiod = {"eds": {name: assignment("10.0.0.1", "172.16.0.1")}}
    ours = {"eds": {name: assignment("10.0.0.1")}}
    ours["eds"][name]["endpoints"][0]["load_balancing_weight"] = 1  # type: ignore[index]
    facts = KubeFacts(selected={"a.shop.svc.cluster.local": frozenset({"172.16.0.1"})})
    assert compare(istiod, ours, kube=facts) == []
    assert compare(istiod, ours, kube=KubeFacts()) != []
