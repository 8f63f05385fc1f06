"""Several registryd replicas behind one address, with real processes.

Replicas share nothing but their registries: each reads the same ServiceEntry directory
and watches the same etcd, so each serves the same state on its own.  A client is
connected to one replica at a time.

* Failover: a real Envoy whose ``xds-grpc`` cluster lists two replicas.  The replica it
  is connected to hangs (SIGSTOP) while etcd changes, then crashes (SIGKILL).  Envoy
  moves to the other replica within its reconnect backoff, keeps every endpoint and
  carries traffic throughout, and gets the current state (the change the dead replica
  never sent) in one response per type; a file edit made afterwards reaches it too.
* Rebalancing: ``--keepaliveMaxServerConnectionAge`` makes gRPC send GOAWAY to every
  connection after that age (istiod: ``PILOT_KEEPALIVE_MAX_SERVER_CONNECTION_AGE``,
  pkg/keepalive/options.go).  100 ADS clients that all start on one replica and move to
  a replica picked at random when they get GOAWAY end up spread over both.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from prometheus_client.parser import text_string_to_metric_families

from registryd.testing.ads import TYPES
from tests.e2e.admin import Admin
from tests.e2e.checks import (
    LOCAL,
    Traffic,
    assert_accepted,
    use_api,
    wait_answers,
    wait_hosts,
)
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_entries
from tests.e2e.loop_thread import LoopThread
from tests.e2e.test_etcd_outage import etcd_registry, etcd_txn, instance
from tests.support.etcd_server import EtcdServer
from tests.support.procs import (
    DEADLINE,
    Registryd,
    http_get,
    listener_port,
    listener_ports,
    poll,
    xds_servers,
)

ENVOY_ID = "sidecar~127.0.0.1~envoy-1.default~default.svc.cluster.local"
FILE_HOST = "files.example"
ETCD_HOST = "web.etcd.example"
PREFIX = "/registryd/services/"
SHORT_TYPES = ("cds", "eds", "lds", "rds")


def get_json(port: int, path: str) -> Any:
    status, body = http_get(port, path)
    assert status == 200, f"{path}: {status} {body}"
    return json.loads(body)


def connected(replica: Registryd) -> list[str]:
    """Proxy ids of the clients connected to ``replica`` (its /debug/connections)."""
    return [c["proxyID"] for c in get_json(replica.http_port, "/debug/connections")]


def responses_sent(replica: Registryd) -> dict[str, int]:
    """Responses ``replica`` sent so far, per type (``pilot_xds_pushes``)."""
    status, body = http_get(replica.monitoring_port, "/metrics")
    assert status == 200, body
    sent = dict.fromkeys(SHORT_TYPES, 0)
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "pilot_xds_pushes" and sample.labels.get("type") in sent:
                sent[sample.labels["type"]] = int(sample.value)
    return sent


def acks(replica: Registryd, proxy_id: str) -> dict[str, int]:
    """ACKs per type of ``proxy_id``'s stream on ``replica`` (its /debug/syncz)."""
    (sync,) = get_json(replica.http_port, "/debug/syncz?proxyID=" + proxy_id)
    return {kind: state["acks"] for kind, state in sync["types"].items()}


def pushes_of(replica: Registryd, hostname: str) -> int:
    """How many of ``replica``'s recent pushes carried ``hostname``."""
    return sum(
        hostname in p["trigger"]["sample"] for p in get_json(replica.http_port, "/debug/pushz")
    )


def etcd_config(stack: Stack, etcd: EtcdServer) -> str:
    return f"--config={etcd_registry(etcd, stack.workdir / 'registryd.yaml')}"


