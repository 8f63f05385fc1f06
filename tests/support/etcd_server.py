"""A real etcd for tests: one member on 127.0.0.1, free client and peer ports, its own
data directory, stopped for sure at the end.

:func:`etcd_server` is the fixture helper (a context manager); :class:`EtcdServer` can
``stop()`` and ``start()`` again on the same data directory and ports (an outage),
``pause()``/``resume()`` it (SIGSTOP/SIGCONT: an etcd that hangs) and run it with TLS
(:func:`make_tls`, certificates made with the ``openssl`` command).

Without an ``etcd`` binary the test is skipped with the reason, or fails when the
environment variable ``CI`` is set (CI installs the Debian package ``etcd-server``).
Every wait is bounded by a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.support.certs import TlsFiles, make_tls, require
from tests.support.procs import Process, ProcessDied, free_ports, poll

__all__ = ["EtcdServer", "TlsFiles", "etcd_binary", "etcd_server", "make_tls", "require"]

START_DEADLINE = 20.0  # seconds for etcd to elect itself and answer /health
PORT_ATTEMPTS = 3


def etcd_binary() -> str:
    return require("etcd", "install etcd 3.4+ (Debian/Ubuntu: apt-get install etcd-server)")


class EtcdServer:
    """One etcd member on 127.0.0.1.  ``start()`` waits until it answers ``/health``."""

    def __init__(self, workdir: Path, *, tls: TlsFiles | None = None) -> None:
        self.binary = etcd_binary()
        self.workdir = workdir
        self.data_dir = workdir / "etcd-data"
        self.tls = tls
        self.client_port, self.peer_port = free_ports(2)
        self.proc: Process | None = None
        self.runs = 0
        self.on_start: list[Callable[[Process], object]] = []  # e.g. Stack.track

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def _argv(self) -> list[str]:
        client = f"{self.scheme}://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [
            self.binary,
            "--name=registryd-test",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=registryd-test={peer}",
            "--heartbeat-interval=20",  # quick election, and leases can be 1 s short
            "--election-timeout=200",
        ]
        if self.tls is not None:
            argv += [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                f"--trusted-ca-file={self.tls.ca}",
                "--client-cert-auth",
            ]
        return argv

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if platform.machine().lower() in ("aarch64", "arm64"):
            env["ETCD_UNSUPPORTED_ARCH"] = "arm64"  # etcd 3.4 asks for this on arm64
        return env

    def healthy(self) -> bool:
        """True when etcd answers ``/health`` with ``"health": "true"``."""
        assert self.proc is not None
        self.proc.check_alive()
        connection: http.client.HTTPConnection
        if self.tls is None:
            connection = http.client.HTTPConnection("127.0.0.1", self.client_port, timeout=1)
        else:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
            connection = http.client.HTTPSConnection(
                "127.0.0.1", self.client_port, timeout=1, context=context
            )
        try:
            connection.request("GET", "/health")
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()
        with contextlib.suppress(ValueError):
            return response.status == 200 and json.loads(body).get("health") == "true"
        return False

    def start(self) -> EtcdServer:
        """Start etcd (again: same data directory and ports) and wait until it answers."""
        if self.proc is not None and self.proc.alive():
            raise AssertionError("etcd is already running")
        first = self.runs == 0
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.runs += 1
            self.proc = Process(
                "etcd",
                self._argv(),
                self.workdir / f"etcd-{self.runs}.log",
                env=self._env(),
                cwd=self.workdir,
            )
            for callback in self.on_start:
                callback(self.proc)
            try:
                poll(
                    self.healthy,
                    "etcd to answer /health",
                    deadline=START_DEADLINE,
                    details=self.proc.tail,
                )
            except ProcessDied:
                self.proc.stop()
                busy = "address already in use" in self.proc.output()
                if not (first and busy) or attempt == PORT_ATTEMPTS:
                    raise
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.client_port, self.peer_port = free_ports(2)
                continue
            except BaseException:
                self.proc.stop()
                raise
            return self
        raise AssertionError("unreachable")

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to etcd's JSON gateway of its v3 API (``/v3/kv/range``...): the
        answer.  Plain http only; fails unless etcd answers 200."""
        assert self.tls is None, "call() speaks plain http"
        connection = http.client.HTTPConnection("127.0.0.1", self.client_port, timeout=10)
        try:
            connection.request(
                "POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            answer = response.read()
        finally:
            connection.close()
        assert response.status == 200, f"etcd {path}: {response.status} {answer[:500]!r}"
        data = json.loads(answer)
        assert isinstance(data, dict)
        return data

    def revision(self) -> int:
        """etcd's current revision (what kube-apiserver calls the resourceVersion)."""
        header = self.call("/v3/kv/range", {"key": base64.b64encode(b"\0").decode()})["header"]
        return int(header["revision"])

    def compact(self, revision: int | None = None) -> int:
        """Compact etcd's history up to ``revision`` (default: the current one) and wait
        until it is done (``physical``): a watch from an older revision is refused.
        Returns the revision compacted to."""
        revision = revision or self.revision()
        self.call("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 5 s); a paused etcd is resumed first so it can exit."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                if self.proc.alive():
                    os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.stop()

    def pause(self) -> None:
        """Freeze etcd (SIGSTOP): connections stay open and nothing answers."""
        assert self.proc is not None and self.proc.alive()
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def tail(self, lines: int = 40) -> str:
        return self.proc.tail(lines) if self.proc is not None else "(etcd never started)"


@contextlib.contextmanager
def etcd_server(workdir: Path, *, tls: TlsFiles | None = None) -> Iterator[EtcdServer]:
    """A started :class:`EtcdServer` in ``workdir``, stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = EtcdServer(workdir, tls=tls)
    try:
        yield server.start()
    finally:
        server.stop()
