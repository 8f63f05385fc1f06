"""Istio config over MCP, as an istiod reads it from a ``configSources`` server: an
``api`` client (node metadata ``GENERATOR: api``) asks Istio config types by
``group/version/Kind`` on an ADS stream and gets ``istio.mcp.v1alpha1.Resource`` s,
through the in-process server with real grpc.aio clients.

"Nothing else was sent" is shown with :func:`config_fence`: a config type asked for the
first time is always answered, and config types are planned after every type asked
before them, so anything the server meant to send first arrives before the fence's
answer."""

from __future__ import annotations

import itertools
from typing import Any

import grpc

from registryd.build import istio_pb
from registryd.build.mcp import SERVICE_LABEL
from registryd.daemon.app import App
from registryd.daemon.config import RegistryConfig
from registryd.model import Endpoint, Port, Service
from registryd.testing import AdsClient, DeltaAdsClient, MemoryAdapter
from registryd.testing.ads import TYPES, Response
from registryd.xds.limits import MAX_CONFIG_TYPES
from registryd.xds.resources import MCP_RESOURCE_TYPE
from registryd.xds.server import XdsServer
from registryd.xds.serving import LocalServing
from tests.support.harness import Harness, loopback_settings
from tests.support.turns import until
from tests.web.test_debug import get, metrics
from tests.xds.quiet import nothing_pending
from tests.xds.test_limits import refusal

API = {"GENERATOR": "api"}  # what istiod's configcontroller.go sets
ISTIOD = "istiod-test"
MESH_CONFIG = "core/v1alpha1/MeshConfig"
SE = "networking.istio.io/v1/ServiceEntry"
SE_V1ALPHA3 = "networking.istio.io/v1alpha3/ServiceEntry"
WE = "networking.istio.io/v1alpha3/WorkloadEntry"
DR = "networking.istio.io/v1/DestinationRule"
AUTHZ = "security.istio.io/v1/AuthorizationPolicy"

_fences = itertools.count(1)


def xds(harness: Harness) -> XdsServer:
    """The xDS server of ``harness`` (which serves xDS in its own process)."""
    serving = harness.app.serving
    assert isinstance(serving, LocalServing)
    return serving.xds


def svc(host: str, port: int = 8080, protocol: str = "HTTP") -> Service:
    return Service(hostname=host, ports=(Port(number=port, name="http", protocol=protocol),))


def eps(host: str, *addresses: str) -> list[Endpoint]:
    return [Endpoint(hostname=host, address=a, port=9000, service_port=8080) for a in addresses]


def istiod(harness: Harness) -> AdsClient:
    return AdsClient(harness.target, node_id=ISTIOD, metadata=API)


async def config_fence(client: AdsClient) -> None:
    """Fail if the server sends anything before answering a config type asked now."""
    kind = f"fence.registryd.test/v1/Fence{next(_fences)}"
    client.subscribe(kind)
    response = await client.next()
    assert (response.type_url, response.names) == (kind, []), (
        f"unexpected response {response.type_url} {response.names}"
    )


async def answers(client: AdsClient, *types: str) -> dict[str, Response]:
    """Subscribe to every one of ``types`` and return the one answer each gets."""
    for kind in types:
        client.subscribe(kind)
    got: dict[str, Response] = {}
    for _ in types:
        response = await client.next()
        assert response.type_url not in got, f"{response.type_url} answered twice"
        got[response.type_url] = response
    assert set(got) == set(types)
    return got


def versions(response: Response) -> dict[str, str]:
    """``namespace/name`` -> ``metadata.version`` of each config in ``response``."""
    return {r.metadata.name: r.metadata.version for r in response.decode()}


def unpack(resource: Any, message: Any) -> Any:
    """The config in the ``body`` of an MCP ``Resource``, as a ``message``."""
    out = message()
    assert resource.body.Unpack(out)
    return out


