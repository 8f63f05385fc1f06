"""An xDS worker process: serves ADS streams from snapshots the main process ships.

Started by :class:`registryd.workers.pool.WorkerPool` as ``python -m registryd.workers.worker
<fd>``, where ``fd`` is its end of a Unix socket pair (:mod:`registryd.workers.channel`).
It reads its :class:`WorkerConfig`, listens on the xDS ports with ``SO_REUSEPORT`` (the
kernel spreads new connections over the workers), says ``ready``, then applies shipped
snapshots to its :class:`XdsServer` and answers the main process' questions about its
streams (:class:`registryd.xds.streams.LocalStreams`) and its pings (a worker that stops
answering them is killed and replaced: :mod:`registryd.workers.heartbeat`).

It runs no registry and no HTTP server, and loads none of the registry, build, push or
daemon modules (:mod:`registryd.xds.metrics` is its half of the daemon's metrics).  It
exits when the main process closes the channel or goes away (end of stream), so workers
never outlive the daemon.  Ctrl-C in a terminal reaches the whole process group:
workers ignore SIGINT and leave stopping to the main process.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from registryd.base import logs
from registryd.base.gcpolicy import FreezePolicy, GcPauses
from registryd.base.health import TaskFailures, TaskHealth
from registryd.workers.channel import ChannelClosed, WorkerConfig, receive, send
from registryd.workers.ship import receive as receive_snapshot
from registryd.xds.listen import bind, drain, grpc_options, stop_serving
from registryd.xds.metrics import XdsMetrics
from registryd.xds.server import XdsServer
from registryd.xds.streams import LocalStreams
from registryd.xds.throttle import Throttle
from registryd.xds.tracking import PushTracker

__all__ = ["main", "serve"]

log = logging.getLogger("registryd.xds.worker")


class _Worker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.health = TaskHealth()
        self.xds = XdsServer(
            version_prefix=config.version_prefix,
            health=self.health,
            max_unknown_names=config.max_unknown_names,
            throttle=Throttle.build(
                push_limit=config.push_throttle, rate=config.max_requests_per_second
            ),
            id_prefix=f"conn-w{config.index}-",
        )
        self.tracker = PushTracker()
        # the stream half of the daemon's metrics only: the main process keeps the rest
        self.registry = CollectorRegistry(auto_describe=False)
        self.metrics = XdsMetrics(self.registry, self.xds, self.tracker)
        self.registry.register(TaskFailures(lambda: dict(self.health.failures)))
        self.gc_pauses = GcPauses(self.registry)
        self.gc_policy = FreezePolicy() if config.gc_freeze else None
        self.xds.throttle.observe(self.metrics.throttled)
        self.xds.observers.extend((self.tracker, self.metrics))
        self.streams = LocalStreams(self.xds, self.tracker, self.registry, worker=config.index)
        self.server = grpc.aio.server(options=grpc_options(config.options))
        self.server.add_generic_rpc_handlers((self.xds.handler(),))

    async def start(self) -> tuple[int, int]:
        """Listen; the plaintext and TLS ports (0: that one is off)."""
        config = self.config
        plain = secure = 0
        if config.grpc_addr is not None:
            plain = bind(self.server, config.grpc_addr)
        if config.tls is not None and config.secure_grpc_addr is not None:
            secure = bind(self.server, config.secure_grpc_addr, config.tls)
        await self.server.start()
        return plain, secure

    async def handle(self, message: Any, writer: asyncio.StreamWriter) -> None:
        kind = message[0]
        if kind == "snapshot":
            _, shipment, announced = message
            snapshot = receive_snapshot(self.xds.snapshot, shipment)
            for version, started, published in announced:
                self.tracker.begin(version, started, published)
            self.xds.publish(snapshot)
            changed = sum(len(names) for names in shipment.tables.values())
            if self.gc_policy is not None:
                self.gc_policy.after_build(changed, not shipment.base)
        elif kind == "call":
            _, call_id, method, args = message
            try:
                value = await getattr(self.streams, method)(*args)
            except Exception as exc:
                self.health.failed("xds-worker", exc)
                await send(writer, ("reply", call_id, False, f"{type(exc).__name__}: {exc}"))
            else:
                await send(writer, ("reply", call_id, True, value))
        elif kind == "ping":  # answered in turn: proof that this loop reads the channel
            await send(writer, ("pong", message[1]))
        elif kind == "log_level":
            _, name, level = message
            logging.getLogger(name).setLevel(level)
        else:
            log.error("unknown message %r from the main process", logs.clip(kind, 64))

    async def stop(self) -> None:
        await stop_serving(self.server, self.xds)
        self.gc_pauses.close()


async def serve(fd: int) -> None:
    """Serve until the main process closes the channel."""
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    config: WorkerConfig = await receive(reader)
    logs.setup("default:info", as_json=config.log_as_json)
    for name, level in config.log_levels.items():
        logging.getLogger(name).setLevel(level)
    worker = _Worker(config)
    try:
        ports = await worker.start()
    except Exception as exc:  # cannot listen: the main process logs and retries
        await send(writer, ("failed", f"{exc}"))
        return
    await send(writer, ("ready", *ports))
    try:
        while True:
            try:
                message = await receive(reader)
            except ChannelClosed:
                return
            await worker.handle(message, writer)
    finally:
        await worker.stop()
        writer.close()
        await drain()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m registryd.workers.worker <fd>", file=sys.stderr)
        return 2
    asyncio.run(serve(int(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
