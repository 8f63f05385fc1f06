"""How long ``registryd validate`` takes on a directory of many files.

Generates FILES files (half ServiceEntries with a workloadSelector, an HTTP port and a
TCP port with an address; half WorkloadEntries, spread over the services) and prints the time of
:func:`registryd.tools.validate.check` in this process (median of ROUNDS) and of the whole
command in a new process (interpreter start and imports included).

    python -m bench.validate_files --files 1000 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from registryd.tools.configcheck import check

SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: svc-{i}
  namespace: ns-{ns}
spec:
  hosts: [svc-{i}.example.internal]
  addresses: [240.0.{hi}.{lo}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 80, name: http, protocol: HTTP}}
  - {{number: 9000, name: tcp, protocol: TCP, targetPort: 9001}}
  workloadSelector:
    labels: {{app: svc-{i}}}
"""

WORKLOAD = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: wl-{i}-{j}
  namespace: ns-{ns}
  labels: {{app: svc-{i}, version: v{j}}}
spec:
  address: 10.{hi}.{lo}.{j}
  locality: eu-west1/eu-west1-{j}
  ports: {{http: 8080}}
"""


def write_tree(root: Path, files: int) -> None:
    services = files // 2
    for i in range(services):
        args = {"i": i, "ns": i % 10, "hi": i // 250, "lo": i % 250}
        (root / f"svc-{i}.yaml").write_text(SERVICE.format(**args))
    for n in range(files - services):
        i, j = n % services, n // services + 1
        args = {"i": i, "j": j, "ns": i % 10, "hi": i // 250, "lo": i % 250}
        (root / f"wl-{n}.yaml").write_text(WORKLOAD.format(**args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tree(root, args.files)
        times = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            report = check(paths=[str(root)])
            times.append(time.perf_counter() - start)
        assert report.files == args.files and not report.findings, report.findings[:3]
        command = [sys.executable, "-m", "registryd", "validate", str(root)]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        whole = time.perf_counter() - start
    print(f"files: {args.files}")
    print(f"check(): median {statistics.median(times):.3f} s, min {min(times):.3f} s")
    print(f"registryd validate (new process): {whole:.3f} s")


if __name__ == "__main__":
    main()
