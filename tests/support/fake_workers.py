"""xDS worker processes without processes, for tests of :class:`registryd.workers.pool.WorkerPool`.

A worker here is a :class:`Process` (a pid, an exit status it is given) and its end of
the Unix socket (reads what the pool writes and answers questions as the test says).
Two ways to get a pool of them, both on the caller's fake clock, so no test sleeps:

* :func:`running_pool`: handles set up as if running, with nothing serving them (no
  shipping, no reading, no heartbeat, no restarts); a :class:`Channel` resolves the
  questions' futures itself.  For what the pool does with answers and silence.
* :func:`started_pool`: :meth:`WorkerPool.start` for real, its process start
  (``_spawn``) replaced by :class:`Spawner`; each worker answers on the channel the pool
  reads (:class:`WorkerChannel`), so the pool serves, reaps and restarts them as it
  would real ones.
"""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

from registryd.workers.channel import WorkerConfig, frame
from registryd.workers.pool import WorkerPool, _Handle
from registryd.xds.addresses import ServerOptions
from tests.support.fake_time import FakeTime

__all__ = [
    "TEMPLATE",
    "Channel",
    "Process",
    "Spawner",
    "WorkerChannel",
    "running_pool",
    "started_pool",
]

TEMPLATE = WorkerConfig(
    index=0,
    grpc_addr=None,
    secure_grpc_addr=None,
    tls=None,
    options=ServerOptions(),
    version_prefix="t",
    max_unknown_names=0,
    push_throttle=0,
    max_requests_per_second=0,
    log_levels={},
    log_as_json=False,
)


class Process:
    """A worker process: runs until :meth:`exit` (or :meth:`kill`); then the pool's end
    of its channel (``reader``, if any) sees the end of the stream."""

    def __init__(self, pid: int, reader: asyncio.StreamReader | None = None) -> None:
        self.pid = pid
        self.reader = reader
        self.returncode: int | None = None
        self.killed = False
        self._ended = asyncio.Event()

    def exit(self, status: int) -> None:
        """The process ends with ``status`` (a negative one: killed by that signal)."""
        if self.returncode is None:
            self.returncode = status
            if self.reader is not None:
                self.reader.feed_eof()
            self._ended.set()

    def kill(self) -> None:
        self.killed = True
        self.exit(-9)

    async def wait(self) -> int:
        await self._ended.wait()
        assert self.returncode is not None
        return self.returncode


class Channel:
    """A worker's end of the channel of a :func:`running_pool`, in memory: records what
    the pool writes and answers calls with ``answer`` (by resolving the call's future on
    ``handle``) unless ``stopped``."""

    def __init__(self, handle: _Handle, answer: Any, clock: FakeTime) -> None:
        self.handle = handle
        self.answer = answer
        self.clock = clock
        self.stopped = False
        self.sent: list[Any] = []

    def write(self, data: bytes) -> None:
        message = pickle.loads(data[4:])
        self.sent.append(message)
        if self.stopped or message[0] != "call":
            return
        future = self.handle.pending[message[1]]
        asyncio.get_running_loop().call_soon(future.set_result, self.answer)
        self.handle.beat.answered(self.clock())


class WorkerChannel:
    """A spawned worker's end of the channel (see :class:`Spawner`): records what the pool
    writes and answers on ``reader`` (the pool's end), as a worker does: calls with
    ``answer``, pings with their pong.  When the pool closes it, the worker exits."""

    def __init__(self, reader: asyncio.StreamReader, process: Process, answer: Any) -> None:
        self.reader = reader
        self.process = process
        self.answer = answer
        self.sent: list[Any] = []

    def write(self, data: bytes) -> None:
        message = pickle.loads(data[4:])
        self.sent.append(message)
        if not isinstance(message, tuple):
            return  # its configuration: answered by "ready" (already on the reader)
        if message[0] == "call":
            self.reader.feed_data(frame(("reply", message[1], True, self.answer)))
        elif message[0] == "ping":
            self.reader.feed_data(frame(("pong", message[1])))

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        self.process.exit(0)


def running_pool(time: FakeTime, answers: list[Any]) -> tuple[WorkerPool, list[Channel]]:
    """A pool of ``len(answers)`` running workers (pids 101, 102…), each answering every
    question with its entry of ``answers``; heartbeat timeout 5 s, call timeout 0.05 s."""
    pool = WorkerPool(len(answers), TEMPLATE, clock=time, sleep=time.sleep, call_timeout=0.05)
    channels = []
    for handle, answer in zip(pool._handles, answers, strict=True):
        channel = Channel(handle, answer, time)
        handle.writer = channel  # type: ignore[assignment]
        handle.process = Process(100 + handle.index)  # type: ignore[assignment]
        handle.up = True
        handle.beat.answered(time())
        channels.append(channel)
    return pool, channels


class Spawner:
    """Stands in for :meth:`WorkerPool._spawn`: each call starts a fake worker (pids 201,
    202…) that is ready at once and answers every question with the next of ``answers``
    (then ``[]``), or fails to listen with ``refuse`` (a message) while that is set."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = list(answers)
        self.refuse: str | None = None
        self.processes: list[Process] = []
        self.channels: list[WorkerChannel] = []

    async def __call__(self) -> tuple[Process, asyncio.StreamReader, WorkerChannel]:
        reader = asyncio.StreamReader()
        process = Process(201 + len(self.processes), reader)
        channel = WorkerChannel(reader, process, self.answers.pop(0) if self.answers else [])
        if self.refuse is None:
            reader.feed_data(frame(("ready", 15010, 0)))
        else:
            reader.feed_data(frame(("error", self.refuse)))
        self.processes.append(process)
        self.channels.append(channel)
        return process, reader, channel


async def started_pool(
    time: FakeTime, answers: list[Any], **options: Any
) -> tuple[WorkerPool, Spawner]:
    """A started pool of ``len(answers)`` fake workers (see :class:`Spawner`), each
    answering with its entry of ``answers``; no heartbeat, sleep and clock ``time``,
    ``options`` for :class:`WorkerPool`.  Stop it with :meth:`WorkerPool.stop`."""
    options = {"heartbeat_timeout": None, **options}
    pool = WorkerPool(len(answers), TEMPLATE, clock=time, sleep=time.sleep, **options)
    spawner = Spawner(answers)
    pool._spawn = spawner  # type: ignore[method-assign,assignment]
    await pool.start()
    return pool, spawner