def test_envoy_fails_over_to_the_other_replica_with_traffic_and_current_state(
    stack: Stack, api_type: str
) -> None:
    (stack.workdir / "etcd").mkdir()
    etcd = EtcdServer(stack.workdir / "etcd")
    etcd.on_start.append(stack.track)
    etcd.start()
    web_a, web_b = stack.http_backend("web-a"), stack.http_backend("web-b")
    file_a, file_b = stack.http_backend("file-a"), stack.http_backend("file-b")
    web_port, file_port = listener_ports(2)
    web_cluster = f"outbound|{web_port}||{ETCD_HOST}"
    file_cluster = f"outbound|{file_port}||{FILE_HOST}"
    etcd_txn(etcd, put={f"{PREFIX}web/a": instance(web_a.port, web_port)})
    entries = stack.config_dir / "files.yaml"
    write_entries(entries, service_entry(FILE_HOST, file_port, [(LOCAL, file_a.port)]))

    config = etcd_config(stack, etcd)
    replicas = [stack.start_registryd(config, name=f"registryd-{n}") for n in (1, 2)]
    servers = use_api(api_type, xds_servers([r.grpc_port for r in replicas]))
    envoy = stack.start_envoy(replicas[0], servers)
    admin = Admin(envoy.admin_port)
    wait_hosts(admin, web_cluster, [(LOCAL, web_a.port)], stack.logs)
    wait_hosts(admin, file_cluster, [(LOCAL, file_a.port)], stack.logs)
    wait_answers(web_port, ETCD_HOST, {"web-a"}, only=True, details=stack.logs)
    wait_answers(file_port, FILE_HOST, {"file-a"}, only=True, details=stack.logs)

    # -- which replica Envoy uses: the one whose /debug/connections lists it -------------
    first, second = poll(
        lambda: next(
            ((r, o) for r, o in (replicas, replicas[::-1]) if connected(r) == [ENVOY_ID]),
            None,
        ),
        "one replica to list Envoy on /debug/connections",
        details=stack.logs,
    )
    assert connected(second) == []
    assert responses_sent(second) == dict.fromkeys(SHORT_TYPES, 0)
    initial = responses_sent(first)

    traffic = Traffic(web_port, [ETCD_HOST]).start()
    file_traffic = Traffic(file_port, [FILE_HOST]).start()
    try:
        # -- the connected replica hangs while etcd changes: only the other one sees it ---
        first.pause()
        hung = time.monotonic()
        pushes = pushes_of(second, ETCD_HOST)
        etcd_txn(etcd, put={f"{PREFIX}web/b": instance(web_b.port, web_port)})
        poll(
            lambda: pushes_of(second, ETCD_HOST) > pushes,
            f"the other replica to push the new endpoint of {ETCD_HOST}",
            details=stack.logs,
        )
        assert admin.hosts(web_cluster) == [(LOCAL, web_a.port)]  # the hung one sent nothing

        # -- it crashes: Envoy moves to the other within its backoff, traffic flows ---------
        first.kill()
        killed = time.monotonic()
        both = sorted([(LOCAL, web_a.port), (LOCAL, web_b.port)])
        hosts_seen: list[list[tuple[str, int]] | None] = []
        file_hosts_seen: list[list[tuple[str, int]] | None] = []

        def envoy_hosts() -> list[tuple[str, int]] | None:
            file_hosts_seen.append(admin.hosts(file_cluster))
            hosts_seen.append(hosts := admin.hosts(web_cluster))
            return hosts

        poll(
            lambda: envoy_hosts() and connected(second) == [ENVOY_ID],
            "Envoy to connect to the other replica",
            details=stack.logs,
        )
        reconnected = time.monotonic()
        poll(
            lambda: envoy_hosts() == both,
            "Envoy to get the new etcd endpoint from the other replica",
            details=stack.logs,
        )
        current = time.monotonic()
        assert all(h is not None and (LOCAL, web_a.port) in h for h in hosts_seen), hosts_seen
        assert all(h == [(LOCAL, file_a.port)] for h in file_hosts_seen), file_hosts_seen
        wait_answers(web_port, ETCD_HOST, {"web-a", "web-b"}, details=stack.logs)

        # -- the new replica sent the current state once: one response per type ----------
        poll(
            lambda: acks(second, ENVOY_ID) == dict.fromkeys(SHORT_TYPES, 1),
            "Envoy to ACK one response of each type from the other replica",
            details=lambda: f"acks: {acks(second, ENVOY_ID)}\n{stack.logs()}",
        )
        assert responses_sent(second) == dict.fromkeys(SHORT_TYPES, 1)

        # -- an edit made now reaches Envoy through the other replica ----------------------
        write_entries(
            entries,
            service_entry(FILE_HOST, file_port, [(LOCAL, file_a.port), (LOCAL, file_b.port)]),
        )
        wait_hosts(admin, file_cluster, [(LOCAL, file_a.port), (LOCAL, file_b.port)], stack.logs)
        wait_answers(file_port, FILE_HOST, {"file-a", "file-b"}, details=stack.logs)
        # An endpoint change: one more EDS response, nothing else was re-sent meanwhile.
        assert responses_sent(second) == {"cds": 1, "eds": 2, "lds": 1, "rds": 1}
    finally:
        results = traffic.stop() + file_traffic.stop()

    switch = [r for r in results if hung <= r[0] <= current]
    expected = {ETCD_HOST: {"web-a", "web-b"}, FILE_HOST: {"file-a", "file-b"}}
    failures = [r for r in results if r[2] not in expected[r[1]]]
    print(
        f"\nfailover: first replica sent {initial} at Envoy's start; Envoy connected to the "
        f"other {reconnected - killed:.2f}s after the kill, had the change "
        f"{current - killed:.2f}s after; {len(results)} requests "
        f"({len(switch)} from the hang until Envoy had the change, "
        f"{current - hung:.2f}s), {len(failures)} failed"
    )
    assert failures == [], failures[:10]
    assert len(switch) >= 1, "no request was sent during the switch"
    assert_accepted(admin, second)
    envoy.check_alive()
    second.check_alive()


