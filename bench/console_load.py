"""Web console benchmark: how fast does ``/ui`` load with many services and clients?

Starts a real registryd (a subprocess, ``--configDir`` on generated ServiceEntries:
N services x K endpoints), connects C simulated proxies (:class:`bench.push_latency.Proxy`:
ADS streams that subscribe and ACK like Envoy), then loads ``/ui`` in headless chromium
(Debian's ``chromium`` and ``chromedriver``) a few times and prints, as medians over the
loads:

- time to DOMContentLoaded, until the first ``/debug/console`` answer is parsed (the mark
  ``console-data``) and until the console's first full render is done (the mark
  ``console-rendered``), all from the start of navigation;
- bytes of one refresh of ``/debug/console``: the first (full) answer as transferred
  (gzip) and as JSON, then a refresh when nothing changed (a 304 revalidation), then one
  after a registry change (a new answer);
- the server's time per refresh (its ``Server-Timing`` header), for the full answers and
  for the revalidations (the server builds the answer either way).

Prints numbers; asserts nothing.

    python -m bench.console_load --services 1000 --clients 1000 --loads 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import registryd
from bench.push_latency import Proxy, service_yaml, write
from tests.support.browser import BROWSER_HINT, browser_paths, headless, page_ready, wait_for

TIMINGS = """
const nav = performance.getEntriesByType("navigation")[0];
const mark = performance.getEntriesByName("console-rendered")[0];
const got = performance.getEntriesByName("console-data")[0];
const data = performance.getEntriesByType("resource")
  .filter(e => e.name.includes("/debug/console"))
  .map(e => ({transfer: e.transferSize, body: e.decodedBodySize, status: e.responseStatus,
              server: e.serverTiming.length ? e.serverTiming[0].duration : null,
              parts: Object.fromEntries(e.serverTiming.map(t => [t.name, t.duration]))}));
return {dom: nav.domContentLoadedEventEnd, rendered: mark ? mark.startTime : null,
        got: got ? got.startTime : null, data: data};
"""


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def browse(url: str, loads: int, change: Any) -> dict[str, list[float]]:
    """Load ``url`` ``loads`` times; per load, the page's timings and its refreshes."""
    paths = browser_paths()
    if paths is None:
        sys.exit(f"console_load: no chromium and chromedriver on PATH: {BROWSER_HINT}")
    out: dict[str, list[float]] = {
        k: []
        for k in (
            "dom",
            "got",
            "rendered",
            "full_transfer",
            "full_json",
            "same_transfer",
            "changed_transfer",
            "server_full",
            "server_same",
            "streams",
            "view",
            "encode",
        )
    }
    with headless(paths) as browser:
        for load in range(loads):
            browser.get(url)
            wait_for(lambda: page_ready(browser), "the console's first render", deadline=120)
            # two more refreshes with nothing changed, then one after a change
            wait_for(
                lambda: len(browser.execute_script(TIMINGS)["data"]) >= 3,
                "two refreshes",
                deadline=60,
            )
            change(load)
            seen = len(browser.execute_script(TIMINGS)["data"])
            wait_for(
                lambda seen=seen: any(
                    d["transfer"] > 1000 for d in browser.execute_script(TIMINGS)["data"][seen:]
                ),
                "a refresh with new data",
                deadline=60,
            )
            t = browser.execute_script(TIMINGS)
            out["dom"].append(t["dom"])
            out["rendered"].append(t["rendered"])
            out["got"].append(t["got"])
            first, *rest = t["data"]
            out["full_transfer"].append(first["transfer"])
            out["full_json"].append(first["body"])
            if first["server"] is not None:
                out["server_full"].append(first["server"])
            for d in t["data"]:
                for part in ("streams", "view", "encode"):
                    if part in d["parts"]:
                        out[part].append(d["parts"][part])
            for d in rest:
                small = d["transfer"] < 1000  # a 304: headers only
                out["same_transfer" if small else "changed_transfer"].append(d["transfer"])
                if d["server"] is not None:
                    out["server_same" if small else "server_full"].append(d["server"])
            # the browser's cache would answer the next load's first request: start clean
            browser.execute_cdp_cmd("Network.clearBrowserCache", {})
    return out


async def run(args: argparse.Namespace, config: Path) -> None:
    flags = (
        "--log_output_level=default:warn",
        "--maxRequestsPerSecond=100000",  # the clients connect at once (default: 25/s)
        f"--xdsWorkers={args.xdsWorkers}",
    )
    t0 = time.monotonic()
    with registryd(config, *flags) as daemon:
        print(
            f"registryd ready in {time.monotonic() - t0:.1f} s with {args.services} services "
            f"x {args.endpoints} endpoints"
        )
        own = args.xdsWorkers != "1"
        clients = [Proxy(daemon.target, i, own) for i in range(args.clients)]
        t0 = time.monotonic()
        await asyncio.gather(*(c.start() for c in clients))
        await asyncio.wait_for(asyncio.gather(*(c.synced.wait() for c in clients)), 600)
        print(f"{args.clients} clients synced in {time.monotonic() - t0:.1f} s")

        def change(load: int) -> None:  # one endpoint of one service, a new one per load
            i = args.services // 2
            write(config / f"svc-{i}.yaml", service_yaml(i, args.endpoints, variant=load + 1))

        url = f"http://127.0.0.1:{daemon.http_port}/ui"
        r = await asyncio.to_thread(browse, url, args.loads, change)
        await asyncio.gather(*(c.close() for c in clients))
    print(
        f"\n/ui with {args.services} services and {args.clients} connected clients "
        f"(medians of {args.loads} loads, xdsWorkers {args.xdsWorkers})"
    )
    print(f"  DOMContentLoaded          {med(r['dom']):8.0f} ms")
    print(f"  first answer parsed       {med(r['got']):8.0f} ms")
    print(f"  first full render done    {med(r['rendered']):8.0f} ms")
    print(
        f"  refresh, first answer     {med(r['full_transfer']) / 1024:8.1f} KiB transferred "
        f"({med(r['full_json']) / 1024:.0f} KiB of JSON)"
    )
    print(f"  refresh, nothing changed  {med(r['same_transfer']):8.0f} bytes (304)")
    print(f"  refresh after a change    {med(r['changed_transfer']) / 1024:8.1f} KiB transferred")
    print(
        f"  server time per refresh   {med(r['server_full']):8.1f} ms (new answer), "
        f"{med(r['server_same']):.1f} ms (unchanged, 304)"
    )
    print(
        f"    of which: clients and traces {med(r['streams']):.1f} ms, view "
        f"{med(r['view']):.1f} ms, JSON and ETag {med(r['encode']):.1f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--xdsWorkers", default="1", help="passed to registryd")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "se"
        config.mkdir()
        for i in range(args.services):
            (config / f"svc-{i}.yaml").write_text(service_yaml(i, args.endpoints))
        asyncio.run(run(args, config))


if __name__ == "__main__":
    main()