async def test_every_asked_type_is_answered_with_its_own_type_url(harness: Harness) -> None:
    harness.memory.set([svc("a.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    async with istiod(harness) as client:
        got = await answers(client, MESH_CONFIG, SE, SE_V1ALPHA3, WE, DR, AUTHZ)
        for kind, response in got.items():
            assert response.message.type_url == kind
            assert response.message.version_info
            assert all(r.type_url == MCP_RESOURCE_TYPE for r in response.message.resources)
        for empty in (MESH_CONFIG, DR, AUTHZ):
            assert got[empty].names == []

        # either version of the ServiceEntry type gets the same resources
        assert got[SE].names == got[SE_V1ALPHA3].names == ["default/a.example"]
        assert list(got[SE].message.resources) == list(got[SE_V1ALPHA3].message.resources)
        (entry,) = got[SE].decode()
        assert entry.metadata.name == "default/a.example"
        assert entry.metadata.version
        assert entry.body.type_url == istio_pb.SERVICE_ENTRY
        body = unpack(entry, istio_pb.ServiceEntry)
        assert list(body.hosts) == ["a.example"]
        assert [(p.number, p.name, p.protocol) for p in body.ports] == [(8080, "http", "HTTP")]
        assert dict(body.workload_selector.labels) == {SERVICE_LABEL: "a.example"}

        (workload,) = got[WE].decode()
        assert workload.metadata.name.startswith("default/")
        assert workload.metadata.version
        assert workload.body.type_url == istio_pb.WORKLOAD_ENTRY
        body = unpack(workload, istio_pb.WorkloadEntry)
        assert body.address == "10.0.0.1"
        assert dict(body.ports) == {"http": 9000}
        assert body.labels[SERVICE_LABEL] == "a.example"
        await config_fence(client)  # one answer per type, nothing more


async def test_a_deleted_service_leaves_the_next_state_of_the_world(harness: Harness) -> None:
    harness.memory.set(
        [svc("a.example"), svc("b.example")],
        eps("a.example", "10.0.0.1") + eps("b.example", "10.0.1.1"),
    )
    await harness.settle()
    async with istiod(harness) as client:
        got = await answers(client, SE, WE)
        assert got[SE].names == ["default/a.example", "default/b.example"]
        assert len(got[WE].names) == 2
        kept = [n for n in got[WE].names if n.startswith("default/a.example-")]

        harness.memory.delete("b.example")
        await harness.settle()
        after = [await client.next(), await client.next()]
        assert [(r.type_url, r.names) for r in after] == [
            (SE, ["default/a.example"]),
            (WE, kept),
        ]
        await config_fence(client)


async def test_an_endpoint_change_resends_workload_entries_only(harness: Harness) -> None:
    harness.memory.set([svc("a.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    async with istiod(harness) as client:
        got = await answers(client, SE, WE)  # ServiceEntries first: planned first
        entry_versions = versions(got[SE])

        harness.memory.upsert(svc("a.example"), eps("a.example", "10.0.0.1", "10.0.0.2"))
        await harness.settle()
        # a ServiceEntry response for this change would come before the WorkloadEntries
        workloads = await client.next()
        assert workloads.type_url == WE
        assert workloads.message.version_info != got[WE].message.version_info
        assert len(workloads.names) == 2 and set(got[WE].names) < set(workloads.names)
        addresses = {unpack(r, istio_pb.WorkloadEntry).address for r in workloads.decode()}
        assert addresses == {"10.0.0.1", "10.0.0.2"}

        # the fence: a new service does change the ServiceEntries, and its answer is
        # the next response, so none was sent for the endpoint change
        harness.memory.upsert(svc("c.example"))
        await harness.settle()
        entries = await client.next()
        assert (entries.type_url, entries.names) == (SE, ["default/a.example", "default/c.example"])
        assert versions(entries)["default/a.example"] == entry_versions["default/a.example"]
        await config_fence(client)  # c.example has no endpoints: no WorkloadEntry response


async def test_a_nacked_service_entry_version_is_not_resent_until_it_changes(
    harness: Harness,
) -> None:
    harness.memory.set([svc("a.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    async with istiod(harness) as client:
        client.reject[SE] = "ServiceEntry rejected by test"
        got = await answers(client, SE, WE)
        await config_fence(client)  # the NACK was read, and nothing was re-sent for it
        (conn,) = xds(harness).connections.values()
        state = conn.states[SE]
        assert (state.last_nack, state.nacks) == ("ServiceEntry rejected by test", 1)
        assert state.nack_version == got[SE].message.version_info
        assert conn.states[WE].acked_version == got[WE].message.version_info

        # an unrelated push (endpoints only) does not re-send the rejected ServiceEntries
        harness.memory.upsert(svc("a.example"), eps("a.example", "10.0.0.9"))
        await harness.settle()
        assert (await client.next()).type_url == WE
        await config_fence(client)

        # new content is sent again, and ACKed this time
        del client.reject[SE]
        harness.memory.upsert(svc("a.example", protocol="GRPC"), eps("a.example", "10.0.0.9"))
        await harness.settle()
        again = await client.next()
        assert (again.type_url, again.names) == (SE, ["default/a.example"])
        assert again.message.version_info != got[SE].message.version_info
        await config_fence(client)  # the ACK, sent before the fence, has been read
        assert conn.states[SE].acked_version == again.message.version_info
        assert conn.states[SE].nacks == 1


async def test_envoy_clients_are_served_as_before_next_to_an_istiod(harness: Harness) -> None:
    harness.memory.set([svc("a.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    async with istiod(harness) as reader, AdsClient(harness.target) as envoy:
        await answers(reader, MESH_CONFIG, SE, WE, DR)
        envoy.subscribe("cds")
        cds = await envoy.next("cds")
        assert cds.registry_names == ["outbound|8080||a.example"]
        envoy.subscribe("eds", cds.eds_names)
        (cla,) = (await envoy.next("eds")).decode()
        assert [
            e.endpoint.address.socket_address.address for e in cla.endpoints[0].lb_endpoints
        ] == ["10.0.0.1"]

        harness.memory.set(
            [svc("a.example"), svc("b.example")],
            eps("a.example", "10.0.0.1", "10.0.0.2") + eps("b.example", "10.0.1.1"),
        )
        await harness.settle()
        cds = await envoy.next()
        assert (cds.type_url, cds.registry_names) == (
            TYPES["cds"],
            ["outbound|8080||a.example", "outbound|8080||b.example"],
        )
        eds = await envoy.next()
        assert (eds.type_url, eds.names) == (TYPES["eds"], ["outbound|8080||a.example"])
        await nothing_pending(envoy)  # no config type ever reaches the Envoy

        entries = await reader.next()
        assert (entries.type_url, entries.names) == (SE, ["default/a.example", "default/b.example"])
        assert (await reader.next()).type_url == WE

        kinds = {c.proxy_id: c.client_kind for c in xds(harness).connections.values()}
        assert kinds == {ISTIOD: "istiod (MCP)", envoy.node.id: "proxy"}


async def test_more_config_types_than_the_limit_end_the_stream(harness: Harness) -> None:
    harness.memory.set([svc("a.example")])
    await harness.settle()
    kinds = [f"group{i}.example.com/v1/Kind" for i in range(MAX_CONFIG_TYPES + 1)]
    async with istiod(harness) as fine:  # at the limit: every type is answered
        got = await answers(fine, *kinds[:MAX_CONFIG_TYPES])
        assert len(got) == MAX_CONFIG_TYPES
    client = AdsClient(harness.target, node_id=ISTIOD, metadata=API, auto_ack=False)
    await client.connect()
    for kind in kinds:
        client.subscribe(kind)
    error = await refusal(client)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert (
        f"{MAX_CONFIG_TYPES + 1} config types asked on one stream (limit {MAX_CONFIG_TYPES})"
        in (error.details() or "")
    )
    assert xds(harness).refused == 1


async def test_debug_views_and_metrics_show_the_istiod(harness: Harness) -> None:
    harness.memory.set([svc("a.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    async with istiod(harness) as client:
        got = await answers(client, SE, WE)
        await config_fence(client)  # the ACKs were read and the answers counted
        fence = client.subscriptions.keys() - {SE, WE}

        (row,) = await get(harness, f"/debug/adsz?proxyID={ISTIOD}")
        assert (row["client"], row["generator"]) == ("istiod (MCP)", "api")
        assert row["subscriptions"] == {SE: ["*"], WE: ["*"], **{f: ["*"] for f in fence}}

        (sync,) = await get(harness, f"/debug/syncz?proxyID={ISTIOD}")
        assert sync["client"] == "istiod (MCP)"
        assert list(sync["types"]) == [SE, WE, *fence]
        se = sync["types"][SE]
        assert se["versionSent"] == se["versionAcked"] == got[SE].message.version_info
        assert se["acked"] is True and se["resourcesSent"] == 1

        values = await metrics(harness)
        assert values[("pilot_xds_pushes", (("type", SE),))] == 1
        assert values[("pilot_xds_pushes", (("type", WE),))] == 1


async def test_only_exported_registries_reach_the_istiod() -> None:
    """A registry with ``export: false`` is served to Envoys but not to istiods: the
    ServiceEntry of a hostname both registries define has the exported one's
    attributes and endpoints."""
    registries = (
        RegistryConfig(name="vms", type="memory"),
        RegistryConfig(name="hidden", type="memory", priority=10, export=False),
    )
    app = App(loopback_settings(registries=registries))
    vms, hidden = (adapter for _, adapter in app._adapters)
    assert isinstance(vms, MemoryAdapter) and isinstance(hidden, MemoryAdapter)
    await app.start()
    try:
        await until(lambda: vms.watches > 0 and hidden.watches > 0)
        vms.set([svc("x.example")], eps("x.example", "10.0.0.1"))
        hidden.set(
            [svc("x.example", port=9090), svc("only-hidden.example")],
            [Endpoint(hostname="x.example", address="10.9.0.1", port=9000, service_port=9090)],
        )
        await until(lambda: not vms.pending and not hidden.pending)
        app.push.push_now()
        target = f"127.0.0.1:{app.grpc_port}"
        async with AdsClient(target) as envoy:
            envoy.subscribe("cds")
            assert (await envoy.next("cds")).registry_names == [
                "outbound|8080||only-hidden.example",
                "outbound|9090||x.example",
            ]
        async with AdsClient(target, node_id=ISTIOD, metadata=API) as client:
            got = await answers(client, SE, WE)
            assert got[SE].names == ["default/x.example"]
            (entry,) = got[SE].decode()
            body = unpack(entry, istio_pb.ServiceEntry)
            assert [p.number for p in body.ports] == [8080]
            assert entry.metadata.labels["registryd.io/registry"] == "vms"
            (workload,) = got[WE].decode()
            assert unpack(workload, istio_pb.WorkloadEntry).address == "10.0.0.1"
    finally:
        await app.stop()


async def test_a_delta_client_gets_service_entries_by_wildcard(harness: Harness) -> None:
    harness.memory.set(
        [svc("a.example"), svc("b.example")],
        eps("a.example", "10.0.0.1") + eps("b.example", "10.0.1.1"),
    )
    await harness.settle()
    async with DeltaAdsClient(harness.target, node_id=ISTIOD, metadata=API) as client:
        client.subscribe(SE)  # no names: every ServiceEntry
        first = await client.next(SE)
        assert first.type_url == SE
        assert first.names == ["default/a.example", "default/b.example"]
        (conn,) = xds(harness).connections.values()
        assert conn.states[SE].wildcard
        entries = {r.metadata.name: r for r in first.decode()}
        assert entries["default/b.example"].body.type_url == istio_pb.SERVICE_ENTRY

        harness.memory.delete("b.example")
        await harness.settle()
        gone = await client.next(SE)
        assert (gone.names, gone.removed) == ([], ["default/b.example"])
        assert list(client.held[SE]) == ["default/a.example"]


async def test_pushz_traces_the_istiods_acks(harness: Harness) -> None:
    harness.memory.set([svc("a.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    async with istiod(harness) as client:
        await answers(client, SE, WE)
        harness.memory.upsert(svc("a.example"), eps("a.example", "10.0.0.2"))
        await harness.settle()  # a push: the WorkloadEntry changes
        changed = await client.next(WE)
        await config_fence(client)  # its ACK was read
        version = int(changed.message.version_info.rsplit("-", 1)[1])
        pushes = await get(harness, f"/debug/pushz?proxyID={ISTIOD}")
        (push,) = [p for p in pushes if p["version"] == version]  # the push that carried it
        (proxy,) = push["proxies"]
        assert proxy["proxyID"] == ISTIOD, proxy
        assert WE in proxy["types"] and proxy["types"][WE]["ackedMs"] is not None, proxy