# -- rebalancing with --keepaliveMaxServerConnectionAge ---------------------------------
AGE = 2.0  # seconds: --keepaliveMaxServerConnectionAge of both replicas
CLIENTS = 100
FAIR = 20  # connections each replica must hold at once
MOVES = 30  # reconnects per client at most: every loop is bounded
_ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
GOAWAY, ENDED, STOPPED = "goaway", "stream ended", "stopped"


@dataclass
class Mover:
    """One ADS client with a channel of its own (one connection), on one replica at a
    time.  It subscribes to CDS and ACKs the answer; when the server sends GOAWAY (its
    channel leaves READY) or the stream ends, it closes that stream and opens a new one
    to a replica picked at random, as a client behind a Service would."""

    number: int
    rng: random.Random
    served: list[tuple[float, str]] = field(default_factory=list)  # (when, replica)
    moved: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def node(self) -> base_pb2.Node:
        return base_pb2.Node(id=f"sidecar~127.0.0.1~mover-{self.number}.default~default.svc")

    async def run(self, first: str, targets: tuple[str, ...], stop: asyncio.Event) -> None:
        target = first
        for _ in range(MOVES):
            why = await self._stream(target, stop)
            self.moved[why] += 1
            if why == STOPPED:
                return
            target = self.rng.choice(targets)

    async def _stream(self, target: str, stop: asyncio.Event) -> str:
        """One stream to ``target``: why it was left."""
        outbox: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()

        async def requests() -> Any:
            for _ in range(2):  # the request and its ACK
                yield await outbox.get()
            await stop.wait()

        cds = TYPES["cds"]
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.stream_stream(
                _ADS,
                request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
            )(requests())
            outbox.put_nowait(discovery_pb2.DiscoveryRequest(type_url=cds, node=self.node))
            try:
                response = await call.read()
            except grpc.aio.AioRpcError:
                return ENDED
            if response is grpc.aio.EOF:
                return ENDED
            outbox.put_nowait(
                discovery_pb2.DiscoveryRequest(
                    type_url=cds,
                    version_info=response.version_info,
                    response_nonce=response.nonce,
                )
            )
            self.served.append((time.monotonic(), target))
            waits = {
                asyncio.ensure_future(call.code()): ENDED,
                asyncio.ensure_future(
                    channel.wait_for_state_change(grpc.ChannelConnectivity.READY)
                ): GOAWAY,
                asyncio.ensure_future(stop.wait()): STOPPED,
            }
            # A state other than READY already (GOAWAY came early) ends the wait at once.
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            why = waits[done.pop()]
            for waiting in waits:
                waiting.cancel()
            call.cancel()
            return why


async def mob(
    movers: list[Mover], first: str, targets: tuple[str, ...], stop: asyncio.Event
) -> None:
    await asyncio.gather(*(m.run(first, targets, stop) for m in movers))


