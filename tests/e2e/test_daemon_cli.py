"""The daemon as an operator runs it: one clear line for every startup error (exit 2 for
bad flags or config, never a traceback) and a clean, quick stop on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_entries
from tests.e2e.procs import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "serviceentries"
STOP_WITHIN = 5.0  # seconds SIGTERM may take to stop the daemon


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``registryd ARGS`` to completion, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "registryd", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def loopback_flags() -> list[str]:
    """Address flags for free ports on 127.0.0.1 (gRPC, HTTP, monitoring)."""
    return [
        f"--grpcAddr=127.0.0.1:{free_port()}",
        f"--httpAddr=127.0.0.1:{free_port()}",
        f"--monitoringAddr=127.0.0.1:{free_port()}",
    ]


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], code: int, text: str, *, alone: bool = True
) -> None:
    """``result`` exited with ``code``, no traceback, and exactly one error line naming
    ``text``.  With ``alone`` (errors found before the daemon starts) that line is all of
    stderr and stdout is empty; otherwise it is the last line, after the daemon's log."""
    detail = f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    assert result.returncode == code, detail
    assert "Traceback" not in result.stderr, detail
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("registryd: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], detail
    assert text in errors[0], detail
    if alone:
        assert len(lines) == 1, detail
        assert result.stdout == "", detail


def test_unknown_flag_is_one_line_and_exit_2() -> None:
    assert_one_line_error(run("discovery", "--nosuchflag"), 2, "--nosuchflag")


def test_bad_flag_values_are_one_line_and_exit_2() -> None:
    assert_one_line_error(run("discovery", "--grpcAddr", "nonsense"), 2, "--grpcAddr")
    result = run("discovery", "--keepaliveMaxServerConnectionAge", "soon")
    assert_one_line_error(result, 2, "--keepaliveMaxServerConnectionAge")
    result = run("discovery", "--configDir", str(EXAMPLES / "web.yaml"))
    assert_one_line_error(result, 2, "--configDir")


def test_plaintext_xds_off_without_tls_is_one_line_and_exit_2() -> None:
    assert_one_line_error(run("discovery", "--grpcAddr=off"), 2, "--grpcAddr off needs")


def test_bad_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "registryd.yaml"
    config.write_text("registries: [name: x\n")
    assert_one_line_error(run("discovery", "--config", str(config)), 2, "invalid YAML")
    config.write_text("registries:\n- name: x\n  type: nosuchadapter\n")
    assert_one_line_error(run("discovery", "--config", str(config)), 2, "nosuchadapter")
    missing = tmp_path / "missing.yaml"
    assert_one_line_error(run("discovery", "--config", str(missing)), 2, "cannot read")


def test_busy_grpc_port_is_one_line_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        flags = loopback_flags()
        flags[0] = f"--grpcAddr=127.0.0.1:{port}"
        result = run("discovery", *flags, f"--configDir={EXAMPLES}")
    assert_one_line_error(result, 1, "--grpcAddr", alone=False)


def test_sigterm_stops_cleanly(stack: Stack) -> None:
    write_entries(
        stack.config_dir / "web.yaml", service_entry("web.example", free_port(), [("127.0.0.1", 1)])
    )
    registryd = stack.start_registryd()
    started = time.monotonic()
    registryd.popen.send_signal(signal.SIGTERM)
    try:
        status = registryd.popen.wait(timeout=STOP_WITHIN)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"registryd still running {STOP_WITHIN:.0f}s after SIGTERM\n{registryd.tail()}"
        ) from None
    elapsed = time.monotonic() - started
    output = registryd.output()
    assert status == 0, f"exit {status} after {elapsed:.1f}s\n{registryd.tail()}"
    assert "Traceback" not in output, registryd.tail()
    assert "registryd stopped" in output, registryd.tail()
