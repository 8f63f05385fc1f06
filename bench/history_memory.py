"""Change history benchmark: does ``/debug/history`` stay within its byte budget?

For each budget, N pushes are recorded in a :class:`ChangeHistory`, each with changes of
1 to 3 registries of very different sizes (1 to ``--max-hostnames`` hostnames, long
names, a revision, summaries naming samples) and the outcomes of ``--proxies`` proxies
(some NACKing with long errors).  Every push's hostnames are made fresh and dropped after
it is recorded, so what stays allocated is what the history keeps.  Prints, per budget:
the entries held, the bytes the history charges itself (its accounting, also
``registryd_push_history_bytes``), the bytes tracemalloc finds still allocated by it, and
the growth of the process' RSS.  Prints numbers; asserts nothing.

    python -m bench.history_memory --budgets 1048576 4194304 16777216 --pushes 2000
"""

from __future__ import annotations

import argparse
import gc
import random
import tracemalloc

import psutil

from registryd.daemon.history import ChangeHistory
from registryd.registry.changes import SAMPLE, ChangeSummary
from registryd.xds.tracking import Outcome


def summary(hosts: list[str], rng: random.Random) -> ChangeSummary:
    return ChangeSummary(
        services_added=rng.randrange(len(hosts) + 1),
        endpoints_added=rng.randrange(10 * len(hosts) + 1),
        endpoints_removed=rng.randrange(10 * len(hosts) + 1),
        added=tuple(hosts[:SAMPLE]),
        changed=tuple(hosts[-SAMPLE:]),
    )


def flood(history: ChangeHistory, pushes: int, most: int, proxies: int, seed: int) -> None:
    rng = random.Random(seed)
    for version in range(1, pushes + 1):
        changes = []
        for r in range(rng.randint(1, 3)):
            size = int(most ** rng.random())  # sizes spread from 1 to ``most``
            hosts = [
                f"svc-{version}-{i}-{'x' * rng.randrange(200)}.ns.svc.example" for i in range(size)
            ]
            revision = str(rng.getrandbits(64)) * rng.randint(1, 20)
            changes.append(
                (f"memory/registry-{r}", size, revision, set(hosts), summary(hosts, rng))
            )
        history.add(version, changes, endpoints_only=rng.random() < 0.8)
        for p in range(proxies):
            proxy = f"sidecar~10.0.{p // 250}.{p % 250}~app-{p}.ns~ns.svc.cluster.local"
            history.outcome(Outcome(version, "reached", 0.01, proxy))
            if p % 50 == 0:
                history.outcome(Outcome(version, "nacked", 0.02, proxy, "e" * 1000))
            else:
                history.outcome(Outcome(version, "acked", 0.02 + p / 1e4, proxy))


def measure(budget: int, pushes: int, most: int, proxies: int, seed: int) -> tuple[int, ...]:
    process = psutil.Process()
    gc.collect()
    rss_before = process.memory_info().rss
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    history = ChangeHistory(budget)
    flood(history, pushes, most, proxies, seed)
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = process.memory_info().rss
    return len(history), history.size, held - base, peak - base, rss_after - rss_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[1 << 20, 4 << 20, 16 << 20])
    parser.add_argument("--pushes", type=int, default=2_000)
    parser.add_argument("--max-hostnames", type=int, default=20_000)
    parser.add_argument("--proxies", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(
        f"{args.pushes} pushes, 1-3 registries each, 1-{args.max_hostnames} hostnames per "
        f"registry, {args.proxies} proxies answering"
    )
    print(
        f"{'budget B':>10} {'entries':>8} {'charged B':>10} {'traced B':>10} "
        f"{'traced/budget':>13} {'peak traced B':>13} {'RSS growth B':>12}"
    )
    for budget in args.budgets:
        entries, charged, traced, peak, rss = measure(
            budget, args.pushes, args.max_hostnames, args.proxies, args.seed
        )
        print(
            f"{budget:>10} {entries:>8} {charged:>10} {traced:>10} "
            f"{traced / budget:>13.2f} {peak:>13} {rss:>12}"
        )


if __name__ == "__main__":
    main()