def test_max_connection_age_spreads_clients_over_replicas(stack: Stack) -> None:
    entries = stack.config_dir / "files.yaml"
    write_entries(entries, service_entry(FILE_HOST, 8080, [(LOCAL, 9000)]))
    age = f"--keepaliveMaxServerConnectionAge={AGE:g}s"
    # 100 clients move at once: admit them at once (the default, 25/s on two CPUs, would
    # stretch the move over four seconds; that limit has tests of its own)
    rate = "--maxRequestsPerSecond=10000"
    a, b = (stack.start_registryd(age, rate, name=f"registryd-{n}") for n in ("a", "b"))
    targets = tuple(f"127.0.0.1:{r.grpc_port}" for r in (a, b))
    movers = [Mover(n, random.Random(n)) for n in range(CLIENTS)]
    loop = LoopThread()
    stop = asyncio.Event()
    started = time.monotonic()
    running = asyncio.run_coroutine_threadsafe(mob(movers, targets[0], targets, stop), loop.loop)
    try:
        counts: list[tuple[float, int, int]] = []

        def spread() -> bool:
            if running.done():
                running.result()  # a client failed: show why
            counts.append((time.monotonic(), len(connected(a)), len(connected(b))))
            return counts[-1][1] >= FAIR and counts[-1][2] >= FAIR

        poll(spread, f"both replicas to hold >= {FAIR} clients", details=lambda: f"{counts[-5:]}")
        fair = time.monotonic()
    finally:
        loop.loop.call_soon_threadsafe(stop.set)
        running.result(timeout=30)
        loop.close()

    firsts = [m.served[0][1] if m.served else None for m in movers]
    assert firsts == [targets[0]] * CLIENTS, "every client starts on the first replica"
    all_on_a = max(m.served[0][0] for m in movers)
    on_b = {m.number for m in movers if any(t == targets[1] for _, t in m.served)}
    reasons = sum((m.moved for m in movers), collections.Counter[str]())
    print(
        f"\nrebalance: {CLIENTS} clients on replica A {all_on_a - started:.2f}s after start; "
        f"A/B held {counts[-1][1]}/{counts[-1][2]} {fair - started:.2f}s after start "
        f"({(fair - started) / AGE:.1f} connection ages); {len(on_b)} clients were served by B; "
        f"streams left: {dict(reasons)}"
    )
    assert reasons[GOAWAY] >= FAIR, reasons  # GOAWAY moved them, not the grace's hard close
    assert len(on_b) >= FAIR


GRACE = 10.0  # seconds after GOAWAY until gRPC closes the connection (istiod's default)


def envoy_streams(replicas: list[Registryd]) -> set[tuple[Registryd, str]]:
    """Envoy's streams as the replicas list them: (replica, connection id); connection
    ids are counted per replica."""
    return {
        (r, c["connectionID"])
        for r in replicas
        for c in get_json(r.http_port, "/debug/connections")
        if c["proxyID"] == ENVOY_ID
    }


def test_envoy_gets_a_new_stream_after_max_connection_age_and_its_grace(
    stack: Stack, api_type: str
) -> None:
    backend = stack.http_backend("file-a")
    port = listener_port()
    write_entries(
        stack.config_dir / "files.yaml", service_entry(FILE_HOST, port, [(LOCAL, backend.port)])
    )
    age = f"--keepaliveMaxServerConnectionAge={AGE:g}s"
    replicas = [stack.start_registryd(age, name=f"registryd-{n}") for n in (1, 2)]
    servers = use_api(api_type, xds_servers([r.grpc_port for r in replicas]))
    envoy = stack.start_envoy(replicas[0], servers)
    admin = Admin(envoy.admin_port)
    wait_answers(port, FILE_HOST, {"file-a"}, only=True, details=stack.logs)
    before = poll(lambda: envoy_streams(replicas), "Envoy's stream", details=stack.logs)
    since = time.monotonic()

    traffic = Traffic(port, [FILE_HOST]).start()
    try:

        def new_stream() -> tuple[Registryd, str] | None:
            return next(iter(envoy_streams(replicas) - before), None)

        replica, connection = poll(
            new_stream,
            "Envoy to open a new stream once its connection is closed",
            deadline=AGE * 1.1 + GRACE + DEADLINE,
            details=stack.logs,
        )
        moved = time.monotonic()
        poll(
            lambda: acks(replica, connection) == dict.fromkeys(SHORT_TYPES, 1),
            "Envoy to ACK one response of each type on its new stream",
            details=stack.logs,
        )
        wait_answers(port, FILE_HOST, {"file-a"}, only=True, details=stack.logs)
    finally:
        results = traffic.stop()
    failures = [r for r in results if r[2] != "file-a"]
    print(
        f"\nmax connection age {AGE:g}s: Envoy's stream moved from "
        f"{[r.name for r, _ in before]} to "
        f"{replica.name} {moved - since:.1f}s after it was seen; {len(results)} requests, "
        f"{len(failures)} failed"
    )
    assert failures == [], failures[:10]
    assert len(results) >= 1
    assert_accepted(admin, replica)
