"""What the benchmark scripts share: ports, the ADS method and type URLs, and registryd
started on a ServiceEntry directory on loopback ports, ready, and stopped afterwards.

The ADS clients are :mod:`registryd.testing.ads`'s; free ports come from the tests' own
helper (:func:`tests.support.procs.free_port`).  Run the scripts from the repository root
as modules (``python -m bench.<script>``)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp
import psutil

from registryd.testing.ads import TYPES
from tests.support.procs import free_port

__all__ = [
    "CDS",
    "EDS",
    "LDS",
    "METHOD",
    "OWN_CONNECTION",
    "RDS",
    "Daemon",
    "free_port",
    "gc_pauses",
    "gc_stats",
    "mib",
    "probe",
    "registryd",
    "wait_ready",
]

METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
DELTA_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
CDS, EDS, LDS, RDS = TYPES["cds"], TYPES["eds"], TYPES["lds"], TYPES["rds"]
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
"""Channel options giving a client a TCP connection of its own, as each Envoy has (by
default grpc shares one connection between channels to the same target, and with xDS
workers every stream would land on one worker)."""


def mib(proc: psutil.Process) -> str:
    """Resident MiB of ``proc`` and its child processes (the xDS workers)."""
    return f"{tree_rss(proc) / 2**20:.0f}"


def wait_ready(port: int, timeout: float = 120) -> None:
    """Until registryd's ``/ready`` on ``port`` answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("registryd did not become ready")


def tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds (user + system) of ``proc`` and its running child processes (the xDS
    workers)."""
    total = 0.0
    for p in (proc, *proc.children(recursive=True)):
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of ``proc`` and its child processes."""
    total = 0
    for p in (proc, *proc.children(recursive=True)):
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


@dataclass(frozen=True)
class Daemon:
    """A running registryd: its process and loopback ports."""

    popen: subprocess.Popen[bytes]
    proc: psutil.Process
    grpc_port: int
    http_port: int
    monitoring_port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@contextlib.contextmanager
def _running(
    cmd: list[str],
    grpc_port: int,
    http_port: int,
    monitoring_port: int,
    stderr: IO[bytes] | None = None,
) -> Iterator[Daemon]:
    """``cmd`` started, ready on ``http_port``; terminated when the block ends."""
    popen = subprocess.Popen(cmd, stderr=stderr)
    try:
        wait_ready(http_port)
        yield Daemon(popen, psutil.Process(popen.pid), grpc_port, http_port, monitoring_port)
    finally:
        popen.terminate()
        popen.wait(timeout=30)


async def probe(url: str, stop: asyncio.Event) -> list[float]:
    """GET ``url`` every 20 ms until ``stop``: response times (seconds)."""
    times: list[float] = []
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            started = time.monotonic()
            async with session.get(url) as response:
                await response.read()
            times.append(time.monotonic() - started)
            await asyncio.sleep(0.02)
    return times


@contextlib.contextmanager
def registryd(config: Path, *flags: str, stderr: IO[bytes] | None = None) -> Iterator[Daemon]:
    """registryd on ``config`` (a ServiceEntry directory) with ``flags``, ready; stopped
    when the block ends."""
    grpc_port, http_port, mon_port = free_port(), free_port(), free_port()
    cmd = registryd_command(config, (grpc_port, http_port, mon_port), *flags)
    with _running(cmd, grpc_port, http_port, mon_port, stderr) as daemon:
        yield daemon


def registryd_command(
    config: Path, ports: tuple[int, int, int], *flags: str, python: Sequence[str] = ()
) -> list[str]:
    """The command line of registryd on ``config`` (a ServiceEntry directory) listening
    on 127.0.0.1 at ``ports`` (gRPC, HTTP, monitoring) with ``flags``; ``python``: the
    interpreter's own options before ``-m registryd`` (e.g. ``-m cProfile -o FILE``)."""
    grpc_port, http_port, mon_port = ports
    return [
        sys.executable,
        *python,
        "-m",
        "registryd",
        "discovery",
        f"--grpcAddr=127.0.0.1:{grpc_port}",
        f"--httpAddr=127.0.0.1:{http_port}",
        f"--monitoringAddr=127.0.0.1:{mon_port}",
        f"--configDir={config}",
        *flags,
    ]


def gc_stats(daemon: Daemon) -> dict[str, dict[str, float]]:
    """The daemon's garbage collections so far (all its processes), from
    ``registryd_gc_pause_seconds``: per generation, ``count``, ``over_50ms``,
    ``over_100ms`` and ``seconds`` in all."""
    url = f"http://127.0.0.1:{daemon.monitoring_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    stats: dict[str, dict[str, float]] = {}
    within: dict[tuple[str, str], float] = {}  # (generation, le) -> count at most le
    for line in text.splitlines():
        if not line.startswith("registryd_gc_pause_seconds"):
            continue
        name, value = line.rsplit(" ", 1)
        generation = name.split('generation="', 1)[1].split('"', 1)[0]
        one = stats.setdefault(generation, {"count": 0.0, "seconds": 0.0})
        if name.startswith("registryd_gc_pause_seconds_count"):
            one["count"] = float(value)
        elif name.startswith("registryd_gc_pause_seconds_sum"):
            one["seconds"] = float(value)
        elif 'le="' in name:
            within[generation, name.split('le="', 1)[1].split('"', 1)[0]] = float(value)
    for generation, one in stats.items():
        one["over_50ms"] = one["count"] - within.get((generation, "0.05"), 0.0)
        one["over_100ms"] = one["count"] - within.get((generation, "0.1"), 0.0)
    return stats


def gc_pauses(daemon: Daemon) -> str:
    """:func:`gc_stats` as one line."""
    return ", ".join(
        f"gen{g}: {s['count']:.0f} ({s['over_50ms']:.0f} over 50 ms, "
        f"{s['over_100ms']:.0f} over 100 ms, {s['seconds'] * 1000:.0f} ms in all)"
        for g, s in sorted(gc_stats(daemon).items())
    )


@contextlib.contextmanager
def raw_ads(config: Path) -> Iterator[Daemon]:
    """:mod:`bench.raw_ads` (the transport-only baseline) on ``config``, ready."""
    grpc_port, http_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "bench.raw_ads",
        f"--config={config}",
        f"--grpc-port={grpc_port}",
        f"--http-port={http_port}",
    ]
    with _running(cmd, grpc_port, http_port, http_port) as daemon:
        yield daemon
