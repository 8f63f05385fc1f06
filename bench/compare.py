"""registryd against the transport's own cost, side by side and interleaved.

For each client count, each server is started fresh on the same generated ServiceEntry
directory and measured with the same simulated clients (:func:`bench.push_latency.measure`:
initial sync, ``--pushes`` endpoint changes one after the other, a full push), round
after round so that a noisy machine disturbs every server alike.  Servers:

* ``sotw-1w``: the daemon serving xDS in its own process (``--xdsWorkers=1``),
  state-of-the-world clients; default flags but ``--enableEDSDebounce`` as given and
  new streams admitted at once;
* ``delta-1w``: the same with Delta ADS clients;
* ``sotw-2w``, ``delta-2w``: the same with two xDS worker processes (``--xdsWorkers=2``);
* ``sotw-1w-nofreeze``: ``sotw-1w`` with ``--gcFreeze=false`` (Python's collector left as
  it is): the before/after of the freeze policy (:mod:`registryd.base.gcpolicy`);
* ``raw``: :mod:`bench.raw_ads`, a minimal grpc.aio state-of-the-world server writing
  the same bytes with no per-stream logic — the limit registryd is compared to.

Every simulated client has a TCP connection of its own, as every Envoy has (so the
kernel can spread them over worker processes).  Prints, per server, medians over the
rounds (p50/p99 change -> every client has it, server CPU per push and per client,
initial sync, RSS; CPU and RSS include the worker processes; generation-2 collections
over 100 ms and their total time, over the whole round) and the ratio server / raw of
server CPU per client.  The simulated clients run in this process on the same
machine; ``--pin`` runs the servers on CPU 0 and this process on CPU 1 (``taskset``):
with two workers the servers then share one CPU, so do not pin the ``-2w`` rows.

    python -m bench.compare --clients 100 1000 --rounds 3
    python -m bench.compare --quick        # under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from bench.common import Daemon, gc_stats, raw_ads, registryd
from bench.push_latency import measure, service_yaml


def _registryd(workers: int, *flags: str) -> Callable[[Path, str], AbstractContextManager[Daemon]]:
    def start(config: Path, eds: str) -> AbstractContextManager[Daemon]:
        return registryd(
            config,
            f"--enableEDSDebounce={eds}",
            f"--xdsWorkers={workers}",
            "--log_output_level=default:warn",
            *ADMIT_ALL,
            *flags,
        )

    return start


SERVERS: dict[str, Callable[[Path, str], AbstractContextManager[Daemon]]] = {
    "sotw-1w": _registryd(1),
    "delta-1w": _registryd(1),
    "sotw-2w": _registryd(2),
    "delta-2w": _registryd(2),
    "sotw-1w-nofreeze": _registryd(1, "--gcFreeze=false"),
    "raw": lambda config, eds: raw_ads(config),
}
# every simulated client connects at once (the default admits 25 new streams a second on
# two CPUs, istiod's PILOT_MAX_REQUESTS_PER_SECOND, which would stretch the initial sync)
ADMIT_ALL = ("--maxRequestsPerSecond=100000",)
KEYS = ("eds_p50", "eds_p99", "full_p50", "full_p99", "eds_server_cpu", "full_server_cpu")


def rounds(names: list[str], count: int) -> Iterator[str]:
    for _ in range(count):
        yield from names


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--pushes", type=int, default=5, help="endpoint changes per round (CPU: per change)"
    )
    ap.add_argument("--servers", nargs="+", default=list(SERVERS), choices=list(SERVERS))
    ap.add_argument(
        "--shared-connection",
        action="store_true",
        help="all simulated clients on one TCP connection (grpc's default channel sharing)",
    )
    ap.add_argument("--eds-debounce", default="true", choices=("true", "false"))
    ap.add_argument(
        "--quick", action="store_true", help="200 services, 100 clients, 1 round, 3 servers"
    )
    ap.add_argument("--pin", action="store_true", help="servers on CPU 0, clients on CPU 1")
    args = ap.parse_args()
    if args.quick:
        args.services, args.endpoints, args.clients, args.rounds = 200, 5, [100], 1
        args.pushes = 2
        args.servers = [s for s in args.servers if s in ("sotw-1w", "delta-2w", "raw")]
    if args.pin:
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "se"
        config.mkdir()
        for i in range(args.services):
            (config / f"svc-{i}.yaml").write_text(service_yaml(i, args.endpoints))
        print(
            f"{args.services} services x {args.endpoints} endpoints, EDS debounce "
            f"{args.eds_debounce}, {args.rounds} rounds, servers {' '.join(args.servers)}"
        )
        # one event loop for every round: grpc.aio's poller belongs to the first loop
        asyncio.run(run(args, config))


async def run(args: argparse.Namespace, config: Path) -> None:
    for n in args.clients:
        results: dict[str, list[dict[str, float]]] = {s: [] for s in args.servers}
        for name in rounds(args.servers, args.rounds):
            with SERVERS[name](config, args.eds_debounce) as daemon:
                if args.pin:
                    os.sched_setaffinity(daemon.popen.pid, {0})
                r = await measure(
                    daemon.target,
                    daemon.http_port,
                    n,
                    config,
                    args.services,
                    args.endpoints,
                    daemon.proc,
                    delta=name.startswith("delta"),
                    own_connections=not args.shared_connection,
                    pushes=args.pushes,
                )
                if name != "raw":
                    gen2 = gc_stats(daemon).get("2", {})
                    r["gc2_over_100ms"] = gen2.get("over_100ms", 0.0)
                    r["gc2_ms"] = gen2.get("seconds", 0.0) * 1000
            results[name].append(r)
        report(n, results)


def _median_of(runs: list[dict[str, float]], key: str) -> str:
    return f"{statistics.median(r[key] for r in runs):.0f}"


def report(clients: int, results: dict[str, list[dict[str, float]]]) -> None:
    print(f"\nC={clients}: medians over rounds (ms; CPU is the server's, from /proc)")
    print(
        f"  {'server':16} {'change p50':>10} {'p99':>8} {'full p50':>9} {'p99':>8} "
        f"{'CPU/push':>9} {'/client':>8} {'full CPU':>9} {'/client':>8} {'sync s':>7} "
        f"{'RSS MB':>7} {'gen2>100ms':>10} {'gen2 ms':>8}"
    )
    per_client: dict[str, float] = {}
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in (*KEYS, "initial_sync_s")}
        rss = statistics.median(r["rss_mb"] for r in runs)
        per_client[name] = med["eds_server_cpu"] / clients
        gc = "-" if name == "raw" else _median_of(runs, "gc2_over_100ms")
        gc_ms = "-" if name == "raw" else _median_of(runs, "gc2_ms")
        print(
            f"  {name:16} {med['eds_p50'] * 1000:10.0f} {med['eds_p99'] * 1000:8.0f} "
            f"{med['full_p50'] * 1000:9.0f} {med['full_p99'] * 1000:8.0f} "
            f"{med['eds_server_cpu'] * 1000:9.0f} {med['eds_server_cpu'] * 1e6 / clients:7.0f}us "
            f"{med['full_server_cpu'] * 1000:9.0f} "
            f"{med['full_server_cpu'] * 1e6 / clients:7.0f}us "
            f"{med['initial_sync_s']:7.2f} {rss:7.0f} {gc:>10} {gc_ms:>8}"
        )
    if per_client.get("raw"):
        for name, value in per_client.items():
            if name != "raw":
                print(
                    f"  {name} / raw, server CPU per client per endpoint push: "
                    f"{value / per_client['raw']:.2f}"
                )
    for workers in ("1w", "2w"):
        sotw, delta = per_client.get(f"sotw-{workers}"), per_client.get(f"delta-{workers}")
        if sotw and delta:
            print(f"  delta-{workers} / sotw-{workers}, server CPU per client: {delta / sotw:.2f}")


if __name__ == "__main__":
    main()
