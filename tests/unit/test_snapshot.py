"""SnapshotBuilder and Snapshot: names, versions, removal, visibility, wire entries."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2

from registryd.adapter import Delete, Replace, Upsert
from registryd.build.builder import SnapshotBuilder
from registryd.model import AUTO, Endpoint, Port, Resolution, Service
from registryd.registry.store import RegistryStore
from registryd.xds import resources as res
from registryd.xds.snapshot import (
    CDS,
    CDS_GRPC,
    EDS,
    HISTORY,
    LDS_GRPC,
    LDS_LOCAL,
    LDS_SIDECAR,
    RDS,
    STATIC_NAMES,
    Resource,
    Snapshot,
    encode_field,
)
from tests.unit.factories import MEM, ep, svc

A = "outbound|8080||a.example"


class Rig:
    """A store and a builder: apply an update, then build from what it changed."""

    def __init__(self) -> None:
        self.store = RegistryStore()
        self.builder = SnapshotBuilder()

    def apply(self, update: Replace | Upsert | Delete) -> Snapshot:
        event = self.store.apply(MEM, update)
        if event is None:
            return self.builder.build(self.store.view, set())
        return self.builder.build(self.store.view, event.hostnames, event.endpoints_only)

    def upsert(self, service: Service, *endpoints: Endpoint) -> Snapshot:
        return self.apply(Upsert(service=service, endpoints=endpoints))


@pytest.fixture
def rig() -> Rig:
    return Rig()


def names(snapshot: Snapshot, table: str) -> set[str]:
    """The names in ``table`` that come from the registry (not the static resources)."""
    return set(snapshot.tables.get(table, {})) - STATIC_NAMES


def test_istio_names(rig: Rig) -> None:
    snap = rig.upsert(svc("a.example", Port(number=8080, protocol="HTTP")), ep())
    assert names(snap, CDS) == {A}
    assert names(snap, EDS) == {A}
    assert names(snap, LDS_SIDECAR) == {"0.0.0.0_8080"}
    assert names(snap, LDS_LOCAL) == {"127.0.0.1_8080"}
    assert names(snap, LDS_GRPC) == {"a.example:8080"}
    assert names(snap, RDS) == {"8080", A}
    cla = endpoint_pb2.ClusterLoadAssignment.FromString(snap.tables[EDS][A].body)
    assert cla.cluster_name == A
    assert cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address == "10.0.0.1"


def test_local_listener_binds_loopback(rig: Rig) -> None:
    snap = rig.upsert(svc())
    local = listener_pb2.Listener.FromString(snap.tables[LDS_LOCAL]["127.0.0.1_8080"].body)
    sidecar = listener_pb2.Listener.FromString(snap.tables[LDS_SIDECAR]["0.0.0.0_8080"].body)
    assert local.address.socket_address.address == "127.0.0.1"
    assert sidecar.address.socket_address.address == "0.0.0.0"


def test_endpoints_only_change_bumps_only_the_cla(rig: Rig) -> None:
    first = rig.upsert(svc(), ep())
    second = rig.upsert(svc(), ep(), ep(address="10.0.0.2"))
    assert second.version == first.version + 1
    assert second.tables[EDS][A].version == second.version
    for table in (CDS, LDS_SIDECAR, LDS_LOCAL, LDS_GRPC, RDS):
        for name, resource in second.tables[table].items():
            assert resource.version == first.version, (table, name)
    assert second.changed_since(EDS, first.version) == {A}
    assert second.changed_since(CDS, first.version) == frozenset()


def test_unchanged_rebuild_changes_nothing(rig: Rig) -> None:
    first = rig.upsert(svc(), ep())
    again = rig.builder.build(rig.store.view)  # full rebuild of the same view
    assert again.version == first.version + 1
    for table, resources in first.tables.items():
        assert dict(again.tables[table]) == dict(resources)
    assert again.history[-1] == (again.version, {})
    assert again.changed_since(CDS, first.version) == frozenset()


def test_removing_a_service_removes_its_resources(rig: Rig) -> None:
    rig.upsert(svc("a.example"), ep())
    rig.upsert(svc("b.example", Port(number=9090, protocol="TCP")))
    snap = rig.apply(Delete(hostname="b.example"))
    assert names(snap, CDS) == {A}
    assert names(snap, LDS_SIDECAR) == {"0.0.0.0_8080"}  # port 9090 is no longer used
    assert names(snap, LDS_GRPC) == {"a.example:8080"}
    assert names(snap, RDS) == {"8080", A}
    changed = snap.changed_since(CDS, snap.version - 1)
    assert changed == {"outbound|9090||b.example"}
    assert snap.changed_since(LDS_SIDECAR, snap.version - 1) == {"0.0.0.0_9090"}


def test_removing_one_of_two_services_on_a_port_keeps_the_port(rig: Rig) -> None:
    rig.upsert(svc("a.example"))
    rig.upsert(svc("b.example"))
    snap = rig.apply(Delete(hostname="b.example"))
    assert names(snap, LDS_SIDECAR) == {"0.0.0.0_8080"}
    route = route_pb2.RouteConfiguration.FromString(snap.tables[RDS]["8080"].body)
    assert [vh.name for vh in route.virtual_hosts] == ["a.example:8080", "allow_any"]


def test_dropping_a_port_removes_its_cluster_and_listeners(rig: Rig) -> None:
    auto = Port(number=9090, protocol=AUTO)  # route a.example:9090 for listeners of its own
    snap = rig.upsert(svc("a.example", Port(number=8080, protocol="HTTP"), auto), ep())
    assert "a.example:9090" in names(snap, RDS)
    snap = rig.upsert(svc("a.example", Port(number=8080, protocol="HTTP")), ep())
    assert names(snap, RDS) == {"8080", A}
    assert names(snap, CDS) == {A}
    assert names(snap, EDS) == {A}
    assert names(snap, LDS_SIDECAR) == {"0.0.0.0_8080"}
    assert names(snap, LDS_GRPC) == {"a.example:8080"}


def test_resolution_change_away_from_static_removes_the_cla(rig: Rig) -> None:
    rig.upsert(svc(), ep())
    snap = rig.upsert(svc(resolution=Resolution.DNS), ep())
    assert names(snap, EDS) == set()
    cluster = cluster_pb2.Cluster.FromString(snap.tables[CDS][A].body)
    assert cluster.type == cluster_pb2.Cluster.STRICT_DNS


def test_export_to_dot_goes_to_namespace_overlay_tables(rig: Rig) -> None:
    rig.upsert(svc("pub.example"))
    snap = rig.upsert(svc("a.example", namespace="team-a", export_to=(".",)), ep())
    assert names(snap, CDS) == {"outbound|8080||pub.example"}
    assert names(snap, "cds@team-a") == {A}
    assert names(snap, "lds/grpc@team-a") == {"a.example:8080"}
    assert A not in names(snap, CDS)
    # the shared port's listener/route: public version and a team-a version seeing both
    route = route_pb2.RouteConfiguration.FromString(snap.tables["rds@team-a"]["8080"].body)
    assert {vh.name for vh in route.virtual_hosts} == {
        "a.example:8080",
        "pub.example:8080",
        "allow_any",
    }
    public = route_pb2.RouteConfiguration.FromString(snap.tables[RDS]["8080"].body)
    assert {vh.name for vh in public.virtual_hosts} == {"pub.example:8080", "allow_any"}


def test_export_to_change_moves_resources_between_tables(rig: Rig) -> None:
    rig.upsert(svc("a.example", namespace="team-a", export_to=(".",)))
    snap = rig.upsert(svc("a.example", namespace="team-a"))
    assert names(snap, CDS) == {A}
    assert names(snap, "cds@team-a") == set()
    assert snap.changed_since("cds@team-a", snap.version - 1) == {A}


def test_export_to_none_is_visible_nowhere(rig: Rig) -> None:
    snap = rig.upsert(svc("a.example", export_to=("~",)))
    visible = [t for t, table in snap.tables.items() if t != EDS and set(table) - STATIC_NAMES]
    assert visible == []


def test_changed_since_semantics(rig: Rig) -> None:
    v1 = rig.upsert(svc("a.example"))
    v2 = rig.upsert(svc("b.example"))
    v3 = rig.upsert(svc("a.example"), ep())
    b = "outbound|8080||b.example"
    assert v3.changed_since(CDS, v3.version) == frozenset()
    assert v3.changed_since(CDS, v3.version + 5) == frozenset()
    assert v3.changed_since(EDS, v2.version) == {A}
    assert v3.changed_since(CDS, v1.version) == {b}
    assert v3.changed_since(CDS, 0) == {A, b} | {"PassthroughCluster", "BlackHoleCluster"}
    assert v3.changed_since("nope", 0) == frozenset()


def test_changed_since_is_none_when_too_far_back(rig: Rig) -> None:
    for i in range(HISTORY + 3):
        snap = rig.upsert(svc(f"h{i}.example"))
    assert len(snap.history) == HISTORY
    oldest = snap.history[0][0]
    assert snap.changed_since(CDS, oldest - 1) is not None
    assert snap.changed_since(CDS, oldest - 2) is None
    assert snap.changed_since(CDS, 0) is None


def test_resource_entry_splices_into_a_discovery_response(rig: Rig) -> None:
    snap = rig.upsert(svc("a.example"), ep())
    resources = [snap.tables[CDS][A], snap.tables[CDS][A]]
    wire = encode_field(1, b"7") + b"".join(r.entry for r in resources)
    wire += encode_field(4, res.CLUSTER_TYPE.encode())
    response = discovery_pb2.DiscoveryResponse.FromString(wire)
    assert response.version_info == "7"
    assert response.type_url == res.CLUSTER_TYPE
    assert len(response.resources) == 2
    assert response.resources[0].type_url == res.CLUSTER_TYPE
    cluster = cluster_pb2.Cluster()
    assert response.resources[0].Unpack(cluster)
    assert cluster.name == A


def test_resource_make_with_long_body_uses_multibyte_lengths() -> None:
    body = cluster_pb2.Cluster(name="x" * 300).SerializeToString()
    resource = Resource.make(res.CLUSTER_TYPE, "x", 1, body)
    response = discovery_pb2.DiscoveryResponse.FromString(resource.entry)
    cluster = cluster_pb2.Cluster()
    response.resources[0].Unpack(cluster)
    assert cluster.name == "x" * 300


def test_first_build_of_everything(rig: Rig) -> None:
    rig.store.apply(MEM, Replace(services=(svc("a.example"), svc("b.example"))))
    snap = rig.builder.build(rig.store.view)
    assert snap.version == 1
    assert names(snap, CDS) == {A, "outbound|8080||b.example"}
    assert all(r.version == 1 for r in snap.tables[CDS].values())


def test_removing_a_restricted_service_empties_its_overlay_tables(rig: Rig) -> None:
    first = rig.upsert(svc("a.example", namespace="team-a", export_to=(".",)))
    overlays = {"cds@team-a", "lds/grpc@team-a", "lds/sidecar@team-a", "lds/local@team-a"}
    assert overlays | {"rds@team-a"} <= {t for t, v in first.tables.items() if v}
    snap = rig.apply(Delete(hostname="a.example"))
    assert [t for t, table in snap.tables.items() if set(table) - STATIC_NAMES] == []
    assert snap.changed_since("rds@team-a", first.version) == {"8080", A}


def domains(snap: Snapshot, table: str) -> dict[str, list[str]]:
    route = route_pb2.RouteConfiguration.FromString(snap.tables[table]["8080"].body)
    return {vh.name: list(vh.domains) for vh in route.virtual_hosts}


def test_kubernetes_short_names_and_bare_name_only_in_the_own_namespace(rig: Rig) -> None:
    kube = "web.shop.svc.cluster.local"
    rig.upsert(svc("other.example"))
    snap = rig.upsert(svc(kube, namespace="shop"))
    everyone = domains(snap, RDS)[f"{kube}:8080"]
    assert everyone == [kube, f"{kube}.", "web.shop", "web.shop.svc"]  # other namespaces
    own = domains(snap, "rds@shop")
    assert own[f"{kube}:8080"] == [kube, f"{kube}.", "web", "web.shop.svc", "web.shop"]
    assert "other.example:8080" in own  # the overlay still routes every public service


def test_short_names_never_take_a_domain_another_service_owns(rig: Rig) -> None:
    rig.upsert(svc("web.shop"))  # a ServiceEntry literally named like a short name
    snap = rig.upsert(svc("web.shop.svc.cluster.local", namespace="shop"))
    everyone = domains(snap, RDS)
    assert everyone["web.shop:8080"] == ["web.shop", "web.shop."]
    assert "web.shop" not in everyone["web.shop.svc.cluster.local:8080"]
    all_domains = [d for ds in domains(snap, "rds@shop").values() for d in ds]
    assert len(all_domains) == len(set(all_domains))  # Envoy rejects duplicate domains


K8S = "greeter.shop.svc.cluster.local"


def test_grpc_short_names_live_in_the_services_namespace_only(rig: Rig) -> None:
    # grpcgen/lds.go tryFindFQDN: short names resolve against the client's own namespace
    snap = rig.upsert(svc(K8S, Port(number=7070, protocol="GRPC"), namespace="shop"))
    assert names(snap, LDS_GRPC) == {f"{K8S}:7070"}
    assert names(snap, "lds/grpc@shop") == {
        "greeter:7070",
        "greeter.shop:7070",
        "greeter.shop.svc:7070",
    }
    assert f"outbound|7070||{K8S}" in names(snap, RDS)
    assert names(snap, CDS_GRPC) == {f"outbound|7070||{K8S}"}
    # renamed away: every listener of the old name goes
    snap = rig.apply(Delete(hostname=K8S))
    assert names(snap, "lds/grpc@shop") == set() and names(snap, LDS_GRPC) == set()


def test_grpc_short_names_of_one_name_in_two_namespaces_are_each_their_own(rig: Rig) -> None:
    grpc = Port(number=7070, protocol="GRPC")
    rig.upsert(svc(K8S, grpc, namespace="shop"))
    snap = rig.upsert(svc("greeter.shop2.svc.cluster.local", grpc, namespace="shop2"))
    assert "greeter:7070" in names(snap, "lds/grpc@shop")
    assert "greeter:7070" in names(snap, "lds/grpc@shop2")
    route = listener_pb2.Listener.FromString(snap.tables["lds/grpc@shop"]["greeter:7070"].body)
    assert f"outbound|7070||{K8S}".encode() in route.api_listener.api_listener.value
    snap = rig.apply(Delete(hostname="greeter.shop2.svc.cluster.local"))
    assert names(snap, "lds/grpc@shop2") == set()
    assert "greeter:7070" in names(snap, "lds/grpc@shop")


def test_passthrough_services_are_not_served_to_grpc_clients(rig: Rig) -> None:
    snap = rig.upsert(svc("a.example", resolution=Resolution.NONE))
    assert names(snap, CDS) == {A}
    assert names(snap, CDS_GRPC) == set()
    assert names(snap, LDS_GRPC) == set()


def test_alias_routes_to_its_target_whichever_arrives_first(rig: Rig) -> None:
    alias = svc("old.example", alias_for="a.example")
    snap = rig.upsert(alias)
    assert names(snap, CDS) == set()  # an alias has no resources of its own
    snap = rig.upsert(svc("a.example"))
    assert "old.example" in domains(snap, RDS)["a.example:8080"]
    snap = rig.apply(Delete(hostname="old.example"))
    assert "old.example" not in domains(snap, RDS)["a.example:8080"]


def grpc_domains(snap: Snapshot) -> list[str]:
    route = route_pb2.RouteConfiguration.FromString(snap.tables[RDS][A].body)
    (vhost,) = route.virtual_hosts
    return list(vhost.domains)


def test_alias_names_reach_the_grpc_route_of_its_target_whichever_arrives_first(rig: Rig) -> None:
    # grpcgen/rds.go buildHTTPRoute takes the sidecar's virtual host, aliases included
    rig.upsert(svc("old.example", alias_for="a.example"))
    snap = rig.upsert(svc("a.example"))
    assert "old.example:8080" in grpc_domains(snap)
    snap = rig.apply(Delete(hostname="old.example"))
    assert grpc_domains(snap) == ["a.example", "a.example:8080", "a.example.", "a.example.:8080"]
    snap = rig.upsert(svc("new.example", alias_for="a.example"))
    assert grpc_domains(snap)[4:] == [
        "new.example",
        "new.example:8080",
        "new.example.",
        "new.example.:8080",
    ]


def test_endpoint_change_of_a_headless_service_rebuilds_its_pod_listeners(rig: Rig) -> None:
    service = svc(
        K8S, Port(number=3306, protocol="TCP"), namespace="shop", resolution=Resolution.NONE
    )
    snap = rig.upsert(service, ep(K8S, "10.4.0.1", service_port=3306))
    assert names(snap, LDS_SIDECAR) == {"10.4.0.1_3306"}
    snap = rig.upsert(service, ep(K8S, "10.4.0.2", service_port=3306))
    assert names(snap, LDS_SIDECAR) == {"10.4.0.2_3306"}
    assert names(snap, LDS_LOCAL) == {"127.0.0.1_3306"}


def test_vip_listener_moves_with_the_address(rig: Rig) -> None:
    tcp = Port(number=3306, protocol="TCP")
    snap = rig.upsert(svc("a.example", tcp, addresses=("10.1.0.1",)))
    assert names(snap, LDS_SIDECAR) == {"10.1.0.1_3306"}
    snap = rig.upsert(svc("a.example", tcp, addresses=("10.1.0.2",)))
    assert names(snap, LDS_SIDECAR) == {"10.1.0.2_3306"}
    assert snap.changed_since(LDS_SIDECAR, snap.version - 1) == {"10.1.0.1_3306", "10.1.0.2_3306"}


def test_static_resources_are_there_from_the_first_snapshot(rig: Rig) -> None:
    snap = rig.builder.build(rig.store.view)
    assert set(snap.tables[CDS]) == {"PassthroughCluster", "BlackHoleCluster"}
    assert set(snap.tables[LDS_SIDECAR]) == {"virtualOutbound"}
    assert not snap.tables.get(LDS_LOCAL)  # no capture listener without iptables


def test_a_tcp_port_conflict_is_logged_once(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    tcp = Port(number=3306, protocol="TCP")
    with caplog.at_level("WARNING", "registryd.push"):
        rig.upsert(svc("a.example", tcp))
        rig.upsert(svc("b.example", tcp))
        rig.upsert(svc("b.example", tcp), ep("b.example", service_port=3306))
    lines = [r.getMessage() for r in caplog.records if "conflict" in r.getMessage()]
    # captured sidecars and 127.0.0.1 (INTERCEPTION_MODE NONE) proxies alike, once
    assert lines == [
        f"listener {bind}_3306: b.example left out, a.example already takes its traffic (conflict)"
        for bind in ("0.0.0.0", "127.0.0.1")
    ]


def test_many_conflicts_on_one_port_log_ten_lines_and_a_count(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    tcp = Port(number=3306, protocol="TCP")
    services = tuple(svc(f"h{i:02}.example", tcp) for i in range(30))
    rig.store.apply(MEM, Replace(services=services))
    with caplog.at_level("WARNING", "registryd.push"):
        rig.builder.build(rig.store.view)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 11  # both kinds of proxy conflict alike: logged for the port once
    assert lines[-1] == "port 3306: 48 more conflicts on its listeners (services left out)"
