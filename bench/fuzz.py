"""Fuzz the adapters' parsers with 100,000 generated inputs and print what happened.

Usage, from the repository root: ``python -m bench.fuzz [inputs]`` (default 100000, spread
over the targets of ``tests/fuzz/catalog.py``).  Prints per target and in all: inputs
tried, rejections (the module's own validation error), unexpected exceptions (must be 0;
the first few are shown), the slowest input's time, and the process's peak RSS.  Exits 1
if any input raised an unexpected exception.
"""

from __future__ import annotations

import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings

from tests.fuzz.catalog import ALL as TARGETS
from tests.fuzz.targets import Target


@dataclass
class Tally:
    tried: int = 0
    rejected: int = 0
    unexpected: list[str] = field(default_factory=list)
    slowest: float = 0.0
    slowest_input: str = ""


def fuzz(target: Target, examples: int) -> Tally:
    tally = Tally()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
    )
    @given(target.inputs)
    def feed(value: Any) -> None:
        start = time.perf_counter()
        try:
            target.call(value)
        except target.rejects:
            tally.rejected += 1
        except Exception:
            tally.unexpected.append(f"{value!r:.200}\n{traceback.format_exc(limit=3)}")
        took = time.perf_counter() - start
        tally.tried += 1
        if took > tally.slowest:
            tally.slowest, tally.slowest_input = took, f"{value!r:.80}"

    feed()
    return tally


def main() -> int:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    each = -(-total // len(TARGETS))
    print(f"{'target':34} {'tried':>7} {'rejected':>8} {'unexpected':>10} {'slowest':>9}")
    tallies = []
    for target in TARGETS:
        tally = fuzz(target, each)
        tallies.append(tally)
        print(
            f"{target.name:34} {tally.tried:7} {tally.rejected:8} "
            f"{len(tally.unexpected):10} {tally.slowest * 1000:7.1f}ms"
        )
    slowest = max(tallies, key=lambda t: t.slowest)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    unexpected = [u for t in tallies for u in t.unexpected]
    print(
        f"{'all':34} {sum(t.tried for t in tallies):7} {sum(t.rejected for t in tallies):8} "
        f"{len(unexpected):10} {slowest.slowest * 1000:7.1f}ms"
    )
    print(f"slowest input: {slowest.slowest_input}")
    print(f"peak RSS: {peak:.0f} MiB")
    for text in unexpected[:5]:
        print(f"--- unexpected exception for\n{text}")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
