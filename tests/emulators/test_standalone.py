"""The Consul and Nacos emulators as standalone servers (``python -m
tests.support.emulators.<name> [--port P] [FILE]``): started as processes with a state
file, they print where they listen, serve the file's services and stop on Ctrl-C."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import DEADLINE, Process, http_get, poll

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"^(\w+) emulator: http://127\.0\.0\.1:(\d+) \(address 127\.0\.0\.1:\d+\)$")


def emulator(name: str, tmp_path: Path, *args: str) -> Process:
    """``python -m tests.support.emulators.<name> *args`` from the repository's root."""
    argv = [sys.executable, "-m", f"tests.support.emulators.{name}", *args]
    return Process(name, argv, tmp_path / f"{name}.log", cwd=ROOT)


def listening_port(proc: Process) -> int:
    """The port the emulator says it listens on, once it has said so."""

    def said() -> int | None:
        proc.check_alive()
        for line in proc.output().splitlines():
            match = LISTENING.match(line)
            if match:
                return int(match.group(2))
        return None

    return poll(said, f"{proc.name} to say where it listens", details=proc.tail)


def interrupt(proc: Process) -> int:
    """Ctrl-C: SIGINT, then the exit status."""
    proc.popen.send_signal(signal.SIGINT)
    return proc.popen.wait(timeout=DEADLINE)


def test_the_consul_emulator_serves_the_services_of_a_file(tmp_path: Path) -> None:
    state = tmp_path / "consul.yaml"
    state.write_text(
        "services:\n"
        "- {name: web, address: 127.0.0.1, port: 8080, tags: ['version|v1'],"
        " meta: {protocol: http}}\n"
        "- {name: web, address: 127.0.0.2, port: 8080, status: critical}\n"
        "- {name: db, address: 127.0.0.3, port: 5432, datacenter: dc2}\n"
    )
    proc = emulator("consul", tmp_path, "--port", "0", str(state))
    try:
        port = listening_port(proc)
        status, body = http_get(port, "/v1/catalog/services")
        assert status == 200, body
        assert json.loads(body) == {"consul": [], "web": ["version|v1"]}
        status, body = http_get(port, "/v1/health/service/web")
        assert status == 200, body
        entries = json.loads(body)
        assert [(e["Service"]["ID"], e["Node"]["Address"]) for e in entries] == [
            ("web-1", "127.0.0.1"),
            ("web-2", "127.0.0.2"),
        ]
        assert [[c["Status"] for c in e["Checks"]] for e in entries] == [["passing"], ["critical"]]
        status, body = http_get(port, "/v1/health/service/db?dc=dc2")
        assert status == 200 and [e["Service"]["Port"] for e in json.loads(body)] == [5432]
        assert interrupt(proc) == 0
    finally:
        proc.stop()


def test_the_nacos_emulator_serves_the_instances_of_a_file(tmp_path: Path) -> None:
    state = tmp_path / "nacos.json"
    state.write_text(
        json.dumps(
            {
                "instances": [
                    {"service": "orders", "ip": "127.0.0.1", "port": 8080},
                    {"service": "orders", "ip": "127.0.0.2", "port": 8080, "healthy": False},
                    {"service": "stock", "ip": "127.0.0.3", "port": 9090, "group": "WAREHOUSE"},
                ]
            }
        )
    )
    proc = emulator("nacos", tmp_path, "--port", "0", str(state))
    try:
        port = listening_port(proc)
        status, body = http_get(port, "/nacos/v1/ns/service/list?pageNo=1&pageSize=10")
        assert (status, json.loads(body)) == (200, {"count": 1, "doms": ["orders"]})
        status, body = http_get(port, "/nacos/v1/ns/instance/list?serviceName=orders")
        assert status == 200, body
        hosts = json.loads(body)["hosts"]
        assert [(h["ip"], h["port"], h["healthy"]) for h in hosts] == [
            ("127.0.0.1", 8080, True),
            ("127.0.0.2", 8080, False),
        ]
        status, body = http_get(port, "/nacos/v1/ns/instance/list?serviceName=WAREHOUSE@@stock")
        assert [h["ip"] for h in json.loads(body)["hosts"]] == ["127.0.0.3"]
        assert interrupt(proc) == 0
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("consul", "services:\n- {name: web, port: 80}\n", "services[1]: 'address' is required"),
        ("consul", "services:\n- {name: web, adress: x, port: 80}\n", "unknown fields ['adress']"),
        ("consul", "service: []\n", "unknown keys ['service']"),
        ("consul", "services:\n- {name: w, address: a, port: '80'}\n", "'port' has the wrong type"),
        ("nacos", "instances: {service: x}\n", "'instances' must be a list"),
        ("nacos", "instances:\n- {service: x, ip: a, port: 1, healthy: 1}\n", "'healthy'"),
        ("nacos", "instances: [\n", "nacos.yaml"),
    ],
)
def test_a_bad_state_file_is_one_line_and_exit_2(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    state = tmp_path / f"{name}.yaml"
    state.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", f"tests.support.emulators.{name}", "--port", "0", str(state)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE * 3,
        check=False,
    )
    assert done.returncode == 2, done
    assert done.stdout == ""  # it never listened
    assert message in done.stderr, done.stderr
