"""Push benchmark: how fast does one registry change reach every proxy?

Starts a real registryd (a subprocess, ``--configDir`` on generated ServiceEntries:
N services x K endpoints), connects C simulated proxies (grpc.aio ADS streams that
subscribe like Envoy: CDS wildcard, EDS for every cluster, LDS wildcard, RDS for every
port; each ACKs every response at once), then:

1. initial sync: time until all C clients hold CDS, EDS, LDS and RDS;
2. endpoint change: one endpoint of one service is edited in its file; for each client
   the time from the file write until it received (and ACKed) the new endpoint;
3. full push: a port is added to one service (CDS, EDS, LDS, RDS all change); time until
   every client has the new cluster and listener;
4. registryd's RSS with all clients connected.

Times include the file-watch latency and the push debounce (``--debounce``, default
100 ms, as in production); the "spread" figure (last client minus first client) is the
fan-out cost alone.  Prints numbers; asserts nothing.

    python -m bench.push_latency --services 1000 --endpoints 10 --clients 100 1000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from envoy.service.discovery.v3 import discovery_pb2

from bench.common import (
    CDS,
    EDS,
    LDS,
    OWN_CONNECTION,
    RDS,
    gc_pauses,
    probe,
    registryd,
    tree_cpu,
    tree_rss,
)
from registryd.testing.ads import AdsClient, DeltaAdsClient, DeltaResponse, Response

BASE_PORT = 20000
PORTS = 10  # services spread over this many distinct ports


def service_yaml(i: int, endpoints: int, extra_port: bool = False, variant: int = 0) -> str:
    port = BASE_PORT + i % PORTS
    lines = [
        "apiVersion: networking.istio.io/v1",
        "kind: ServiceEntry",
        f"metadata: {{name: svc-{i}, namespace: bench}}",
        "spec:",
        f"  hosts: [svc-{i}.bench.example]",
        "  resolution: STATIC",
        "  ports:",
        f"  - {{number: {port}, name: http, protocol: HTTP}}",
    ]
    if extra_port:
        lines.append(f"  - {{number: {BASE_PORT + PORTS}, name: grpc, protocol: GRPC}}")
    lines.append("  endpoints:")
    for j in range(endpoints):
        last = 200 + variant if j == 0 and variant else j + 1
        lines.append(f"  - {{address: 10.{i // 250}.{i % 250}.{last}, locality: r1/z{j % 3}}}")
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Proxy:
    """One simulated proxy on a :mod:`registryd.testing.ads` client, state-of-the-world or
    Delta, that keeps no responses (``keep=False``): CDS and LDS wildcard, EDS and RDS
    subscribed by name as clusters and listeners arrive, every response ACKed at once;
    records when marker bytes first arrive.  With ``own_connection`` it has a TCP
    connection of its own (needed to spread clients over xDS worker processes);
    otherwise all clients share one."""

    def __init__(
        self, target: str, index: int, own_connection: bool = False, delta: bool = False
    ) -> None:
        kind = DeltaAdsClient if delta else AdsClient
        self.client: AdsClient | DeltaAdsClient = kind(
            target,
            node_id=f"sidecar~10.9.0.{index}~p{index}.bench~bench.svc",
            channel_options=OWN_CONNECTION if own_connection else [],
            keep=False,
            on_response=self._received,
        )
        self.delta = delta
        self.have: set[str] = set()
        self.synced = asyncio.Event()
        self.marker: tuple[str, bytes] | None = None
        self.marker_seen = asyncio.Event()
        self.marker_at = 0.0
        self.subscribed: dict[str, list[str]] = {EDS: [], RDS: []}

    async def start(self) -> None:
        await self.client.connect()
        self.client.subscribe("cds")
        self.client.subscribe("lds")

    async def close(self) -> None:
        await self.client.close()

    def _received(self, response: Response | DeltaResponse) -> None:
        t = response.type_url
        if t in (CDS, LDS):
            self._follow(t, response)
        self.have.add(t)
        if len(self.have) == 4:
            self.synced.set()
        if self.marker and not self.marker_seen.is_set() and t == self.marker[0]:
            if any(self.marker[1] in value for value in _values(response)):
                self.marker_at = response.received
                self.marker_seen.set()

    def _follow(self, t: str, response: Response | DeltaResponse) -> None:
        """Subscribe EDS to the clusters of a CDS response, RDS to the routes of an LDS
        one (SotW: the names it lists now; Delta: the names not subscribed yet)."""
        follow = EDS if t == CDS else RDS
        if self.delta:
            names = {r.name for r in response.message.resources}
        else:
            names = set(_cached_names(response.message))
        if t == LDS:
            names = {n.split("_")[-1] for n in names}
        had = self.subscribed[follow]
        if self.delta:
            new = sorted(names - set(had))
            if new:
                self.subscribed[follow] = had + new
                self.client.subscribe(follow, new)
        elif sorted(names) != had:
            self.subscribed[follow] = sorted(names)
            self.client.subscribe(follow, self.subscribed[follow])


def _values(response: Response | DeltaResponse) -> Iterator[bytes]:
    """The serialized resources of a response, undecoded."""
    if isinstance(response, DeltaResponse):
        return (r.resource.value for r in response.message.resources)
    return (r.value for r in response.message.resources)


_names_by_version: dict[tuple[str, str], list[str]] = {}


def _cached_names(resp: discovery_pb2.DiscoveryResponse) -> list[str]:
    """Every client gets the same full-state response: read its names once."""
    key = (resp.type_url, resp.version_info)
    names = _names_by_version.get(key)
    if names is None:
        names = _names_by_version[key] = sorted(_names(resp))
    return names


def _names(resp: discovery_pb2.DiscoveryResponse) -> list[str]:
    # Cluster.name and Listener.name are field 1: read it without a full decode
    out = []
    for r in resp.resources:
        v = r.value
        assert v[0] == 0x0A
        length, pos, shift = 0, 1, 0
        while True:
            b = v[pos]
            length |= (b & 0x7F) << shift
            pos += 1
            shift += 7
            if not b & 0x80:
                break
        out.append(v[pos : pos + length].decode())
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(x: float) -> str:
    return f"{x * 1000:8.1f} ms"


async def server_view(http_port: int) -> dict[str, Any]:
    """registryd's own account of its newest push (/debug/pushz)."""
    url = f"http://127.0.0.1:{http_port}/debug/pushz?limit=1"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        if response.status != 200:
            return {}  # a server without push traces (bench.raw_ads)
        pushes = await response.json()
    return dict(pushes[0]) if pushes else {}


