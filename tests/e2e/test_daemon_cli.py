"""The daemon as an operator runs it: clear one-line errors, clean shutdown."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.e2e.procs import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "serviceentries"


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "registryd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def loopback_flags() -> list[str]:
    return [
        f"--grpcAddr=127.0.0.1:{free_port()}",
        f"--httpAddr=127.0.0.1:{free_port()}",
        f"--monitoringAddr=127.0.0.1:{free_port()}",
    ]


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("registryd: error:")]
    assert len(errors) == 1, result.stderr
    assert text in errors[0]


def test_unknown_flag_is_one_line_and_exit_2() -> None:
    assert_one_line_error(run("discovery", "--nosuchflag"), 2, "--nosuchflag")


def test_bad_address_and_duration() -> None:
    assert_one_line_error(run("discovery", "--grpcAddr", "nonsense"), 2, "--grpcAddr")
    result = run("discovery", "--keepaliveMaxServerConnectionAge", "soon")
    assert_one_line_error(result, 2, "--keepaliveMaxServerConnectionAge")


def test_bad_config_file(tmp_path: Path) -> None:
    config = tmp_path / "registryd.yaml"
    config.write_text("registries: [name: x\n")
    assert_one_line_error(run("discovery", "--config", str(config)), 2, "invalid YAML")
    config.write_text("registries:\n- name: x\n  type: nosuchadapter\n")
    assert_one_line_error(run("discovery", "--config", str(config)), 2, "nosuchadapter")


def test_busy_grpc_port_is_one_line_error() -> None:
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        flags = loopback_flags()
        flags[0] = f"--grpcAddr=127.0.0.1:{port}"
        result = run("discovery", *flags, f"--configDir={EXAMPLES}")
    assert_one_line_error(result, 1, "--grpcAddr")


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    flags = loopback_flags()
    http_port = flags[1].rsplit(":", 1)[1]
    log = (tmp_path / "registryd.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "registryd", "discovery", *flags, f"--configDir={EXAMPLES}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        ready = False
        while time.monotonic() < deadline and not ready:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ready", timeout=1) as r:
                    ready = r.status == 200
            except OSError:
                time.sleep(0.05)
        assert ready, (tmp_path / "registryd.log").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "registryd.log").read_text()
    assert "registryd stopped" in output
    assert "Traceback" not in output
