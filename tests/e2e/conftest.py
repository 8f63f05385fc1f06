"""Fixtures for end-to-end tests: real registryd, real Envoy, real upstream servers.

The :class:`Stack` fixture starts parts on demand and stops every one of them in
teardown, last started first.  When a test fails, the tail of every process log is
added to its report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.backends import GreeterServer, HttpBackend, NameServer
from tests.e2e.checks import API_TYPES
from tests.e2e.loop_thread import LoopThread
from tests.support.emulators.nacos import NacosEmulator
from tests.support.procs import Envoy, Process, Registryd, start_envoy, start_registryd

LOGS = pytest.StashKey[list[Process]]()


class Stack:
    """The parts of one test; each ``start_*`` registers its part for teardown."""

    def __init__(self, workdir: Path, cleanup: contextlib.ExitStack, logs: list[Process]) -> None:
        self.workdir = workdir
        self.config_dir = workdir / "serviceentries"
        self.config_dir.mkdir()
        self._cleanup = cleanup
        self._logs = logs

    def _process(self, proc: Process) -> None:
        self._logs.append(proc)
        self._cleanup.callback(proc.stop)

    def start_registryd(self, *extra: str, name: str = "registryd") -> Registryd:
        """registryd on ``config_dir``, ready; ``name`` names its log (``<name>.log``), so
        several replicas keep theirs apart."""
        proc = start_registryd(self.config_dir, self.workdir / f"{name}.log", *extra, name=name)
        self._process(proc)
        return proc

    def start_envoy(
        self, registryd: Registryd, customize: Callable[[dict[str, Any]], None] | None = None
    ) -> Envoy:
        """Envoy on the example bootstrap (changed by ``customize``), connected to
        ``registryd`` and LIVE."""
        proc = start_envoy(registryd.grpc_port, self.workdir, customize)
        self._process(proc)
        return proc

    def track(self, proc: Process) -> Process:
        """Stop a process started elsewhere in teardown and show its log on failure."""
        self._process(proc)
        return proc

    def http_backend(self, name: str, address: str = "127.0.0.1", port: int = 0) -> HttpBackend:
        backend = HttpBackend(name, address, port).start()
        self._cleanup.callback(backend.stop)
        return backend

    def name_server(self, name: str, address: str = "127.0.0.1", **tls: str) -> NameServer:
        """A TCP (or, with ``cert``/``key``, TLS) server that answers with its name."""
        server = NameServer(name, address, **tls).start()
        self._cleanup.callback(server.stop)
        return server

    def greeter(self, name: str) -> GreeterServer:
        server = GreeterServer(name).start()
        self._cleanup.callback(server.stop)
        return server

    def logs(self) -> str:
        """The tail of every process log, for assertion messages."""
        return "\n".join(proc.tail() for proc in self._logs)


@pytest.fixture(params=API_TYPES)
def api_type(request: pytest.FixtureRequest) -> str:
    """Envoy's ADS flavour (``GRPC``: state of the world, ``DELTA_GRPC``: Delta): a test
    that takes it runs once on each, as Envoy can be configured either way."""
    return str(request.param)


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    logs: list[Process] = []
    request.node.stash[LOGS] = logs
    with contextlib.ExitStack() as cleanup:
        yield Stack(tmp_path, cleanup, logs)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for proc in item.stash.get(LOGS, []):
            with contextlib.suppress(OSError, ValueError):
                report.sections.append((f"{proc.name} log ({proc.log.name})", proc.tail(200)))


@pytest.fixture
def nacos() -> Iterator[tuple[LoopThread, NacosEmulator]]:
    """A Nacos emulator on loopback, run by a loop of its own (the daemon is a process)."""
    thread = LoopThread()
    server = NacosEmulator()
    thread.call(server.start())
    yield thread, server
    thread.call(server.stop())
    thread.close()
