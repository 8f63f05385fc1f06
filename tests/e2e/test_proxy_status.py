"""``registryd proxy-status`` and ``registryd proxy-config`` against a running registryd
with a real Envoy, a proxyless grpcio client and ADS clients that NACK, stall or speak
Delta connected; the command runs as its own process, as an operator runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from registryd.testing import AdsClient
from registryd.testing.ads import TYPES, DeltaAdsClient
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_entries
from tests.e2e.loop_thread import LoopThread
from tests.e2e.test_grpc_proxyless import greeter_entry, start_client
from tests.support.procs import Registryd, free_port, http_get, poll

ENVOY = "sidecar~127.0.0.1~envoy-1.default~default.svc.cluster.local"
GRPC = "sidecar~127.0.0.1~client.default~default.svc.cluster.local"
PICKY = "sidecar~127.0.0.9~picky-1.default~default.svc.cluster.local"
SLOW = "sidecar~127.0.0.8~slow-1.default~default.svc.cluster.local"
DELTA = "sidecar~127.0.0.7~delta-1.default~default.svc.cluster.local"
NACK = "listener 127.0.0.1_8080:\n  unknown filter"
SHOWN = "listener 127.0.0.1_8080:\\n  unknown filter"  # on one line, as registryd escapes it
WEB, DB = "web.example", "db.example"


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """``registryd <argv>`` as a process: its exit status, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "registryd", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def cells(line: str) -> list[str]:
    """The cells of a table line (columns are apart by more than one space)."""
    return re.split(r"\s{2,}", line.strip())


def rows(text: str) -> dict[str, list[str]]:
    """A table's lines after the header, as cells, keyed by the first cell."""
    lines = text.split("\n\n")[0].splitlines()[1:]
    return {cells(line)[0]: cells(line)[1:] for line in lines}


def syncz(registryd: Registryd) -> dict[str, dict[str, Any]]:
    status, body = http_get(registryd.http_port, "/debug/syncz")
    assert status == 200, body
    return {entry["proxyID"]: entry["types"] for entry in json.loads(body)}


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


def ads(loop: LoopThread, registryd: Registryd, node: str, **options: Any) -> AdsClient:
    """An ADS client subscribed to every cluster and listener; ``reject`` NACKs."""
    reject: dict[str, str] = options.pop("reject", {})

    async def connect() -> AdsClient:
        client = AdsClient(f"127.0.0.1:{registryd.grpc_port}", node_id=node, **options)
        client.reject = reject
        await client.connect()
        client.subscribe("cds")
        client.subscribe("lds")
        return client

    return loop.call(connect())


@pytest.fixture
def mesh(stack: Stack, loop: LoopThread) -> Iterator[Registryd]:
    """registryd serving an HTTP, a TCP and a gRPC service to an Envoy, a proxyless gRPC
    client, a client that NACKs listeners, one that never ACKs and a Delta client."""
    greeter = stack.greeter("greeter-1")
    write_entries(
        stack.config_dir / "services.yaml",
        service_entry(WEB, 8080, [("127.0.0.1", 9001), ("127.0.0.2", 9001)]),
        service_entry(DB, 5432, [("127.0.0.3", 5432)], protocol="TCP", port_name="tcp"),
        greeter_entry(greeter.port, greeter),
    )
    registryd = stack.start_registryd()
    stack.start_envoy(registryd)
    client, stop = start_client(stack, registryd, f"xds:///greeter.example:{greeter.port}", "grpc")
    clients = [
        ads(loop, registryd, PICKY, reject={TYPES["lds"]: NACK}),
        ads(loop, registryd, SLOW, auto_ack=False),
    ]

    async def delta() -> DeltaAdsClient:
        found = DeltaAdsClient(f"127.0.0.1:{registryd.grpc_port}", node_id=DELTA)
        await found.connect()
        found.subscribe("cds", ["*"])
        return found

    delta_client = loop.call(delta())

    def settled() -> bool:
        state = syncz(registryd)

        def has(proxy: str, kind: str, key: str) -> bool:
            return bool(state.get(proxy, {}).get(kind, {}).get(key))

        return (
            all(has(p, k, "acked") for p in (ENVOY, GRPC) for k in ("cds", "eds", "lds", "rds"))
            and has(PICKY, "cds", "acked")
            and has(PICKY, "lds", "nacked")
            and has(SLOW, "lds", "nonceSent")
            and has(DELTA, "cds", "acked")
        )

    poll(settled, "every client connected and answered", details=stack.logs)
    yield registryd
    stop.touch()
    for each in clients:
        loop.call(each.close())
    loop.call(delta_client.close())
    client.check_alive()


def url(registryd: Registryd) -> str:
    return f"http://127.0.0.1:{registryd.http_port}"


