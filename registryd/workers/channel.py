"""Messages between the daemon's main process and its xDS worker processes.

One Unix socket pair per worker; each message is a 4-byte big-endian length and a
pickle.  Both ends are the same program started by the same user, so a message is
trusted like the program's own memory; its size is still bounded (:data:`MAX_MESSAGE`),
so a corrupted length cannot make a process allocate without limit.

Main process to worker: :class:`WorkerConfig` (first), then ``("snapshot", Shipment,
announced)``, ``("call", id, question)`` (a :data:`Question`: one of a closed set of
typed operations, answered by the worker's
:class:`~registryd.xds.serving.LocalServing`), ``("log_level", scope, level)`` and
``("ping", number)`` (the heartbeat, :mod:`registryd.workers.heartbeat`).  Worker to main
process: ``("ready", grpc_port, secure_grpc_port)`` once it listens, then ``("reply",
id, ok, value)`` per call and ``("pong", number)`` per ping, each in the order of the
messages it answers; unasked, ``("config_wanted",)`` and ``("outcomes", [Outcome...])``
(push outcomes at its proxies, :class:`registryd.xds.tracking.Outcome`).
"""

from __future__ import annotations

import asyncio
import pickle
from dataclasses import dataclass
from typing import Any, ClassVar

from registryd.xds.addresses import Address, ServerOptions, TlsFiles

__all__ = [
    "MAX_MESSAGE",
    "ChannelClosed",
    "ConfigDump",
    "Listing",
    "MetricFamilies",
    "Question",
    "Traces",
    "WorkerConfig",
    "frame",
    "receive",
    "send",
]

MAX_MESSAGE = 1 << 30  # bytes
_HEADER = 4


class ChannelClosed(Exception):
    """The other end went away."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    """Everything a worker needs to serve: its number, where to listen (ports already
    chosen by the first worker when the flags say 0), and the server's limits."""

    index: int
    grpc_addr: Address | None
    secure_grpc_addr: Address | None
    tls: TlsFiles | None
    options: ServerOptions
    version_prefix: str
    max_unknown_names: int
    push_throttle: int  # this worker's share of --pushThrottle (0: no limit)
    max_requests_per_second: float  # this worker's share (0: no limit)
    log_levels: dict[str, int]  # logger name -> level, as in the main process now
    log_as_json: bool
    gc_freeze: bool = True  # run registryd.base.gcpolicy.FreezePolicy after each snapshot


# -- questions: what the main process may ask a worker about its streams --------------
# One class per method of registryd.xds.streams.Streams that a worker answers; ``name``
# is that method's (the pool's log lines say which question went unanswered).


@dataclass(frozen=True, slots=True)
class Listing:
    """``Streams.listing(view, proxy_id, verbose)``."""

    name: ClassVar[str] = "listing"
    view: str
    proxy_id: str = ""
    verbose: bool = False


@dataclass(frozen=True, slots=True)
class ConfigDump:
    """``Streams.config_dump(proxy_id)``."""

    name: ClassVar[str] = "config_dump"
    proxy_id: str


@dataclass(frozen=True, slots=True)
class Traces:
    """``Streams.traces()``."""

    name: ClassVar[str] = "traces"


@dataclass(frozen=True, slots=True)
class MetricFamilies:
    """``Streams.metric_families()``."""

    name: ClassVar[str] = "metric_families"


Question = Listing | ConfigDump | Traces | MetricFamilies
"""Every question a worker answers (see :func:`registryd.workers.worker.answer`)."""


def frame(message: Any) -> bytes:
    """``message`` as it goes on the channel."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(_HEADER, "big") + data


async def send(writer: asyncio.StreamWriter, message: Any) -> None:
    writer.write(frame(message))
    await writer.drain()


async def receive(reader: asyncio.StreamReader) -> Any:
    """The next message; :class:`ChannelClosed` at the end of the stream."""
    try:
        size = int.from_bytes(await reader.readexactly(_HEADER), "big")
        if size > MAX_MESSAGE:
            raise ChannelClosed(f"message of {size} bytes (limit {MAX_MESSAGE})")
        return pickle.loads(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise ChannelClosed(str(exc) or "closed") from None
