"""``registryd wait`` and ``/debug/history`` against a running registryd with a real Envoy
and ADS clients that NACK or never ACK; the command runs as its own process, as a CI
pipeline runs it.  With ``--xdsWorkers 2`` too: ACKs seen by a worker reach the history
in the main process, and stay there when that worker is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from registryd.testing import AdsClient
from registryd.testing.ads import TYPES
from tests.e2e.admin import Admin
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_entries
from tests.e2e.loop_thread import LoopThread
from tests.support.procs import Envoy, Registryd, free_port, http_get, poll

HOST = "web.example"
CLUSTER = f"outbound|8080||{HOST}"
ENVOY = "sidecar~127.0.0.1~envoy-1.default~default.svc.cluster.local"
PICKY = "sidecar~127.0.0.9~picky-1.default~default.svc.cluster.local"
SLOW = "sidecar~127.0.0.8~slow-1.default~default.svc.cluster.local"
NACK = "cluster outbound|8080||web.example: unknown field"


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """``registryd <argv>`` as a process: its exit status, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "registryd", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def wait(registryd: Registryd, *argv: str) -> subprocess.CompletedProcess[str]:
    return cli("wait", f"--server=http://127.0.0.1:{registryd.http_port}", *argv)


def get_json(registryd: Registryd, path: str) -> Any:
    status, body = http_get(registryd.http_port, path)
    assert status == 200, f"{path}: {status} {body}"
    return json.loads(body)


def write_web(stack: Stack, *ports: int) -> None:
    entry = service_entry(HOST, 8080, [(f"127.0.0.{i + 1}", p) for i, p in enumerate(ports)])
    write_entries(stack.config_dir / "web.yaml", entry)


def hosts(envoy: Envoy) -> set[tuple[str, int]]:
    return set(Admin(envoy.admin_port).hosts(CLUSTER) or [])


def pushed(registryd: Registryd, endpoints: int, after: int = 0) -> dict[str, Any]:
    """The newest history entry of HOST after version ``after`` once it shows the
    hostname with ``endpoints`` endpoints added (the file change was read and pushed)."""

    def found() -> dict[str, Any] | None:
        for entry in get_json(registryd, f"/debug/history?hostname={HOST}"):
            added = sum(c["endpoints"]["added"] for c in entry["changes"])
            if added == endpoints and entry["version"] > after:
                return dict(entry)
        return None

    return poll(found, f"a push adding {endpoints} endpoints of {HOST} in /debug/history")


def newest(registryd: Registryd) -> int:
    """The version of the newest push in the history (0: none)."""
    return max((e["version"] for e in get_json(registryd, "/debug/history")), default=0)


def entry_of(registryd: Registryd, version: int) -> dict[str, Any]:
    (entry,) = [e for e in get_json(registryd, "/debug/history") if e["version"] == version]
    return dict(entry)


def metric(registryd: Registryd, name: str) -> float:
    status, body = http_get(registryd.monitoring_port, "/metrics")
    assert status == 200, body
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"no metric {name}")


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


def ads(loop: LoopThread, registryd: Registryd, node: str, **options: Any) -> AdsClient:
    """An ADS client subscribed to every cluster; ``reject`` NACKs."""
    reject: dict[str, str] = options.pop("reject", {})

    async def connect() -> AdsClient:
        client = AdsClient(f"127.0.0.1:{registryd.grpc_port}", node_id=node, **options)
        client.reject = reject
        await client.connect()
        client.subscribe("cds")
        return client

    return loop.call(connect())


def test_wait_for_a_hostname_returns_once_envoy_acked_and_the_history_says_so(
    stack: Stack,
) -> None:
    write_web(stack, 9001)
    registryd = stack.start_registryd()
    envoy = stack.start_envoy(registryd)
    poll(lambda: hosts(envoy) == {("127.0.0.1", 9001)}, "Envoy to get the first endpoint")

    before = newest(registryd)
    write_web(stack, 9001, 9002)
    entry = pushed(registryd, 1, after=before)
    done = wait(registryd, f"--for=hostname/{HOST}", "--proxy=envoy-1.default")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"hostname/{HOST}: version {entry['version']} ACKed by 1 ")
    # ACKed means applied: Envoy holds the change the moment wait returns
    assert hosts(envoy) == {("127.0.0.1", 9001), ("127.0.0.2", 9002)}
    by_push = wait(registryd, f"--for=push/{entry['version']}", "--proxy=sidecar~*")
    assert by_push.returncode == 0, by_push.stderr

    (change,) = entry["changes"]
    assert change["registry"].startswith("serviceentry/")
    assert change["hostnames"] == [HOST]
    assert change["endpoints"] == {"added": 1, "removed": 0, "changed": 0}
    assert entry["kind"] == "endpoints"
    outcome = poll(
        lambda: (o := entry_of(registryd, entry["version"])["outcome"])["proxiesAcked"] and o,
        "the push's ACK in the history",
    )
    assert outcome["proxiesReached"] == 1
    assert outcome["proxiesNacked"] == 0
    assert outcome["lastAckMs"] > 0
    # filters: another hostname or registry does not list it
    assert get_json(registryd, "/debug/history?hostname=other.example") == []
    assert get_json(registryd, "/debug/history?registry=nosuch") == []
    registry = change["registry"]
    assert entry_of(registryd, entry["version"]) in get_json(
        registryd, f"/debug/history?registry={registry}&limit=5"
    )
    held = metric(registryd, "registryd_push_history_bytes")
    assert 0 < held <= metric(registryd, "registryd_push_history_budget_bytes")