def test_proxy_status_shows_every_proxy_with_each_types_state(mesh: Registryd) -> None:
    state = syncz(mesh)
    version = state[ENVOY]["cds"]["versionSent"]
    done = cli("proxy-status", "--server", url(mesh))
    assert done.returncode == 0, done.stderr
    table = rows(done.stdout)
    assert cells(done.stdout.splitlines()[0]) == [
        "NAME", "TYPE", "STREAM", "CDS", "LDS", "EDS", "RDS", "MCP", "SERVER", "VERSION"
    ]  # fmt: skip
    server = url(mesh)
    assert list(table) == sorted([ENVOY, GRPC, PICKY, SLOW, DELTA])
    assert table[ENVOY] == ["proxy", "SotW", *["SYNCED"] * 4, "-", server, version]
    assert table[GRPC] == ["proxyless gRPC", "SotW", *["SYNCED"] * 4, "-", server, version]
    # picky: clusters ACKed, listeners rejected, no EDS or RDS asked for
    assert table[PICKY] == [
        "proxy", "SotW", "SYNCED", "NACKED", "NOT SENT", "NOT SENT", "-", server, version
    ]  # fmt: skip
    # slow never ACKs: both types it asked for were sent and are unanswered
    assert table[SLOW] == [
        "proxy", "SotW", "STALE", "STALE", "NOT SENT", "NOT SENT", "-", server, version
    ]  # fmt: skip
    assert table[DELTA] == ["proxy", "Delta", "SYNCED", *["NOT SENT"] * 3, "-", server, version]
    # the NACK, with the proxy's message on one line, below the table
    nacks = done.stdout.split("\n\n")[1].splitlines()
    assert nacks == [f"{PICKY} LDS NACKED {version}: {SHOWN}"]


def test_proxy_status_json_matches_the_table(mesh: Registryd) -> None:
    done = cli("proxy-status", "--server", url(mesh), "-o", "json")
    assert done.returncode == 0, done.stderr
    found = {row["proxyID"]: row for row in json.loads(done.stdout)}
    assert found[PICKY]["lds"] == "NACKED"
    assert found[PICKY]["nacks"][0]["message"] == SHOWN
    assert found[DELTA]["stream"] == "Delta"
    assert found[ENVOY]["server"] == url(mesh)


def test_proxy_status_of_one_proxy_compares_sent_and_acked_per_resource(mesh: Registryd) -> None:
    version = syncz(mesh)[ENVOY]["cds"]["versionSent"]
    done = cli("proxy-status", "envoy-1.default", "--server", url(mesh))  # by pod name
    assert done.returncode == 0, done.stderr
    head, types, resources = done.stdout.split("\n\n")
    assert cells(head.splitlines()[0]) == ["Proxy:", ENVOY]
    per_type = rows(types)
    assert set(per_type) == {"CDS", "LDS", "EDS", "RDS"}
    for kind, line in per_type.items():
        assert line[0] == "SYNCED", kind
        assert line[1] == line[3] == version, kind  # sent == ACKed
    per_resource = [cells(line) for line in resources.splitlines()[1:]]
    names = {(kind, name) for kind, name, *_ in per_resource}
    assert ("CDS", f"outbound|8080||{WEB}") in names
    assert ("EDS", f"outbound|5432||{DB}") in names
    assert ("RDS", "8080") in names
    assert ("LDS", "127.0.0.1_5432") in names
    assert {line[-1] for line in per_resource} == {"SYNCED"}


def test_a_nacked_type_marks_its_resources_and_a_stalled_one_its_own(mesh: Registryd) -> None:
    picky = cli("proxy-status", PICKY, "--server", url(mesh))
    assert picky.returncode == 0, picky.stderr
    _, types, nack, resources = picky.stdout.split("\n\n")
    assert rows(types)["LDS"][0] == "NACKED"
    assert rows(types)["EDS"] == ["NOT SENT", "-", "-", "-", "0", "0"]
    sent = rows(types)["LDS"][1]
    assert rows(types)["LDS"][3] == "-"  # nothing ACKed
    assert nack == f"LDS NACKED {sent}: {SHOWN}"
    status = {tuple(cells(line)[:2]): cells(line)[-1] for line in resources.splitlines()[1:]}
    assert status[("LDS", "0.0.0.0_8080")] == "NACKED"  # it never accepted a listener
    assert status[("CDS", f"outbound|8080||{WEB}")] == "SYNCED"

    slow = cli("proxy-status", "slow-1", "--server", url(mesh), "-o", "json")
    assert slow.returncode == 0, slow.stderr
    (detail,) = json.loads(slow.stdout)
    assert detail["types"]["cds"]["status"] == "STALE"
    assert detail["types"]["cds"]["versionAcked"] == ""
    assert {r["status"] for r in detail["resources"]} == {"STALE"}


