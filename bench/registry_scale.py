"""Registries at scale: where registryd stands with N services of one registry type.

For each registry type (``--registry``) and each N (``--services``), with ``--instances``
instances a service: a server holding them (the Consul, Nacos and Kubernetes emulators
in a process of their own, a real etcd; see :mod:`bench.scale_servers`; with
``--real``, a real Consul agent and kube-apiserver instead of their emulators, see
:mod:`bench.scale_real`), registryd
started on it (one registry, ``--xdsWorkers=1``) and one ADS client that subscribes
like Envoy (CDS wildcard, EDS for every EDS cluster it is sent), connected as soon as
registryd listens.  Then:

1. first full sync: seconds from registryd's start until its ``/ready`` answers 200, and
   until the ADS client holds every service's cluster with all its endpoints;
2. registryd's RSS once synced;
3. idle: over ``--idle`` seconds with no change, registryd's CPU (% of one core, from
   ``/proc/<pid>/stat``) and the requests a second the server served (counted by the
   server);
4. ``--changes`` changes, one at a time, each moving one instance of a random service
   to a new address: change -> published snapshot (the push that carried it, from
   ``/debug/pushz``) and change -> ADS client (the new address arrives over EDS),
   p50/p99/max;
5. with ``--churn RATE``: ``--churn-rounds`` times (default 1), ``RATE`` changes a
   second over random services for ``--churn-seconds`` (default 60), from
   :data:`CHURN_WORKERS` writers (each its own services, so that each service's
   changes keep their order; each writes the changes due every :data:`CHURN_TICK`
   seconds in one batch, as few requests as the server allows: one for an emulator,
   transactions for etcd): the rate achieved, the
   pushes they caused (``/debug/pushz`` versions), registryd's CPU and RSS before,
   at its peak (sampled each second) and 5 s after the ADS client converged, and
   whether and how soon after the last change the client held exactly the final
   addresses of every service changed.

Every wait has a deadline (``--timeout``); servers and registryd listen on 127.0.0.1
and are stopped at the end.  ``--cprofile FILE`` runs registryd under cProfile (one
file per registry and N: ``FILE.<registry>-<N>``).  Prints numbers; asserts nothing.

    python -m bench.registry_scale --registry nacos,etcd --services 1000,10000 --idle 60
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml
from envoy.config.endpoint.v3 import endpoint_pb2

from bench.common import CDS, EDS, registryd_command, tree_rss
from bench.scale_real import RealConsul, RealKube
from bench.scale_servers import (
    EMULATED,
    EmulatedServer,
    EtcdBackend,
    Server,
    address,
    hostname,
)
from registryd.testing.ads import AdsClient, Response
from tests.support.procs import free_ports

REGISTRIES = ("consul", "nacos", "kubernetes", "etcd")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHURN_WORKERS = 8
CHURN_TICK = 0.05  # seconds between a churn writer's batches
MAX_MESSAGE = 2**31 - 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (``/proc/<pid>/stat``)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def new_address(k: int) -> str:
    """The address of the ``k``-th change: unique, and outside the starting ones."""
    return f"172.{16 + k // 65536}.{k // 256 % 256}.{k % 256}"


def marker(addr: str) -> bytes:
    """``addr`` as it is serialized in an EDS endpoint (``SocketAddress.address``, field
    2): its tag and length first, so 172.16.0.1 does not match 172.16.0.12."""
    return bytes([0x12, len(addr)]) + addr.encode()


class Watcher:
    """One ADS client that subscribes like Envoy and records (a) when it holds every
    service's endpoints and (b) when a marker address first arrives over EDS."""

    def __init__(self, target: str, services: int, instances: int) -> None:
        self.client = AdsClient(
            target,
            node_id="sidecar~10.9.0.1~scale-0.bench~bench.svc.cluster.local",
            keep=False,
            on_response=self._received,
            # as Envoy, take large responses: 20,000 clusters' EDS is over grpc's 4 MB
            channel_options=[("grpc.max_receive_message_length", MAX_MESSAGE)],
        )
        self.services = services
        self.instances = instances
        self.eds: list[str] = []
        self.endpoints: dict[str, int] = {}  # cluster -> endpoints (until synced)
        self.synced = asyncio.Event()
        self.synced_at = 0.0
        self.marker = b""
        self.seen = asyncio.Event()
        self.seen_at = 0.0
        self.track = False  # keep every cluster's addresses (for the churn)
        self.addresses: dict[str, frozenset[str]] = {}  # hostname -> addresses

    async def start(self) -> None:
        await self.client.connect()
        self.client.subscribe("cds")

    async def close(self) -> None:
        await self.client.close()

    async def wait_synced(self, timeout: float) -> None:
        """Until the client holds every service's endpoints; TimeoutError after
        ``timeout`` seconds, RuntimeError at once if the stream ends."""
        deadline = time.monotonic() + timeout
        while not self.synced.is_set():
            if self.client.ended:
                raise RuntimeError("the ADS stream ended before the client was synced")
            if time.monotonic() > deadline:
                raise TimeoutError("the ADS client was not synced in time")
            await asyncio.sleep(0.05)

    def _received(self, response: Response) -> None:
        t = response.type_url
        if t == CDS:
            names = sorted(response.eds_names)
            if names != self.eds:
                self.eds = names
                self.client.subscribe("eds", names)
        elif t == EDS:
            if not self.synced.is_set():
                self._count(response)
            if self.track:
                for cla in response.decode():
                    assert isinstance(cla, endpoint_pb2.ClusterLoadAssignment)
                    self.addresses[cla.cluster_name.rpartition("||")[2]] = frozenset(
                        lb.endpoint.address.socket_address.address
                        for group in cla.endpoints
                        for lb in group.lb_endpoints
                    )
            if self.marker and not self.seen.is_set():
                if any(self.marker in r.value for r in response.message.resources):
                    self.seen_at = response.received
                    self.seen.set()

    def _count(self, response: Response) -> None:
        for cla in response.decode():
            assert isinstance(cla, endpoint_pb2.ClusterLoadAssignment)
            self.endpoints[cla.cluster_name] = sum(len(g.lb_endpoints) for g in cla.endpoints)
        full = sum(1 for n in self.endpoints.values() if n >= self.instances)
        if full >= self.services:
            self.synced_at = response.received
            self.synced.set()