async def measure(
    target: str,
    http_port: int,
    clients_n: int,
    config: Path,
    services: int,
    endpoints: int,
    proc: psutil.Process,
    *,
    delta: bool = False,
    own_connections: bool = False,
    pushes: int = 1,
) -> dict[str, float]:
    """One round against the server at ``target``: initial sync, ``pushes`` endpoint
    changes one after the other (latencies of all of them; CPU per change), a full push;
    CPU and RSS are those of ``proc`` and its child processes."""
    clients = [Proxy(target, i, own_connections, delta) for i in range(clients_n)]
    started = time.monotonic()
    await asyncio.gather(*(c.start() for c in clients))
    await asyncio.wait_for(asyncio.gather(*(c.synced.wait() for c in clients)), 600)
    initial = time.monotonic() - started
    await asyncio.sleep(1.0)
    rss = tree_rss(proc)
    results: dict[str, float] = {"initial_sync_s": initial, "rss_mb": rss / 2**20}

    def cpu() -> tuple[float, float]:
        me = psutil.Process().cpu_times()
        return tree_cpu(proc), me.user + me.system

    # endpoint changes, one after the other
    target_i = services // 2
    lat: list[float] = []
    cpu0 = cpu()
    for k in range(pushes):
        variant = (clients_n + k) % 50 + 1
        marker = f"10.{target_i // 250}.{target_i % 250}.{200 + variant}"
        for c in clients:
            c.marker = (EDS, marker.encode())
            c.marker_seen.clear()
        t0 = time.monotonic()
        write(config / f"svc-{target_i}.yaml", service_yaml(target_i, endpoints, variant=variant))
        await asyncio.wait_for(asyncio.gather(*(c.marker_seen.wait() for c in clients)), 120)
        lat += [c.marker_at - t0 for c in clients]
        await asyncio.sleep(0.5)  # let the ACKs reach the server (and its CPU time settle)
    cpu1 = cpu()
    seen = await server_view(http_port)
    summary = seen.get("summary", {})
    results |= {
        "eds_p50": pct(lat, 50),
        "eds_p99": pct(lat, 99),
        "eds_max": max(lat),
        "eds_spread": max(lat) - min(lat),
        "eds_server_cpu": (cpu1[0] - cpu0[0]) / pushes,
        "eds_client_cpu": (cpu1[1] - cpu0[1]) / pushes,
        "pushz_debounce_ms": seen.get("debounceMs", 0.0),
        "pushz_acked": summary.get("acked", 0),
        "pushz_p50_ms": summary.get("ackedMsP50") or 0.0,
        "pushz_max_ms": summary.get("ackedMsMax") or 0.0,
    }

    # full push: a new port on one service changes CDS, EDS, LDS and RDS
    for c in clients:
        c.marker = (LDS, f"0.0.0.0_{BASE_PORT + PORTS}".encode())
        c.marker_seen.clear()
    cpu0 = cpu()
    t0 = time.monotonic()
    stop = asyncio.Event()
    prober = asyncio.create_task(
        probe(f"http://127.0.0.1:{http_port}/debug/connections?proxyID=bench-0", stop)
    )
    write(config / f"svc-{target_i}.yaml", service_yaml(target_i, endpoints, extra_port=True))
    await asyncio.wait_for(asyncio.gather(*(c.marker_seen.wait() for c in clients)), 120)
    full = [c.marker_at - t0 for c in clients]
    stop.set()
    probes = await prober
    await asyncio.sleep(0.5)
    cpu1 = cpu()
    results |= {
        "full_p50": pct(full, 50),
        "full_p99": pct(full, 99),
        "full_max": max(full),
        "full_server_cpu": cpu1[0] - cpu0[0],
        "full_client_cpu": cpu1[1] - cpu0[1],
        "debug_p50": pct(probes, 50),
        "debug_max": max(probes),
        "debug_n": len(probes),
    }
    # restore for the next round
    write(config / f"svc-{target_i}.yaml", service_yaml(target_i, endpoints))
    await asyncio.gather(*(c.close() for c in clients))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--debounce", default="100ms")
    ap.add_argument(
        "--eds-debounce",
        default="true",
        choices=("true", "false"),
        help="false: endpoint changes skip the debounce (--enableEDSDebounce=false)",
    )
    ap.add_argument("--xdsWorkers", default="1", help="passed to registryd")
    ap.add_argument(
        "--shared-connection",
        action="store_true",
        help="all simulated clients on one TCP connection (grpc's default channel sharing)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "se"
        config.mkdir()
        for i in range(args.services):
            (config / f"svc-{i}.yaml").write_text(service_yaml(i, args.endpoints))
        flags = (
            f"--debounceAfter={args.debounce}",
            f"--enableEDSDebounce={args.eds_debounce}",
            "--log_output_level=default:warn",
            "--maxRequestsPerSecond=100000",  # the clients connect at once (default: 25/s)
            f"--xdsWorkers={args.xdsWorkers}",
        )
        t0 = time.monotonic()
        with registryd(config, *flags) as daemon:
            proc, http_port = daemon.proc, daemon.http_port
            profiler = None
            if os.environ.get("BENCH_PYSPY"):  # profile registryd while the bench runs
                profiler = subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "-p",
                        str(daemon.popen.pid),
                        "-r",
                        "200",
                        "--format",
                        "raw",
                        "-o",
                        os.environ["BENCH_PYSPY"],
                    ],
                    stdout=subprocess.DEVNULL,
                )
            print(
                f"registryd ready in {time.monotonic() - t0:.2f} s with {args.services} services "
                f"x {args.endpoints} endpoints; RSS {proc.memory_info().rss / 2**20:.0f} MB idle"
            )

            async def every_count() -> list[dict[str, float]]:
                # one event loop for every count: grpc.aio's poller belongs to the first
                return [
                    await measure(
                        daemon.target,
                        http_port,
                        n,
                        config,
                        args.services,
                        args.endpoints,
                        proc,
                        own_connections=not args.shared_connection,
                    )
                    for n in args.clients
                ]

            for n, r in zip(args.clients, asyncio.run(every_count()), strict=True):
                eds = "" if args.eds_debounce == "true" else ", not for endpoint changes"
                print(
                    f"\nC={n} clients (debounce {args.debounce}{eds}, file-watch latency included)"
                )
                print(f"  initial sync, all clients CDS+EDS+LDS+RDS: {r['initial_sync_s']:.2f} s")
                print(
                    f"  endpoint change -> ACK   p50 {ms(r['eds_p50'])}  p99 {ms(r['eds_p99'])}"
                    f"  max {ms(r['eds_max'])}  spread {ms(r['eds_spread'])}"
                )
                print(
                    f"    CPU: registryd {ms(r['eds_server_cpu'])},"
                    f" simulated clients {ms(r['eds_client_cpu'])}"
                )
                print(
                    f"    registryd's /debug/pushz: {r['pushz_acked']:.0f} proxies ACKed, "
                    f"p50 {r['pushz_p50_ms']:.1f} ms, max {r['pushz_max_ms']:.1f} ms after the "
                    f"registry event (debounce {r['pushz_debounce_ms']:.1f} ms)"
                )
                print(
                    f"  full push (new port)     p50 {ms(r['full_p50'])}  p99 {ms(r['full_p99'])}"
                    f"  max {ms(r['full_max'])}"
                )
                print(
                    f"    CPU: registryd {ms(r['full_server_cpu'])},"
                    f" simulated clients {ms(r['full_client_cpu'])}"
                )
                print(
                    f"    debug port during the full push: {r['debug_n']:.0f} GETs, "
                    f"p50 {ms(r['debug_p50'])}, max {ms(r['debug_max'])}"
                )
                print(f"  registryd RSS with clients: {r['rss_mb']:.0f} MB")
                print(f"  garbage collections since start: {gc_pauses(daemon)}")
            if profiler is not None:
                profiler.send_signal(2)
                profiler.wait(timeout=60)


if __name__ == "__main__":
    main()
