"""Fault benchmark: connection storms against a real registryd, loopback only.

Starts registryd (a subprocess, ``--configDir`` on generated ServiceEntries), then:

1. ``drop``: C ADS streams open at once (each on its own channel), each sends its CDS
   request and is dropped at once, answered or not;
2. ``reconnect``: C clients connect and get CDS, then all drop and reconnect at the same
   moment, get CDS again, and leave.

During both, ``/ready`` and ``/debug/connections`` are probed every 20 ms; their worst and
median response times are printed.  Afterwards it waits (bounded) until
``/debug/connections`` is empty and the ``pilot_xds`` gauge is 0, and prints how long that
took, registryd's RSS and what its throttles did (streams and pushes that waited, and how
long).  ``--pushThrottle``, ``--maxRequestsPerSecond`` and ``--xdsWorkers`` are passed to
registryd (its defaults otherwise; large values such as ``1000000`` take the throttles
out of the way).  Every client has a TCP connection of its own, as every proxy has, so
the kernel spreads them over the xDS workers.
Prints numbers; asserts nothing.

    python -m bench.fault_storm --clients 1000
    python -m bench.fault_storm --clients 1000 --pushThrottle 1000000 --maxRequestsPerSecond 1e9
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.common import OWN_CONNECTION, mib, probe, registryd
from registryd.testing.ads import AdsClient


def service_yaml(i: int) -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        f"metadata: {{name: svc-{i}, namespace: bench}}\nspec:\n"
        f"  hosts: [svc-{i}.bench.example]\n  resolution: STATIC\n"
        f"  ports:\n  - {{number: {20000 + i % 10}, name: http, protocol: HTTP}}\n"
        f"  endpoints:\n  - {{address: 10.0.{i // 250}.{i % 250 + 1}}}\n"
    )


def storm(target: str, clients: int) -> list[AdsClient]:
    """C proxies, each with a channel and TCP connection of its own, not ACKing."""
    return [
        AdsClient(
            target,
            node_id=f"sidecar~127.0.0.1~storm-{i}.bench~bench.svc",
            channel_options=OWN_CONNECTION,
            auto_ack=False,
        )
        for i in range(clients)
    ]


async def open_cds(client: AdsClient) -> None:
    """Connect and ask for CDS (wildcard); return once the request is written."""
    await client.connect()
    client.subscribe("cds")
    await client.flush(timeout=300)


async def cds(client: AdsClient, timeout: float = 300) -> int:
    """How many clusters the client's next CDS response has."""
    response = await client.next("cds", timeout=timeout)
    return len(response.message.resources)


async def drop_storm(target: str, clients: int) -> None:
    proxies = storm(target, clients)
    await asyncio.gather(*(open_cds(c) for c in proxies))
    await asyncio.gather(*(c.close() for c in proxies))


async def reconnect_storm(target: str, clients: int) -> tuple[float, float]:
    """Seconds until all C clients had CDS, first connect and after reconnecting."""

    async def connect() -> float:
        proxies = storm(target, clients)
        started = time.monotonic()
        await asyncio.gather(*(open_cds(c) for c in proxies))
        await asyncio.gather(*(cds(c) for c in proxies))
        took = time.monotonic() - started
        await asyncio.gather(*(c.close() for c in proxies))
        return took

    first = await connect()
    again = await connect()  # all at the same moment, right after all dropped
    return first, again


async def metrics(http_port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of registryd's /metrics: (name, sorted labels) -> value."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{http_port}/metrics") as response:
            text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def leftovers(http_port: int) -> tuple[int, float]:
    """(connections listed, pilot_xds total) as registryd reports them now."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{http_port}/debug/connections") as response:
            listed = len(await response.json())
    gauge = sum(v for (name, _), v in (await metrics(http_port)).items() if name == "pilot_xds")
    return listed, gauge


async def throttling(http_port: int) -> str:
    """What registryd's throttles did, from its metrics."""
    samples = await metrics(http_port)
    limit = samples.get(("registryd_xds_push_throttle", ()), 0)
    rate = samples.get(("registryd_xds_max_requests_per_second", ()), 0)
    parts = [f"throttles: push {limit:g} at once, new streams {rate:g}/s"]
    for kind in ("request", "push"):
        label = (("limit", kind),)
        count = samples.get(("registryd_xds_throttled_total", label), 0)
        total = samples.get(("registryd_xds_throttle_wait_seconds_sum", label), 0)
        mean = total / count if count else 0.0
        parts.append(f"{kind} waits {count:g} (mean {mean:.2f} s)")
    overtime = samples.get(("registryd_xds_push_overtime_total", ()), 0)
    parts.append(f"push leases overrun {overtime:g}")
    return "; ".join(parts)


def summary(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p50 = ordered[len(ordered) // 2] * 1000 if ordered else 0.0
    worst = ordered[-1] * 1000 if ordered else 0.0
    return f"{name}: {len(ordered)} probes, p50 {p50:.1f} ms, max {worst:.1f} ms"


async def run(target: str, http_port: int, clients: int, proc: psutil.Process) -> None:
    stop = asyncio.Event()
    base = f"http://127.0.0.1:{http_port}"
    probes = [
        asyncio.create_task(probe(f"{base}/ready", stop)),
        asyncio.create_task(probe(f"{base}/debug/connections", stop)),
    ]
    started = time.monotonic()
    await drop_storm(target, clients)
    print(f"drop storm: {clients} streams opened and dropped in {time.monotonic() - started:.2f} s")
    first, again = await reconnect_storm(target, clients)
    print(f"reconnect storm: {clients} clients had CDS after {first:.2f} s, again {again:.2f} s")
    stop.set()
    ready, debug = await asyncio.gather(*probes)
    print(summary("/ready", ready))
    print(summary("/debug/connections", debug))
    drained = time.monotonic()
    listed, gauge = await leftovers(http_port)
    while (listed or gauge) and time.monotonic() - drained < 30:
        await asyncio.sleep(0.1)
        listed, gauge = await leftovers(http_port)
    print(
        f"after the storms: {listed} connections listed, pilot_xds {gauge:g} "
        f"({time.monotonic() - drained:.2f} s to drain); RSS {mib(proc)} MiB"
    )
    print(await throttling(http_port))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--pushThrottle", default=None, help="passed to registryd")
    ap.add_argument("--maxRequestsPerSecond", default=None, help="passed to registryd")
    ap.add_argument("--xdsWorkers", default=None, help="passed to registryd")
    args = ap.parse_args()
    flags = ["--log_output_level=default:warn"]
    for name in ("pushThrottle", "maxRequestsPerSecond", "xdsWorkers"):
        if getattr(args, name) is not None:
            flags.append(f"--{name}={getattr(args, name)}")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp)
        for i in range(args.services):
            (config / f"svc-{i}.yaml").write_text(service_yaml(i))
        with registryd(config, *flags) as daemon:
            print(f"registryd ready: {args.services} services, RSS {mib(daemon.proc)} MiB")
            asyncio.run(run(daemon.target, daemon.http_port, args.clients, daemon.proc))


if __name__ == "__main__":
    main()
