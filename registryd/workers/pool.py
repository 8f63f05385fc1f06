"""xDS worker processes (``--xdsWorkers N``): the main process builds, N processes serve.

The main process keeps the registries, the merge, the push loop and the HTTP ports.
Each worker (:mod:`registryd.workers.worker`) listens on the same xDS ports
(``SO_REUSEPORT``: the kernel spreads new connections over them) and serves its share of
the streams from snapshots this pool ships it (:mod:`registryd.workers.ship`): the whole
snapshot when it starts, then what changed since the version it has.  A worker that
falls behind is sent the newest snapshot straight away, never a queue of versions.  Each
shipment is pickled once however many workers need the same one.

Contract:

* :meth:`WorkerPool.start` returns once every worker listens; the first worker binds
  the ports as given (port 0: any), the others and every restarted worker bind the
  ports it got.  A worker that cannot listen at start is a :class:`ConfigError`.
* A worker that dies (killed, crashed, its channel broken) is logged and counted
  (``registryd_task_failures_total{task="xds-worker"}``) and started again after a
  backoff (:func:`registryd.base.restart.keep_running`: the registries' rule, jitter
  included, reset after a minute up); a start that fails is one more failure.  Its
  clients reconnect, to any worker, and are served the current state.  Nothing else is
  disturbed: the other workers' streams stay open.
* A worker that is alive but does not answer (stopped, deadlocked, stuck) is found by
  its heartbeat (:mod:`registryd.workers.heartbeat`): pinged every ``heartbeat_timeout / 5``
  seconds, once silent for ``heartbeat_timeout`` (plus a second per 4 MiB of snapshots
  it has yet to apply) it is killed with SIGKILL (a stopped process dies too), logged at
  error with its pid and how long it was silent, and then handled as any worker that
  died.  While it is *late* (two pings unanswered, not yet killed)
  :meth:`WorkerPool.unresponsive` names it (``/ready`` answers 503) and
  ``registryd_xds_workers{state="hung"}`` counts it.
* As a :class:`registryd.xds.serving.Serving` (the daemon's one serving seam), the pool
  asks every running worker with a typed question
  (:data:`registryd.workers.channel.Question`) and merges their answers, so the debug
  endpoints and metrics show one daemon.  A late worker is not asked; the others get
  ``call_timeout`` seconds.  A worker that gives no answer is left out of it (logged
  unless late); :meth:`WorkerPool.unresponsive` names the late ones, which the debug
  endpoints report beside a listing without them.
* Counters and histograms never go down: the pool keeps each worker's last answered
  cumulative families; those of a worker that ended are added to the daemon's totals
  for good, and a worker that does not answer counts with its last answer.
* ``--pushThrottle`` and ``--maxRequestsPerSecond`` are limits of the daemon: each
  worker gets its share (rounded up).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import random
import socket
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from registryd.base.health import TaskHealth
from registryd.base.restart import BACKOFF, Attempt, Backoff, keep_running
from registryd.errors import ConfigError
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
)
from registryd.workers.heartbeat import HEARTBEAT_TIMEOUT, Heartbeat, watch
from registryd.workers.ship import ship
from registryd.xds.addresses import Address
from registryd.xds.snapshot import EMPTY, Snapshot
from registryd.xds.streams import Listing as Listed
from registryd.xds.streams import merge_dumps, merge_families, merge_listings, merge_traces
from registryd.xds.tracking import Outcome, PushTrace

__all__ = ["WorkerPool", "share"]

log = logging.getLogger("registryd.xds.pool")

START_TIMEOUT = 60.0  # seconds for a worker to listen (imports grpc and the protos)
STOP_TIMEOUT = 5.0  # seconds for a worker to exit once its channel is closed
CALL_TIMEOUT = 2.0  # seconds a question (debug endpoints, /metrics) waits for a worker
ANNOUNCED_KEPT = 100  # push announcements kept for workers that are behind
# metric types that only grow ("unknown": istiod's counters, exposed untyped)
CUMULATIVE = frozenset({"counter", "histogram", "summary", "unknown"})


def share(limit: float, workers: int) -> float:
    """Each of ``workers``' share of a daemon-wide ``limit`` (0: no limit), rounded up."""
    return math.ceil(limit / workers) if limit > 0 else 0


