"""The daemon as an operator runs it: one clear line and exit 2 for every startup error
(bad flags, config, registry settings or addresses; never a traceback, never a native
gRPC log line), ``--version`` everywhere, and a clean, quick stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registryd import __version__
from registryd.testing import AdsClient
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_entries
from tests.e2e.test_validate_command import CONFIGS, config_file
from tests.support.procs import Registryd, free_port, free_ports

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
    """Address flags for three distinct free ports on 127.0.0.1 (gRPC, HTTP, monitoring)."""
    grpc, http, monitoring = free_ports(3)
    return [
        f"--grpcAddr=127.0.0.1:{grpc}",
        f"--httpAddr=127.0.0.1:{http}",
        f"--monitoringAddr=127.0.0.1:{monitoring}",
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


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hostile_config_file_is_one_line_and_exit_2(tmp_path: Path, name: str) -> None:
    """A FIFO, a symlink loop, deep nesting, an integer too long to convert, an alias
    bomb: each one line and exit 2, as any other config error (and nothing blocks)."""
    config, expected = config_file(tmp_path, name)
    assert_one_line_error(run("discovery", "--config", str(config)), 2, expected)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["grpcAddr", "httpAddr", "monitoringAddr"])
def test_busy_port_is_one_line_and_exit_2(index: int) -> None:
    """The address is checked before gRPC binds it, so gRPC's core logs nothing of its
    own ("Failed to add port") before registryd's line."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        flags = loopback_flags()
        flag = flags[index].split("=")[0]
        flags[index] = f"{flag}=127.0.0.1:{port}"
        result = run("discovery", *flags, f"--configDir={EXAMPLES}")
    assert_one_line_error(result, 2, f"{flag} 127.0.0.1:{port}: cannot listen")
    assert "address already in use" in result.stderr


def test_address_not_of_this_host_is_one_line_and_exit_2() -> None:
    flags = loopback_flags()
    flags[0] = "--grpcAddr=192.0.2.1:15010"  # TEST-NET-1: never an address of this host
    result = run("discovery", *flags, f"--configDir={EXAMPLES}")
    assert_one_line_error(result, 2, "--grpcAddr 192.0.2.1:15010: cannot listen")
    assert "not an address of this host" in result.stderr


def test_unresolvable_address_is_one_line_and_exit_2() -> None:
    flags = loopback_flags()
    flags[1] = "--httpAddr=no-such-host.invalid:8080"
    result = run("discovery", *flags, f"--configDir={EXAMPLES}")
    assert_one_line_error(
        result, 2, "--httpAddr no-such-host.invalid:8080: cannot listen: cannot resolve"
    )


def test_same_address_for_two_flags_is_one_line_and_exit_2() -> None:
    flags = loopback_flags()
    flags[2] = "--monitoringAddr=" + flags[1].split("=")[1]
    result = run("discovery", *flags, f"--configDir={EXAMPLES}")
    assert_one_line_error(result, 2, "--monitoringAddr")


BAD_REGISTRIES = {
    "unknown-setting": ("{name: c, type: consul, bogus: 1}", "unknown settings ['bogus']"),
    "bad-wait": ("{name: c, type: consul, wait: soon}", "'wait' must be a duration"),
    "bad-prefix": ("{name: e, type: etcd, prefix: services}", "'prefix' must be a key prefix"),
    "username-without-password": (
        "{name: e, type: etcd, username: admin}",
        "'username' and 'password' go together",
    ),
    "missing-path": (
        "{name: f, type: serviceentry, path: nowhere}",
        "registry 'f' (serviceentry): 'path': no such file or directory",
    ),
    "missing-ca-file": (
        "{name: e, type: etcd, ca_file: nowhere.pem}",
        "'ca_file': no such file",
    ),
    "missing-kubeconfig": (
        "{name: k, type: kubernetes, kubeconfig: nowhere.yaml}",
        "'kubeconfig': no such file",
    ),
    "invalid-name": (
        "{name: 'east/1', type: serviceentry, path: .}",
        "invalid registry name 'east/1': use 1-63 letters, digits",
    ),
}


@pytest.mark.parametrize("entry, message", BAD_REGISTRIES.values(), ids=list(BAD_REGISTRIES))
def test_bad_registry_settings_are_one_line_and_exit_2(
    tmp_path: Path, entry: str, message: str
) -> None:
    """Settings an adapter rejects are fatal at start; only failures to reach a registry
    are retried (no registry here is reachable: none would ever be contacted)."""
    config = tmp_path / "registryd.yaml"
    config.write_text(f"registries:\n- {entry}\n")
    result = run("discovery", *loopback_flags(), f"--config={config}")
    assert_one_line_error(result, 2, message)


