"""The pure parts of ``registryd proxy-status`` / ``proxy-config``: status rules, proxy
names, and istioctl's way of describing clusters, endpoints, listeners and routes."""

from __future__ import annotations

from typing import Any

import pytest

from registryd import proxyconfig, proxysync
from registryd.proxystatus import find_proxy, server_urls
from registryd.tables import format_table

P = "20261130T000000"  # a registryd version prefix


def state(**fields: Any) -> dict[str, Any]:
    """A /debug/syncz entry of one type."""
    return {"versionSent": "", "nonceSent": "", "versionAcked": "", "acked": False} | fields


SENT_5 = {"versionSent": f"{P}-5", "nonceSent": "1-7"}


# -- istiod pilot/pkg/xds/statusgen.go debugSyncStatus ----------------------------------
@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (None, "NOT SENT"),  # not subscribed
        (state(), "NOT SENT"),  # subscribed, nothing sent yet
        (state(**SENT_5), "STALE"),
        (state(**SENT_5, versionAcked=f"{P}-4"), "STALE"),
        (state(**SENT_5, versionAcked=f"{P}-5", acked=True), "SYNCED"),
        (state(**SENT_5, versionAcked=f"{P}-4", nacked=True), "NACKED"),
    ],
)
def test_type_status_follows_istiods_debug_sync_status(entry: Any, expected: str) -> None:
    assert proxysync.type_status(entry) == expected


@pytest.mark.parametrize(
    ("served", "entry", "expected"),
    [
        (f"{P}-3", state(**SENT_5, versionAcked=f"{P}-5", acked=True), "SYNCED"),
        (f"{P}-6", state(**SENT_5, versionAcked=f"{P}-5", acked=True), "NOT SENT"),  # pending
        (f"{P}-5", state(**SENT_5, versionAcked=f"{P}-4"), "STALE"),
        (f"{P}-4", state(**SENT_5, versionAcked=f"{P}-4"), "SYNCED"),  # unchanged since ACK
        (f"{P}-5", state(**SENT_5, versionAcked=f"{P}-4", nacked=True), "NACKED"),
        (f"{P}-2", state(**SENT_5, versionAcked=f"{P}-4", nacked=True), "SYNCED"),
        (f"{P}-5", state(**SENT_5, nacked=True), "NACKED"),  # nothing ever accepted
        (f"{P}-5@shop", state(**SENT_5, versionAcked=f"{P}-5", acked=True), "SYNCED"),  # Delta
        (f"{P}-1", None, "NOT SENT"),
    ],
)
def test_resource_status_compares_served_sent_and_acked(
    served: str, entry: Any, expected: str
) -> None:
    assert proxysync.resource_status(served, entry) == expected


def test_status_rows_are_sorted_and_carry_the_nack_message() -> None:
    entries = [
        (
            "http://b:8080",
            {
                "proxyID": "b",
                "connectionID": "conn-9",
                "type": "delta",
                "types": {
                    "cds": state(**SENT_5, versionAcked=f"{P}-5", acked=True),
                    "lds": state(
                        versionSent=f"{P}-7",
                        nonceSent="1-8",
                        nacked=True,
                        nackedVersion=f"{P}-7",
                        lastNack="bad\nlistener",
                    ),
                },
            },
        ),
        ("http://a:8080", {"proxyID": "a", "connectionID": "conn-1", "type": "sotw", "types": {}}),
    ]
    first, second = proxysync.status_rows(entries)
    assert (first.proxy, first.stream, first.statuses, first.version) == (
        "a",
        "SotW",
        ("NOT SENT",) * 4,
        "",
    )
    assert second.statuses == ("SYNCED", "NACKED", "NOT SENT", "NOT SENT")
    assert second.version == f"{P}-7"  # the newest sent of any type
    text = proxysync.render_status([first, second])
    assert text.splitlines()[1].split() == ["a", "SotW", *["NOT", "SENT"] * 4, "http://a:8080", "-"]
    assert text.endswith(f"\nb LDS NACKED {P}-7: bad\\nlistener\n")  # one line


