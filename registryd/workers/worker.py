"""An xDS worker process: serves ADS streams from snapshots the main process ships.

Started by :class:`registryd.workers.pool.WorkerPool` as ``python -m registryd.workers.worker
<fd>``, where ``fd`` is its end of a Unix socket pair (:mod:`registryd.workers.channel`).
It reads its :class:`WorkerConfig`, listens on the xDS ports with ``SO_REUSEPORT`` (the
kernel spreads new connections over the workers), says ``ready``, then applies shipped
snapshots to its :class:`registryd.xds.serving.LocalServing` (the same in-process serving
the daemon runs with ``--xdsWorkers 1``), answers the main process' questions about its
streams (:data:`registryd.workers.channel.Question`, dispatched by type: :data:`ANSWERS`)
and its pings (a worker that stops answering them is killed and replaced:
:mod:`registryd.workers.heartbeat`).

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
from collections.abc import Awaitable, Callable
from typing import Any

from registryd.base import logs
from registryd.base.gcpolicy import FreezePolicy, GcPauses
from registryd.base.health import TaskFailures, TaskHealth
from registryd.workers.channel import (
    ChannelClosed,
    ConfigDump,
    Listing,
    MetricFamilies,
    Question,
    Traces,
    WorkerConfig,
    frame,
    receive,
    send,
)
from registryd.workers.ship import receive as receive_snapshot
from registryd.xds.listen import drain
from registryd.xds.serving import LocalServing
from registryd.xds.streams import Streams
from registryd.xds.tracking import Outcome

__all__ = ["ANSWERS", "answer", "main", "serve"]

log = logging.getLogger("registryd.xds.worker")

ANSWERS: dict[type[Any], Callable[[Streams, Any], Awaitable[Any]]] = {
    Listing: lambda streams, q: streams.listing(q.view, q.proxy_id, q.verbose),
    ConfigDump: lambda streams, q: streams.config_dump(q.proxy_id),
    Traces: lambda streams, _: streams.traces(),
    MetricFamilies: lambda streams, _: streams.metric_families(),
}
"""How each question of :data:`registryd.workers.channel.Question` is answered."""


async def answer(streams: Streams, question: Question) -> Any:
    """``streams``' answer to ``question``; :class:`TypeError` for anything that is not
    one of the questions (:data:`ANSWERS`)."""
    how = ANSWERS.get(type(question))
    if how is None:
        raise TypeError(f"not a question: {logs.clip(repr(question), 64)}")
    return await how(streams, question)


class _Outcomes:
    """Push outcomes for the main process, sent together once per turn of the loop."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._held: list[Outcome] = []

    def add(self, outcome: Outcome) -> None:
        if not self._held:
            asyncio.get_running_loop().call_soon(self._flush)
        self._held.append(outcome)

    def _flush(self) -> None:
        held, self._held = self._held, []
        if not self._writer.is_closing():
            self._writer.write(frame(("outcomes", held)))


class _Worker:
    """A :class:`LocalServing` as the main process configured it, and its channel."""

    def __init__(self, config: WorkerConfig) -> None:
        self.health = TaskHealth()
        self.serving = LocalServing(
            grpc_addr=config.grpc_addr,
            secure_grpc_addr=config.secure_grpc_addr,
            tls=config.tls,
            options=config.options,
            version_prefix=config.version_prefix,
            max_unknown_names=config.max_unknown_names,
            push_throttle=config.push_throttle,
            max_requests_per_second=config.max_requests_per_second,
            health=self.health,
            worker=config.index,
        )
        # the stream half of the daemon's metrics, and this process' failures and pauses:
        # the main process keeps the rest
        self.serving.registry.register(TaskFailures(lambda: dict(self.health.failures)))
        self.gc_pauses = GcPauses(self.serving.registry)
        self.gc_policy = FreezePolicy() if config.gc_freeze else None

    async def handle(self, message: Any, writer: asyncio.StreamWriter) -> None:
        kind = message[0]
        serving = self.serving
        if kind == "snapshot":
            _, shipment, announced = message
            snapshot = receive_snapshot(serving.xds.snapshot, shipment)
            for version, started, published in announced:
                serving.announce(version, started, published)
            serving.publish(snapshot)
            changed = sum(len(names) for names in shipment.tables.values())
            if self.gc_policy is not None:
                self.gc_policy.after_build(changed, not shipment.base)
        elif kind == "call":
            _, call_id, question = message
            try:
                value = await answer(serving, question)
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
        await self.serving.stop()
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
    # an istiod asked for config the snapshot lacks: the main process builds it
    worker.serving.on_config_wanted(lambda: writer.write(frame(("config_wanted",))))
    worker.serving.on_outcome(_Outcomes(writer).add)
    try:
        ports = await worker.serving.start()
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
