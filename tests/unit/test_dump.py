"""config_dump: what one connection gets, as Envoy admin ConfigDump JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from envoy.admin.v3 import config_dump_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format, struct_pb2

from registryd.adapter import Upsert
from registryd.build.builder import SnapshotBuilder
from registryd.model import Endpoint, Port, Service
from registryd.registry.store import RegistryStore
from registryd.xds import resources as res
from registryd.xds.dump import config_dump
from registryd.xds.snapshot import STATIC_NAMES, Snapshot
from registryd.xds.stream import Connection, Planned
from tests.unit.factories import MEM, ep, svc

PREFIX = "test"
A = "outbound|8080||a.example"
B = "outbound|9090||b.example"
SECTION = "type.googleapis.com/envoy.admin.v3.{}ConfigDump"


class Registry:
    """A store and a builder: each upsert makes the next snapshot."""

    def __init__(self) -> None:
        self.store = RegistryStore()
        self.builder = SnapshotBuilder()

    def upsert(self, service: Service, *endpoints: Endpoint) -> Snapshot:
        self.store.apply(MEM, Upsert(service=service, endpoints=endpoints))
        return self.builder.build(self.store.view)


def node(namespace: str = "default") -> base_pb2.Node:
    meta = struct_pb2.Struct()
    meta.update({"NAMESPACE": namespace})
    return base_pb2.Node(id=f"sidecar~10.0.0.9~pod.{namespace}~{namespace}.svc", metadata=meta)


def request(
    type_url: str,
    names: Sequence[str] = (),
    *,
    answer: Planned | None = None,
    error: str | None = None,
    namespace: str = "default",
) -> discovery_pb2.DiscoveryRequest:
    req = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=list(names), node=node(namespace)
    )
    if answer is not None:
        req.response_nonce = answer.nonce
        req.version_info = answer.version
    if error is not None:
        req.error_detail.message = error
    return req


def send(conn: Connection, snapshot: Snapshot) -> dict[str, Planned]:
    return {p.type_url: p for p in conn.plan(snapshot)}


def ack(conn: Connection, planned: dict[str, Planned], subscriptions: dict[str, list[str]]) -> None:
    for type_url, answer in planned.items():
        conn.on_request(request(type_url, subscriptions[type_url], answer=answer))


def sections(dump: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["@type"].rsplit(".", 1)[1]: c for c in dump["configs"]}


def round_trips(dump: dict[str, Any]) -> config_dump_pb2.ConfigDump:
    return json_format.ParseDict(json.loads(json.dumps(dump)), config_dump_pb2.ConfigDump())


def registry() -> tuple[Registry, Snapshot]:
    reg = Registry()
    reg.upsert(svc("a.example", Port(number=8080, protocol="HTTP")), ep())
    snap = reg.upsert(svc("b.example", Port(number=9090, protocol="TCP")))
    return reg, snap


SUBSCRIPTIONS = {
    res.CLUSTER_TYPE: [],
    res.ENDPOINT_TYPE: [A, "outbound|1||missing.example"],
    res.LISTENER_TYPE: [],
    res.ROUTE_TYPE: ["8080", "7777"],
}


def subscribed(snap: Snapshot, namespace: str = "default") -> tuple[Connection, dict[str, Planned]]:
    conn = Connection(peer="test", version_prefix=PREFIX)
    for type_url, names in SUBSCRIPTIONS.items():
        conn.on_request(request(type_url, names, namespace=namespace))
    planned = send(conn, snap)
    ack(conn, planned, SUBSCRIPTIONS)
    return conn, planned


def test_everything_subscribed_in_envoy_order_with_versions() -> None:
    _, snap = registry()
    conn, _ = subscribed(snap)
    dump = config_dump(conn, snap, version_prefix=PREFIX)

    assert [c["@type"] for c in dump["configs"]] == [
        SECTION.format(t) for t in ("Clusters", "Listeners", "Routes", "Endpoints")
    ]
    got = sections(dump)
    clusters = got["ClustersConfigDump"]
    assert clusters["version_info"] == f"{PREFIX}-{snap.version}"  # the ACKed CDS version
    active = [
        c for c in clusters["dynamic_active_clusters"] if c["cluster"]["name"] not in STATIC_NAMES
    ]
    assert [(c["cluster"]["name"], c["version_info"]) for c in active] == [
        (A, f"{PREFIX}-1"),
        (B, f"{PREFIX}-2"),
    ]
    assert active[0]["cluster"]["@type"] == res.CLUSTER_TYPE
    assert active[0]["cluster"]["type"] == "EDS"  # expanded, proto field names
    assert "error_state" not in active[0]

    listeners = [
        lis
        for lis in got["ListenersConfigDump"]["dynamic_listeners"]
        if lis["name"] not in STATIC_NAMES
    ]
    assert [(lis["name"], lis["active_state"]["version_info"]) for lis in listeners] == [
        ("0.0.0.0_8080", f"{PREFIX}-1"),
        ("0.0.0.0_9090", f"{PREFIX}-2"),
    ]
    state = listeners[0]["active_state"]
    assert state["listener"]["@type"] == res.LISTENER_TYPE
    manager = state["listener"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert manager["rds"]["route_config_name"] == "8080"  # nested Any expanded too

    routes = got["RoutesConfigDump"]["dynamic_route_configs"]
    assert [(r["route_config"]["name"], r["version_info"]) for r in routes] == [
        ("8080", f"{PREFIX}-1")
    ]  # the unknown name "7777" is not made up
    endpoints = got["EndpointsConfigDump"]["dynamic_endpoint_configs"]
    assert [(e["endpoint_config"]["cluster_name"], e["version_info"]) for e in endpoints] == [
        (A, f"{PREFIX}-1")
    ]
    assert "last_updated" not in active[0]

    parsed = round_trips(dump)
    assert len(parsed.configs) == 4


def test_unsubscribed_types_are_absent() -> None:
    _, snap = registry()
    conn = Connection(peer="test", version_prefix=PREFIX)
    assert config_dump(conn, snap, version_prefix=PREFIX) == {"configs": []}  # nothing asked
    conn.on_request(request(res.CLUSTER_TYPE))
    conn.on_request(request(res.ROUTE_TYPE, ["8080"]))
    send(conn, snap)
    dump = config_dump(conn, snap, version_prefix=PREFIX)
    assert list(sections(dump)) == ["ClustersConfigDump", "RoutesConfigDump"]
    # sent but not ACKed yet: no dump-level version
    assert "version_info" not in sections(dump)["ClustersConfigDump"]
    round_trips(dump)


def test_named_subscription_with_nothing_present_is_an_empty_section() -> None:
    _, snap = registry()
    conn = Connection(peer="test", version_prefix=PREFIX)
    conn.on_request(request(res.ROUTE_TYPE, ["7777"]))
    send(conn, snap)
    dump = config_dump(conn, snap, version_prefix=PREFIX)
    assert dump == {"configs": [{"@type": SECTION.format("Routes")}]}
    round_trips(dump)


def test_nack_puts_error_state_on_that_type_until_the_next_version() -> None:
    reg, snap = registry()
    conn, planned = subscribed(snap)
    conn.on_request(request(res.ENDPOINT_TYPE, [A, B]))  # EDS grows, is sent
    planned = send(conn, snap)
    nacked = planned[res.ENDPOINT_TYPE].version
    conn.on_request(
        request(res.ENDPOINT_TYPE, [A, B], answer=planned[res.ENDPOINT_TYPE], error="bad cla")
    )
    dump = config_dump(conn, snap, version_prefix=PREFIX)
    got = sections(dump)
    endpoints = got["EndpointsConfigDump"]["dynamic_endpoint_configs"]
    assert [e["endpoint_config"]["cluster_name"] for e in endpoints] == [A, B]
    for entry in endpoints:  # registryd cannot tell which resource was rejected
        error = entry["error_state"]
        assert error["details"] == "bad cla"
        assert error["version_info"] == nacked
        assert error["last_update_attempt"].endswith("Z")  # RFC 3339 wall clock
    for other in ("ClustersConfigDump", "RoutesConfigDump"):
        assert "error_state" not in json.dumps(got[other])
    assert "error_state" not in json.dumps(got["ListenersConfigDump"])
    parsed = round_trips(dump)
    assert len(parsed.configs) == 4

    # a NACKed CDS marks clusters (and only clusters) the same way
    snap = reg.upsert(svc("c.example", Port(number=8080, protocol="HTTP")))
    planned = send(conn, snap)
    conn.on_request(request(res.CLUSTER_TYPE, answer=planned[res.CLUSTER_TYPE], error="no"))
    got = sections(config_dump(conn, snap, version_prefix=PREFIX))
    clusters = got["ClustersConfigDump"]["dynamic_active_clusters"]
    assert len([c for c in clusters if c["cluster"]["name"] not in STATIC_NAMES]) == 3
    assert all(c["error_state"]["details"] == "no" for c in clusters)
    assert "error_state" not in json.dumps(got["RoutesConfigDump"])  # RDS was ACK-free, no NACK
    # nothing new was sent for A and B: the proxy still rejects them
    endpoints = got["EndpointsConfigDump"]["dynamic_endpoint_configs"]
    assert all(e["error_state"]["details"] == "bad cla" for e in endpoints)

    # new content is sent: the rejection no longer describes what the proxy has
    snap = reg.upsert(svc("d.example", Port(number=8080, protocol="HTTP")))
    send(conn, snap)
    got = sections(config_dump(conn, snap, version_prefix=PREFIX))
    assert "error_state" not in json.dumps(got["ClustersConfigDump"])
    assert "error_state" in json.dumps(got["EndpointsConfigDump"])
    snap = reg.upsert(svc("a.example", Port(number=8080, protocol="HTTP")), ep(address="10.0.0.2"))
    send(conn, snap)
    assert "error_state" not in json.dumps(config_dump(conn, snap, version_prefix=PREFIX))


def test_namespace_overlay_is_read_like_the_stream_does() -> None:
    reg, _ = registry()
    snap = reg.upsert(svc("private.example", namespace="team-a", export_to=(".",)))
    private = "outbound|8080||private.example"

    def clusters(namespace: str) -> list[str]:
        conn = Connection(peer="test", version_prefix=PREFIX)
        conn.on_request(request(res.CLUSTER_TYPE, namespace=namespace))
        conn.on_request(request(res.ROUTE_TYPE, ["8080"], namespace=namespace))
        dump = sections(config_dump(conn, snap, version_prefix=PREFIX))
        (route,) = dump["RoutesConfigDump"]["dynamic_route_configs"]
        hosts = {vh["name"] for vh in route["route_config"].get("virtual_hosts", [])}
        assert ("private.example:8080" in hosts) == (namespace == "team-a")
        active = dump["ClustersConfigDump"]["dynamic_active_clusters"]
        names = [c["cluster"]["name"] for c in active]
        assert list(send(conn, snap)[res.CLUSTER_TYPE].names) == names  # what the stream sends
        return [n for n in names if n not in STATIC_NAMES]

    assert clusters("team-a") == [A, private, B]
    assert clusters("default") == [A, B]


def test_proxyless_grpc_client_gets_its_api_listeners() -> None:
    _, snap = registry()
    conn = Connection(peer="test", version_prefix=PREFIX)
    conn.on_request(request(res.LISTENER_TYPE, ["a.example:8080", "nope.example:1"]))
    send(conn, snap)
    dump = config_dump(conn, snap, version_prefix=PREFIX)
    (listener,) = sections(dump)["ListenersConfigDump"]["dynamic_listeners"]
    assert listener["name"] == "a.example:8080"
    manager = listener["active_state"]["listener"]["api_listener"]["api_listener"]
    assert manager["rds"]["route_config_name"] == "outbound|8080||a.example"
    round_trips(dump)