class WorkerGone(Exception):
    """A worker process ended or its channel broke."""


@dataclass(eq=False)
class _Handle:
    index: int
    beat: Heartbeat
    process: asyncio.subprocess.Process | None = None
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    have: int = 0  # snapshot version the worker holds
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    up: bool = False
    task: asyncio.Task[None] | None = None
    launches: int = 0  # processes started for this worker
    counted: list[Metric] = field(default_factory=list)  # its last cumulative families
    hung_for: float | None = None  # seconds it was silent when killed as hung

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


class WorkerPool:
    """N xDS worker processes fed by this (the main) process.  ``template``: the
    configuration every worker gets (its ``index`` and ports are set per worker).
    ``heartbeat_timeout``: seconds of silence after which a worker is killed as hung
    (None: never); ``call_timeout``: seconds a question waits for each worker's answer.
    ``backoff``, ``sleep``, ``clock`` and ``jitter`` (a number in [0, 1): 0.5 means no
    jitter) drive restarts (:mod:`registryd.base.restart`); ``clock`` also the heartbeat."""

    def __init__(
        self,
        count: int,
        template: WorkerConfig,
        *,
        health: TaskHealth | None = None,
        backoff: Sequence[float] = BACKOFF,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        call_timeout: float = CALL_TIMEOUT,
        heartbeat_timeout: float | None = HEARTBEAT_TIMEOUT,
    ) -> None:
        self.count = count
        self.template = template
        self.health = health or TaskHealth()
        self.grpc_port = 0
        self.secure_grpc_port = 0
        self._backoff = Backoff(steps=tuple(backoff))
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter
        self._call_timeout = call_timeout
        self._heartbeat_timeout = heartbeat_timeout
        self._handles = [_Handle(i + 1, Heartbeat(heartbeat_timeout)) for i in range(count)]
        self._snapshot: Snapshot = EMPTY
        self._announced: OrderedDict[int, tuple[float, float]] = OrderedDict()
        self._packed: dict[int, bytes] = {}  # have -> the message shipping the newest
        self._ids = itertools.count(1)
        self._retired: list[Metric] = []  # cumulative families of workers that ended
        self._config_wanted: list[Callable[[], None]] = []
        self._outcomes: list[Callable[[Outcome], None]] = []

    # -- feeding (called by the push controller) --------------------------------------
    def announce(self, version: int, started: float, published: float) -> None:
        """Snapshot ``version`` is a push (its responses are traced, see ``pushz``)."""
        self._announced[version] = (started, published)
        while len(self._announced) > ANNOUNCED_KEPT:
            self._announced.popitem(last=False)

    def on_config_wanted(self, callback: Callable[[], None]) -> None:
        """``callback`` when a worker says one of its clients asks for Istio config the
        snapshot does not have yet (see :class:`registryd.xds.serving.Serving`)."""
        self._config_wanted.append(callback)

    def on_outcome(self, callback: Callable[[Outcome], None]) -> None:
        """``callback`` with each push outcome a worker reports (see
        :class:`registryd.xds.serving.Serving`)."""
        self._outcomes.append(callback)

    def publish(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` current: every worker is sent it (or what changed)."""
        self._snapshot = snapshot
        self._packed.clear()
        for handle in self._handles:
            handle.wake.set()

    def _message(self, have: int) -> bytes:
        packed = self._packed.get(have)
        if packed is None:
            snapshot = self._snapshot
            newest = snapshot.version
            announced = [(v, *t) for v, t in self._announced.items() if have < v <= newest]
            packed = self._packed[have] = frame(("snapshot", ship(snapshot, have), announced))
        return packed

    # -- life cycle --------------------------------------------------------------------
    async def start(self) -> tuple[int, int]:
        """Start every worker; the xDS ports they listen on (plaintext, TLS; 0: that one
        is off).  :class:`ConfigError` if one cannot listen."""
        for handle in self._handles:
            try:
                await self._launch(handle)
            except Exception as exc:
                await self.stop()
                if isinstance(exc, ConfigError):
                    raise
                raise ConfigError(f"xDS worker {handle.index} did not start: {exc}") from exc
            handle.task = asyncio.create_task(
                self._supervise(handle), name=f"xds-worker-{handle.index}"
            )
            self.health.watch(handle.task)
        return self.grpc_port, self.secure_grpc_port

    def _config(self, handle: _Handle) -> WorkerConfig:
        config = replace(self.template, index=handle.index)
        if self.grpc_port and config.grpc_addr is not None:
            config = replace(config, grpc_addr=Address(config.grpc_addr.host, self.grpc_port))
        if self.secure_grpc_port and config.secure_grpc_addr is not None:
            addr = Address(config.secure_grpc_addr.host, self.secure_grpc_port)
            config = replace(config, secure_grpc_addr=addr)
        levels = {
            name: logger.level
            for name, logger in logging.root.manager.loggerDict.items()
            if name.startswith("registryd") and isinstance(logger, logging.Logger)
        }
        return replace(config, log_levels=levels)

    async def _spawn(
        self,
    ) -> tuple[asyncio.subprocess.Process, asyncio.StreamReader, asyncio.StreamWriter]:
        """Start a worker process; it, and this end of its channel (reader, writer)."""
        parent, child = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "registryd.workers.worker",
                str(child.fileno()),
                pass_fds=(child.fileno(),),
            )
        finally:
            child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        return process, reader, writer

    async def _launch(self, handle: _Handle) -> None:
        """Start ``handle``'s process and wait until it listens."""
        process, reader, writer = await self._spawn()
        handle.process = process
        handle.reader, handle.writer = reader, writer
        try:
            writer.write(frame(self._config(handle)))
            answer = await asyncio.wait_for(receive(reader), START_TIMEOUT)
        except (ChannelClosed, TimeoutError, ConnectionError) as exc:
            await self._reap(handle)
            raise WorkerGone(f"xDS worker {handle.index} did not start: {exc}") from None
        if answer[0] != "ready":
            await self._reap(handle)
            raise ConfigError(str(answer[1]))
        _, plain, secure = answer
        self.grpc_port = self.grpc_port or plain
        self.secure_grpc_port = self.secure_grpc_port or secure
        handle.have = 0
        handle.launches += 1
        handle.hung_for = None
        handle.beat = Heartbeat(self._heartbeat_timeout, heard=self._clock())
        handle.up = True
        handle.wake.set()  # ship the current snapshot
        log.info("xDS worker %d started (pid %s)", handle.index, process.pid)

    async def _supervise(self, handle: _Handle) -> None:
        """Serve ``handle`` and start it again whenever it ends, until cancelled; each
        end and each failed start counts as a failure of ``xds-worker``."""
        await keep_running(
            functools.partial(self._live, handle),
            lambda error, _delay: self.health.failed("xds-worker", error),
            backoff=self._backoff,
            sleep=self._sleep,
            clock=self._clock,
            jitter=self._jitter,
        )

    async def _live(self, handle: _Handle, attempt: Attempt) -> None:
        """One life of ``handle``'s worker: started (unless it already runs, as after
        :meth:`start`), up once it listens, served until it is gone; raises why."""
        if not handle.up:
            await self._launch(handle)
        attempt.up()
        raise await self._serve(handle)

    async def _serve(self, handle: _Handle) -> WorkerGone:
        """Ship snapshots to ``handle``, read its answers and watch its heartbeat until
        it is gone (or killed as hung); why."""
        assert handle.reader is not None
        name = f"xds-worker-{handle.index}"
        tasks = [
            asyncio.create_task(self._ship(handle), name=f"{name}-ship"),
            asyncio.create_task(self._answers(handle, handle.reader), name=f"{name}-answers"),
        ]
        if self._heartbeat_timeout is not None:
            tasks.append(asyncio.create_task(self._heartbeat(handle), name=f"{name}-heartbeat"))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # its last counts become the daemon's for good, as it stops being asked
            self._retired = merge_families([self._retired, handle.counted])
            handle.counted = []
            await self._reap(handle)
        process = handle.process
        status = process.returncode if process is not None else None
        if handle.hung_for is not None:
            return WorkerGone(
                f"xDS worker {handle.index} (pid {handle.pid}) did not answer for "
                f"{handle.hung_for:.1f}s (hung): killed it; its clients reconnect to the "
                "other workers"
            )
        return WorkerGone(
            f"xDS worker {handle.index} (pid {handle.pid}) ended (exit status {status}); "
            "its clients reconnect to the other workers"
        )

    async def _heartbeat(self, handle: _Handle) -> None:
        """Ping ``handle`` until it is hung, then kill it (SIGKILL: a stopped process
        dies too) and return."""
        writer = handle.writer
        assert writer is not None

        def ping(number: int) -> None:
            writer.write(frame(("ping", number)))

        handle.hung_for = await watch(handle.beat, ping, self._clock, self._sleep)
        if handle.process is not None and handle.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                handle.process.kill()

    async def _ship(self, handle: _Handle) -> None:
        writer = handle.writer
        assert writer is not None
        while True:
            await handle.wake.wait()
            handle.wake.clear()
            snapshot = self._snapshot
            if snapshot.version == handle.have:
                continue
            message = self._message(handle.have)
            writer.write(message)
            handle.beat.ship(len(message))
            handle.have = snapshot.version
            await writer.drain()

    async def _answers(self, handle: _Handle, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                message = await receive(reader)
            except ChannelClosed:
                return
            pong = message[1] if message[0] == "pong" else None
            handle.beat.answered(self._clock(), pong)  # any message is a sign of life
            if message[0] == "config_wanted":
                for callback in self._config_wanted:
                    try:
                        callback()
                    except Exception as exc:  # a bug there must not stop reading the worker
                        self.health.failed("config-wanted", exc)
            elif message[0] == "outcomes":
                for outcome in message[1]:
                    for told in self._outcomes:
                        try:
                            told(outcome)
                        except Exception as exc:  # must not stop reading the worker
                            self.health.failed("push-outcome", exc)
            elif message[0] == "reply":
                _, call_id, ok, value = message
                future = handle.pending.pop(call_id, None)
                if future is not None and not future.done():
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(RuntimeError(value))

    async def _reap(self, handle: _Handle) -> None:
        """Close ``handle``'s channel and make sure its process has ended (at once if it
        is late: it would not read the close)."""
        late = handle.up and handle.beat.late(self._clock())
        handle.up = False
        for future in handle.pending.values():
            if not future.done():
                future.set_exception(WorkerGone(f"xDS worker {handle.index} is gone"))
        handle.pending.clear()
        if handle.writer is not None:
            handle.writer.close()
            handle.reader = handle.writer = None
        process = handle.process
        if process is None or process.returncode is not None:
            return
        if late:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def stop(self) -> None:
        """Stop every worker (their streams end; clients reconnect elsewhere)."""
        tasks = [h.task for h in self._handles if h.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(self._reap(h) for h in self._handles))

    # -- questions (registryd.xds.streams.Streams) -------------------------------------
    async def _call(self, handle: _Handle, question: Question) -> Any:
        writer = handle.writer
        if writer is None or not handle.up:
            raise WorkerGone(f"xDS worker {handle.index} is not running")
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        handle.pending[call_id] = future
        try:
            writer.write(frame(("call", call_id, question)))
            return await asyncio.wait_for(future, self._call_timeout)
        finally:
            handle.pending.pop(call_id, None)

    async def _ask_each(self, question: Question) -> dict[int, Any]:
        """Every running worker's answer to ``question`` by worker index.  A late
        worker (see :mod:`registryd.workers.heartbeat`) is not asked; the others are waited
        for at most ``call_timeout`` seconds, all at once.  Those that fail are left out
        and logged."""
        now = self._clock()
        asked = [h for h in self._handles if h.up and not h.beat.late(now)]
        replies = await asyncio.gather(
            *(self._call(h, question) for h in asked), return_exceptions=True
        )
        out = {}
        for handle, reply in zip(asked, replies, strict=True):
            if isinstance(reply, BaseException):
                why = str(reply) or f"no answer within {self._call_timeout:g}s"
                log.warning("xDS worker %d did not answer %s: %s", handle.index, question.name, why)
            else:
                out[handle.index] = reply
        return out

    async def _ask(self, question: Question) -> list[Any]:
        return list((await self._ask_each(question)).values())

    def unresponsive(self) -> list[str]:
        """Each running worker that is late, as a sentence (``/ready``'s reasons): it
        holds its clients and is handed new connections, but serves none of them."""
        now = self._clock()
        return [
            f"xDS worker {h.index} (pid {h.pid}) has not answered for "
            f"{h.beat.silent(now):.1f}s (replaced after {h.beat.deadline:.1f}s)"
            for h in self._handles
            if h.up and h.beat.late(now)
        ]

    async def listing(self, view: str, proxy_id: str = "", verbose: bool = False) -> Listed:
        return merge_listings(await self._ask(Listing(view, proxy_id, verbose)))

    async def full_listing(self, view: str) -> tuple[Listed, list[str]]:
        up = [h.index for h in self._handles if h.up]
        answers = await self._ask_each(Listing(view))
        missing = [f"xDS worker {i} did not answer" for i in up if i not in answers]
        return merge_listings(answers.values()), missing

    async def config_dump(self, proxy_id: str) -> dict[str, Any] | None:
        return merge_dumps(await self._ask(ConfigDump(proxy_id)))

    async def traces(self) -> list[PushTrace]:
        return merge_traces(await self._ask(Traces()))

    async def metric_families(self) -> list[Metric]:
        asked = {h.index: h.launches for h in self._handles if h.up}
        answers = await self._ask_each(MetricFamilies())
        parts = []
        for handle in self._handles:
            if not handle.up or asked.get(handle.index) != handle.launches:
                continue  # ended meanwhile: its last counts are in the retired ones
            if handle.index in answers:
                parts.append(answers[handle.index])
                handle.counted = [f for f in answers[handle.index] if f.type in CUMULATIVE]
            else:  # alive but slow to answer: its counts as last seen
                parts.append(handle.counted)
        merged = merge_families([*parts, self._retired])
        workers = GaugeMetricFamily(
            "registryd_xds_workers",
            "xDS worker processes serving the streams (--xdsWorkers), by state "
            "(hung: running but not answering, until it is replaced).",
            labels=["state"],
        )
        now = self._clock()
        running = [h for h in self._handles if h.up]
        hung = sum(1 for h in running if h.beat.late(now))
        workers.add_metric(["up"], len(running) - hung)
        workers.add_metric(["hung"], hung)
        workers.add_metric(["down"], self.count - len(running))
        return [*merged, workers]

    def set_log_level(self, name: str, level: int) -> None:
        """Set logger ``name``'s level in every running worker too."""
        for handle in self._handles:
            if handle.writer is not None and handle.up:
                handle.writer.write(frame(("log_level", name, level)))
