"""``registryd validate --diff --server URL FILES`` and ``POST /debug/preview`` against a
running registryd on a ServiceEntry directory, with a real Envoy and ADS clients in two
namespaces connected: what each group of proxies would get, the warnings, and that
nothing is applied."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registryd.testing import AdsClient
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_entries
from tests.e2e.loop_thread import LoopThread
from tests.support.procs import Registryd, free_port, http_get, poll

ENVOY = "sidecar~127.0.0.1~envoy-1.default~default.svc.cluster.local"
PLAIN = "sidecar~127.0.0.5~app-1.default~default.svc.cluster.local"
TEAM = "sidecar~127.0.0.6~app-1.team-a~team-a.svc.cluster.local"
WEB, DB, API, INNER = "web.example", "db.example", "api.example", "inner.example"


def cli(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "registryd", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def inner(port: int) -> dict[str, Any]:
    """A service exported to namespace team-a only."""
    entry = service_entry(INNER, port, [("127.0.0.4", port)], namespace="team-a")
    entry["spec"]["exportTo"] = ["."]
    return entry


def tcp_without_address(host: str) -> dict[str, Any]:
    """A TCP service on port 7000 without addresses: two of them conflict on 0.0.0.0_7000."""
    return service_entry(host, 7000, [("127.0.0.7", 7000)], protocol="TCP", port_name="tcp")


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


def syncz(registryd: Registryd) -> dict[str, Any]:
    status, body = http_get(registryd.http_port, "/debug/syncz")
    assert status == 200, body
    return {entry["proxyID"]: entry["types"] for entry in json.loads(body)}


@pytest.fixture
def mesh(stack: Stack, loop: LoopThread) -> Iterator[Registryd]:
    """registryd serving web, db and a team-a-only service to an Envoy (namespace
    default) and ADS clients in namespaces default and team-a."""
    write_entries(
        stack.config_dir / "services.yaml",
        service_entry(WEB, 8080, [("127.0.0.1", 9001), ("127.0.0.2", 9001)]),
        service_entry(DB, 5432, [("127.0.0.3", 5432)], protocol="TCP", port_name="tcp"),
    )
    write_entries(stack.config_dir / "team.yaml", inner(7070))
    registryd = stack.start_registryd()
    stack.start_envoy(registryd)

    async def connect(node: str) -> AdsClient:
        client = AdsClient(f"127.0.0.1:{registryd.grpc_port}", node_id=node)
        await client.connect()
        client.subscribe("cds")
        client.subscribe("lds")
        return client

    clients = [loop.call(connect(node)) for node in (PLAIN, TEAM)]

    def settled() -> bool:
        state = syncz(registryd)
        envoy = all(state.get(ENVOY, {}).get(k, {}).get("acked") for k in ("cds", "eds", "lds"))
        ads = all(state.get(p, {}).get("cds", {}).get("acked") for p in (PLAIN, TEAM))
        return envoy and ads

    poll(settled, "every client connected and answered", details=stack.logs)
    yield registryd
    for client in clients:
        loop.call(client.close())


def url(registryd: Registryd) -> str:
    return f"http://127.0.0.1:{registryd.http_port}"


def candidates(directory: Path) -> Path:
    """The candidate files: web's second endpoint moved, db gone, api new, two TCP
    services conflicting on port 7000; team-a's service moved to another port."""
    directory.mkdir()
    write_entries(
        directory / "services.yaml",
        service_entry(WEB, 8080, [("127.0.0.1", 9001), ("127.0.0.9", 9001)]),
        service_entry(API, 9090, [("127.0.0.5", 9090)]),
        tcp_without_address("one.example"),
        tcp_without_address("two.example"),
    )
    write_entries(directory / "team.yaml", inner(7071))
    return directory


def group_of(answer: dict[str, Any], proxy: str) -> dict[str, Any]:
    (found,) = [g for g in answer["groups"] if proxy in g["proxies"]["ids"]]
    return found