def test_an_empty_status_is_the_header_alone() -> None:
    assert (
        proxysync.render_status([]) == "NAME   STREAM   CDS   LDS   EDS   RDS   SERVER   VERSION\n"
    )


# -- naming proxies and servers -----------------------------------------------------------
ENVOY = "sidecar~10.0.0.1~web-1.shop~shop.svc.cluster.local"
FOUND = [
    ("s1", {"proxyID": ENVOY, "connectionID": "conn-1"}),
    ("s1", {"proxyID": "sidecar~10.0.0.2~web-1.bank~bank.svc.cluster.local", "connectionID": "c2"}),
    ("s2", {"proxyID": "plain-id", "connectionID": "conn-3"}),
]


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        (ENVOY, [ENVOY]),
        ("conn-3", ["plain-id"]),
        ("plain-id", ["plain-id"]),
        ("web-1.shop", [ENVOY]),
        ("web-1", [ENVOY, "sidecar~10.0.0.2~web-1.bank~bank.svc.cluster.local"]),  # ambiguous
        ("web", []),
    ],
)
def test_find_proxy_by_id_connection_or_pod(query: str, ids: list[str]) -> None:
    assert [e["proxyID"] for _, e in find_proxy(query, FOUND)] == ids


def test_server_urls() -> None:
    assert server_urls(None) == ["http://127.0.0.1:8080"]
    assert server_urls(["a:1,https://b:2/", "c:3"]) == ["http://a:1", "https://b:2", "http://c:3"]


def test_format_table_aligns_columns_without_trailing_spaces() -> None:
    assert format_table(("A", "BB"), [["long", "x"], ["s", ""]]) == ("A      BB\nlong   x\ns\n")


# -- istioctl's descriptions --------------------------------------------------------------
def dump(kind: str, *resources: dict[str, Any], version: str = f"{P}-1") -> dict[str, Any]:
    section, entries, path = {
        "clusters": ("ClustersConfigDump", "dynamic_active_clusters", ("cluster",)),
        "listeners": ("ListenersConfigDump", "dynamic_listeners", ("active_state", "listener")),
        "routes": ("RoutesConfigDump", "dynamic_route_configs", ("route_config",)),
        "endpoints": ("EndpointsConfigDump", "dynamic_endpoint_configs", ("endpoint_config",)),
    }[kind]
    listed = []
    for resource in resources:
        entry: dict[str, Any] = {"version_info": version, path[-1]: resource}
        if len(path) == 2:
            entry = {"name": resource.get("name", ""), path[0]: entry}
        listed.append(entry)
    return {
        "configs": [{"@type": f"type.googleapis.com/envoy.admin.v3.{section}", entries: listed}]
    }


def test_dump_resources_is_empty_for_a_type_not_subscribed() -> None:
    assert proxyconfig.dump_resources({"configs": []}, "routes") == []
    assert proxyconfig.dump_resources(dump("clusters", {"name": "x"}), "clusters") == [
        (f"{P}-1", {"name": "x"})
    ]


def test_clusters_parse_istios_subset_keys_and_default_to_static() -> None:
    header, rows = proxyconfig.table(
        dump(
            "clusters",
            {"name": "outbound|80|v1|b.example", "type": "EDS"},
            {"name": "inbound|80||a.example", "type": "EDS"},
            {"name": "outbound|80||a.example", "type": "STRICT_DNS"},
            {"name": "BlackHoleCluster"},
            {"name": "agg", "cluster_type": {"name": "envoy.clusters.aggregate"}},
        ),
        "clusters",
    )
    assert header == ("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE")
    assert rows == [
        ["BlackHoleCluster", "-", "-", "-", "STATIC"],
        ["a.example", "80", "-", "inbound", "EDS"],
        ["a.example", "80", "-", "outbound", "STRICT_DNS"],
        ["agg", "-", "-", "-", "envoy.clusters.aggregate"],
        ["b.example", "80", "v1", "outbound", "EDS"],
    ]


