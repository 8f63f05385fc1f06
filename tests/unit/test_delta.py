"""Delta ADS protocol logic (registryd.xds.delta): requests digested and responses planned
against real snapshots, no I/O.  Rules follow istiod's pilot/pkg/xds/delta.go and Envoy's
xDS protocol (incremental variant)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from registryd.adapter import Delete, Upsert
from registryd.build.builder import SnapshotBuilder
from registryd.model import Endpoint, Port, Service
from registryd.registry.store import RegistryStore
from registryd.xds import resources as res
from registryd.xds.delta import DeltaConnection, DeltaPlanned, DeltaTypeState, resource_version
from registryd.xds.snapshot import CDS, EDS, Snapshot, scoped
from registryd.xds.stream import ACK, EXPIRED, NACK, REQUEST, Connection, Planned
from tests.unit.factories import MEM, ep, svc

PREFIX = "test"
CDS_T, EDS_T, LDS_T, RDS_T = res.CLUSTER_TYPE, res.ENDPOINT_TYPE, res.LISTENER_TYPE, res.ROUTE_TYPE
A = "outbound|8080||a.example"
B = "outbound|8080||b.example"
STATIC = {"BlackHoleCluster", "PassthroughCluster"}


class Registry:
    """A store and a builder: each change makes the next snapshot."""

    def __init__(self) -> None:
        self.store = RegistryStore()
        self.builder = SnapshotBuilder()

    def upsert(self, service: Service, *endpoints: Endpoint) -> Snapshot:
        self.store.apply(MEM, Upsert(service=service, endpoints=endpoints))
        return self.builder.build(self.store.view)

    def delete(self, hostname: str) -> Snapshot:
        self.store.apply(MEM, Delete(hostname=hostname))
        return self.builder.build(self.store.view)


def two_services() -> tuple[Registry, Snapshot]:
    reg = Registry()
    reg.upsert(svc("a.example"), ep("a.example", "10.0.0.1"))
    return reg, reg.upsert(svc("b.example"), ep("b.example", "10.0.0.2"))


def node(**meta: str) -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update({"NAMESPACE": "default", **meta})
    return base_pb2.Node(id="sidecar~10.0.0.9~pod.default~default.svc", metadata=metadata)


def delta(
    type_url: str,
    subscribe: Sequence[str] = (),
    unsubscribe: Sequence[str] = (),
    *,
    answer: Planned | None = None,
    error: str | None = None,
    initial: Mapping[str, str] | None = None,
    meta: Mapping[str, str] | None = None,
) -> discovery_pb2.DeltaDiscoveryRequest:
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        initial_resource_versions=dict(initial or {}),
        node=node(**(meta or {})),
    )
    if answer is not None:
        request.response_nonce = answer.nonce
    if error is not None:
        request.error_detail.message = error
    return request


def new_conn() -> DeltaConnection:
    return DeltaConnection(peer="test", version_prefix=PREFIX)


def plan(conn: DeltaConnection, snapshot: Snapshot) -> dict[str, DeltaPlanned]:
    out = {}
    for planned in conn.plan(snapshot):
        assert isinstance(planned, DeltaPlanned)
        out[planned.type_url] = planned
    return out


def parsed(planned: Planned) -> discovery_pb2.DeltaDiscoveryResponse:
    return discovery_pb2.DeltaDiscoveryResponse.FromString(planned.payload)


def versions(planned: Planned) -> dict[str, str]:
    return {r.name: r.version for r in parsed(planned).resources}


def removed(planned: Planned) -> list[str]:
    return list(parsed(planned).removed_resources)


def test_first_wildcard_cds_sends_every_cluster_from_the_snapshot_bodies() -> None:
    _, snap = two_services()
    conn = new_conn()
    digest = conn.on_request(delta(CDS_T))
    assert (digest.replan, digest.kind) == (True, REQUEST)
    (cds,) = plan(conn, snap).values()
    response = parsed(cds)
    assert response.type_url == CDS_T
    assert response.system_version_info == f"{PREFIX}-{snap.version}"
    assert response.nonce == cds.nonce
    assert list(response.removed_resources) == []
    table = snap.tables[CDS]
    assert {r.name for r in response.resources} == {A, B} | STATIC
    for resource in response.resources:
        assert resource.version == f"{PREFIX}-{table[resource.name].version}"
        assert resource.resource.type_url == CDS_T
        assert resource.resource.value == table[resource.name].body  # serialized once
    assert plan(conn, snap) == {}  # nothing more until something changes


def test_legacy_and_explicit_wildcard_and_opting_out() -> None:
    """Envoy's legacy wildcard is for a first CDS/LDS request naming nothing; ``"*"``
    is explicit; unsubscribing ``"*"`` in the first request opts out (istiod's on-demand
    clients do that)."""
    _, snap = two_services()
    named = new_conn()
    named.on_request(delta(CDS_T, [A]))
    assert set(versions(plan(named, snap)[CDS_T])) == {A}
    star = new_conn()
    star.on_request(delta(CDS_T, ["*", A]))
    assert set(versions(plan(star, snap)[CDS_T])) == {A, B} | STATIC
    opted_out = new_conn()
    opted_out.on_request(delta(CDS_T, [], ["*"]))
    (empty,) = plan(opted_out, snap).values()  # the first request is answered anyway
    assert versions(empty) == {} and removed(empty) == []
    eds = new_conn()
    eds.on_request(delta(EDS_T))  # EDS has no legacy wildcard
    assert versions(plan(eds, snap)[EDS_T]) == {}


def test_ack_then_only_changed_resources_are_sent() -> None:
    reg, snap = two_services()
    conn = new_conn()
    conn.on_request(delta(CDS_T))
    conn.on_request(delta(EDS_T, [A, B]))
    first = plan(conn, snap)
    assert set(versions(first[EDS_T])) == {A, B}
    for type_url, answer in first.items():
        digest = conn.on_request(delta(type_url, answer=answer))
        assert (digest.replan, digest.kind) == (False, ACK)
        assert conn.states[type_url].acked_version == f"{PREFIX}-{snap.version}"
    snap = reg.upsert(svc("a.example"), ep("a.example", "10.0.0.1"), ep("a.example", "10.0.0.3"))
    update = plan(conn, snap)
    assert list(update) == [EDS_T]  # the cluster did not change
    assert versions(update[EDS_T]) == {A: f"{PREFIX}-{snap.version}"}


def test_a_removed_service_is_in_removed_resources_and_its_cla_emptied() -> None:
    reg, snap = two_services()
    conn = new_conn()
    for request in (delta(CDS_T), delta(EDS_T, [A, B]), delta(LDS_T), delta(RDS_T, ["8080"])):
        conn.on_request(request)
    plan(conn, snap)
    snap = reg.delete("b.example")
    update = plan(conn, snap)
    assert removed(update[CDS_T]) == [B] and versions(update[CDS_T]) == {}
    # a subscribed EDS name is never "removed": it gets an empty assignment, as in SotW
    (cla,) = parsed(update[EDS_T]).resources
    assert cla.name == B and cla.version == f"{PREFIX}-0"
    assert removed(update[EDS_T]) == []
    assert set(versions(update[RDS_T])) == {"8080"}  # b's virtual host is gone
    snap = reg.delete("a.example")
    update = plan(conn, snap)
    assert removed(update[LDS_T]) == ["0.0.0.0_8080"]
    assert removed(update[CDS_T]) == [A]


def test_unknown_names_eds_rds_empty_cds_lds_removed_once() -> None:
    reg, snap = two_services()
    conn = new_conn()
    conn.on_request(delta(CDS_T, [A, "outbound|1||nowhere"]))
    conn.on_request(delta(EDS_T, ["outbound|1||nowhere"]))
    conn.on_request(delta(RDS_T, ["7777"]))
    first = plan(conn, snap)
    assert set(versions(first[CDS_T])) == {A}
    assert removed(first[CDS_T]) == ["outbound|1||nowhere"]
    assert versions(first[EDS_T]) == {"outbound|1||nowhere": f"{PREFIX}-0"}
    assert versions(first[RDS_T]) == {"7777": f"{PREFIX}-0"}
    # unrelated changes do not repeat the news
    snap = reg.upsert(svc("c.example"), ep("c.example"))
    assert plan(conn, snap) == {}


def test_unsubscribe_is_silent_and_subscribing_again_resends() -> None:
    _, snap = two_services()
    conn = new_conn()
    conn.on_request(delta(EDS_T, [A, B]))
    plan(conn, snap)
    assert conn.on_request(delta(EDS_T, unsubscribe=[B])).replan
    assert plan(conn, snap) == {}
    assert conn.states[EDS_T].names == {A}
    conn.on_request(delta(EDS_T, [A]))  # Envoy re-subscribes when it rebuilds a cluster
    assert set(versions(plan(conn, snap)[EDS_T])) == {A}


def test_unsubscribing_a_name_the_wildcard_covers_sends_it_again() -> None:
    _, snap = two_services()
    conn = new_conn()
    conn.on_request(delta(CDS_T, ["*", A]))
    plan(conn, snap)
    conn.on_request(delta(CDS_T, unsubscribe=[A]))
    assert set(versions(plan(conn, snap)[CDS_T])) == {A}
    conn.on_request(delta(CDS_T, unsubscribe=["*"]))  # no longer wildcard: nothing to send
    assert plan(conn, snap) == {}
    assert not conn.states[CDS_T].wildcard


def test_initial_resource_versions_skip_what_the_client_has() -> None:
    """Reconnect: current versions are not re-sent, others are, and what is gone is
    removed; with everything current the first request still gets an (empty) answer."""
    _, snap = two_services()
    table = snap.tables[CDS]
    current = {n: resource_version(PREFIX, r, CDS) for n, r in table.items()}
    conn = new_conn()
    have = {**current, B: "other-1", "outbound|1||gone": current[A]}
    conn.on_request(delta(CDS_T, ["*"], initial=have))
    (cds,) = plan(conn, snap).values()
    assert set(versions(cds)) == {B}
    assert removed(cds) == ["outbound|1||gone"]
    again = new_conn()
    again.on_request(delta(CDS_T, initial=current))
    (empty,) = plan(again, snap).values()
    assert versions(empty) == {} and removed(empty) == []
    assert plan(again, snap) == {}


def test_nack_is_recorded_and_not_resent_until_content_changes() -> None:
    reg, snap = two_services()
    conn = new_conn()
    conn.on_request(delta(EDS_T, [A]))
    (sent,) = plan(conn, snap).values()
    digest = conn.on_request(delta(EDS_T, answer=sent, error="bad endpoints"))
    assert (digest.replan, digest.kind) == (False, NACK)
    state = conn.states[EDS_T]
    assert (state.last_nack, state.nack_version, state.nacks) == ("bad endpoints", sent.version, 1)
    snap = reg.upsert(svc("b.example"), ep("b.example", "10.0.0.7"))
    assert plan(conn, snap) == {}  # b changed, a (rejected) did not: nothing for a
    snap = reg.upsert(svc("a.example"), ep("a.example", "10.0.0.8"))
    assert set(versions(plan(conn, snap)[EDS_T])) == {A}


def test_any_recent_nonce_is_acked_unknown_ones_are_stale_but_subscriptions_apply() -> None:
    reg, snap = two_services()
    conn = new_conn()
    conn.on_request(delta(EDS_T, [A]))
    (first,) = plan(conn, snap).values()
    snap = reg.upsert(svc("a.example"), ep("a.example", "10.0.0.5"))
    (second,) = plan(conn, snap).values()
    assert first.nonce != second.nonce
    # the ACK of the first response arrives after the second was sent: still an ACK
    assert conn.on_request(delta(EDS_T, answer=first)).kind == ACK
    assert conn.states[EDS_T].acked_version == first.version
    assert conn.on_request(delta(EDS_T, answer=second)).kind == ACK
    # the first nonce is now older than an answered one: stale, but B is subscribed
    digest = conn.on_request(delta(EDS_T, [B], answer=first))
    assert (digest.replan, digest.kind) == (True, EXPIRED)
    assert conn.states[EDS_T].expired_nonces == 1
    assert set(versions(plan(conn, snap)[EDS_T])) == {B}


def test_a_cluster_sent_sends_its_cla_again_for_warming() -> None:
    """istiod: delta.go forceEDSPush; Envoy warms a changed cluster until its
    ClusterLoadAssignment arrives."""
    reg, snap = two_services()
    conn = new_conn()
    conn.on_request(delta(CDS_T))
    conn.on_request(delta(EDS_T, [A, B]))
    plan(conn, snap)
    changed = svc("a.example", Port(number=8080, name="http", protocol="HTTP2"))
    snap = reg.upsert(changed, ep("a.example", "10.0.0.1"))
    update = plan(conn, snap)
    assert list(update) == [CDS_T, EDS_T]
    assert set(versions(update[CDS_T])) == {A}
    assert set(versions(update[EDS_T])) == {A}  # same content, sent for the new cluster


def test_types_are_planned_cds_eds_lds_rds() -> None:
    _, snap = two_services()
    conn = new_conn()
    for request in (delta(RDS_T, ["8080"]), delta(LDS_T), delta(EDS_T, [A]), delta(CDS_T)):
        conn.on_request(request)
    assert list(plan(conn, snap)) == [CDS_T, EDS_T, LDS_T, RDS_T]


def sotw_names(meta: Mapping[str, str], snap: Snapshot, subs: Mapping[str, list[str]]) -> dict:
    from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

    conn = Connection(peer="test", version_prefix=PREFIX)
    for type_url, names in subs.items():
        conn.on_request(
            DiscoveryRequest(type_url=type_url, resource_names=names, node=node(**meta))
        )
    return {p.type_url: sorted(p.names) for p in conn.plan(snap)}


def test_same_tables_as_state_of_the_world_for_every_kind_of_client() -> None:
    """Node identity, namespace, GENERATOR=grpc and INTERCEPTION_MODE=NONE pick the same
    resources on a Delta stream as on a state-of-the-world one."""
    reg, _ = two_services()
    reg.upsert(
        svc("grpc.example", Port(number=7070, name="grpc", protocol="GRPC")),
        ep("grpc.example", service_port=7070),
    )
    snap = reg.upsert(
        svc("team.example", export_to=(".",), namespace="team"), ep("team.example", "10.0.0.3")
    )
    cases: list[tuple[dict[str, str], dict[str, list[str]]]] = [
        ({}, {CDS_T: [], LDS_T: [], RDS_T: ["8080"]}),
        ({"INTERCEPTION_MODE": "NONE"}, {CDS_T: [], LDS_T: []}),
        ({"NAMESPACE": "team"}, {CDS_T: [], LDS_T: [], RDS_T: ["8080"]}),
        ({"GENERATOR": "grpc"}, {CDS_T: [], LDS_T: ["grpc.example:7070"]}),
    ]
    for meta, subs in cases:
        conn = new_conn()
        for type_url, names in subs.items():
            conn.on_request(delta(type_url, names, meta=meta))
        got = {t: sorted(p.names) for t, p in plan(conn, snap).items()}
        assert got == sotw_names(meta, snap, subs), meta


def test_a_namespace_variant_has_a_version_of_its_own() -> None:
    reg = Registry()
    snap = reg.upsert(svc("team.example", export_to=(".",), namespace="team"), ep("team.example"))
    name = "outbound|8080||team.example"
    conn = new_conn()
    conn.on_request(delta(CDS_T, [name], meta={"NAMESPACE": "team"}))
    version = snap.tables[scoped(CDS, "team")][name].version
    assert versions(plan(conn, snap)[CDS_T]) == {name: f"{PREFIX}-{version}@team"}


def test_state_is_a_type_state_for_the_debug_views() -> None:
    _, snap = two_services()
    conn = new_conn()
    conn.on_request(delta(EDS_T, [A, "outbound|1||x"]))
    plan(conn, snap)
    state = conn.states[EDS_T]
    assert isinstance(state, DeltaTypeState)
    assert conn.delta and not Connection(peer="x", version_prefix="p").delta
    assert state.names == {A, "outbound|1||x"} and not state.wildcard
    assert set(state.sent_names) == {A, "outbound|1||x"}
    assert conn.visible(snap, EDS_T).keys() == snap.tables[EDS].keys()


def test_ignored_type_and_first_request_with_a_foreign_nonce() -> None:
    _, snap = two_services()
    conn = new_conn()
    assert conn.on_request(delta("type.googleapis.com/some.Other")).kind == "ignored"
    request = delta(CDS_T, [A])
    request.response_nonce = "from-another-server"
    digest = conn.on_request(request)
    assert (digest.replan, digest.kind) == (True, REQUEST)
    assert set(versions(plan(conn, snap)[CDS_T])) == {A}
