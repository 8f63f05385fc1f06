"""Proxyless gRPC end to end: a grpcio client resolves ``xds:///greeter.example:PORT``
through registryd (LDS ApiListener → CDS → EDS) and calls a real gRPC server; a file
edit moves it to another server without restarting anything."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.e2e.backends import GREETER_METHOD, GreeterServer
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_entries
from tests.support.procs import Process, Registryd, http_get, poll

CLIENT = Path(__file__).with_name("grpc_client.py")
HOST = "greeter.example"
NODE_ID = "sidecar~127.0.0.1~client.default~default.svc.cluster.local"


def grpc_bootstrap(registryd: Registryd, node_id: str = NODE_ID) -> dict[str, object]:
    """gRPC's xDS bootstrap: registryd as the one xDS server, a proxyless node."""
    return {
        "xds_servers": [
            {
                "server_uri": f"127.0.0.1:{registryd.grpc_port}",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node_id, "metadata": {"GENERATOR": "grpc"}},
    }


def start_client(
    stack: Stack, registryd: Registryd, target: str, name: str, node_id: str = NODE_ID
) -> tuple[Process, Path]:
    """A proxyless client process calling ``target`` until its stop file appears."""
    bootstrap = stack.workdir / f"{name}-bootstrap.json"
    bootstrap.write_text(json.dumps(grpc_bootstrap(registryd, node_id)))
    stop = stack.workdir / f"{name}.stop"
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap), "PYTHONUNBUFFERED": "1"}
    argv = [
        sys.executable,
        str(CLIENT),
        target,
        GREETER_METHOD,
        "--message=e2e",
        f"--stop-file={stop}",
        "--deadline=30",
    ]
    client = stack.track(Process(name, argv, stack.workdir / f"{name}.log", env=env))
    return client, stop


def syncz(registryd: Registryd, node_id: str) -> dict[str, Any]:
    """``/debug/syncz`` of one proxy: type → its sync state."""
    status, body = http_get(registryd.http_port, f"/debug/syncz?proxyID={node_id}")
    assert status == 200, body
    rows = json.loads(body)
    return rows[0]["types"] if rows else {}


def acked(registryd: Registryd, node_id: str, kinds: set[str]) -> bool:
    """Whether exactly ``kinds`` were requested by that client, and every one ACKed."""
    types = syncz(registryd, node_id)
    return set(types) == kinds and all(t["acked"] for t in types.values())


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
    # istiod's four types, as for Envoy: the ApiListener's routes come over RDS
    poll(
        lambda: acked(registryd, NODE_ID, {"cds", "eds", "lds", "rds"}),
        "CDS, EDS, LDS and RDS ACKed",
        details=stack.logs,
    )

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


def test_dns_service_reaches_grpc_as_logical_dns_with_routes_over_rds(stack: Stack) -> None:
    # grpcgen/cds.go: gRPC accepts EDS, LOGICAL_DNS and aggregate clusters only; a DNS
    # ServiceEntry is served as LOGICAL_DNS on its endpoint name (istiod: an empty EDS)
    server = stack.greeter("greeter-dns")
    port = server.port
    entry = service_entry(
        "dns.greeter.example", port, [("localhost", port)], protocol="GRPC", port_name="grpc"
    )
    entry["spec"]["resolution"] = "DNS"
    write_entries(stack.config_dir / "dns.yaml", entry)
    registryd = stack.start_registryd()
    client, stop = start_client(stack, registryd, f"xds:///dns.greeter.example:{port}", "dns")
    poll(
        lambda: answered(client, "hello e2e from greeter-dns"),
        "the proxyless client to reach the DNS service",
        details=stack.logs,
    )
    # the listener's routes came over RDS; a LOGICAL_DNS cluster needs no EDS; no NACK
    poll(
        lambda: acked(registryd, NODE_ID, {"cds", "lds", "rds"}),
        "CDS, LDS and RDS ACKed",
        details=stack.logs,
    )
    assert all(t["nacks"] == 0 for t in syncz(registryd, NODE_ID).values())
    stop.touch()
    poll(lambda: not client.alive(), "the client to exit", details=stack.logs)


def test_short_kubernetes_names_resolve_for_clients_of_the_services_namespace(
    stack: Stack,
) -> None:
    # grpcgen/lds.go tryFindFQDN: greeter / greeter.shop / greeter.shop.svc from shop only
    server = stack.greeter("greeter-shop")
    port = server.port
    host = "greeter.shop.svc.cluster.local"
    entry = service_entry(
        host, port, [("127.0.0.1", port)], protocol="GRPC", port_name="grpc", namespace="shop"
    )
    write_entries(stack.config_dir / "shop.yaml", entry)
    registryd = stack.start_registryd()
    shop = "sidecar~127.0.0.1~client.shop~shop.svc.cluster.local"
    clients = [
        start_client(stack, registryd, f"xds:///{name}:{port}", f"shop-{i}", shop)
        for i, name in enumerate(("greeter", "greeter.shop"))
    ]
    for client, _ in clients:
        poll(
            lambda c=client: answered(c, "hello e2e from greeter-shop"),  # type: ignore[misc]
            f"{client.name} to reach {host} by a short name",
            details=stack.logs,
        )
    other = "sidecar~127.0.0.1~client.web~web.svc.cluster.local"
    stranger, stop = start_client(stack, registryd, f"xds:///greeter:{port}", "stranger", other)
    # the stranger's listener request is answered, and ACKed, with nothing in it
    poll(lambda: syncz(registryd, other).get("lds", {}).get("acked"), "the stranger's LDS ACK")
    lds = syncz(registryd, other)["lds"]
    assert lds["resourcesSent"] == 0, lds
    assert "cds" not in syncz(registryd, other)  # it never learnt of a cluster to ask for
    assert answers(stranger) == []
    for path in [stop, *(s for _, s in clients)]:
        path.touch()