def test_wait_exits_1_naming_a_proxy_that_nacked_and_2_on_timeout_or_bad_input(
    stack: Stack, loop: LoopThread
) -> None:
    write_web(stack, 9001)
    registryd = stack.start_registryd()
    clients = [
        ads(loop, registryd, PICKY, reject={TYPES["cds"]: NACK}),
        ads(loop, registryd, SLOW, auto_ack=False),
    ]
    try:

        def answered() -> bool:
            syncz = {e["proxyID"]: e["types"] for e in get_json(registryd, "/debug/syncz")}
            return bool(syncz.get(PICKY, {}).get("cds", {}).get("nacked")) and bool(
                syncz.get(SLOW, {}).get("cds", {}).get("nonceSent")
            )

        poll(answered, "the picky client to NACK and the slow one to be sent CDS")
        nacked = wait(registryd, f"--for=hostname/{HOST}", "--proxy=picky-1.default")
        assert nacked.returncode == 1, nacked.stderr
        (line,) = nacked.stderr.splitlines()
        assert line.startswith(f"registryd: NACK: {PICKY} (http://127.0.0.1:")
        assert "NACKed cds version " in line
        assert line.endswith("cluster outbound|8080||web.example: unknown field")

        slow = wait(registryd, f"--for=hostname/{HOST}", "--proxy=slow-1", "--timeout=1s")
        assert slow.returncode == 2, slow.stderr
        first, *pending = slow.stderr.splitlines()
        assert first.startswith(f"registryd: error: timed out after 1s waiting for hostname/{HOST}")
        assert pending == [f"  {SLOW} (http://127.0.0.1:{registryd.http_port}): CDS"]

        absent = wait(registryd, f"--for=hostname/{HOST}", "--proxy=nobody", "--timeout=0.5")
        assert absent.returncode == 2
        assert "no connected proxy matches --proxy" in absent.stderr
    finally:
        for client in clients:
            loop.call(client.close())

    for argv in (
        ["--for=bogus"],
        ["--for=push/x1"],
        ["--for=hostname/a", "--timeout=-3"],
        ["--for=hostname/a", "--timeout=never"],
    ):
        bad = wait(registryd, *argv)
        assert bad.returncode == 2, (argv, bad.stderr)
        assert len(bad.stderr.splitlines()) == 1 and bad.stderr.startswith("registryd: error:")
        assert "Traceback" not in bad.stderr
    unreachable = cli("wait", f"--server=127.0.0.1:{free_port()}", "--for=push/1", "--timeout=0.5")
    assert unreachable.returncode == 2
    assert "Traceback" not in unreachable.stderr


def test_with_workers_acks_reach_the_history_and_stay_when_the_worker_is_killed(
    stack: Stack,
) -> None:
    write_web(stack, 9001)
    registryd = stack.start_registryd("--xdsWorkers=2")
    envoy = stack.start_envoy(registryd)
    poll(lambda: hosts(envoy) == {("127.0.0.1", 9001)}, "Envoy to get the first endpoint")

    before = newest(registryd)
    write_web(stack, 9001, 9002)
    entry = pushed(registryd, 1, after=before)
    done = wait(registryd, f"--for=hostname/{HOST}")
    assert done.returncode == 0, done.stderr
    assert hosts(envoy) == {("127.0.0.1", 9001), ("127.0.0.2", 9002)}
    poll(
        lambda: entry_of(registryd, entry["version"])["outcome"]["proxiesAcked"] == 1,
        "the worker's ACK in the main process' history",
    )

    (conn,) = [c for c in get_json(registryd, "/debug/connections") if c["proxyID"] == ENVOY]
    os.kill(conn["workerPid"], signal.SIGKILL)
    poll(
        lambda: any(
            c["proxyID"] == ENVOY and c["workerPid"] != conn["workerPid"]
            for c in get_json(registryd, "/debug/connections")
        ),
        "Envoy to reconnect to a live worker",
    )
    # the killed worker took its traces with it; the history kept the outcome
    kept = entry_of(registryd, entry["version"])["outcome"]
    assert kept["proxiesAcked"] == 1 and kept["lastAckMs"] is not None

    write_web(stack, 9001, 9002, 9003)
    later = pushed(registryd, 1, after=entry["version"])
    done = wait(registryd, f"--for=hostname/{HOST}", "--timeout=60s")
    assert done.returncode == 0, done.stderr
    assert f"version {later['version']} ACKed by 1 " in done.stdout
    assert ("127.0.0.3", 9003) in hosts(envoy)


def test_wait_rides_out_a_silent_worker_that_is_replaced(stack: Stack) -> None:
    # the worker serving Envoy stops (SIGSTOP) before a change: its streams are not in
    # the listings, so the wait must not take "no pending proxy" for done; it goes on
    # until the worker is killed and replaced and Envoy, reconnected, ACKed the change
    # (named with --proxy: while it reconnects, Envoy is connected nowhere)
    write_web(stack, 9001)
    registryd = stack.start_registryd("--xdsWorkers=2", "--xdsWorkerHeartbeatTimeout=2s")
    envoy = stack.start_envoy(registryd)
    poll(lambda: hosts(envoy) == {("127.0.0.1", 9001)}, "Envoy to get the first endpoint")
    (conn,) = [c for c in get_json(registryd, "/debug/connections") if c["proxyID"] == ENVOY]

    before = newest(registryd)
    os.kill(conn["workerPid"], signal.SIGSTOP)
    write_web(stack, 9001, 9003)
    pushed(registryd, 1, after=before)
    done = wait(registryd, f"--for=hostname/{HOST}", "--proxy=envoy-1", "--timeout=90s")
    assert done.returncode == 0, done.stderr
    assert hosts(envoy) == {("127.0.0.1", 9001), ("127.0.0.2", 9003)}  # ACKed: applied
    (now,) = [c for c in get_json(registryd, "/debug/connections") if c["proxyID"] == ENVOY]
    assert now["workerPid"] != conn["workerPid"]