def test_endpoints_show_health_as_served_and_the_locality() -> None:
    assignment = {
        "cluster_name": "outbound|80||a.example",
        "endpoints": [
            {
                "locality": {"region": "eu", "zone": "eu-1"},
                "lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1"}}}},
                    {
                        "endpoint": {
                            "address": {"socket_address": {"address": "10.0.0.2", "port_value": 9}}
                        },
                        "health_status": "DRAINING",
                    },
                ],
            }
        ],
    }
    _, rows = proxyconfig.table(dump("endpoints", assignment), "endpoints")
    assert rows == [
        ["10.0.0.1:0", "UNKNOWN", "eu/eu-1", "outbound|80||a.example"],
        ["10.0.0.2:9", "DRAINING", "eu/eu-1", "outbound|80||a.example"],
    ]


def tcp(cluster: str) -> dict[str, Any]:
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": {"cluster": cluster}}


def test_listener_matches_and_destinations_follow_istioctl() -> None:
    listener = {
        "name": "0.0.0.0_443",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 443}},
        "filter_chains": [
            {
                "filter_chain_match": {
                    "server_names": ["a.example", "b.example"],
                    "transport_protocol": "tls",
                },
                "filters": [tcp("outbound|443||a.example")],
            },
            {
                "filter_chain_match": {
                    "application_protocols": ["h2c"],
                    "destination_port": 443,
                    "prefix_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 8}],
                },
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "route_config": {
                                "virtual_hosts": [
                                    {"domains": ["*"], "routes": [{"match": {"prefix": "/"}}]}
                                ]
                            }
                        },
                    }
                ],
            },
        ],
        # istioctl skips a tcp_proxy to BlackHoleCluster and describes what follows
        "default_filter_chain": {"filters": [tcp("BlackHoleCluster"), {"name": "other"}]},
    }
    other = {
        "name": "0.0.0.0_80",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 80}},
        "filter_chains": [{"filters": [tcp("PassthroughCluster")]}],
    }
    _, rows = proxyconfig.table(dump("listeners", listener, other), "listeners")
    assert rows == [  # by port; a listener's chains by destination, descending
        ["0.0.0.0_80", "0.0.0.0", "80", "ALL", "PassthroughCluster"],
        ["0.0.0.0_443", "0.0.0.0", "443", "ALL", "Non-HTTP/Non-TCP"],
        ["0.0.0.0_443", "0.0.0.0", "443", "App: h2c; Addr: 10.0.0.0/8:443", "Inline Route: /*"],
        [
            "0.0.0.0_443",
            "0.0.0.0",
            "443",
            "SNI: a.example,b.example; Trans: tls",
            "Cluster: outbound|443||a.example",
        ],
    ]


def test_routes_shorten_domains_and_mark_empty_virtual_hosts() -> None:
    config = {
        "name": "80",
        "virtual_hosts": [
            {
                "domains": [
                    "web.shop.svc.cluster.local",
                    "web.shop.svc.cluster.local:80",
                    "web",
                    "web.shop",
                    "web.shop.svc",
                    "10.0.0.9",
                ],
                "routes": [
                    {
                        "match": {"prefix": "/api"},
                        "metadata": {
                            "filter_metadata": {
                                "istio": {
                                    "config": "/apis/networking.istio.io/v1/namespaces/shop"
                                    "/virtual-service/web-vs"
                                }
                            }
                        },
                    },
                    {"match": {"path": "/exact"}},
                    {"match": {"prefix": "/"}, "route": {"cluster": "PassthroughCluster"}},
                ],
            },
            {"domains": ["only.example"], "routes": []},
        ],
    }
    header, rows = proxyconfig.table(dump("routes", config), "routes")
    assert header == ("NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE")
    assert rows == [
        ["80", "web, web.shop + 1 more...", "/api*", "web-vs.shop"],
        ["80", "web, web.shop + 1 more...", "/exact", "-"],
        ["80", "only.example", "/*", "404"],
    ]
