"""``registryd validate --diff --server URL --config candidate.yaml`` against a running
registryd with a ServiceEntry registry and an etcd registry (a real etcd) from its
registryd.yaml, and ADS clients connected: what a changed priority or prefix, a new
ServiceEntry registry, a removed registry and an unreachable one would change; an
invalid candidate; and that nothing is applied (nor left open)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from registryd.testing import AdsClient
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_entries
from tests.e2e.loop_thread import LoopThread
from tests.e2e.test_etcd_outage import etcd_txn
from tests.support.etcd_server import EtcdServer
from tests.support.procs import Registryd, free_port, http_get, poll

PLAIN = "sidecar~127.0.0.5~app-1.default~default.svc.cluster.local"
TEAM = "sidecar~127.0.0.6~app-1.team-a~team-a.svc.cluster.local"
PREFIX, OTHER = "/registryd/services/", "/registryd/other/"
SUFFIX = "etcd.example"
WEB, DB, API = f"web.{SUFFIX}", f"db.{SUFFIX}", f"api.{SUFFIX}"
FILES, MORE = "files.example", "more.example"


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "registryd", *argv],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def instance(address: str, service_port: int) -> bytes:
    return json.dumps(
        {
            "address": address,
            "port": service_port,
            "servicePort": service_port,
            "protocol": "HTTP",
            "portName": "http",
        }
    ).encode()


@dataclass
class Mesh:
    registryd: Registryd
    etcd: EtcdServer
    config: Path  # the running registryd.yaml
    sections: list[dict[str, Any]]  # its registries

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.registryd.http_port}"

    def candidate(self, path: Path, *sections: dict[str, Any]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"registries": list(sections)}))
        return path

    def preview(self, candidate: Path, *extra: str) -> dict[str, Any]:
        done = cli(
            "validate", "--diff", "--server", self.url, "-o", "json", "--config", str(candidate),
            *extra,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer


def get(registryd: Registryd, path: str) -> Any:
    status, body = http_get(registryd.http_port, path)
    assert status == 200, body
    return json.loads(body)


def syncz(registryd: Registryd) -> dict[str, Any]:
    return {entry["proxyID"]: entry["types"] for entry in get(registryd, "/debug/syncz")}


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def mesh(stack: Stack, loop: LoopThread) -> Iterator[Mesh]:
    """registryd.yaml: ``files`` (a ServiceEntry directory: files.example, and web on
    port 8080) and ``etcd-main`` (web on port 8081, db; priority below the files', so
    the files' web wins); ADS clients in two namespaces."""
    (stack.workdir / "etcd").mkdir()
    etcd = EtcdServer(stack.workdir / "etcd")
    etcd.on_start.append(stack.track)
    etcd.start()
    etcd_txn(
        etcd,
        put={
            f"{PREFIX}web/a": instance("127.0.0.1", 8081),
            f"{PREFIX}db/a": instance("127.0.0.2", 5432),
            f"{OTHER}api/a": instance("127.0.0.3", 9090),
        },
    )
    files = stack.workdir / "config" / "files"
    files.mkdir(parents=True)
    write_entries(
        files / "services.yaml",
        service_entry(FILES, 7000, [("127.0.0.4", 7000)]),
        service_entry(WEB, 8080, [("127.0.0.5", 8080)]),
    )
    more = stack.workdir / "config" / "more"
    more.mkdir()
    write_entries(more / "more.yaml", service_entry(MORE, 7100, [("127.0.0.6", 7100)]))
    sections = [
        {"name": "files", "type": "serviceentry", "path": "files"},
        {
            "name": "etcd-main",
            "type": "etcd",
            "endpoints": [etcd.endpoint],
            "prefix": PREFIX,
            "hostname_suffix": SUFFIX,
            "timeout": 2,
        },
    ]
    config = stack.workdir / "config" / "registryd.yaml"
    config.write_text(yaml.safe_dump({"registries": sections}))
    registryd = stack.start_registryd(f"--config={config}")

    async def connect(node: str) -> AdsClient:
        client = AdsClient(f"127.0.0.1:{registryd.grpc_port}", node_id=node)
        await client.connect()
        client.subscribe("cds")
        client.subscribe("eds")
        return client

    clients = [loop.call(connect(node)) for node in (PLAIN, TEAM)]

    def settled() -> bool:
        hosts = {s["hostname"] for s in get(registryd, "/debug/registryz")}
        state = syncz(registryd)
        acked = all(state.get(p, {}).get("cds", {}).get("acked") for p in (PLAIN, TEAM))
        return acked and hosts == {FILES, WEB, DB}

    poll(settled, "both registries served and both clients answered", details=stack.logs)
    yield Mesh(registryd, etcd, config, sections)
    for client in clients:
        loop.call(client.close())


def live_state(registryd: Registryd) -> tuple[Any, ...]:
    """What is served and to whom: the registry, the pushes, the registries' config, and
    each client's last version."""
    versions = {p: t["cds"]["versionSent"] for p, t in syncz(registryd).items()}
    # ``events`` counts what the live adapters deliver, their periodic problems reports too
    configz = [
        {k: v for k, v in r.items() if k != "events"} for r in get(registryd, "/debug/configz")
    ]
    return (
        get(registryd, "/debug/registryz"),
        get(registryd, "/debug/pushz")[0]["version"],
        configz,
        versions,
    )


def etcd_connections(pid: int, port: int) -> int:
    """Established TCP connections of process ``pid`` to ``port`` on loopback."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                remote, state, inode = fields[2], fields[3], fields[9]
                if state == "01" and inode in inodes and int(remote.split(":")[1], 16) == port:
                    count += 1
    return count


def group(answer: dict[str, Any]) -> dict[str, Any]:
    """The one group of the answer: both clients read the same (no namespace overlay)."""
    (found,) = answer["groups"]
    assert found["proxies"]["ids"] == sorted([PLAIN, TEAM])
    return found


def test_registry_sections_previewed_and_nothing_applied(mesh: Mesh, tmp_path: Path) -> None:
    files, etcd_main = mesh.sections
    before = live_state(mesh.registryd)
    connections = etcd_connections(mesh.registryd.pid, mesh.etcd.client_port)
    assert connections >= 1  # the live etcd registry's

    # (1) the etcd registry's priority over the files': its web wins the merge
    answer = mesh.preview(
        mesh.candidate(mesh.config.with_name("c1.yaml"), files, {**etcd_main, "priority": 400})
    )
    assert answer["registries"] == {
        "etcd-main": {
            "type": "etcd",
            "status": "changed",
            "changed": {"priority": {"old": 100, "new": 400}},
        },
        "files": {"type": "serviceentry", "status": "unchanged"},
    }
    cds = group(answer)["changes"]["cds"]
    assert cds["added"]["names"] == [f"outbound|8081||{WEB}"]
    assert cds["removed"]["names"] == [f"outbound|8080||{WEB}"]
    assert answer["warnings"] == []

    # (1) the etcd registry's prefix: its db goes, api comes; a candidate adapter ran
    answer = mesh.preview(
        mesh.candidate(mesh.config.with_name("c2.yaml"), files, {**etcd_main, "prefix": OTHER})
    )
    section = answer["registries"]["etcd-main"]
    assert section["changed"] == {"prefix": {"old": PREFIX, "new": OTHER}}
    assert section["firstState"] is True
    cds = group(answer)["changes"]["cds"]
    assert cds["added"]["names"] == [f"outbound|9090||{API}"]
    assert cds["removed"]["names"] == [f"outbound|5432||{DB}"]
    assert answer["warnings"] == [
        f"host {DB} would lose all endpoints (1 now) (the host would be removed)"
    ]
    # the candidate adapter's connection to etcd is closed again
    poll(
        lambda: etcd_connections(mesh.registryd.pid, mesh.etcd.client_port) == connections,
        "the candidate etcd adapter's connections to be closed",
    )

    # (2) a new serviceentry section, its path relative to the candidate file's
    # directory (the same files, named by their absolute path: unchanged)
    elsewhere = tmp_path / "elsewhere"
    more = os.path.relpath(mesh.config.parent / "more", elsewhere)
    answer = mesh.preview(
        mesh.candidate(
            elsewhere / "c3.yaml",
            {**files, "path": str(mesh.config.parent / "files")},
            etcd_main,
            {"name": "more", "type": "serviceentry", "path": more},
        )
    )
    assert answer["registries"]["files"]["status"] == "unchanged"
    assert answer["registries"]["more"] == {
        "type": "serviceentry",
        "status": "added",
        "firstState": True,
    }
    assert group(answer)["changes"]["cds"]["added"]["names"] == [f"outbound|7100||{MORE}"]
    assert (
        "removed" not in group(answer)["changes"]["cds"]
        or not (group(answer)["changes"]["cds"]["removed"]["names"])
    )

    # (3) the files' section removed: its services go, etcd's web takes over
    answer = mesh.preview(mesh.candidate(mesh.config.with_name("c4.yaml"), etcd_main))
    assert answer["registries"]["files"] == {"type": "serviceentry", "status": "removed"}
    cds = group(answer)["changes"]["cds"]
    assert cds["removed"]["names"] == [f"outbound|7000||{FILES}", f"outbound|8080||{WEB}"]
    assert cds["added"]["names"] == [f"outbound|8081||{WEB}"]
    assert (
        f"host {FILES} would lose all endpoints (1 now) (the host would be removed)"
        in (answer["warnings"])
    )

    # (4) an etcd that cannot be reached: a warning, and the registry stays as it is
    down = {**etcd_main, "endpoints": [f"127.0.0.1:{free_port()}"]}
    answer = mesh.preview(
        mesh.candidate(mesh.config.with_name("c5.yaml"), files, down), "--registry-timeout", "3"
    )
    (warning,) = answer["warnings"]
    assert warning.startswith("registry etcd-main: no first state within 3s: "), warning
    assert answer["registries"]["etcd-main"]["firstState"] is False
    assert [g["unchanged"] for g in answer["groups"]] == [True]

    # (5) nothing applied
    assert live_state(mesh.registryd) == before
    mesh.registryd.check_alive()


def test_one_section_and_text_output(mesh: Mesh) -> None:
    files, etcd_main = mesh.sections
    candidate = mesh.candidate(
        mesh.config.with_name("c.yaml"), {**files, "priority": 1}, {**etcd_main, "priority": 400}
    )
    done = cli(
        "validate", "--diff", "--server", mesh.url, "--config", str(candidate),
        "--registry", "files",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"Server {mesh.url}: config {candidate}, compared with version" in out
    assert "Registry files (serviceentry): changed\n  priority: 300 -> 1\n" in out
    assert "etcd-main" not in out  # only the section asked for
    assert f"  CDS added: outbound|8081||{WEB}\n" in out


def test_an_invalid_candidate_exits_1_with_the_validate_text(mesh: Mesh) -> None:
    files, etcd_main = mesh.sections
    candidate = mesh.candidate(
        mesh.config.with_name("bad.yaml"), files, {**etcd_main, "prefix": "no-slash"}
    )
    before = live_state(mesh.registryd)
    done = cli("validate", "--diff", "--server", mesh.url, "--config", str(candidate))
    assert done.returncode == 1, done.stderr
    offline = cli("validate", "--config", str(candidate))
    assert offline.returncode == 1
    assert done.stdout == offline.stdout
    assert "'prefix' must be a key prefix ending with '/'" in done.stdout
    assert live_state(mesh.registryd) == before


def test_bad_arguments_and_servers_exit_2_in_one_line(tmp_path: Path) -> None:
    good = tmp_path / "registryd.yaml"
    good.write_text(yaml.safe_dump({"registries": []}))
    unreachable = f"http://127.0.0.1:{free_port()}"
    for argv in (
        ("--server", unreachable, "--config", str(good)),
        ("--server", unreachable, "--config", str(tmp_path / "missing.yaml")),
        ("--server", unreachable, "--config", str(good), str(good)),  # files and --config
        ("--config", str(good)),  # no --server
        ("--server", unreachable, "--config", str(good), "--registry-timeout", "200"),
    ):
        done = cli("validate", "--diff", *argv)
        assert done.returncode == 2, (argv, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
