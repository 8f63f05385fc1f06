"""ADS protocol behaviour, with an in-process registryd and a real grpc.aio client."""

from __future__ import annotations

import asyncio
import socket

from envoy.config.cluster.v3 import cluster_pb2

from registryd.model import Endpoint, Port, Service
from registryd.testing import AdsClient
from registryd.testing.ads import TYPES
from tests.xds.quiet import nothing_pending

CDS, EDS, LDS, RDS = TYPES["cds"], TYPES["eds"], TYPES["lds"], TYPES["rds"]


def svc(host: str, port: int = 8080, protocol: str = "HTTP") -> Service:
    return Service(hostname=host, ports=(Port(number=port, name="http", protocol=protocol),))


def eps(host: str, *addresses: str, port: int = 8080) -> list[Endpoint]:
    return [Endpoint(hostname=host, address=a, port=9000, service_port=port) for a in addresses]


async def test_envoy_style_flow_cds_eds_lds_rds(harness) -> None:  # type: ignore[no-untyped-def]
    harness.memory.set([svc("a.example"), svc("b.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    async with AdsClient(harness.target) as client:
        client.subscribe("cds")
        cds = await client.next("cds")
        assert cds.registry_names == ["outbound|8080||a.example", "outbound|8080||b.example"]
        clusters = {c.name: c for c in cds.decode()}
        assert set(clusters) - set(cds.registry_names) == {"BlackHoleCluster", "PassthroughCluster"}
        clusters = [clusters[n] for n in cds.registry_names]
        assert clusters[0].type == cluster_pb2.Cluster.EDS
        assert clusters[0].eds_cluster_config.eds_config.HasField("ads")
        client.subscribe("eds", cds.eds_names)
        eds = await client.next("eds")
        assert sorted(eds.names) == cds.eds_names
        cla = {c.cluster_name: c for c in eds.decode()}
        group = cla["outbound|8080||a.example"].endpoints[0]
        assert group.HasField("locality")
        assert group.lb_endpoints[0].endpoint.address.socket_address.address == "10.0.0.1"
        assert group.lb_endpoints[0].endpoint.address.socket_address.port_value == 9000
        assert cla["outbound|8080||b.example"].endpoints == []
        client.subscribe("lds")
        lds = await client.next("lds")
        assert lds.registry_names == ["0.0.0.0_8080"]
        client.subscribe("rds", ["8080"])
        rds = await client.next("rds")
        (route,) = rds.decode()
        domains = {d for vh in route.virtual_hosts for d in vh.domains}
        assert {"a.example", "a.example.", "b.example", "b.example.", "*"} <= domains
        await nothing_pending(client)


async def test_endpoint_change_sends_only_changed_cla(harness) -> None:  # type: ignore[no-untyped-def]
    harness.memory.set(
        [svc("a.example"), svc("b.example")],
        eps("a.example", "10.0.0.1") + eps("b.example", "10.0.1.1"),
    )
    await harness.settle()
    async with AdsClient(harness.target) as client:
        client.subscribe("cds")
        cds = await client.next("cds")
        client.subscribe("eds", cds.eds_names)
        first = await client.next("eds")
        harness.memory.upsert(svc("a.example"), eps("a.example", "10.0.0.1", "10.0.0.2"))
        await harness.settle()
        update = await client.next("eds")
        assert update.registry_names == ["outbound|8080||a.example"]
        assert update.message.version_info != first.message.version_info
        (cla,) = update.decode()
        assert len(cla.endpoints[0].lb_endpoints) == 2
        await nothing_pending(client)  # no CDS resend for an endpoint-only change


async def test_nack_is_recorded_and_not_resent(harness) -> None:  # type: ignore[no-untyped-def]
    harness.memory.set([svc("a.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    async with AdsClient(harness.target) as client:
        client.reject[CDS] = "cluster rejected by test"
        client.subscribe("cds")
        await client.next("cds")
        await nothing_pending(client)
        (conn,) = harness.app.serving.xds.connections.values()
        state = conn.states[CDS]
        assert state.last_nack == "cluster rejected by test"
        assert state.nacks == 1
        # an unrelated push does not resend the rejected clusters
        harness.memory.upsert(svc("a.example"), eps("a.example", "10.0.0.9"))
        await harness.settle()
        await nothing_pending(client)
        # new content is sent again
        del client.reject[CDS]
        harness.memory.upsert(svc("a.example", protocol="GRPC"), eps("a.example", "10.0.0.9"))
        await harness.settle()
        again = await client.next("cds")
        assert again.registry_names == ["outbound|8080||a.example"]
        await nothing_pending(client)  # the ACK, sent before, has been read
        assert conn.states[CDS].acked_version == again.message.version_info


async def test_reconnect_gets_full_state_whatever_version(harness) -> None:  # type: ignore[no-untyped-def]
    harness.memory.set([svc("a.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    async with AdsClient(harness.target) as client:
        client.subscribe("cds")
        first = await client.next("cds")
    async with AdsClient(harness.target) as client:
        client.send(CDS, [], version=first.message.version_info)
        again = await client.next("cds")
        assert again.names == first.names


async def test_subscribe_and_unsubscribe_eds(harness) -> None:  # type: ignore[no-untyped-def]
    harness.memory.set(
        [svc("a.example"), svc("b.example")],
        eps("a.example", "10.0.0.1") + eps("b.example", "10.0.1.1"),
    )
    await harness.settle()
    a, b = "outbound|8080||a.example", "outbound|8080||b.example"
    async with AdsClient(harness.target) as client:
        client.subscribe("eds", [a])
        assert (await client.next("eds")).names == [a]
        client.subscribe("eds", [a, b])
        assert (await client.next("eds")).names == [b]  # only the newly subscribed one
        client.subscribe("eds", [a])
        await nothing_pending(client)
        harness.memory.upsert(svc("b.example"), eps("b.example", "10.0.1.2"))
        await harness.settle()
        await nothing_pending(client)  # b is no longer subscribed
        client.subscribe("eds", [a, b])
        assert (await client.next("eds")).names == [b]  # re-subscribing sends it again
        client.subscribe("eds", [a, b, "outbound|1||missing.example"])
        missing = await client.next("eds")
        assert missing.names == ["outbound|1||missing.example"]
        assert missing.decode()[0].endpoints == []


async def test_full_push_order_is_cds_eds_lds_rds(harness) -> None:  # type: ignore[no-untyped-def]
    harness.memory.set([svc("a.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    async with AdsClient(harness.target) as client:
        for kind, names in (
            ("cds", []),
            ("eds", ["outbound|8080||a.example", "outbound|9090||a.example"]),
            ("lds", []),
            ("rds", ["8080", "9090"]),
        ):
            client.subscribe(kind, names)
            await client.next(kind)
        service = Service(
            hostname="a.example",
            ports=(
                Port(number=8080, name="http", protocol="HTTP"),
                Port(number=9090, name="http-2", protocol="HTTP"),
            ),
        )
        harness.memory.upsert(
            service, eps("a.example", "10.0.0.1") + eps("a.example", "10.0.0.1", port=9090)
        )
        await harness.settle()
        order = [(await client.next()).type_url for _ in range(4)]
        assert order == [CDS, EDS, LDS, RDS]


async def test_proxyless_grpc_listener(harness) -> None:  # type: ignore[no-untyped-def]
    harness.memory.set([svc("a.example", 50051, "GRPC")], eps("a.example", "10.0.0.1", port=50051))
    await harness.settle()
    async with AdsClient(harness.target, metadata={"GENERATOR": "grpc"}) as client:
        client.subscribe("lds", ["a.example:50051"])
        lds = await client.next("lds")
        assert lds.names == ["a.example:50051"]
        (listener,) = lds.decode()
        assert listener.HasField("api_listener")
        from envoy.extensions.filters.network.http_connection_manager.v3 import (
            http_connection_manager_pb2 as hcm,
        )

        manager = hcm.HttpConnectionManager()
        listener.api_listener.api_listener.Unpack(manager)
        assert manager.http_filters[-1].name == "envoy.filters.http.router"
        # istiod grpcgen/lds.go buildOutboundListeners: routes over RDS, named as the cluster
        assert manager.rds.route_config_name == "outbound|50051||a.example"
        assert manager.rds.config_source.HasField("ads")
        client.subscribe("rds", ["outbound|50051||a.example"])
        (route,) = (await client.next("rds")).decode()
        assert route.virtual_hosts[0].routes[0].route.cluster == "outbound|50051||a.example"


class FreezableRelay:
    """A TCP relay between a client and the server that can stop reading the server's
    bytes, like a client whose host stopped reading its socket."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port, limit=16384
        )
        sock = up_writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, freeze: bool) -> None:
            while data := await src.read(16384):
                if freeze and self.frozen.is_set():
                    await asyncio.Event().wait()  # never read again
                dst.write(data)
                await dst.drain()

        self.tasks += [
            asyncio.create_task(pipe(reader, up_writer, False)),
            asyncio.create_task(pipe(up_reader, writer, True)),
        ]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.server is not None:
            self.server.close()


async def test_stalled_client_does_not_block_others(harness) -> None:  # type: ignore[no-untyped-def]
    """A client that stops reading fills the TCP buffers and blocks its own writer; the
    other clients keep getting every push on time."""
    pad = "outbound|8080||pad.example"
    names = ["outbound|8080||a.example", pad]
    harness.memory.set([svc("a.example"), svc("pad.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    relay = FreezableRelay(harness.app.grpc_port)
    stalled = AdsClient(f"127.0.0.1:{await relay.start()}")
    await stalled.connect()
    stalled.subscribe("eds", names)
    await stalled.next("eds")
    relay.frozen.set()
    async with AdsClient(harness.target) as healthy:
        healthy.subscribe("eds", names)
        await healthy.next("eds")
        for round_ in range(60):
            # ~130 kB per ClusterLoadAssignment: the stalled stream's buffers fill fast
            addresses = [f"10.{round_}.{i // 250}.{i % 250 + 1}" for i in range(3000)]
            harness.memory.upsert(svc("pad.example"), eps("pad.example", *addresses))
            await harness.settle()
            update = await healthy.next("eds", timeout=30.0)  # a hang guard, not a bound
            assert update.names == [pad]
            assert len(update.decode()[0].endpoints[0].lb_endpoints) == 3000
        latest = harness.app.serving.xds.snapshot.version
        behind = [
            c for c in harness.app.serving.xds.connections.values() if c.written_version < latest
        ]
        assert len(behind) == 1, "the stalled client should be left behind"
    await relay.close()
    await stalled.close()


async def test_export_to_limits_visibility_by_namespace(harness) -> None:  # type: ignore[no-untyped-def]
    public = svc("public.example")
    private = Service(
        hostname="private.example",
        namespace="team-a",
        ports=(Port(number=8080, name="http", protocol="HTTP"),),
        export_to=(".",),
    )
    harness.memory.set([public, private], eps("private.example", "10.0.0.1"))
    await harness.settle()
    team_a = "sidecar~10.0.0.5~app-1.team-a~team-a.svc.cluster.local"
    team_b = "sidecar~10.0.0.6~app-1.team-b~team-b.svc.cluster.local"
    async with (
        AdsClient(harness.target, node_id=team_a) as a,
        AdsClient(harness.target, node_id=team_b) as b,
    ):
        for client in (a, b):
            client.subscribe("cds")
            client.subscribe("rds", ["8080"])
        a_cds, b_cds = await a.next("cds"), await b.next("cds")
        assert a_cds.registry_names == [
            "outbound|8080||private.example",
            "outbound|8080||public.example",
        ]
        assert b_cds.registry_names == ["outbound|8080||public.example"]
        a_domains = {
            d for vh in (await a.next("rds")).decode()[0].virtual_hosts for d in vh.domains
        }
        b_domains = {
            d for vh in (await b.next("rds")).decode()[0].virtual_hosts for d in vh.domains
        }
        assert "private.example" in a_domains and "public.example" in a_domains
        assert "private.example" not in b_domains and "public.example" in b_domains
        # exporting it to everyone shows it to team-b as well
        harness.memory.upsert(
            Service(hostname="private.example", namespace="team-a", ports=private.ports),
            eps("private.example", "10.0.0.1"),
        )
        await harness.settle()
        assert "outbound|8080||private.example" in (await b.next("cds")).names
