"""Delta ADS (DeltaAggregatedResources) with an in-process registryd and a real grpc.aio
Delta client, on the same port as state-of-the-world."""

from __future__ import annotations

import itertools

import grpc
from envoy.config.cluster.v3 import cluster_pb2

from registryd.testing import AdsClient, DeltaAdsClient
from registryd.testing.ads import TYPES
from tests.xds.test_protocol import eps, svc
from tests.xds.test_robustness import ended

CDS, EDS, LDS, RDS = TYPES["cds"], TYPES["eds"], TYPES["lds"], TYPES["rds"]
A, B = "outbound|8080||a.example", "outbound|8080||b.example"
_barriers = itertools.count(1)


async def nothing_pending(client: DeltaAdsClient) -> None:
    """Fail if the server sends anything before answering a barrier: a new RDS name,
    always answered (with an empty RouteConfiguration), after whatever was planned."""
    name = f"barrier-{next(_barriers)}"
    client.subscribe("rds", [name])
    response = await client.next()
    assert (response.type_url, response.names, response.removed) == (RDS, [name], []), (
        f"unexpected response {response.type_url} {response.names} removed {response.removed}"
    )


async def envoy_like(client: DeltaAdsClient) -> None:
    """Subscribe as Envoy does on DELTA_GRPC: wildcard CDS, the EDS names its clusters
    need, wildcard LDS, the routes its listeners name."""
    client.subscribe("cds")
    cds = await client.next("cds")
    client.subscribe("eds", cds_eds_names(cds.decode()))
    await client.next("eds")
    client.subscribe("lds")
    await client.next("lds")
    client.subscribe("rds", ["8080"])
    await client.next("rds")


def cds_eds_names(clusters: list[cluster_pb2.Cluster]) -> list[str]:
    return sorted(c.name for c in clusters if c.type == cluster_pb2.Cluster.EDS)


async def test_envoy_style_delta_flow_cds_eds_lds_rds(harness) -> None:  # type: ignore[no-untyped-def]
    harness.memory.set([svc("a.example"), svc("b.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    async with DeltaAdsClient(harness.target) as client:
        client.subscribe("cds")
        cds = await client.next("cds")
        assert sorted(cds.registry_names) == [A, B]
        version = cds.message.system_version_info
        assert all(v.startswith(version.rsplit("-", 1)[0] + "-") for v in cds.versions.values())
        client.subscribe("eds", cds_eds_names(cds.decode()))
        eds = await client.next("eds")
        cla = {c.cluster_name: c for c in eds.decode()}
        assert set(cla) == {A, B}
        endpoint = cla[A].endpoints[0].lb_endpoints[0].endpoint.address.socket_address
        assert (endpoint.address, endpoint.port_value) == ("10.0.0.1", 9000)
        assert cla[B].endpoints == []
        client.subscribe("lds")
        lds = await client.next("lds")
        assert lds.registry_names == ["0.0.0.0_8080"]
        client.subscribe("rds", ["8080"])
        (route,) = (await client.next("rds")).decode()
        domains = {d for vh in route.virtual_hosts for d in vh.domains}
        assert {"a.example", "b.example."} <= domains
        await nothing_pending(client)
        (conn,) = harness.app.serving.xds.connections.values()
        assert conn.delta


async def test_changes_send_only_what_changed_and_removals(harness) -> None:  # type: ignore[no-untyped-def]
    harness.memory.set(
        [svc("a.example"), svc("b.example")],
        eps("a.example", "10.0.0.1") + eps("b.example", "10.0.1.1"),
    )
    await harness.settle()
    async with DeltaAdsClient(harness.target) as client:
        await envoy_like(client)
        harness.memory.upsert(svc("a.example"), eps("a.example", "10.0.0.1", "10.0.0.2"))
        await harness.settle()
        update = await client.next()
        assert (update.type_url, update.names) == (EDS, [A])
        assert len(update.decode()[0].endpoints[0].lb_endpoints) == 2
        await nothing_pending(client)  # no CDS, LDS or RDS for an endpoint change
        harness.memory.delete("b.example")
        await harness.settle()
        cds = await client.next("cds")
        assert (cds.names, cds.removed) == ([], [B])
        assert B not in client.held[CDS] and A in client.held[CDS]


async def test_reconnect_with_initial_versions_resends_nothing_current(harness) -> None:  # type: ignore[no-untyped-def]
    harness.memory.set([svc("a.example"), svc("b.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    client = DeltaAdsClient(harness.target)
    await client.connect()
    try:
        await envoy_like(client)
        await client.close()
        harness.memory.upsert(svc("b.example"), eps("b.example", "10.0.1.1"))
        await harness.settle()
        await client.connect()
        client.subscribe("cds", resume=True)
        cds = await client.next("cds")
        assert (cds.names, cds.removed) == ([], [])  # answered, nothing new
        client.subscribe("eds", [A, B], resume=True)
        eds = await client.next("eds")
        assert eds.names == [B]  # only the assignment that changed while away
        await nothing_pending(client)
    finally:
        await client.close()


async def test_nack_is_recorded_and_not_resent(harness) -> None:  # type: ignore[no-untyped-def]
    harness.memory.set([svc("a.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    async with DeltaAdsClient(harness.target) as client:
        client.reject[EDS] = "endpoints rejected by test"
        client.subscribe("eds", [A])
        rejected = await client.next("eds")
        await nothing_pending(client)
        (conn,) = harness.app.serving.xds.connections.values()
        state = conn.states[EDS]
        assert (state.last_nack, state.nacks) == ("endpoints rejected by test", 1)
        assert state.nack_version == rejected.message.system_version_info
        harness.memory.upsert(svc("b.example"), eps("b.example", "10.0.1.1"))
        await harness.settle()
        await nothing_pending(client)  # a was not re-sent
        del client.reject[EDS]
        harness.memory.upsert(svc("a.example"), eps("a.example", "10.0.0.9"))
        await harness.settle()
        again = await client.next("eds")
        assert again.names == [A]
        await nothing_pending(client)
        assert state.acked_version == again.message.system_version_info


async def test_delta_and_sotw_clients_share_one_port_and_one_snapshot(harness) -> None:  # type: ignore[no-untyped-def]
    harness.memory.set([svc("a.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    async with DeltaAdsClient(harness.target) as delta, AdsClient(harness.target) as sotw:
        delta.subscribe("cds")
        sotw.subscribe("cds")
        delta_cds, sotw_cds = await delta.next("cds"), await sotw.next("cds")
        assert sorted(delta_cds.names) == sorted(sotw_cds.names)
        bodies = {r.name: r.resource.value for r in delta_cds.message.resources}
        assert sorted(bodies.values()) == sorted(r.value for r in sotw_cds.message.resources)
        kinds = sorted(c.delta for c in harness.app.serving.xds.connections.values())
        assert kinds == [False, True]


async def test_many_unknown_names_end_a_delta_stream_too(harness) -> None:  # type: ignore[no-untyped-def]
    harness.app.serving.xds.max_unknown_names = 5
    client = DeltaAdsClient(harness.target)
    await client.connect()
    try:
        client.subscribe("eds", [f"outbound|1||nowhere-{i}" for i in range(6)])
        error = await ended(client)  # type: ignore[arg-type]
    finally:
        await client.close()
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert harness.app.serving.xds.refused == 1
