"""``--xdsWorkers 2``: two worker processes share the xDS port, fed by the main process.

ADS clients each on their own TCP connection are spread over the workers by the kernel
(``SO_REUSEPORT``); clients are added until both workers serve some.  Every client gets
the same versions and bytes whichever worker serves it, a change reaches all of them,
and the debug endpoints and metrics show all streams as one daemon.  A worker killed
with SIGKILL is restarted; its clients' streams end and they are served the current
state when they reconnect, while the other worker's streams stay open and get the next
change as their next response (no resend).  A worker stopped with SIGSTOP (alive, but
silent) is marked by the debug endpoints, makes ``/ready`` 503 and is never waited for,
then killed and replaced once its heartbeat times out.  A log level changed on the
debug port reaches the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from registryd.testing.ads import AdsClient, DeltaAdsClient
from registryd.web.server import MISSING_HEADER
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_entries
from tests.e2e.loop_thread import LoopThread
from tests.support.procs import Registryd, http_get, poll

HOST = "web.example"
CLUSTER = f"outbound|80||{HOST}"
MAX_CLIENTS = 40  # all on one worker: probability 2**-39


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


def node(i: int) -> str:
    return f"sidecar~127.0.0.{i % 200 + 1}~client-{i}.default~default.svc.cluster.local"


def get_json(registryd: Registryd, path: str) -> Any:
    status, body = http_get(registryd.http_port, path)
    assert status == 200, f"{path}: {status} {body}"
    return json.loads(body)


def get_json_headers(registryd: Registryd, path: str) -> tuple[dict[str, str], Any]:
    """``path``'s response headers and JSON body (200 expected)."""
    url = f"http://127.0.0.1:{registryd.http_port}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200, path
        return dict(response.headers), json.loads(response.read())


CUMULATIVE = ("counter", "histogram", "unknown")  # metric types that only grow
# ("unknown": istiod's counters, exposed untyped)


def metric_values(
    registryd: Registryd, only: tuple[str, ...] | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the daemon's ``/metrics``; with ``only``, those of the families of
    these types, their ``*_created`` timestamps left out."""
    status, body = http_get(registryd.monitoring_port, "/metrics")
    assert status == 200, body
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        if only is None or family.type in only
        for s in family.samples
        if only is None or not s.name.endswith("_created")
    }


def workers_of(registryd: Registryd) -> dict[str, tuple[int, int]]:
    """Connection id -> (worker, worker pid), from /debug/connections."""
    return {
        c["connectionID"]: (c["worker"], c["workerPid"])
        for c in get_json(registryd, "/debug/connections")
    }


def write_web(stack: Stack, *addresses: str) -> None:
    entry = service_entry(HOST, 80, [(a, 8080) for a in addresses])
    write_entries(stack.config_dir / "web.yaml", entry)


async def first_state(client: AdsClient) -> tuple[str, list[bytes]]:
    """The client's first CDS response: its version and resources (serialized)."""
    message = (await client.next("cds", timeout=15)).message
    return message.version_info, [r.SerializeToString() for r in message.resources]


class Clients:
    """ADS clients, each with a TCP connection of its own (a local subchannel pool)."""

    def __init__(self, registryd: Registryd) -> None:
        self.target = f"127.0.0.1:{registryd.grpc_port}"
        self.sotw: list[AdsClient] = []

    async def add(self, i: int) -> AdsClient:
        client = AdsClient(
            self.target,
            node_id=node(i),
            channel_options=[("grpc.use_local_subchannel_pool", 1)],
        )
        await client.connect()
        client.subscribe("cds")
        client.subscribe("eds", [CLUSTER])
        self.sotw.append(client)
        return client

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.sotw))


async def endpoints_of(client: AdsClient | DeltaAdsClient) -> set[str]:
    """The addresses of the next EDS response's endpoints."""
    response = await client.next("eds", timeout=15)
    (cla,) = response.decode()
    return {
        lb.endpoint.address.socket_address.address
        for group in cla.endpoints
        for lb in group.lb_endpoints
    }


