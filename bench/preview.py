"""Preview benchmark: how long does ``POST /debug/preview`` of F candidate files take on a
daemon serving N ServiceEntry files to C connected clients?

Starts a real registryd (a subprocess, ``--configDir`` on N generated ServiceEntry
files, one service of K endpoints each, as :mod:`bench.push_latency` writes them),
connects C ADS clients (CDS and LDS wildcard, EDS and RDS asked for without names,
every response ACKed, none kept), half in
namespace ``bench`` and half in ``other``, then previews F candidate files -- the first
F files with the first endpoint of every service moved, so every one of their
ClusterLoadAssignments changes, and every tenth service exported to ``bench`` only, so
the clients of ``other`` lose it -- ``--runs`` times, one after the other, while
``/ready`` is probed every 20 ms (how long the debug port waits behind a preview).

Prints the preview's time as the client sees it (median, min, max), the daemon's own
``seconds``, the groups and what changed; asserts nothing.

    python -m bench.preview --files 1000 --clients 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import probe, registryd, tree_rss
from bench.push_latency import service_yaml
from registryd.testing.ads import AdsClient
from registryd.tools import debugclient


async def connect(target: str, clients: int) -> list[AdsClient]:
    """``clients`` ADS clients holding CDS and LDS and reading every type (so that a
    preview shows them every change), half in each of two namespaces."""
    synced = [asyncio.Event() for _ in range(clients)]
    out = []
    for i in range(clients):
        namespace = "bench" if i % 2 else "other"
        client = AdsClient(
            target,
            node_id=f"sidecar~10.9.{i // 250}.{i % 250}~p{i}.{namespace}~{namespace}.svc",
            keep=False,
            on_response=lambda _, done=synced[i]: done.set(),
        )
        await client.connect()
        for kind in ("cds", "eds", "lds", "rds"):  # EDS and RDS: no names, nothing sent
            client.subscribe(kind)
        out.append(client)
    await asyncio.wait_for(asyncio.gather(*(s.wait() for s in synced)), 600)
    return out


def candidate(i: int, endpoints: int) -> str:
    """File ``i`` with its first endpoint moved; every tenth also exported to namespace
    ``bench`` only (so the clients of ``other`` lose it: two groups)."""
    text = service_yaml(i, endpoints, variant=1)
    return text + "  exportTo: [bench]\n" if i % 10 == 0 else text


def post(url: str, body: bytes) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    answer = debugclient.post(url, body, timeout=600)
    elapsed = time.monotonic() - started
    if answer.status != 200:
        raise SystemExit(f"preview answered {answer.status}: {answer.body[:300]!r}")
    return elapsed, json.loads(answer.body)


async def measure(args: argparse.Namespace, config: Path) -> None:
    with registryd(config, "--log_output_level=default:warn") as daemon:
        clients = await connect(daemon.target, args.clients)
        rss = tree_rss(daemon.proc) / 2**20
        files = {f"svc-{i}.yaml": candidate(i, args.endpoints) for i in range(args.files)}
        body = json.dumps({"files": files}).encode()
        url = f"http://127.0.0.1:{daemon.http_port}/debug/preview"
        stop = asyncio.Event()
        prober = asyncio.create_task(probe(f"http://127.0.0.1:{daemon.http_port}/ready", stop))
        times, seconds = [], []
        answer: dict[str, Any] = {}
        for _ in range(args.runs):
            elapsed, answer = await asyncio.to_thread(post, url, body)
            times.append(elapsed)
            seconds.append(answer["seconds"])
        stop.set()
        ready = await prober
        for client in clients:
            await client.close()
    print(
        f"daemon: {args.services} ServiceEntry files x {args.endpoints} endpoints, "
        f"{args.clients} ADS clients in 2 namespaces, RSS {rss:.0f} MiB"
    )
    print(f"candidate: {args.files} files, request body {len(body) / 2**20:.1f} MiB")
    print(
        f"preview ({args.runs} runs): median {statistics.median(times):.2f} s, "
        f"min {min(times):.2f} s, max {max(times):.2f} s as the client sees it; "
        f"the daemon's own: median {statistics.median(seconds):.2f} s"
    )
    for group in answer["groups"]:
        changes = {
            kind: {what: len(found[what]["names"]) for what in ("added", "removed", "changed")}
            for kind, found in group["changes"].items()
        }
        proxies = group["proxies"]
        print(f"  group of {proxies['count']} proxies ({proxies['ids'][0]}, ...): {changes}")
    print(f"  warnings: {len(answer['warnings'])}")
    print(
        f"/ready during the previews: {len(ready)} probes, "
        f"median {statistics.median(ready) * 1000:.1f} ms, max {max(ready) * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000, help="ServiceEntry files served")
    parser.add_argument("--endpoints", type=int, default=10, help="endpoints per service")
    parser.add_argument("--clients", type=int, default=1000, help="ADS clients connected")
    parser.add_argument("--files", type=int, default=1000, help="candidate files previewed")
    parser.add_argument("--runs", type=int, default=3, help="previews, one after the other")
    args = parser.parse_args()
    if args.files > args.services:
        parser.error("--files must be at most --services (the candidates replace files)")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp)
        for i in range(args.services):
            (config / f"svc-{i}.yaml").write_text(service_yaml(i, args.endpoints))
        asyncio.run(measure(args, config))


if __name__ == "__main__":
    main()