def get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def newest_push(http_port: int) -> int:
    pushes = get_json(f"http://127.0.0.1:{http_port}/debug/pushz?limit=1")
    return int(pushes[0]["version"]) if pushes else 0


def published_after(http_port: int, version: int) -> float | None:
    """Wall time of the first push after ``version`` (``/debug/pushz``), or None."""
    pushes = get_json(f"http://127.0.0.1:{http_port}/debug/pushz?limit=20")
    later = [p for p in pushes if int(p["version"]) > version]
    if not later:
        return None
    first = min(later, key=lambda p: int(p["version"]))
    at = datetime.datetime.strptime(first["at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return at.replace(tzinfo=datetime.UTC).timestamp()


def ready(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ready", timeout=1) as r:
            return r.status == 200
    except (OSError, urllib.error.HTTPError):
        return False


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Churn:
    """What a churn phase did (see the module docstring, 5.)."""

    changes: int = 0
    seconds: float = 0.0
    pushes: int = 0
    cpu_pct: float = 0.0
    rss_mb: tuple[float, float, float] = (0.0, 0.0, 0.0)  # before, peak, after
    converged_s: float | None = None  # after the last change; None: not in time
    wrong: int = 0  # services whose final addresses the client did not hold


@dataclass
class Result:
    registry: str
    services: int
    instances: int
    ready_s: float = 0.0
    sync_s: float = 0.0
    rss_mb: float = 0.0
    idle_s: float = 0.0
    idle_cpu_pct: float = 0.0
    idle_rps: float = 0.0
    published: list[float] = field(default_factory=list)
    delivered: list[float] = field(default_factory=list)
    churns: list[Churn] = field(default_factory=list)
    missed: int = 0  # changes the ADS client did not see within the deadline


async def start_server(
    kind: str, services: int, instances: int, work: Path, args: argparse.Namespace
) -> Server:
    """The server of a ``kind`` registry holding ``services`` x ``instances``: the real
    one for etcd (and with ``--real`` for Consul and Kubernetes), else the emulator."""
    if kind in EMULATED and not (args.real and kind in ("consul", "kubernetes")):
        return await EmulatedServer.start(kind, services, instances)
    (work / kind).mkdir()
    backend: EtcdBackend | RealConsul | RealKube
    if kind == "etcd":
        backend = EtcdBackend(work / kind)
    elif kind == "consul":
        backend = RealConsul(work / kind, args.consul_conns)
    else:
        backend = RealKube(work / kind)
    try:
        await asyncio.to_thread(backend.load, services, instances)
    except BaseException:
        await backend.close()
        raise
    return backend


async def until(check: Any, deadline: float, what: str, step: float = 0.05) -> None:
    """Poll ``check()`` (blocking, run in a thread) until true; TimeoutError after
    ``deadline`` (monotonic)."""
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(step)


async def measure(kind: str, services: int, args: argparse.Namespace, work: Path) -> Result:
    result = Result(kind, services, args.instances)
    loaded = time.monotonic()
    server = await start_server(kind, services, args.instances, work, args)
    print(
        f"  server holds {services} x {args.instances} ({time.monotonic() - loaded:.1f} s)",
        flush=True,
    )
    popen: asyncio.subprocess.Process | None = None
    watcher: Watcher | None = None
    log = (work / "registryd.log").open("wb")
    try:
        config = work / "registryd.yaml"
        config.write_text(yaml.safe_dump({"registries": [server.registry()]}))
        (work / "se").mkdir()
        grpc_port, http_port, mon_port = free_ports(3)
        profile: list[str] = []
        if args.cprofile:
            profile = ["-m", "cProfile", "-o", f"{args.cprofile}.{kind}-{services}"]
        cmd = registryd_command(
            work / "se",
            (grpc_port, http_port, mon_port),
            f"--config={config}",
            "--xdsWorkers=1",
            "--log_output_level=default:warn",
            python=profile,
        )
        started = time.monotonic()
        popen = await asyncio.create_subprocess_exec(*cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = started + args.timeout
        await until(lambda: listening(grpc_port), deadline, "registryd's gRPC port")
        watcher = Watcher(f"127.0.0.1:{grpc_port}", services, args.instances)
        await watcher.start()

        async def ready_at() -> float:
            await until(lambda: ready(http_port), deadline, "/ready")
            return time.monotonic()

        ready_task = asyncio.create_task(ready_at())
        await watcher.wait_synced(deadline - time.monotonic())
        result.sync_s = watcher.synced_at - started
        result.ready_s = await ready_task - started
        print(f"  ready {result.ready_s:.1f} s, full sync {result.sync_s:.1f} s", flush=True)
        await asyncio.sleep(2.0)  # let the first pushes' garbage go
        result.rss_mb = tree_rss(psutil.Process(popen.pid)) / 2**20

        # idle window: no change
        cpu0, req0, t0 = cpu_seconds(popen.pid), await server.requests(), time.monotonic()
        await asyncio.sleep(args.idle)
        cpu1, req1, t1 = cpu_seconds(popen.pid), await server.requests(), time.monotonic()
        result.idle_s = t1 - t0
        result.idle_cpu_pct = (cpu1 - cpu0) / (t1 - t0) * 100
        result.idle_rps = (req1 - req0) / (t1 - t0)
        print(
            f"  idle {result.idle_s:.0f} s: CPU {result.idle_cpu_pct:.1f} %,"
            f" {result.idle_rps:.1f} requests/s",
            flush=True,
        )

        # changes, one at a time, over random services
        rng = random.Random(args.seed)
        moved: dict[tuple[int, int], str] = {}
        for k in range(1, args.changes + 1):
            service, instance = rng.randrange(services), rng.randrange(args.instances)
            addr = new_address(k)
            moved[(service, instance)] = addr
            before = await asyncio.to_thread(newest_push, http_port)
            watcher.marker = marker(addr)
            watcher.seen.clear()
            wall, t0 = time.time(), time.monotonic()
            await server.change(service, instance, addr)
            try:
                await asyncio.wait_for(watcher.seen.wait(), args.change_timeout)
            except TimeoutError:
                if watcher.client.ended:
                    raise RuntimeError("the ADS stream ended") from None
                result.missed += 1
                print(f"  change {k}: not seen in {args.change_timeout:.0f} s", flush=True)
                continue
            result.delivered.append(watcher.seen_at - t0)
            at = await asyncio.to_thread(published_after, http_port, before)
            if at is not None:
                result.published.append(at - wall)
            if k % max(1, args.changes // 10) == 0:
                print(f"  {k} changes, last {result.delivered[-1]:.3f} s", flush=True)
        for round_ in range(args.churn_rounds if args.churn else 0):
            result.churns.append(
                await churn(
                    kind, server, watcher, popen.pid, http_port, services, moved, args, round_
                )
            )
        return result
    except BaseException:
        log.flush()
        print((work / "registryd.log").read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        if watcher is not None:
            await watcher.close()
        if popen is not None:
            popen.terminate()  # SIGTERM: registryd stops cleanly (cProfile then writes)
            try:
                await asyncio.wait_for(popen.wait(), 60)
            except TimeoutError:
                popen.kill()
                await popen.wait()
        log.close()
        await server.close()


async def churn(
    kind: str,
    server: Server,
    watcher: Watcher,
    pid: int,
    http_port: int,
    services: int,
    moved: dict[tuple[int, int], str],
    args: argparse.Namespace,
    round_: int,
) -> Churn:
    """The churn phase (see the module docstring, 5.); ``moved``: the addresses the
    changes before it gave, updated with the churn's."""
    result = Churn()
    rng = random.Random(args.seed + 1 + round_)
    total = int(args.churn * args.churn_seconds)
    first = args.changes + 1 + round_ * total  # new_address() numbers go on
    plan: list[list[tuple[int, int, str]]] = [[] for _ in range(CHURN_WORKERS)]
    for k in range(total):
        service, instance = rng.randrange(services), rng.randrange(args.instances)
        addr = new_address(first + k)
        moved[(service, instance)] = addr
        plan[service % CHURN_WORKERS].append((service, instance, addr))
    touched = {service for changes in plan for service, _, _ in changes}
    proc = psutil.Process(pid)
    rss_before = tree_rss(proc) / 2**20
    peak = rss_before
    version = await asyncio.to_thread(newest_push, http_port)
    watcher.track = True
    started = time.monotonic()
    cpu0 = cpu_seconds(pid)

    async def writer(changes: list[tuple[int, int, str]]) -> None:
        """Every :data:`CHURN_TICK` seconds, the changes due by then, in one batch."""
        share = args.churn / CHURN_WORKERS  # changes a second for this writer
        done = 0
        while done < len(changes):
            due = min(len(changes), int((time.monotonic() - started) * share) + 1)
            if due > done:
                await server.change_many(changes[done:due])
                done = due
            await asyncio.sleep(CHURN_TICK)

    writers = asyncio.gather(*(writer(changes) for changes in plan))
    while not writers.done():
        peak = max(peak, tree_rss(proc) / 2**20)
        await asyncio.wait([writers], timeout=1.0)
    await writers
    ended = time.monotonic()
    result.changes, result.seconds = total, ended - started

    def expected(service: int) -> frozenset[str]:
        return frozenset(
            moved.get((service, j), address(service, j)) for j in range(args.instances)
        )

    def wrong() -> int:
        held = watcher.addresses
        return sum(held.get(hostname(kind, s)) != expected(s) for s in touched)

    deadline = ended + args.change_timeout
    result.wrong = wrong()
    while result.wrong and time.monotonic() < deadline:
        peak = max(peak, tree_rss(proc) / 2**20)
        await asyncio.sleep(0.1)
        result.wrong = wrong()
    if not result.wrong:
        result.converged_s = time.monotonic() - ended
    result.cpu_pct = (cpu_seconds(pid) - cpu0) / (time.monotonic() - started) * 100
    result.pushes = await asyncio.to_thread(newest_push, http_port) - version
    await asyncio.sleep(5.0)
    result.rss_mb = (rss_before, peak, tree_rss(proc) / 2**20)
    watcher.track = False
    print(f"  {churn_summary(result)}", flush=True)
    return result


def churn_summary(c: Churn) -> str:
    converged = f"{c.converged_s:.1f} s" if c.converged_s is not None else "not in time"
    before, peak, after = c.rss_mb
    return (
        f"churn: {c.changes} changes in {c.seconds:.1f} s ({c.changes / c.seconds:.0f}/s),"
        f" {c.pushes} pushes, CPU {c.cpu_pct:.0f} %,"
        f" RSS {before:.0f}/{peak:.0f}/{after:.0f} MB (before/peak/after),"
        f" converged {converged} after the last change, {c.wrong} services wrong"
    )


def summary(r: Result) -> str:
    def ms(values: list[float], q: float) -> str:
        return f"{pct(values, q) * 1000:.0f}" if values else "-"

    return (
        f"{r.registry:<10} {r.services:>7} x{r.instances}"
        f" | ready {r.ready_s:6.1f} s | sync {r.sync_s:6.1f} s | RSS {r.rss_mb:5.0f} MB"
        f" | idle CPU {r.idle_cpu_pct:5.1f} % | server {r.idle_rps:7.1f} req/s"
        f" | published p50/p99 {ms(r.published, 50)}/{ms(r.published, 99)} ms"
        f" | ADS p50/p99/max {ms(r.delivered, 50)}/{ms(r.delivered, 99)}/"
        f"{ms(r.delivered, 100)} ms ({len(r.delivered)} changes, {r.missed} missed)"
        + "".join(f" | {churn_summary(c)}" for c in r.churns)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--registry", default=",".join(REGISTRIES), help="comma list")
    parser.add_argument("--services", default="1000,10000", help="comma list of N")
    parser.add_argument("--instances", type=int, default=5, help="instances a service")
    parser.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds for the first full sync"
    )
    parser.add_argument(
        "--change-timeout", type=float, default=300.0, help="seconds to wait for one change"
    )
    parser.add_argument(
        "--real",
        action="store_true",
        help="a real Consul agent and kube-apiserver (scripts/build-servers) for those types",
    )
    parser.add_argument(
        "--consul-conns",
        type=int,
        help="the real Consul agent's limits.http_max_conns_per_client (Consul's 200 if left out)",
    )
    parser.add_argument("--churn", type=float, default=0.0, help="changes a second, after")
    parser.add_argument("--churn-seconds", type=float, default=60.0)
    parser.add_argument(
        "--churn-rounds", type=int, default=1, help="churns one after the other (RSS between)"
    )
    parser.add_argument("--cprofile", help="profile registryd with cProfile into FILE.<reg>-<N>")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.registry.split(",") if k.strip()]
    for kind in kinds:
        if kind not in REGISTRIES:
            parser.error(f"--registry: {kind} is not one of {', '.join(REGISTRIES)}")
    counts = [int(n) for n in args.services.split(",")]
    results: list[Result] = []

    async def run_all() -> None:
        for kind in kinds:
            for n in counts:
                print(f"{kind}, {n} services x {args.instances}:", flush=True)
                with tempfile.TemporaryDirectory(prefix="registry-scale-") as tmp:
                    results.append(await measure(kind, n, args, Path(tmp)))

    asyncio.run(run_all())
    print(f"\nload: {Path('/proc/loadavg').read_text().strip()}")
    for r in results:
        print(summary(r))


if __name__ == "__main__":
    main()