def test_clients_of_every_worker_get_one_state_and_read_as_one_daemon(
    stack: Stack, loop: LoopThread
) -> None:
    write_web(stack, "10.0.0.1")
    registryd = stack.start_registryd("--xdsWorkers=2")
    clients = Clients(registryd)
    states: dict[str, tuple[str, list[bytes]]] = {}
    for i in range(MAX_CLIENTS):
        client = loop.call(clients.add(i))
        states[client.node.id] = loop.call(first_state(client))
        if len(clients.sotw) >= 4 and {w for w, _ in workers_of(registryd).values()} == {1, 2}:
            break
    delta = DeltaAdsClient(clients.target, node_id=node(99))

    async def start_delta() -> None:
        await delta.connect()
        delta.subscribe("eds", [CLUSTER])

    loop.call(start_delta())
    try:
        served = workers_of(registryd)
        assert {w for w, _ in served.values()} == {1, 2}
        # one state: the same version and the same bytes from either worker
        assert len({version for version, _ in states.values()}) == 1
        assert len({tuple(resources) for _, resources in states.values()}) == 1
        for client in clients.sotw:
            assert loop.call(endpoints_of(client)) == {"10.0.0.1"}
        assert loop.call(endpoints_of(delta)) == {"10.0.0.1"}

        write_web(stack, "10.0.0.1", "10.0.0.2")
        streams: list[AdsClient | DeltaAdsClient] = [*clients.sotw, delta]
        for stream in streams:
            assert loop.call(endpoints_of(stream)) == {"10.0.0.1", "10.0.0.2"}

        count = len(clients.sotw) + 1
        connections = get_json(registryd, "/debug/connections")
        assert len(connections) == count
        assert len(get_json(registryd, "/debug/syncz")) == count
        assert len(get_json(registryd, "/debug/adsz")) == count
        dump = get_json(registryd, f"/debug/config_dump?proxyID={node(0)}")
        assert any(CLUSTER in json.dumps(config) for config in dump["configs"])

        def acked_by_all() -> bool:
            (push, *_) = get_json(registryd, "/debug/pushz?limit=1")
            proxies = push.get("proxies", [])
            return len(proxies) == count and all(p["state"] == "acked" for p in proxies)

        poll(
            acked_by_all,
            "the change's push to be ACKed by every client on both workers",
            details=lambda: (
                json.dumps(get_json(registryd, "/debug/pushz?limit=3"), indent=1)
                + "\n"
                + stack.logs()
            ),
        )
        metrics = metric_values(registryd)
        assert metrics[("registryd_xds_streams", (("type", "sotw"),))] == count - 1
        assert metrics[("registryd_xds_streams", (("type", "delta"),))] == 1
        assert sum(v for (name, _), v in metrics.items() if name == "pilot_xds") == count
        assert metrics[("registryd_xds_workers", (("state", "up"),))] == 2
        assert metrics[("pilot_services", ())] == 1  # counted once, by the main process
    finally:
        loop.call(clients.close())
        loop.call(delta.close())


def spread(loop: LoopThread, clients: Clients, registryd: Registryd) -> dict[int, str]:
    """Add clients, each served the first state, until both workers serve some (and at
    least four in all); client index -> connection id."""
    ids: dict[int, str] = {}
    for i in range(MAX_CLIENTS):
        client = loop.call(clients.add(i))
        loop.call(first_state(client))
        assert loop.call(endpoints_of(client)) == {"10.0.0.1"}
        served = workers_of(registryd)
        ids[i] = next(c for c in served if c not in ids.values())
        if len(clients.sotw) >= 4 and {w for w, _ in served.values()} == {1, 2}:
            break
    return ids


def test_a_killed_worker_is_restarted_and_only_its_clients_reconnect(
    stack: Stack, loop: LoopThread
) -> None:
    write_web(stack, "10.0.0.1")
    registryd = stack.start_registryd("--xdsWorkers=2")
    clients = Clients(registryd)
    ids = spread(loop, clients, registryd)
    try:
        served = workers_of(registryd)
        victim_worker, victim_pid = served[ids[0]]
        victims = [i for i, c in ids.items() if served[c][0] == victim_worker]
        survivors = [i for i in ids if i not in victims]
        assert victims and survivors
        counted = metric_values(registryd, CUMULATIVE)
        assert counted[("pilot_xds_pushes", (("type", "cds"),))] >= len(ids)

        os.kill(victim_pid, signal.SIGKILL)
        for i in victims:
            loop.call(clients.sotw[i].wait_ended(timeout=15))

        def restarted() -> bool:
            metrics = metric_values(registryd)
            failures = metrics.get(("registryd_task_failures_total", (("task", "xds-worker"),)))
            return failures == 1 and metrics[("registryd_xds_workers", (("state", "up"),))] == 2

        poll(restarted, "the killed worker to be counted and started again")
        # what the killed worker had counted stays counted: no counter goes down
        after = metric_values(registryd, CUMULATIVE)
        lower = {k: (v, after.get(k)) for k, v in counted.items() if after.get(k, -1.0) < v}
        assert not lower, lower
        now = workers_of(registryd)
        for i in survivors:  # the same streams, still open
            assert ids[i] in now
            assert not clients.sotw[i].ended
        assert all(ids[i] not in now for i in victims)
        assert {pid for _, pid in now.values()}.isdisjoint({victim_pid})

        # the killed worker's clients reconnect and are served the current state
        async def reconnect(i: int) -> AdsClient:
            await clients.sotw[i].close()
            return await clients.add(1000 + i)

        again = [loop.call(reconnect(i)) for i in victims]
        for client in again:
            loop.call(first_state(client))
            assert loop.call(endpoints_of(client)) == {"10.0.0.1"}

        write_web(stack, "10.0.0.1", "10.0.0.3")
        for client in [clients.sotw[i] for i in survivors] + again:
            # the next response is the change itself: nothing was resent meanwhile
            assert loop.call(endpoints_of(client)) == {"10.0.0.1", "10.0.0.3"}
        status, _ = http_get(registryd.http_port, "/ready")
        assert status == 200
    finally:
        loop.call(clients.close())


