"""What a sweep of a Consul catalog costs the reader: N health reads, one per service.

With the agent's default connection limit, registryd's Consul adapter watches a few
services with blocking queries and reads every other one when a registration or node
change signals that something moved (a *sweep*: ``docs/registry-scale.md``).  This
measures the floor of that cost, with nothing of registryd but the HTTP client it uses:
a real Consul agent (``scripts/build-servers consul``, limit raised so that nothing is
refused) holding ``--services`` x 5 instances, then ``--rounds`` rounds of sweeps, each
sweep reading ``/v1/health/service/<name>`` for every service with aiohttp, at each
``--concurrency`` (queries in flight), once parsing every reply as JSON and once only
reading it (as the adapter does for a reply whose ``X-Consul-Index`` it holds).  Prints
each sweep's wall time and this process's CPU time, then medians; asserts nothing.

    python -m bench.consul_sweep --services 10000 --concurrency 4,16,48 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import aiohttp

from bench.scale_real import RealConsul


async def sweep(
    session: aiohttp.ClientSession, base: str, names: list[str], concurrency: int, parse: bool
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to read every service once."""
    slots = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with slots, session.get(f"{base}/v1/health/service/{name}") as response:
            body = await response.read()
            if parse:
                json.loads(body)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(n) for n in names))
    return time.perf_counter() - wall, time.process_time() - cpu


async def measure(agent: RealConsul, concurrencies: list[int], rounds: int) -> None:
    base = f"http://{agent.agent.address}"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{base}/v1/catalog/services") as response:
            names = sorted(n for n in json.loads(await response.read()) if n != "consul")
        results: dict[tuple[int, bool], list[tuple[float, float]]] = defaultdict(list)
        for round_ in range(1, rounds + 1):
            for concurrency in concurrencies:
                for parse in (True, False):
                    wall, cpu = await sweep(session, base, names, concurrency, parse)
                    results[(concurrency, parse)].append((wall, cpu))
                    what = "parsed" if parse else "read  "
                    print(
                        f"round {round_} concurrency {concurrency:3} {what}: "
                        f"{wall:6.2f} s wall, {cpu:5.2f} s CPU",
                        flush=True,
                    )
        print(f"\n{len(names)} services, medians of {rounds} sweeps:")
        for (concurrency, parse), runs in sorted(results.items()):
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            what = "parsed" if parse else "read  "
            per = cpu / len(names) * 1e6
            print(
                f"  concurrency {concurrency:3} {what}: {wall:6.2f} s wall, "
                f"{cpu:5.2f} s CPU ({per:.0f} µs a service)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--concurrency", default="4,16,48", help="comma list")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as work:
        agent = RealConsul(Path(work), conns=4 * max(concurrencies) + 64)
        try:
            started = time.perf_counter()
            agent.load(args.services, 5)
            print(f"agent holds {args.services} x 5 ({time.perf_counter() - started:.1f} s)")
            asyncio.run(measure(agent, concurrencies, args.rounds))
        finally:
            asyncio.run(agent.close())


if __name__ == "__main__":
    main()
