"""A real xDS worker process serves and reports its stream metrics without ever loading
the registry, build, push or daemon modules (the main process keeps those).

The worker is started as :class:`registryd.workers.pool.WorkerPool` starts it (``python
-m registryd.workers.worker <fd>``), with ``-X importtime`` added so that it writes every
module it imports, for its whole life, to its stderr.  It is driven over its channel as
the pool drives it: configured, shipped a snapshot, a client served, asked for that
client's config dump and its metrics, pinged, closed.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from typing import Any

from prometheus_client.core import Metric

from registryd.adapter import Upsert
from registryd.build.builder import SnapshotBuilder
from registryd.registry.store import RegistryStore
from registryd.testing.ads import AdsClient
from registryd.workers.channel import ConfigDump, MetricFamilies, WorkerConfig, receive, send
from registryd.workers.ship import ship
from registryd.xds.addresses import Address, ServerOptions
from tests.unit.factories import MEM, svc

FORBIDDEN = ("registryd.registry", "registryd.build", "registryd.daemon")
IMPORTED = re.compile(r"^import time:\s*[\d ]+\|\s*[\d ]+\|\s*(\S+)\s*$")


def imported(stderr: str) -> set[str]:
    """The modules ``-X importtime`` says a process imported."""
    return {m.group(1) for line in stderr.splitlines() if (m := IMPORTED.match(line))}


async def test_a_worker_process_serves_and_counts_without_registry_build_or_daemon() -> None:
    store = RegistryStore()
    event = store.apply(MEM, Upsert(service=svc("a.example")))
    assert event is not None
    snapshot = SnapshotBuilder().build(store.view, event.hostnames, event.endpoints_only)

    parent, child = socket.socketpair()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "registryd.workers.worker",
            str(child.fileno()),
            pass_fds=(child.fileno(),),
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        child.close()
    reader, writer = await asyncio.open_unix_connection(sock=parent)
    stderr = asyncio.ensure_future(process.communicate())
    try:
        config = WorkerConfig(
            index=1,
            grpc_addr=Address("127.0.0.1", 0),
            secure_grpc_addr=None,
            tls=None,
            options=ServerOptions(reuse_port=True),
            version_prefix="test",
            max_unknown_names=100,
            push_throttle=10,
            max_requests_per_second=100,
            log_levels={},
            log_as_json=False,
        )
        await send(writer, config)
        ready = await asyncio.wait_for(receive(reader), 30)
        assert ready[0] == "ready", ready
        await send(writer, ("snapshot", ship(snapshot, 0), [(snapshot.version, 0.0, 0.0)]))
        async with AdsClient(f"127.0.0.1:{ready[1]}") as client:
            for kind, names in (("cds", ()), ("lds", ()), ("rds", ("8080",))):
                client.subscribe(kind, names)
                response = await client.next(kind, timeout=10)
                assert response.message.version_info.endswith(f"-{snapshot.version}")
            await client.flush()
            # the dump expands every packed config (HttpConnectionManager, Router, TcpProxy,
            # inspectors, retry predicates) without the builders that pack them
            await send(writer, ("call", 0, ConfigDump(client.node.id)))
            dumped: Any = await asyncio.wait_for(receive(reader), 10)
            assert dumped[:3] == ("reply", 0, True), dumped
            assert len(dumped[3]["dump"]["configs"]) == 3

        # counted once the server is told its write finished, which may come after
        # the client read the response: ask until it is
        for call in range(1, 100):
            await send(writer, ("call", call, MetricFamilies()))
            reply: Any = await asyncio.wait_for(receive(reader), 10)
            assert reply[:3] == ("reply", call, True), reply
            families: list[Metric] = reply[3]
            values = {
                (s.name, tuple(s.labels.items())): s.value for f in families for s in f.samples
            }
            if ("pilot_xds_pushes", (("type", "rds"),)) in values:
                break
            await asyncio.sleep(0.05)
        assert values[("pilot_xds_pushes", (("type", "cds"),))] == 1
        assert values[("pilot_xds_pushes", (("type", "lds"),))] == 1
        assert ("registryd_xds_streams", (("type", "sotw"),)) in values
        assert "registryd_task_failures" in {f.name for f in families}
        assert "pilot_services" not in {f.name for f in families}  # the main process'
        await send(writer, ("ping", 7))
        assert await asyncio.wait_for(receive(reader), 10) == ("pong", 7)
    finally:
        writer.close()  # the worker exits at the end of its channel
        try:
            _, err = await asyncio.wait_for(asyncio.shield(stderr), 30)
        except TimeoutError:
            process.kill()
            raise
        print(*(line for line in err.decode().splitlines() if not IMPORTED.match(line)), sep="\n")
    assert process.returncode == 0, err.decode()[-2000:]
    modules = imported(err.decode())
    assert "registryd.workers.channel" in modules  # -X importtime did report (runpy
    # runs the worker module itself as __main__, so it is not listed)
    assert "registryd.xds.metrics" in modules
    assert sorted(m for m in modules if m.startswith(FORBIDDEN)) == []
