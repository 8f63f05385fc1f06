"""Merge priority through the daemon: two ServiceEntry registries of registryd.yaml define
one hostname on different ports; the one with the higher ``priority:`` decides the
service's ports (even though its name sorts last), which a real Envoy is served and which
the debug port shows."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.e2e.admin import Admin
from tests.e2e.checks import LOCAL, assert_accepted, use_api, wait_answers
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_entries
from tests.support.procs import http_get, listener_ports

HOST = "ranked.example"


def get_json(port: int, path: str) -> Any:
    status, body = http_get(port, path)
    assert status == 200, f"{path}: {status} {body}"
    return json.loads(body)


def test_the_higher_priority_registry_decides_the_served_ports(stack: Stack, api_type: str) -> None:
    low_port, high_port = listener_ports(2)
    low_backend, high_backend = stack.http_backend("low"), stack.http_backend("high")
    registries = []
    for name, priority, port, backend in (
        ("a-low", 100, low_port, low_backend),  # sorts first: would win a tie
        ("b-high", 500, high_port, high_backend),
    ):
        directory = stack.workdir / name
        directory.mkdir()
        write_entries(directory / "entry.yaml", service_entry(HOST, port, [(LOCAL, backend.port)]))
        registries.append(
            {"name": name, "type": "serviceentry", "path": str(directory), "priority": priority}
        )
    config = stack.workdir / "registryd.yaml"
    config.write_text(yaml.safe_dump({"registries": registries}))
    registryd = stack.start_registryd(f"--config={config}")
    envoy = stack.start_envoy(registryd, use_api(api_type))
    admin = Admin(envoy.admin_port)

    seen = wait_answers(high_port, HOST, {"high"}, details=stack.logs)
    assert "high" in seen
    assert admin.hosts(f"outbound|{high_port}||{HOST}") is not None
    assert admin.hosts(f"outbound|{low_port}||{HOST}") is None  # the loser's port: not served
    assert_accepted(admin, registryd)

    (served,) = get_json(registryd.http_port, f"/debug/registryz?hostname={HOST}")
    assert (served["registry"], served["priority"]) == ("serviceentry/b-high", 500)
    assert [p["port"] for p in served["ports"]] == [high_port]
    assert served["priorities"] == {"serviceentry/b-high": 500, "serviceentry/a-low": 100}
    assert served["conflict"]["losers"] == ["serviceentry/a-low"]

    shards = get_json(registryd.http_port, f"/debug/endpointz?hostname={HOST}")[HOST]["default"]
    low = shards["serviceentry/a-low"]["attributes"]
    assert (low["winner"], low["priority"], low["winnerPriority"]) == (False, 100, 500)
    assert shards["serviceentry/b-high"]["attributes"]["winner"] is True