def test_proxy_config_tables_for_envoy(mesh: Registryd) -> None:
    server = url(mesh)
    clusters = cli("proxy-config", "clusters", ENVOY, "--server", server)
    assert clusters.returncode == 0, clusters.stderr
    assert cells(clusters.stdout.splitlines()[0]) == [
        "SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"
    ]  # fmt: skip
    lines = [cells(line) for line in clusters.stdout.splitlines()[1:]]
    assert ["BlackHoleCluster", "-", "-", "-", "STATIC"] in lines
    assert ["PassthroughCluster", "-", "-", "-", "ORIGINAL_DST"] in lines
    assert [DB, "5432", "-", "outbound", "EDS"] in lines
    assert [WEB, "8080", "-", "outbound", "EDS"] in lines

    endpoints = cli("proxy-config", "endpoint", "envoy-1", "--server", server)  # singular too
    assert endpoints.returncode == 0, endpoints.stderr
    assert [cells(line) for line in endpoints.stdout.splitlines() if WEB in line] == [
        # ServiceEntry endpoints have no health: served UNKNOWN, as istiod serves them
        ["127.0.0.1:9001", "UNKNOWN", "-", f"outbound|8080||{WEB}"],
        ["127.0.0.2:9001", "UNKNOWN", "-", f"outbound|8080||{WEB}"],
    ]

    listeners = rows(cli("proxy-config", "listeners", ENVOY, "--server", server).stdout)
    assert listeners["127.0.0.1_5432"] == [
        "127.0.0.1",
        "5432",
        "ALL",
        f"Cluster: outbound|5432||{DB}",
    ]
    assert listeners["127.0.0.1_8080"] == ["127.0.0.1", "8080", "ALL", "Route: 8080"]

    routes = cli("proxy-config", "routes", ENVOY, "--server", server)
    assert cells(routes.stdout.splitlines()[0]) == ["NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]
    assert rows(routes.stdout)["8080"] == [f"{WEB}, {WEB}.", "/*", "-"]


def test_proxy_config_for_a_proxyless_client_and_as_json(mesh: Registryd) -> None:
    server = url(mesh)
    listeners = cli("proxy-config", "listeners", GRPC, "--server", server)
    assert listeners.returncode == 0, listeners.stderr
    ((name, line),) = rows(listeners.stdout).items()
    assert name.startswith("greeter.example:")
    port = name.rpartition(":")[2]
    route = f"outbound|{port}||greeter.example"
    assert line == ["0.0.0.0", port, "API", f"Route: {route}"]

    routes = cli("proxy-config", "routes", GRPC, "--server", server, "-o", "json")
    assert routes.returncode == 0, routes.stderr
    (config,) = json.loads(routes.stdout)
    assert config["name"] == route
    assert config["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == route


def test_exit_status_for_unknown_proxies_unreachable_servers_and_usage(mesh: Registryd) -> None:
    server = url(mesh)
    unknown = cli("proxy-config", "clusters", "nobody", "--server", server)
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == "registryd: error: proxy 'nobody' is not connected\n"

    down = f"http://127.0.0.1:{free_port()}"
    both = cli("proxy-status", "--server", f"{server},{down}")
    assert both.returncode == 2  # what one instance said is shown, the other is reported
    assert ENVOY in rows(both.stdout)
    assert both.stderr.startswith(f"registryd: error: {down}: ")

    usage = cli("proxy-config", "clusters")  # no PROXY_ID
    assert usage.returncode == 2
    assert usage.stderr.startswith("registryd: error: ")


def test_replicas_each_show_their_own_proxies(stack: Stack, loop: LoopThread) -> None:
    write_entries(stack.config_dir / "web.yaml", service_entry(WEB, 8080, [("127.0.0.1", 9001)]))
    first = stack.start_registryd(name="registryd-1")
    second = stack.start_registryd(name="registryd-2")
    clients = [ads(loop, first, PICKY), ads(loop, second, SLOW)]
    poll(
        lambda: PICKY in syncz(first) and SLOW in syncz(second),
        "one client on each replica",
        details=stack.logs,
    )
    done = cli("proxy-status", "--server", url(first), "--server", f"127.0.0.1:{second.http_port}")
    assert done.returncode == 0, done.stderr
    table = rows(done.stdout)
    assert table[PICKY][-2] == url(first)
    assert table[SLOW][-2] == url(second)
    for client in clients:
        loop.call(client.close())


def test_after_a_change_each_resource_shows_the_version_it_last_changed_in(
    stack: Stack, mesh: Registryd
) -> None:
    before = syncz(mesh)[ENVOY]["eds"]["versionSent"]
    path = stack.config_dir / "services.yaml"
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    documents[0] = service_entry(WEB, 8080, [("127.0.0.1", 9001)])  # one endpoint less
    write_entries(path, *documents)
    poll(
        lambda: (eds := syncz(mesh)[ENVOY]["eds"])["acked"] and eds["versionSent"] != before,
        "Envoy to ACK the new endpoints",
        details=stack.logs,
    )
    after = syncz(mesh)[ENVOY]["eds"]["versionSent"]
    done = cli("proxy-status", ENVOY, "--server", url(mesh))
    assert done.returncode == 0, done.stderr
    _, types, resources = done.stdout.split("\n\n")
    status, sent, _, acked, *_ = rows(types)["EDS"]
    assert (status, sent, acked) == ("SYNCED", after, after)
    served = {tuple(cells(line)[:2]): cells(line)[2:] for line in resources.splitlines()[1:]}
    assert served[("EDS", f"outbound|8080||{WEB}")] == [after, "SYNCED"]
    assert served[("EDS", f"outbound|5432||{DB}")] == [before, "SYNCED"]  # unchanged
    assert rows(cli("proxy-status", "--server", url(mesh)).stdout)[ENVOY][-1] == after
