"""The proxyless gRPC example (examples/grpc/) as its header says to run it, on free
ports: registryd on the example ServiceEntry, the example server, and the example client
with the example bootstrap.  The client resolves ``xds:///greeter.example:PORT`` through
registryd and its calls are answered by the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Stack
from tests.e2e.entries import copy_remapped
from tests.support.procs import DEADLINE, Process, Registryd, free_port, http_get, poll

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "grpc"
PORT = 50051  # the port of the example: the ServiceEntry's, the server's, the client's


def render_bootstrap(grpc_port: int, target: Path) -> dict[str, object]:
    """The example bootstrap, pointed at registryd's port instead of 15010."""
    bootstrap = json.loads((EXAMPLE / "bootstrap.json").read_text())
    (server,) = bootstrap["xds_servers"]
    assert server["server_uri"] == "127.0.0.1:15010"
    server["server_uri"] = f"127.0.0.1:{grpc_port}"
    target.write_text(json.dumps(bootstrap))
    return bootstrap


def served(registryd: Registryd) -> tuple[dict[str, bool], float]:
    """From registryd's metrics: per xDS type whether a response was sent, and NACKs."""
    status, text = http_get(registryd.monitoring_port, "/metrics")
    assert status == 200, text
    sent: dict[str, bool] = {}
    rejects = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "pilot_xds_pushes" and "_" not in sample.labels["type"]:
                sent[sample.labels["type"]] = sample.value > 0
            elif sample.name == "pilot_total_xds_rejects":
                rejects += sample.value
    return sent, rejects


def test_example_client_calls_the_example_server_through_registryd(stack: Stack) -> None:
    port = free_port()
    (entry,) = copy_remapped(EXAMPLE, stack.config_dir, {PORT: port}.__getitem__)
    assert entry.name == "greeter.yaml"
    registryd = stack.start_registryd()
    server = stack.track(
        Process(
            "example-server",
            [sys.executable, str(EXAMPLE / "server.py"), f"--port={port}"],
            stack.workdir / "example-server.log",
        )
    )

    def serving() -> bool:
        server.check_alive()
        return f"serving on 127.0.0.1:{port}" in server.output()

    poll(serving, "the example server to listen", details=stack.logs)

    bootstrap = stack.workdir / "bootstrap.json"
    node = render_bootstrap(registryd.grpc_port, bootstrap)["node"]
    assert node["metadata"]["GENERATOR"] == "grpc"  # type: ignore[index]
    client = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "client.py"),
            f"--target=xds:///greeter.example:{port}",
            "--count=3",
            f"--timeout={DEADLINE}",
        ],
        env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap)},
        capture_output=True,
        text=True,
        timeout=6 * DEADLINE,
    )
    assert client.returncode == 0, client.stdout + client.stderr + stack.logs()
    assert client.stdout.splitlines() == ["answer: hello world from greeter-1"] * 3
    # the answers came by way of registryd, its only client: it sent the four types and
    # none was rejected
    assert served(registryd) == ({"cds": True, "eds": True, "lds": True, "rds": True}, 0)
