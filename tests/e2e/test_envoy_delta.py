"""Envoy on Delta ADS (``api_type: DELTA_GRPC``) across reconnects: after registryd
closes the stream (max connection age), Envoy reconnects announcing what it holds
(``initial_resource_versions``); registryd resends nothing current, and later changes
still reach Envoy with nothing rejected or left warming."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.admin import Admin
from tests.e2e.checks import (
    LOCAL,
    assert_accepted,
    assert_stream_type,
    use_api,
    wait_answers,
    wait_hosts,
)
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_entries
from tests.support.procs import Registryd, http_get, listener_port, poll

HOST = "backend.example"


def connections(registryd: Registryd) -> list[dict[str, Any]]:
    status, body = http_get(registryd.http_port, "/debug/syncz")
    assert status == 200, body
    rows: list[dict[str, Any]] = json.loads(body)
    return rows


def test_envoy_reconnects_on_delta_without_being_sent_what_it_has(stack: Stack) -> None:
    a = stack.http_backend("backend-a")
    b = stack.http_backend("backend-b")
    port = listener_port()
    cluster = f"outbound|{port}||{HOST}"
    path = stack.config_dir / "services.yaml"
    write_entries(path, service_entry(HOST, port, [(LOCAL, a.port)]))
    registryd = stack.start_registryd("--keepaliveMaxServerConnectionAge=3s")
    envoy = stack.start_envoy(registryd, use_api("DELTA_GRPC"))
    admin = Admin(envoy.admin_port)
    wait_answers(port, HOST, {"backend-a"}, only=True, details=stack.logs)
    assert_stream_type(registryd, "DELTA_GRPC")
    (first,) = connections(registryd)

    def reconnected() -> dict[str, Any] | None:
        rows = [r for r in connections(registryd) if r["connectionID"] != first["connectionID"]]
        if len(rows) == 1 and {"cds", "eds", "lds", "rds"} <= rows[0]["types"].keys():
            if all(t["acked"] for t in rows[0]["types"].values()):
                return rows[0]
        return None

    # the stream ends after its age plus gRPC's grace for open streams (10 s)
    again = poll(
        reconnected, "Envoy to reconnect on Delta and ACK", deadline=30, details=stack.logs
    )
    # Envoy announced what it held: nothing was current to resend
    sent = {kind: t["resourcesSent"] for kind, t in again["types"].items()}
    assert sent == {"cds": 0, "eds": 0, "lds": 0, "rds": 0}, again
    assert again["types"]["cds"]["resourcesHeld"] >= 3  # the service and the static two

    write_entries(path, service_entry(HOST, port, [(LOCAL, a.port), (LOCAL, b.port)]))
    wait_hosts(admin, cluster, [(LOCAL, a.port), (LOCAL, b.port)], stack.logs)
    wait_answers(port, HOST, {"backend-a", "backend-b"}, details=stack.logs)
    assert_accepted(admin, registryd)
    registryd.check_alive()
    envoy.check_alive()
