"""The example plugin package, installed the way an operator installs a plugin (pip, into
its own directory) and loaded by registryd through its entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from tests.support.procs import http_get, poll

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "plugin-inventory"
INVENTORY = {
    "services": [
        {
            "name": "billing",
            "namespace": "payments",
            "port": 8080,
            "protocol": "http",
            "instances": [{"host": "10.1.0.5", "port": 18080, "zone": "eu-west-1a"}],
        },
        {"name": "broken", "port": 0},
    ]
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install`` the example plugin into a directory of its own."""
    target = tmp_path_factory.mktemp("plugin-site")
    source = tmp_path_factory.mktemp("plugin-src") / "plugin-inventory"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    assert list(target.glob("registryd_inventory-*.dist-info/entry_points.txt"))
    return target


class _Inventory(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(INVENTORY).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def inventory() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Inventory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_plugin_passes_the_adapter_contract_suite(installed: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
        env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=installed,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout, result.stdout


def test_registryd_loads_the_installed_plugin_by_its_type(
    installed: Path, inventory: int, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = stack.workdir / "registryd.yaml"
    config.write_text(
        "registries:\n"
        "- name: cmdb\n"
        "  type: inventory\n"
        f"  url: http://127.0.0.1:{inventory}/services\n"
        "  interval: 1\n"
        "  token: do-not-show-me\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(installed))
    registryd = stack.start_registryd(f"--config={config}")
    status, body = http_get(registryd.http_port, "/debug/registryz")
    assert status == 200, body
    (service,) = json.loads(body)
    assert service["hostname"] == "billing.inventory.internal"
    assert service["namespace"] == "payments"
    assert service["registry"] == "inventory/cmdb"

    def configz() -> dict[str, object] | None:
        _, text = http_get(registryd.http_port, "/debug/configz?registry=cmdb")
        found = json.loads(text)
        return found[0] if found and found[0]["errors"] else None

    config_view = poll(configz, "the malformed inventory entry in configz", details=stack.logs)
    assert "port" in str(config_view["errors"])
    assert "do-not-show-me" not in json.dumps(config_view)
    assert "do-not-show-me" not in registryd.output()
