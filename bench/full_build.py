"""Full snapshot build: what one build of every service costs the CPU.

N services (one HTTP port each, ``--endpoints`` endpoints each, as
:mod:`bench.registry_scale` serves them) are put in a registry store by one ``Replace``;
then ``--runs`` full builds, each by a fresh :class:`SnapshotBuilder` (the first build a
registryd makes after its registries synced), are timed in CPU seconds of this process
(``time.process_time``: less sensitive than wall time to other work on the machine).
Prints the median and every run; asserts nothing.  To compare two versions of the code,
run it on each, alternating, on the same machine.

    python -m bench.full_build --services 10000 --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import time

from registryd.adapter import Replace
from registryd.build.builder import SnapshotBuilder
from registryd.model import Endpoint, Port, Service, ShardKey
from registryd.registry.store import RegistryStore

SHARD = ShardKey("memory", "bench")
PORT = Port(number=8080, name="http", protocol="HTTP")


def filled(services: int, endpoints: int) -> RegistryStore:
    """A store holding ``services`` services of ``endpoints`` endpoints each."""
    store = RegistryStore()
    hosts = [f"svc-{i}.bench.example" for i in range(services)]
    store.apply(
        SHARD,
        Replace(
            services=tuple(Service(hostname=h, namespace="bench", ports=(PORT,)) for h in hosts),
            endpoints=tuple(
                Endpoint(
                    hostname=h,
                    address=f"10.{j}.{i // 250 % 250}.{i % 250}",
                    port=9000,
                    service_port=8080,
                )
                for i, h in enumerate(hosts)
                for j in range(endpoints)
            ),
        ),
    )
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    view = filled(args.services, args.endpoints).view
    seconds = []
    for _ in range(args.runs):
        builder = SnapshotBuilder()
        started = time.process_time()
        builder.build(view)
        seconds.append(time.process_time() - started)
    runs = " ".join(f"{s:.2f}" for s in seconds)
    print(
        f"{args.services} services x {args.endpoints} endpoints: full build median "
        f"{statistics.median(seconds):.2f} s CPU ({runs})"
    )


if __name__ == "__main__":
    main()
