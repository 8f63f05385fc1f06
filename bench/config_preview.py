"""Preview benchmark for a candidate registryd.yaml: how long does ``POST /debug/preview``
take when the candidate changes a registry's priority, adds a ServiceEntry registry or
removes one, on a daemon serving N services to C connected clients?

Starts a real registryd (a subprocess) whose registryd.yaml has one ``serviceentry``
registry, ``extra``, on N generated ServiceEntry files (one service of K endpoints each,
as :mod:`bench.push_latency` writes them; ``--configDir`` is empty), connects C ADS
clients (as :mod:`bench.preview` does), then previews, ``--runs`` times each:

* ``priority``: ``extra`` with another priority (no adapter runs: only the merge);
* ``add``: a second registry, ``more``, on another N files (its candidate adapter reads
  and converts them, then the full build);
* ``remove``: ``extra`` gone.

Prints, per candidate, the preview's time as the client sees it (median, min, max) and
the daemon's own ``seconds``, with the size of the first group's changes; asserts
nothing.

    python -m bench.config_preview --services 1000 --clients 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bench.common import registryd
from bench.preview import connect, post
from bench.push_latency import service_yaml


def request(path: Path, sections: list[dict[str, Any]]) -> bytes:
    content = yaml.safe_dump({"registries": sections})
    path.write_text(content)
    return json.dumps({"config": {"path": str(path), "content": content}}).encode()


def sizes(answer: dict[str, Any]) -> str:
    if not answer["groups"]:
        return "no clients"
    changes = answer["groups"][0]["changes"]
    if not changes:
        return "no changes"
    return ", ".join(
        f"{kind} +{len(c['added']['names'])} -{len(c['removed']['names'])} "
        f"~{len(c['changed']['names'])}"
        for kind, c in sorted(changes.items())
    )


async def measure(args: argparse.Namespace, root: Path) -> None:
    extra = {"name": "extra", "type": "serviceentry", "path": str(root / "extra")}
    more = {"name": "more", "type": "serviceentry", "path": str(root / "more")}
    config = root / "registryd.yaml"
    config.write_text(yaml.safe_dump({"registries": [extra]}))
    candidates = {
        "priority": request(root / "priority.yaml", [{**extra, "priority": 1}]),
        "add": request(root / "add.yaml", [extra, more]),
        "remove": request(root / "remove.yaml", []),
    }
    with registryd(root / "empty", f"--config={config}", "--log_output_level=default:warn") as d:
        clients = await connect(d.target, args.clients)
        url = f"http://127.0.0.1:{d.http_port}/debug/preview"
        print(
            f"daemon: {args.services} ServiceEntry files x {args.endpoints} endpoints in "
            f"registry 'extra', {args.clients} ADS clients in 2 namespaces"
        )
        for name, body in candidates.items():
            times, seconds = [], []
            answer: dict[str, Any] = {}
            for _ in range(args.runs):
                elapsed, answer = await asyncio.to_thread(post, url, body)
                times.append(elapsed)
                seconds.append(answer["seconds"])
            print(
                f"{name:8}: median {statistics.median(times):.2f} s, min {min(times):.2f} s, "
                f"max {max(times):.2f} s as the client sees it; the daemon's own: median "
                f"{statistics.median(seconds):.2f} s; {sizes(answer)}; "
                f"{len(answer['warnings'])} warnings"
            )
        for client in clients:
            await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000, help="files per registry")
    parser.add_argument("--endpoints", type=int, default=10, help="endpoints per service")
    parser.add_argument("--clients", type=int, default=200, help="ADS clients connected")
    parser.add_argument("--runs", type=int, default=3, help="previews of each candidate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, offset in (("extra", 0), ("more", args.services)):
            (root / name).mkdir()
            for i in range(offset, offset + args.services):
                (root / name / f"svc-{i}.yaml").write_text(service_yaml(i, args.endpoints))
        (root / "empty").mkdir()
        asyncio.run(measure(args, root))


if __name__ == "__main__":
    main()
