"""The pure parts of ``registryd proxy-status`` / ``proxy-config``: status rules, proxy
names, and istioctl's way of describing clusters, endpoints, listeners and routes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from registryd.tools import proxyconfig, proxysync
from registryd.tools.debugclient import Answer, BadAnswer, body_length, json_body, parse_head
from registryd.tools.proxystatus import (
    config_output,
    detail_output,
    dump_document,
    find_proxy,
    server_urls,
    status_output,
    syncz_entries,
)
from registryd.tools.tables import format_table

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
    assert text.splitlines()[1].split() == [
        "a", "proxy", "SotW", *["NOT", "SENT"] * 4, "-", "http://a:8080", "-"
    ]  # fmt: skip
    assert text.endswith(f"\nb LDS NACKED {P}-7: bad\\nlistener\n")  # one line


def test_an_empty_status_is_the_header_alone() -> None:
    assert proxysync.render_status([]) == (
        "NAME   TYPE   STREAM   CDS   LDS   EDS   RDS   MCP   SERVER   VERSION\n"
    )


def test_an_istiod_reading_over_mcp_shows_the_worst_of_its_config_types() -> None:
    def row(**types: Any) -> proxysync.StatusRow:
        entry = {"proxyID": "istiod", "type": "sotw", "client": "istiod (MCP)", "types": types}
        return proxysync.status_row("http://a:8080", entry)

    acked = state(**SENT_5, versionAcked=f"{P}-5", acked=True)
    se, we = "networking.istio.io/v1/ServiceEntry", "networking.istio.io/v1/WorkloadEntry"
    synced = row(**{se: acked, we: acked})
    assert (synced.client, synced.statuses, synced.mcp) == (
        "istiod (MCP)",
        ("NOT SENT",) * 4,
        "SYNCED",
    )
    assert row(**{se: acked, we: state(**SENT_5)}).mcp == "STALE"
    nacked = state(**SENT_5, nacked=True, nackedVersion=f"{P}-5", lastNack="invalid")
    rejected = row(**{se: nacked, we: state(**SENT_5)})
    assert rejected.mcp == "NACKED"
    text = proxysync.render_status([rejected])
    assert re.split(r"\s{2,}", text.splitlines()[1])[1:3] == ["istiod (MCP)", "SotW"]
    assert text.endswith(f"istiod {se} NACKED {P}-5: invalid\n")
    assert proxysync.status_row("s", {"types": {}}).mcp == "-"  # a proxy asks no config


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


# -- answers from an untrusted server ----------------------------------------------------


def test_parse_head_reads_status_and_headers() -> None:
    status, headers = parse_head(
        b"HTTP/1.1 200 OK\r\n", [b"Content-Length: 2\r\n", b"X-A: 1\r\n", b"x-a:2\n"]
    )
    assert (status, headers) == (200, {"content-length": "2", "x-a": "1,2"})


@pytest.mark.parametrize(
    ("status_line", "lines", "message"),
    [
        (b"\x00garbage\r\n", [], "not an HTTP answer: '?garbage'"),
        (b"HTTP/1.1 2000 OK\r\n", [], "not an HTTP answer"),
        (b"HTTP/2 200\r\n", [], "not an HTTP answer"),
        (b"HTTP/1.1 200 OK\r\n", [b" folded: value\r\n"], "malformed header line"),
        (b"HTTP/1.1 200 OK\r\n", [b"no colon\r\n"], "malformed header line"),
    ],
)
def test_parse_head_refuses_what_is_not_http(
    status_line: bytes, lines: list[bytes], message: str
) -> None:
    with pytest.raises(BadAnswer, match=re.escape(message)):
        parse_head(status_line, lines)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"content-length": "12"}, 12),
        ({"content-length": "12, 12"}, 12),
        ({"transfer-encoding": "Chunked", "content-length": "5"}, None),
    ],
)
def test_body_length(headers: dict[str, str], expected: int | None) -> None:
    assert body_length(headers, limit=100) == expected


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"content-length": "-1"}, "malformed Content-Length"),
        ({"content-length": "1, 2"}, "malformed Content-Length"),
        ({"content-length": "١٢"}, "malformed Content-Length"),  # digits, but not ASCII
        ({"content-length": "101"}, "answer of 101 bytes is over the limit of 100 bytes"),
        ({"content-length": "9" * 5000}, "over the limit of 100 bytes"),
        ({"transfer-encoding": "gzip, chunked"}, "unsupported Transfer-Encoding"),
    ],
)
def test_body_length_refuses_bad_framing(headers: dict[str, str], message: str) -> None:
    with pytest.raises(BadAnswer, match=re.escape(message)):
        body_length(headers, limit=100)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 100_000, "nested deeper than 128"),
        (b"[" * 129 + b"]" * 129, "nested deeper than 128"),
        (b"[" + b"1" * 5000 + b"]", "not JSON"),
        (b"\xff", "not JSON"),
        (b"", "not JSON"),
    ],
)
def test_json_body_refuses_what_it_cannot_decode_safely(body: bytes, message: str) -> None:
    with pytest.raises(BadAnswer, match=message):
        json_body(body)


def test_json_body_accepts_nesting_up_to_the_limit() -> None:
    assert json_body(b"[" * 128 + b"]" * 128) is not None


SERVER = "http://registryd:8080"
ENTRY = {
    "proxyID": "sidecar~1.2.3.4~a.shop~shop.svc.cluster.local",
    "connectionID": "c1",
    "type": "sotw",
    "types": {
        "cds": state(versionSent=f"{P}-2", nonceSent="1-2", versionAcked=f"{P}-2", acked=True)
    },
}


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (Answer(503, b"[]"), "answered 503, not 200"),
        (Answer(200, b"{}"), "expected a JSON list of connection objects"),
        (Answer(200, b"[null]"), "expected a JSON list of connection objects"),
        (Answer(200, b'[{"types": []}]'), "unexpected JSON (AttributeError"),
        (Answer(200, b'[{"types": {"lds": 1}}]'), "unexpected JSON (AttributeError"),
        (
            Answer(200, b'[{"types": {"eds": {"versionSent": "v-' + b"9" * 5000 + b'"}}}]'),
            "unexpected JSON (ValueError",
        ),
    ],
)
def test_syncz_entries_refuse_answers_of_the_wrong_shape(answer: Answer, message: str) -> None:
    with pytest.raises(BadAnswer, match=re.escape(message)):
        syncz_entries(SERVER, answer)


def test_syncz_entries_of_a_good_answer_make_the_table() -> None:
    entries = syncz_entries(SERVER, Answer(200, json.dumps([ENTRY]).encode()))
    table = status_output([(SERVER, e) for e in entries], "table")
    assert table.splitlines()[1].split()[:4] == [ENTRY["proxyID"], "proxy", "SotW", "SYNCED"]


def test_dump_document_is_none_when_the_proxy_left() -> None:
    assert dump_document(Answer(404, b'{"error": "not connected"}')) is None
    with pytest.raises(BadAnswer, match="expected a JSON object"):
        dump_document(Answer(200, b"[]"))


@pytest.mark.parametrize(
    "dump",
    [
        {"configs": "everything"},
        {"configs": [None]},
        {
            "configs": [
                {"@type": "x.ClustersConfigDump", "dynamic_active_clusters": [{"cluster": "x"}]}
            ]
        },
        {
            "configs": [
                {"@type": "x.ListenersConfigDump", "dynamic_listeners": [{"active_state": 1}]}
            ]
        },
    ],
)
def test_outputs_of_a_dump_of_the_wrong_shape_are_bad_answers(dump: dict[str, Any]) -> None:
    for kind in proxyconfig.KINDS:
        for output in ("table", "json"):
            try:
                config_output(dump, kind, output)
            except BadAnswer as exc:
                assert str(exc).startswith("unexpected JSON")
    with pytest.raises(BadAnswer, match="unexpected JSON"):
        for kind in proxyconfig.KINDS:
            config_output(dump, kind, "table")
    with pytest.raises(BadAnswer, match="unexpected JSON"):
        detail_output([(SERVER, ENTRY, dump)], "table")


def test_format_table_escapes_what_a_terminal_would_obey() -> None:
    # a proxy id from a hostile server: a colour change and a line of its own
    shown = format_table(("NAME",), [["evil\x1b[31m\nid"]])
    assert shown == "NAME\nevil\\x1b[31m\\nid\n"
