"""The etcd example (examples/etcd/registryd.yaml) run as its header says, against a real
etcd on a free port: the ``etcdctl put`` commands of the header, written as they are,
become the services the header promises."""

from __future__ import annotations

import asyncio
import json
import shlex
from pathlib import Path
from typing import Any

import aetcd
import yaml

from tests.e2e.conftest import Stack
from tests.support.etcd_server import EtcdServer
from tests.support.procs import http_get, poll

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "etcd" / "registryd.yaml"


def header_commands(path: Path, command: str) -> list[list[str]]:
    """The ``command`` lines in the comment block that opens ``path`` (continuation lines
    joined), split into words as the shell does."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.removeprefix("#").strip())
    joined = "\n".join(lines).replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.startswith(f"{command} ")]


def put_all(etcd: EtcdServer, keys: dict[str, str]) -> None:
    async def run() -> None:
        async with aetcd.Client("127.0.0.1", etcd.client_port, timeout=5) as client:
            for key, value in keys.items():
                await client.put(key.encode(), value.encode())

    asyncio.run(asyncio.wait_for(run(), 10))


def services(port: int) -> dict[str, Any]:
    status, body = http_get(port, "/debug/registryz")
    assert status == 200, body
    return {s["hostname"]: s for s in json.loads(body)}


def test_etcd_example_serves_the_keys_its_header_puts(stack: Stack) -> None:
    puts = {c[2]: c[3] for c in header_commands(EXAMPLE, "etcdctl") if c[:2] == ["etcdctl", "put"]}
    assert len(puts) == 2, puts
    (stack.workdir / "etcd").mkdir()
    etcd = EtcdServer(stack.workdir / "etcd")
    etcd.on_start.append(stack.track)
    etcd.start()
    put_all(etcd, puts)

    config = yaml.safe_load(EXAMPLE.read_text())
    (registry,) = config["registries"]
    registry["endpoints"] = [etcd.endpoint]  # the only change: etcd's port
    path = stack.workdir / "registryd.yaml"
    path.write_text(yaml.safe_dump(config))
    registryd = stack.start_registryd(f"--config={path}")

    wanted = {"billing.svc.example", "greeter.svc.example"}
    found = poll(
        lambda: (s := services(registryd.http_port)).keys() >= wanted and s,
        "the example's two services",
        details=stack.logs,
    )
    ports = {host: [(p["port"], p["protocol"]) for p in found[host]["ports"]] for host in wanted}
    assert ports == {
        "billing.svc.example": [(18080, "HTTP")],
        "greeter.svc.example": [(50051, "GRPC")],
    }