def test_relative_paths_in_settings_are_taken_from_the_config_file(tmp_path: Path) -> None:
    """``kubeconfig:`` like ``path`` and ``*_file``: the error shows the resolved path."""
    (tmp_path / "conf").mkdir()
    config = tmp_path / "conf" / "registryd.yaml"
    config.write_text("registries:\n- {name: k, type: kubernetes, kubeconfig: kube/config}\n")
    result = run("discovery", *loopback_flags(), f"--config={config}")
    assert_one_line_error(result, 2, f"no such file: {tmp_path / 'conf' / 'kube' / 'config'}")


BAD_FLAGS = {
    "unknown-registry-type": (
        ["--registries=Kubernetes,bogus"],
        "--registries: unknown registry type 'bogus' (installed adapters: consul, etcd",
    ),
    "unknown-log-scope": (
        ["--log_output_level=default:info,bogus:debug"],
        "--log_output_level: unknown scope 'bogus' (scopes: consul, default",
    ),
    "unknown-log-level": (["--log_output_level=xds:loud"], "unknown level 'loud'"),
    "debounce-max-below-after": (
        ["--debounceAfter=2s", "--debounceMax=1s"],
        "--debounceMax (1s) is shorter than --debounceAfter (2s)",
    ),
    "unparsable-address": (["--monitoringAddr=localhost"], "--monitoringAddr: expected"),
}


@pytest.mark.parametrize("flags, message", BAD_FLAGS.values(), ids=list(BAD_FLAGS))
def test_bad_flags_are_one_line_and_exit_2(flags: list[str], message: str) -> None:
    result = run("discovery", *loopback_flags(), f"--configDir={EXAMPLES}", *flags)
    assert_one_line_error(result, 2, message)


def test_sub_scopes_and_adapter_scopes_are_accepted(stack: Stack) -> None:
    registryd = stack.start_registryd("--log_output_level=xds.server:debug,etcd:warn")
    assert registryd.alive()


@pytest.mark.parametrize("args", [["version"], ["--version"], ["discovery", "--version"]])
def test_version(args: list[str]) -> None:
    result = run(*args)
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"registryd {__version__}\n",
        "",
    )


def test_discovery_help_shows_defaults() -> None:
    result = run("discovery", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for shown in (
        "(default: :15010)",
        "(default: :8080)",
        "(default: default:info)",
        "(default: cluster.local)",
        "(default: infinite)",
        "(default: 10000)",
    ):
        assert shown in text, result.stdout
    assert "(default: None)" not in text


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


PROXIES = 50


async def _connect_and_stop(registryd: Registryd, wait_for: int) -> tuple[int, float]:
    """Connect :data:`PROXIES` ADS clients, wait until ``wait_for`` of them (any) have
    their first CDS response, SIGTERM registryd: (exit status, seconds it took to exit)."""
    clients = [
        AdsClient(
            f"127.0.0.1:{registryd.grpc_port}",
            node_id=f"sidecar~127.0.0.{i % 250 + 1}~p{i}.default~default.svc.cluster.local",
        )
        for i in range(PROXIES)
    ]
    try:
        for client in clients:
            await client.connect()
            client.subscribe("cds")
        firsts = [asyncio.create_task(client.next("cds", timeout=30)) for client in clients]
        try:
            for served, first in enumerate(asyncio.as_completed(firsts), 1):
                await first
                if served == wait_for:
                    break
        finally:
            for task in firsts:
                task.cancel()
            await asyncio.gather(*firsts, return_exceptions=True)
        started = time.monotonic()
        registryd.popen.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(registryd.popen.wait, 30)
        return status, time.monotonic() - started
    finally:
        for client in clients:
            await client.close()


@pytest.mark.parametrize(
    "flags, wait_for",
    [([], PROXIES), (["--maxRequestsPerSecond=0.5"], 1)],
    ids=["all-served", "most-waiting-for-admission"],
)
def test_sigterm_with_proxies_connected_exits_cleanly_with_valid_json_logs(
    stack: Stack, flags: list[str], wait_for: int
) -> None:
    """SIGTERM with 50 proxies connected (all served, or all but one still waiting to be
    admitted): exit 0, no traceback (gRPC printed a bare CancelledError one for each
    stream task still running when the event loop closed), every log line JSON."""
    write_entries(
        stack.config_dir / "web.yaml", service_entry("web.example", free_port(), [("127.0.0.1", 1)])
    )
    registryd = stack.start_registryd("--log_as_json", *flags)
    status, elapsed = asyncio.run(_connect_and_stop(registryd, wait_for))
    output = registryd.output()
    assert status == 0, f"exit {status} after {elapsed:.2f}s\n{registryd.tail()}"
    assert "Traceback" not in output and "CancelledError" not in output, registryd.tail()
    lines = output.splitlines()
    for line in lines:
        entry = json.loads(line)
        assert set(entry) >= {"time", "level", "scope", "msg"}, line
    assert json.loads(lines[-1])["msg"] == "registryd stopped", registryd.tail()
