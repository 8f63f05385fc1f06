"""Registry store benchmark: what does one adapter update cost the store?

For each size N, one shard is filled with N services (one endpoint each, by a
``Replace``), then U updates are applied one by one, each an ``Upsert`` that moves the
endpoint of one service (an endpoints-only change, the most frequent kind).  Prints the
median and the 99th percentile of the time :meth:`RegistryStore.apply` takes per update,
including the new immutable ``View``.  Nothing else runs (no listener, no push).  Prints
numbers; asserts nothing.

    python -m bench.store_update --sizes 1000 10000 50000 --updates 2000
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from registryd.adapter import Replace, Upsert
from registryd.model import Endpoint, Port, Service, ShardKey
from registryd.registry.store import RegistryStore

SHARD = ShardKey("memory", "bench")
PORT = Port(number=8080, name="http", protocol="HTTP")


def service(i: int) -> Service:
    return Service(hostname=f"svc-{i}.bench.example", namespace="bench", ports=(PORT,))


def endpoint(i: int, generation: int) -> Endpoint:
    return Endpoint(
        hostname=f"svc-{i}.bench.example",
        address=f"10.{generation % 250}.{i // 250 % 250}.{i % 250}",
        port=9000,
        service_port=8080,
    )


def filled(size: int) -> RegistryStore:
    store = RegistryStore()
    services = tuple(service(i) for i in range(size))
    endpoints = tuple(endpoint(i, 0) for i in range(size))
    store.apply(SHARD, Replace(services=services, endpoints=endpoints))
    return store


def per_update(size: int, updates: int, seed: int) -> list[float]:
    """Seconds each of ``updates`` single-service updates took on a store of ``size``."""
    store = filled(size)
    rng = random.Random(seed)
    times = []
    for generation in range(1, updates + 1):
        i = rng.randrange(size)
        update = Upsert(service=service(i), endpoints=(endpoint(i, generation),))
        started = time.perf_counter()
        store.apply(SHARD, update)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    parser.add_argument("--updates", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"{'services':>9} {'median µs':>10} {'p99 µs':>8}")
    for size in args.sizes:
        times = sorted(per_update(size, args.updates, args.seed))
        median = statistics.median(times) * 1e6
        p99 = times[int(len(times) * 0.99) - 1] * 1e6
        print(f"{size:>9} {median:>10.1f} {p99:>8.1f}")


if __name__ == "__main__":
    main()
