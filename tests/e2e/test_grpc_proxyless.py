"""Proxyless gRPC end to end: a grpcio client resolves ``xds:///greeter.example:PORT``
through registryd (LDS ApiListener → CDS → EDS) and calls a real gRPC server; a file
edit moves it to another server without restarting anything."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.e2e.backends import GREETER_METHOD, GreeterServer
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_entries
from tests.e2e.procs import Process, Registryd, poll

CLIENT = Path(__file__).with_name("grpc_client.py")
HOST = "greeter.example"
NODE_ID = "sidecar~127.0.0.1~client.default~default.svc.cluster.local"


def grpc_bootstrap(registryd: Registryd) -> dict[str, object]:
    """gRPC's xDS bootstrap: registryd as the one xDS server, a proxyless node."""
    return {
        "xds_servers": [
            {
                "server_uri": f"127.0.0.1:{registryd.grpc_port}",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": NODE_ID, "metadata": {"GENERATOR": "grpc"}},
    }


def greeter_entry(port: int, server: GreeterServer) -> dict[str, object]:
    return service_entry(
        HOST, port, [("127.0.0.1", server.port)], protocol="GRPC", port_name="grpc"
    )


def answers(client: Process) -> list[str]:
    """The answers the client printed so far."""
    lines = client.output().splitlines()
    return [line.removeprefix("answer: ") for line in lines if line.startswith("answer: ")]


def answered(client: Process, text: str) -> bool:
    """Whether the client printed the answer ``text``; fails at once if it exited."""
    client.check_alive()
    return text in answers(client)


def test_proxyless_grpc_client_calls_through_xds(stack: Stack) -> None:
    first = stack.greeter("greeter-1")
    second = stack.greeter("greeter-2")
    port = first.port  # the service port is the port the first server listens on
    path = stack.config_dir / "greeter.yaml"
    write_entries(path, greeter_entry(port, first))
    registryd = stack.start_registryd()

    bootstrap = stack.workdir / "grpc-bootstrap.json"
    bootstrap.write_text(json.dumps(grpc_bootstrap(registryd)))
    stop = stack.workdir / "grpc-client.stop"
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap), "PYTHONUNBUFFERED": "1"}
    argv = [
        sys.executable,
        str(CLIENT),
        f"xds:///{HOST}:{port}",
        GREETER_METHOD,
        "--message=e2e",
        f"--stop-file={stop}",
        "--deadline=30",
    ]
    client = stack.track(Process("grpc-client", argv, stack.workdir / "grpc-client.log", env=env))

    # -- the client resolves the name through registryd and gets a real answer -------------
    poll(
        lambda: answered(client, "hello e2e from greeter-1"),
        "the proxyless client to get an answer from greeter-1",
        details=stack.logs,
    )
    assert first.calls >= 1

    # -- point the service at the other server: the running client follows ---------------
    write_entries(path, greeter_entry(port, second))
    poll(
        lambda: answered(client, "hello e2e from greeter-2"),
        "the proxyless client to move to greeter-2",
        details=stack.logs,
    )
    assert second.calls >= 1
    calls = first.calls
    poll(
        lambda: answers(client)[-3:] == ["hello e2e from greeter-2"] * 3,
        "three answers in a row from greeter-2",
        details=stack.logs,
    )
    assert first.calls == calls, "greeter-1 still got calls after it was removed"

    # -- the client stops cleanly; registryd saw no NACK -----------------------------------
    stop.touch()
    poll(lambda: not client.alive(), "the client to exit", details=stack.logs)
    assert client.popen.returncode == 0, client.tail()
    assert " rejected " not in registryd.output(), registryd.tail()
    registryd.check_alive()