def state_of(registryd: Registryd) -> tuple[str, str, str]:
    """What is served and to whom: the registry view, Envoy's config and the pushes."""
    views = []
    for path in ("/debug/registryz", f"/debug/config_dump?proxyID={ENVOY}", "/debug/pushz"):
        status, body = http_get(registryd.http_port, path)
        assert status == 200, body
        views.append(body)
    return views[0], views[1], views[2]


def test_preview_shows_each_group_what_would_change_and_applies_nothing(
    mesh: Registryd, tmp_path: Path
) -> None:
    before = state_of(mesh)
    versions = {p: t["cds"]["versionSent"] for p, t in syncz(mesh).items()}
    done = cli(
        "validate", "--diff", "--server", url(mesh), "-o", "json", str(candidates(tmp_path / "c"))
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["errors"] == {}
    assert answer["files"]["services.yaml"]["replaces"] is True
    assert answer["files"]["services.yaml"]["file"].endswith("serviceentries/services.yaml")

    # Envoy and the plain ADS client read different types; team-a reads its overlay
    envoy, plain, team = group_of(answer, ENVOY), group_of(answer, PLAIN), group_of(answer, TEAM)
    assert len({id(envoy), id(plain), id(team)}) == 3
    cds = envoy["changes"]["cds"]
    assert "outbound|9090||api.example" in cds["added"]["names"]
    assert cds["removed"]["names"] == ["outbound|5432||db.example"]
    eds = envoy["changes"]["eds"]
    assert eds["changed"]["names"] == ["outbound|8080||web.example"]
    (diff,) = eds["changed"]["diffs"]
    assert {
        "path": "endpoints[0].lb_endpoints[1].endpoint.address.socket_address.address",
        "old": "127.0.0.2",
        "new": "127.0.0.9",
    } in diff["diff"]
    assert "outbound|5432||db.example" in eds["removed"]["names"]
    assert "eds" not in plain["changes"] and "rds" not in plain["changes"]
    assert plain["changes"]["cds"] == {**cds, "changed": plain["changes"]["cds"]["changed"]}
    # team-a's service is theirs alone
    team_cds = team["changes"]["cds"]
    assert "outbound|7071||inner.example" in team_cds["added"]["names"]
    assert "outbound|7070||inner.example" in team_cds["removed"]["names"]
    seen = [
        n for kind in plain["changes"].values() for what in kind.values() for n in what["names"]
    ]
    assert not any(INNER in name for name in seen)

    assert (
        f"host {DB} would lose all endpoints (1 now) (the host would be removed)"
        in answer["warnings"]
    )
    conflict = "two.example would be left out, one.example already takes its traffic"
    conflicts = [w for w in answer["warnings"] if w.startswith("listener conflict on port 7000")]
    assert conflicts and all(conflict in w for w in conflicts), answer["warnings"]

    # nothing applied: the same view, the same config for Envoy, no push
    assert state_of(mesh) == before
    assert {p: t["cds"]["versionSent"] for p, t in syncz(mesh).items()} == versions
    assert answer["liveVersion"] == json.loads(before[2])[0]["version"]


def test_preview_text_output(mesh: Registryd, tmp_path: Path) -> None:
    done = cli("validate", "--diff", "--server", url(mesh), str(candidates(tmp_path / "c")))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"Server {url(mesh)}: registry serviceentry/configDir" in out
    assert "  CDS added: outbound|9090||api.example\n" in out
    assert "  EDS changed: outbound|8080||web.example\n" in out
    assert (
        "      endpoints[0].lb_endpoints[1].endpoint.address.socket_address.address: "
        '"127.0.0.2" -> "127.0.0.9"\n'
    ) in out
    assert f"Warning: host {DB} would lose all endpoints" in out


def test_same_files_change_nothing(mesh: Registryd, stack: Stack) -> None:
    done = cli("validate", "--diff", "--server", url(mesh), "-o", "json", str(stack.config_dir))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["warnings"] == []
    assert {g["unchanged"] for g in answer["groups"]} == {True}
    assert len(answer["groups"]) == 1  # equal results are one group
    assert answer["groups"][0]["proxies"]["count"] == 3


def test_candidate_errors_exit_1_with_the_validate_text(mesh: Registryd, tmp_path: Path) -> None:
    broken = service_entry(WEB, 99999, [("127.0.0.1", 9001)])
    write_entries(tmp_path / "services.yaml", broken)
    done = cli("validate", "--diff", "--server", url(mesh), "services.yaml", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    offline = cli("validate", "services.yaml", cwd=tmp_path)
    message = offline.stdout.splitlines()[0].split("services.yaml:1: ", 1)[1]
    assert f"Error [services.yaml]: services.yaml: {message}" in done.stdout
    # the document's last good version stays in use, as the registry would keep it;
    # the file's other document (db) is gone from the candidate
    assert "outbound|8080||web.example" not in done.stdout
    assert "  CDS removed: outbound|5432||db.example\n" in done.stdout


def test_bad_server_and_bad_arguments_exit_2_in_one_line(tmp_path: Path) -> None:
    write_entries(tmp_path / "a.yaml", service_entry(WEB, 80, [("127.0.0.1", 80)]))
    unreachable = f"http://127.0.0.1:{free_port()}"
    for argv in (
        ("--server", unreachable, str(tmp_path / "a.yaml")),
        ("--server", "not a url", str(tmp_path / "a.yaml")),
        (str(tmp_path / "a.yaml"),),  # no --server
        ("--server", unreachable, str(tmp_path / "missing.yaml")),
    ):
        done = cli("validate", "--diff", *argv)
        assert done.returncode == 2, (argv, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr


def test_a_body_over_the_bound_is_413_before_it_is_sent(stack: Stack) -> None:
    registryd = stack.start_registryd()
    connection = http.client.HTTPConnection("127.0.0.1", registryd.http_port, timeout=30)
    try:  # the head alone: the daemon answers from Content-Length, reading nothing more
        connection.putrequest("POST", "/debug/preview")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str((32 << 20) + 1))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        answer = json.loads(response.read())
    finally:
        connection.close()
    assert answer["error"] == f"request body over the limit of {32 << 20} bytes"


def test_preview_in_one_process_sees_its_own_streams(
    stack: Stack, loop: LoopThread, tmp_path: Path
) -> None:
    write_entries(stack.config_dir / "web.yaml", service_entry(WEB, 8080, [("127.0.0.1", 80)]))
    registryd = stack.start_registryd("--xdsWorkers=1")

    async def connect() -> AdsClient:
        client = AdsClient(f"127.0.0.1:{registryd.grpc_port}", node_id=PLAIN)
        await client.connect()
        client.subscribe("cds")
        await client.next("cds")
        return client

    client = loop.call(connect())
    try:
        candidate = tmp_path / "web.yaml"
        write_entries(candidate, service_entry(WEB, 8081, [("127.0.0.1", 80)]))
        done = cli("validate", "--diff", "--server", url(registryd), "-o", "json", str(candidate))
        assert done.returncode == 0, done.stderr
        (group,) = json.loads(done.stdout)["groups"]
        assert group["proxies"] == {"count": 1, "ids": [PLAIN]}
        assert group["changes"]["cds"]["added"]["names"] == ["outbound|8081||web.example"]
        assert group["changes"]["cds"]["removed"]["names"] == ["outbound|8080||web.example"]
        # replicas: each server is asked, the answers are keyed by server
        other = f"http://localhost:{registryd.http_port}"
        both = cli("validate", "--diff", "--server", f"{url(registryd)},{other}", "-o", "json",
                   str(candidate))  # fmt: skip
        assert both.returncode == 0, both.stderr
        answers = json.loads(both.stdout)
        assert set(answers) == {url(registryd), other}
        assert answers[other]["groups"] == answers[url(registryd)]["groups"]
    finally:
        loop.call(client.close())