def started_pid(registryd: Registryd, worker: int) -> int | None:
    """The pid of the last process started for ``worker``, from the daemon's log."""
    found = re.findall(rf"xDS worker {worker} started \(pid (\d+)\)", registryd.output())
    return int(found[-1]) if found else None


def test_a_stopped_worker_is_marked_then_killed_and_replaced(
    stack: Stack, loop: LoopThread
) -> None:
    write_web(stack, "10.0.0.1")
    registryd = stack.start_registryd("--xdsWorkers=2", "--xdsWorkerHeartbeatTimeout=4s")
    clients = Clients(registryd)
    ids = spread(loop, clients, registryd)
    served = workers_of(registryd)
    victim_worker, victim_pid = served[ids[0]]
    victims = [i for i, c in ids.items() if served[c][0] == victim_worker]
    survivors = [i for i in ids if i not in victims]
    assert victims and survivors
    assert started_pid(registryd, victim_worker) == victim_pid
    counted = metric_values(registryd, CUMULATIVE)
    failure = ("registryd_task_failures_total", (("task", "xds-worker"),))
    try:
        os.kill(victim_pid, signal.SIGSTOP)

        # while it is silent: /ready names it, listings leave it out and say so
        def not_ready() -> str | None:
            status, body = http_get(registryd.http_port, "/ready")
            return body if status == 503 else None

        reason = poll(not_ready, "/ready to say the stopped worker does not answer")
        silent = f"xDS worker {victim_worker} (pid {victim_pid}) has not answered"
        assert silent in reason
        for view in ("connections", "syncz"):
            headers, listed = get_json_headers(registryd, f"/debug/{view}")
            assert {c["connectionID"] for c in listed} == {ids[i] for i in survivors}
            assert silent in headers.get(MISSING_HEADER, ""), headers
        hung = metric_values(registryd)  # answers; the silent worker counts as before
        assert hung[("registryd_xds_workers", (("state", "hung"),))] == 1
        lower = {k: (v, hung.get(k)) for k, v in counted.items() if hung.get(k, -1.0) < v}
        assert not lower, lower

        write_web(stack, "10.0.0.1", "10.0.0.2")  # served while the worker is stopped
        for i in survivors:
            assert loop.call(endpoints_of(clients.sotw[i])) == {"10.0.0.1", "10.0.0.2"}

        for i in victims:  # killed at last: their streams end
            loop.call(clients.sotw[i].wait_ended(timeout=30))

        def replaced() -> bool:
            metrics = metric_values(registryd)
            return (
                metrics.get(failure) == 1
                and metrics[("registryd_xds_workers", (("state", "up"),))] == 2
                and started_pid(registryd, victim_worker) not in (None, victim_pid)
                and not Path(f"/proc/{victim_pid}").exists()  # reaped, not a zombie
            )

        poll(replaced, "the stopped worker to be killed, reaped and replaced", deadline=30)
        assert re.search(
            rf"xDS worker {victim_worker} \(pid {victim_pid}\) did not answer for "
            r"[0-9.]+s \(hung\): killed it",
            registryd.output(),
        ), registryd.tail()
        now = workers_of(registryd)
        assert all(ids[i] in now and not clients.sotw[i].ended for i in survivors)
        headers, _ = get_json_headers(registryd, "/debug/connections")
        assert MISSING_HEADER not in headers
        status, _ = http_get(registryd.http_port, "/ready")
        assert status == 200

        # its clients reconnect, to either worker, and are served the current state
        async def reconnect(i: int) -> AdsClient:
            await clients.sotw[i].close()
            return await clients.add(1000 + i)

        for client in [loop.call(reconnect(i)) for i in victims]:
            loop.call(first_state(client))
            assert loop.call(endpoints_of(client)) == {"10.0.0.1", "10.0.0.2"}
        after = metric_values(registryd, CUMULATIVE)
        lower = {k: (v, after.get(k)) for k, v in counted.items() if after.get(k, -1.0) < v}
        assert not lower, lower
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim_pid, signal.SIGCONT)
        loop.call(clients.close())


def test_a_log_level_set_on_the_debug_port_reaches_the_workers(
    stack: Stack, loop: LoopThread
) -> None:
    write_web(stack, "10.0.0.1")
    registryd = stack.start_registryd("--xdsWorkers=2", "--log_output_level=default:info")
    clients = Clients(registryd)
    try:
        before = loop.call(clients.add(1))
        loop.call(first_state(before))
        assert f"{node(1)} requested" not in registryd.output()
        request = urllib.request.Request(
            f"http://127.0.0.1:{registryd.http_port}/debug/logging/xds",
            data=b'{"output_level": "debug"}',
            method="PUT",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        for i in range(2, 2 + 6):  # clients on both workers, most likely; either shows it
            loop.call(first_state(loop.call(clients.add(i))))
        poll(
            lambda: any(f"{node(i)} requested" in registryd.output() for i in range(2, 8)),
            "a worker to log a client's request at debug",
        )
    finally:
        loop.call(clients.close())
