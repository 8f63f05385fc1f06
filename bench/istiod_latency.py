"""A registry change to an Envoy behind a real istiod that reads registryd over MCP, side
by side with an Envoy on registryd itself.

Starts etcd, registryd (one etcd registry, default debounce), istiod (built by
``scripts/build-servers istiod``, reading registryd as its ``configSources``) and two
real Envoys: one on istiod, one on registryd.  Then, ``--changes`` times, moves the one
etcd instance of ``web.etcd.example`` to another port and measures, from the etcd write,
when each Envoy's ``/clusters`` shows the new endpoint (polled every ``--step``
seconds).  Prints p50 and p99 of both and their ratio.

    python -m bench.istiod_latency --changes 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tests.e2e.admin import Admin
from tests.e2e.test_etcd_outage import PREFIX, etcd_registry, etcd_txn, instance
from tests.support.etcd_server import EtcdServer
from tests.support.istiod import istiod_binary, sidecar_node, start_istiod
from tests.support.procs import Process, free_ports, start_envoy, start_registryd

HOST = "web.etcd.example"


def _seen(
    admins: tuple[Admin, ...], cluster: str, port: int, deadline: float, step: float
) -> list[float]:
    """Monotonic times at which each of ``admins``' Envoys first lists ``127.0.0.1:port``
    for ``cluster`` (all polled in turn, every ``step`` seconds)."""
    seen: dict[int, float] = {}
    while len(seen) < len(admins):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{cluster}: 127.0.0.1:{port} never arrived")
        for i, admin in enumerate(admins):
            if i not in seen and admin.hosts(cluster) == [("127.0.0.1", port)]:
                seen[i] = time.monotonic()
        time.sleep(step)
    return [seen[i] for i in range(len(admins))]


def measure(changes: int, step: float, work: Path) -> tuple[list[float], list[float]]:
    """(seconds to the Envoy behind istiod, seconds to the Envoy on registryd) per change."""
    started: list[Process] = []
    try:
        (work / "etcd").mkdir()
        etcd = EtcdServer(work / "etcd")
        etcd.on_start.append(started.append)
        etcd.start()
        service_port, *ports = free_ports(3)
        cluster = f"outbound|{service_port}||{HOST}"
        etcd_txn(etcd, put={f"{PREFIX}web/a": instance(ports[0], service_port)})
        config = etcd_registry(etcd, work / "registryd.yaml")
        (work / "files").mkdir()
        registryd = start_registryd(work / "files", work / "registryd.log", f"--config={config}")
        started.append(registryd)
        istiod = start_istiod(
            work,
            work / "istiod.log",
            config_sources=[f"xds://127.0.0.1:{registryd.grpc_port}"],
            binary=istiod_binary(),
        )
        started.append(istiod)
        for name in ("behind-istiod", "on-registryd"):
            (work / name).mkdir()
        behind = start_envoy(istiod.grpc_port, work / "behind-istiod", sidecar_node())
        started.append(behind)
        direct = start_envoy(registryd.grpc_port, work / "on-registryd")
        started.append(direct)
        admins = (Admin(behind.admin_port), Admin(direct.admin_port))
        _seen(admins, cluster, ports[0], time.monotonic() + 30, step)
        via_istiod: list[float] = []
        via_registryd: list[float] = []
        for i in range(1, changes + 1):
            port = ports[i % 2]
            written = time.monotonic()
            etcd_txn(etcd, put={f"{PREFIX}web/a": instance(port, service_port)})
            seen = _seen(admins, cluster, port, written + 30, step)
            via_istiod.append(seen[0] - written)
            via_registryd.append(seen[1] - written)
        return via_istiod, via_registryd
    finally:
        for proc in reversed(started):
            proc.stop()


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--step", type=float, default=0.005, help="poll interval, seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="istiod-latency-") as tmp:
        via_istiod, via_registryd = measure(args.changes, args.step, Path(tmp))
    print(f"registry change -> Envoy, {args.changes} changes (seconds)")
    print(f"{'path':<32}{'p50':>8}{'p99':>8}")
    for name, values in (
        ("etcd->registryd->Envoy", via_registryd),
        ("etcd->registryd->istiod->Envoy", via_istiod),
    ):
        print(f"{name:<32}{_p(values, 0.5):>8.3f}{_p(values, 0.99):>8.3f}")
    ratio = statistics.median(via_istiod) / statistics.median(via_registryd)
    print(f"median ratio behind istiod / direct: {ratio:.2f}")


if __name__ == "__main__":
    main()
