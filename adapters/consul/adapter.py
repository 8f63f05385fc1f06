"""The Consul registry: services and their health from a Consul agent, by blocking queries.

Contract (see :mod:`registryd.adapter`):

* ``watch()`` follows, per datacenter, ``GET /v1/catalog/services`` with one blocking
  query and every service it lists with one blocking ``GET /v1/health/service/<name>``,
  started and stopped as services come and go (within ``max_watches``; see below).
  Two more blocking queries per datacenter are its change signals: ``GET
  /v1/health/state/any`` filtered to the checks that are not passing (its index moves
  with any check) and ``GET /v1/catalog/nodes`` filtered to none (its index moves with
  any node or service instance); together with the catalog's index they move on every
  change of the catalog, which is what services beyond ``max_watches`` are read on.
  Once the catalog and every service have answered it yields a
  :class:`~registryd.adapter.Replace` with the full state and a
  :class:`~registryd.adapter.Problems` (per-entry errors, the raw entries in use, notes
  as warnings); then one ``Upsert``/``Delete`` per changed hostname as replies change,
  and a new ``Problems`` whenever one of those changed.  Replies that arrive together
  are applied together.  :mod:`.parse` and :mod:`.mapping` hold the mapping rules.
* Blocking queries as Consul documents them: the last ``X-Consul-Index`` goes back as
  ``index`` with ``wait`` (setting ``wait``); a query without index (the first, or after
  a reset) does not block, and at most :data:`READ_CONCURRENCY` of those run at once
  (thousands of watches starting together would open as many connections at once, and
  the agent would answer them all late).  An index that goes backwards resets the watch
  to 0; an index below 1 is sent as 1.  Each watch is rate limited by a token bucket (burst
  :data:`QUERY_BURST`, then :data:`QUERY_RATE` queries a second), and a query that
  comes back early without a new index (a server that does not block) makes the next
  one wait :data:`BACKOFF_MIN` doubling up to :data:`BACKOFF_MAX`, until the index moves.
* Failures (:mod:`.faults` states the rule): a failed catalog query, an agent that
  cannot be reached or drops the connection, or a refused ACL token makes ``watch()``
  raise :class:`ConsulError`; the other queries are cancelled and the HTTP session is
  closed in ``finally``.  The supervisor restarts it, and the first update after a
  restart is again a full ``Replace``.  Any other failure of one service's health query
  (an HTTP error status, a reply without ``X-Consul-Index``, a malformed body, a
  timeout) is that service's alone: it keeps its last good endpoints (none if it never
  had any; it does not hold back the first ``Replace``), its source (``<service>``, or
  ``<datacenter>/<service>``) shows the error in the ``Problems``, and it is queried
  again, without ``index``, after :func:`~.faults.retry_delay` (1 s doubling to 30 s,
  ±20 %) until a reply succeeds, which clears the error.  The other services and the
  catalog keep being followed meanwhile.  Polled services follow the same rule.
* Connections: one per blocking query held open.  A Consul agent allows 200 per client
  address by default (``limits.http_max_conns_per_client``), so at most ``max_watches``
  blocking queries run (the catalogs' and signals' included).  With ``max_watches:
  auto`` (the default) each run first reads the agent's limit from ``GET /v1/agent/self``
  (``DebugConfig.HTTPMaxConnsPerClient``; it needs ``agent:read``) and takes
  :func:`watch_budget` of it: 3/4 of the limit (the rest for other clients on the same
  address) less the connections polls take, within registryd's own open-file limit; an
  agent that does not say (a refused ACL, an error) is taken to have Consul's default.
  The ``status`` of the Problems says how many services are watched and how many
  polled, and from what limit.  Services beyond that budget are polled instead, with
  a query without ``index`` (at most :func:`poll_slots` at a time), not on a timer
  but on a change: a service whose check changed state (in the checks signal) at once,
  and every one of them when the catalog's or the nodes' index moved or a node's own
  check changed (a sweep: at once, or when ``poll_interval`` seconds have passed since
  the last sweep; sweeps asked for meanwhile are one).  A warning in the Problems says
  how many are polled.  An idle catalog costs the agent three blocking queries per
  datacenter and ``wait``, not one query per service and interval.  A freed budget (a
  watched service gone) turns the first polled service, by name, into a watched one.
  A query that has not connected after :data:`~.client.CONNECT_TIMEOUT` seconds or not
  finished ``wait * 17/16 +`` :data:`~.client.READ_SLACK` seconds after it
  was sent fails.
* The ACL token travels only in the ``X-Consul-Token`` header.  It is not logged, not in
  any error message and not in ``repr()`` of the adapter or its settings.  If the agent
  says results were filtered by ACLs (a token without ``service:read``/``node:read``) a
  warning is logged once per ``watch()``.  Consul never says so to the anonymous token
  (a request without one): when no ``token`` is set and the agent's default ACL policy
  is ``deny`` (``X-Consul-Default-Acl-Policy``) a warning is logged once per ``watch()``
  instead, as the anonymous token then reads only what a policy of its own allows.

The HTTP client is in :mod:`.client`.  Settings: see :mod:`.settings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import resource
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from registryd.adapter import (
    PROBLEMS_EVERY,
    AdapterContext,
    Problems,
    Update,
    describe_error,
    follow,
)
from registryd.ratelimit import TokenBucket

from .client import ConsulClient, Reply, ssl_context
from .faults import ConsulError, ServiceQueryError, registry_wide, retry_delay
from .parse import Options, catalog_names, check_states, health_entries
from .settings import ConsulSettings, format_wait, parse_settings
from .state import ConsulState

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_MIN",
    "POLL_CONCURRENCY",
    "POLL_CONCURRENCY_MAX",
    "QUERY_BURST",
    "QUERY_RATE",
    "ConsulAdapter",
    "ConsulError",
    "RateLimiter",
    "ServiceQueryError",
    "next_index",
    "poll_slots",
    "watch_budget",
]

log = logging.getLogger("registryd.consul")

AGENT_DEFAULT_CONNS = 200  # Consul's default limits.http_max_conns_per_client
FILES_RESERVED = 256  # open files left for the rest of registryd
QUERY_RATE = 1.0  # queries a second per watch, once the burst is used up
QUERY_BURST = 2  # Consul's advice: a token bucket with a burst of 2
BACKOFF_MIN = 1.0  # seconds: a query that came back early with the same index...
BACKOFF_MAX = 15.0  # ...delays the next, doubling up to this ("poll every 15 s")
EARLY = 0.9  # a blocking query that returns before EARLY * wait did not wait it out
POLL_CONCURRENCY = 4  # polled services' queries in flight at once (at least; see poll_slots)
POLL_CONCURRENCY_MAX = 16  # ... and at most: a sweep of 10,000 reads is a fifth faster
READ_CONCURRENCY = 16  # watches' queries without index (that answer at once) in flight
SIGNALS = 3  # blocking queries a datacenter always holds: catalog, checks, nodes

Sleep = Callable[[float], Awaitable[object]]


def _usable(agent_limit: int, open_files: int) -> int:
    """The connections ``max_watches: auto`` may hold: 3/4 of the agent's limit per
    client address (0 or less: no limit) and 3/4 of the open files beyond
    :data:`FILES_RESERVED`."""
    usable = (max(0, open_files - FILES_RESERVED) * 3) // 4
    if agent_limit > 0:
        usable = min(usable, (agent_limit * 3) // 4)
    return usable


def poll_slots(agent_limit: int, open_files: int) -> int:
    """``max_watches: auto``: polled services' queries in flight at once, 1/8 of the
    connections it may hold, between :data:`POLL_CONCURRENCY` and
    :data:`POLL_CONCURRENCY_MAX` (16 against Consul's default limit).  A sweep reads every
    polled service: with 16 in flight 10,000 take 4.1 s on the real agent, with 4, 5.2 s
    (``bench.consul_sweep``)."""
    slots = _usable(agent_limit, open_files) // 8
    return min(max(slots, POLL_CONCURRENCY), POLL_CONCURRENCY_MAX)


def watch_budget(agent_limit: int, open_files: int, catalogs: int) -> int:
    """``max_watches: auto``: the blocking queries to hold against an agent that allows
    ``agent_limit`` connections per client address, when this process may open
    ``open_files`` files: what it may hold (:func:`_usable`) less the connections polls
    take (:func:`poll_slots`), but always room for ``catalogs`` watches and one more."""
    usable = _usable(agent_limit, open_files)
    return max(usable - poll_slots(agent_limit, open_files), catalogs + 1)


def open_files_limit() -> int:
    """This process's soft limit of open files (a large number where there is none)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def next_index(last: int | None, returned: int) -> int:
    """The ``index`` for the next blocking query after a reply with ``returned``.

    ``last`` is the index of the previous reply (None for the first).  Consul's rules:
    an index lower than the last one resets the watch to 0 (a query that does not
    block), and an index below 1 is sent as 1 so that the next query does block.
    """
    if last is not None and returned < last:
        return 0
    return max(returned, 1)


class RateLimiter(TokenBucket):
    """A token bucket per watch (:class:`registryd.ratelimit.TokenBucket`), plus a backoff
    while the server does not block.

    :meth:`delay` says how long to wait before the next query (and takes its token);
    :meth:`record` tells how that query went.
    """

    def __init__(
        self,
        *,
        rate: float = QUERY_RATE,
        burst: int = QUERY_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(rate, burst, clock=clock)
        self.backoff = 0.0

    def delay(self) -> float:
        return max(self.reserve(), self.backoff)

    def record(self, *, early: bool, moved: bool) -> None:
        """``early``: a blocking query came back before its wait was up; ``moved``: the
        index changed.  Early without a new index backs off; a new index resets."""
        if moved:
            self.backoff = 0.0
        elif early:
            self.backoff = min(max(self.backoff * 2, BACKOFF_MIN), BACKOFF_MAX)


@dataclass(frozen=True, slots=True)
class _Timing:
    """What a run waits and measures with (see :class:`ConsulAdapter`)."""

    sleep: Sleep = asyncio.sleep
    pace: Sleep = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    jitter: Callable[[], float] = random.random


CHECKS, NODES = "checks", "nodes"  # the change signals beside the catalog
CHECKS_FILTER = 'Status != "passing"'  # the checks that make an instance less than healthy
NODES_FILTER = 'Node == ""'  # no node has an empty name: the reply is empty, its index not


@dataclass(frozen=True, slots=True, order=True)
class _Target:
    """What one watch follows: a datacenter's catalog (``service`` None), one of its
    change signals (``signal``), or a service."""

    datacenter: str  # "" = the agent's own
    service: str | None = None
    signal: str = ""  # CHECKS or NODES (service None)

    @property
    def path(self) -> str:
        if self.service is not None:
            return f"/v1/health/service/{self.service}"
        if self.signal == CHECKS:
            return "/v1/health/state/any"
        if self.signal == NODES:
            return "/v1/catalog/nodes"
        return "/v1/catalog/services"

    @property
    def filter(self) -> str | None:
        return {CHECKS: CHECKS_FILTER, NODES: NODES_FILTER}.get(self.signal)

    def parse(self, data: Any) -> Any:
        """The part of a reply's body this watch uses (ValueError if malformed)."""
        if self.service is not None:
            return health_entries(data)
        if self.signal == CHECKS:
            return check_states(data)
        if self.signal == NODES:
            if not isinstance(data, list):
                raise ValueError("/v1/catalog/nodes: expected a list of nodes")
            return None
        return catalog_names(data)

    def __str__(self) -> str:
        where = f" (datacenter {self.datacenter})" if self.datacenter else ""
        return f"GET {self.path}{where}"


@dataclass(frozen=True, slots=True)
class _Event:
    watch: _Watch
    reply: Reply | None = None
    error: BaseException | None = None


class _Watch:
    """One blocking query loop (or, not ``blocking``, one polling loop), reporting every
    reply (or its failure) as an event.  A failure of this service alone is reported and
    retried after a backoff; any other failure is reported and ends the loop."""

    def __init__(
        self, target: _Target, run: _Run, report: Callable[[_Event], None], *, blocking: bool
    ) -> None:
        self.target = target
        self.blocking = blocking
        self.failures = 0  # failed queries in a row
        self.held = 0  # the index of the last reply reported (0: none, or a failure since)
        self.wake = asyncio.Event()  # a polled service: read it again
        loop = self._loop if blocking else self._poll
        self.task = asyncio.create_task(loop(run, report), name=f"consul:{target}")

    async def _attempt(
        self, run: _Run, report: Callable[[_Event], None], index: int
    ) -> Reply | None:
        """One query.  None: it failed for this service alone (reported, and the retry
        backoff waited out); errors that fail the registry propagate."""
        try:
            if self.blocking and index > 0:
                return self._succeeded(await run.query(self.target, index, self.held))
            async with run.polls if not self.blocking else run.reads:
                return self._succeeded(await run.query(self.target, index, self.held))
        except ServiceQueryError as exc:
            self.held = 0
            report(_Event(self, error=exc))
            delay = retry_delay(self.failures, run.jitter())
            self.failures += 1
            level = logging.WARNING if self.failures == 1 else logging.DEBUG
            log.log(level, "consul %s: %s; retrying in %.1fs", run.name, exc, delay)
            await run.sleep(delay)
            return None

    def _succeeded(self, reply: Reply) -> Reply:
        self.failures = 0
        return reply

    def _report(self, reply: Reply, report: Callable[[_Event], None]) -> None:
        """Report ``reply`` unless it is the answer reported last (not even decoded)."""
        if not reply.unchanged:
            self.held = reply.index
            report(_Event(self, reply=reply))

    async def _poll(self, run: _Run, report: Callable[[_Event], None]) -> None:
        try:
            while True:
                reply = await self._attempt(run, report, 0)
                if reply is None:
                    continue
                self._report(reply, report)
                await self.wake.wait()  # set by a sweep, or by a check of this service
                self.wake.clear()
        except Exception as exc:
            report(_Event(self, error=exc))

    async def _loop(self, run: _Run, report: Callable[[_Event], None]) -> None:
        try:
            limiter = RateLimiter(clock=run.clock)
            index, last = 0, None
            retrying = False
            while True:
                delay = 0.0 if retrying else limiter.delay()  # a retry waited its backoff
                if delay > 0:
                    await run.pace(delay)
                sent, started = index, run.clock()
                reply = await self._attempt(run, report, sent)
                retrying = reply is None
                if reply is None:  # start over with a query that answers at once
                    index, last, self.held = 0, None, 0
                    continue
                early = sent > 0 and run.clock() - started < run.settings.wait * EARLY
                index = next_index(last, reply.index)
                if index == 0:
                    log.debug(
                        "consul %s: %s: index went back to %d; starting over",
                        run.name,
                        self.target,
                        reply.index,
                    )
                limiter.record(early=early, moved=last is None or reply.index != last)
                last = reply.index
                self._report(reply, report)
        except Exception as exc:
            report(_Event(self, error=exc))


class _Run:
    """One run of ``watch()``: the client, the watches and the converted state."""

    def __init__(self, name: str, settings: ConsulSettings, timing: _Timing) -> None:
        self.name = name
        self.settings = settings
        self.sleep = timing.sleep  # waits out a failed service's retry backoff
        self.pace = timing.pace  # waits out the rate limit, its backoff, the poll interval
        self.clock = timing.clock
        self.jitter = timing.jitter
        self.client = ConsulClient(settings, ssl_context(settings))
        self.state = ConsulState(
            Options(
                hostname=settings.hostname,
                namespace=settings.namespace,
                warning_is_healthy=settings.warning_is_healthy,
                prefix_datacenter=len(settings.datacenters) > 1,
                kinds=settings.kinds,
            )
        )
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        self.watches: dict[_Target, _Watch] = {}
        self.blocking = 0  # watches in self.watches that block (the catalogs' included)
        self.services = 0  # watches in self.watches that follow a service
        self.max_watches = settings.max_watches or 0  # see budget(), for auto
        self.limit_note = "" if settings.max_watches else "not read yet"
        self._shown: tuple[tuple[Problems, int, int], Problems] | None = None
        self.moved: dict[_Target, int] = {}  # a catalog's or nodes signal's last index
        self.checks: dict[str, dict[tuple[str, str], tuple[str, str]]] = {}  # datacenter ->
        self.sweeps: dict[str, asyncio.Task[None]] = {}  # datacenter -> its next sweep
        self.last_sweep: dict[str, float] = {}  # datacenter -> clock() of its last sweep
        self.stopped: set[asyncio.Task[None]] = set()
        self.pending: set[_Target] = set()  # watches that have not answered yet
        self.polls = asyncio.Semaphore(POLL_CONCURRENCY)
        self.reads = asyncio.Semaphore(READ_CONCURRENCY)  # watches' queries without index
        self.warned_filtered = False
        self.warned_anonymous = False
        self.index = 0  # the X-Consul-Index of the last catalog or service reply applied

    async def query(self, target: _Target, index: int, held: int = 0) -> Reply:
        """One GET of ``target`` (blocking at ``index`` when > 0); ``held``: the index
        whose answer the caller holds, not decoded again (:func:`client.decode`)."""
        params: list[tuple[str, str]] = []
        if target.datacenter:
            params.append(("dc", target.datacenter))
        if target.filter is not None:
            params.append(("filter", target.filter))
        if index > 0:
            params += [("index", str(index)), ("wait", format_wait(self.settings.wait))]
        if self.settings.stale:
            params.append(("stale", "1"))
        headers = self.client.prepare_headers()
        try:
            decode = functools.partial(self.client.decode, held=held)
            reply: Reply = await self.client.http.get(
                decode, target.path, params=params, headers=headers
            )
            if reply.unchanged:
                return reply
            return dataclasses.replace(reply, data=target.parse(reply.data))
        except Exception as exc:  # not CancelledError: that is a BaseException
            message = f"{target}: {describe_error(exc)}"
            if registry_wide(exc, catalog=target.service is None):
                raise ConsulError(message) from exc
            raise ServiceQueryError(message) from exc

    def start(self, target: _Target, *, blocking: bool = True) -> None:
        assert target not in self.watches
        self.watches[target] = _Watch(target, self, self.events.put_nowait, blocking=blocking)
        self.blocking += blocking
        self.services += target.service is not None
        self.pending.add(target)

    async def budget(self, open_files: int) -> None:
        """Settle ``max_watches``: the setting, or (auto) :func:`watch_budget` of the
        limit the agent reports, or of Consul's default if it does not say why."""
        if self.settings.max_watches is not None:
            return
        catalogs = SIGNALS * max(1, len(self.settings.datacenters))
        try:
            agent = await self.client.http.get(
                self.client.decode_body, "/v1/agent/self", headers=self.client.prepare_headers()
            )
            limit = agent["DebugConfig"]["HTTPMaxConnsPerClient"]
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise ValueError(f"HTTPMaxConnsPerClient is {limit!r}")
            self.limit_note = f"auto: the agent allows {limit} connections per client"
        except Exception as exc:  # not CancelledError: that is a BaseException
            limit = AGENT_DEFAULT_CONNS
            self.limit_note = (
                f"auto: the agent's connection limit is not readable from /v1/agent/self "
                f"({describe_error(exc)}; reading it needs agent:read); taken as Consul's "
                f"default {limit}"
            )
            log.info("consul %s: %s", self.name, self.limit_note)
        self.max_watches = watch_budget(limit, open_files, catalogs)
        self.polls = asyncio.Semaphore(poll_slots(limit, open_files))  # no poll began yet

    def _budget(self) -> int:
        """How many more blocking queries ``max_watches`` allows."""
        return self.max_watches - self.blocking

    def problems(self) -> Problems:
        """The state's problems, plus a warning while services are polled, and the
        status: how many services are watched and how many polled.  The same object
        until one of those changed (so that comparing it with the last one shown is
        cheap)."""
        problems = base = self.state.problems()
        polled = len(self.watches) - self.blocking
        if self._shown is not None:
            made_of, shown = self._shown  # the state's problems (by identity), the counts
            if made_of[0] is base and made_of[1:] == (polled, self.services):
                return shown
        watched = self.services - polled
        status = {
            "mode": f"blocking queries: {watched} of {self.services} services watched",
            "max_watches": f"{self.max_watches}"
            + (f" ({self.limit_note})" if self.limit_note else ""),
        }
        if polled:
            every = f"at most every {self.settings.poll_interval:g}s"
            status["polled"] = f"{polled} services, read again on a change ({every})"
            note = (
                f"{polled} of {self.services} services are not watched but read again when "
                f"the catalog, a node or a check changes ({every}): all "
                f"{self.max_watches} blocking queries of 'max_watches' are in use "
                f"(raise the agent's limits.http_max_conns_per_client, and 'max_watches' "
                f"if set, to watch every service)"
            )
            problems = dataclasses.replace(problems, warnings=(*problems.warnings, note))
        result = dataclasses.replace(problems, status=status)
        self._shown = ((base, polled, self.services), result)
        return result

    def stop(self, target: _Target) -> None:
        watch = self.watches.pop(target)
        self.blocking -= watch.blocking
        self.services -= target.service is not None
        self.pending.discard(target)
        watch.task.cancel()
        self.stopped.add(watch.task)
        watch.task.add_done_callback(self.stopped.discard)

    def apply(self, event: _Event) -> None:
        """Apply one event: a reply updates the state, a failure of one service's query
        marks that service as failing, any other failure raises ConsulError."""
        target = event.watch.target
        if self.watches.get(target) is not event.watch:
            return  # the watch was stopped after this reply was queued
        if isinstance(event.error, ServiceQueryError) and target.service is not None:
            self.pending.discard(target)  # answered, with no entries if it never had any
            self.state.failed(target.datacenter, target.service, str(event.error))
            return
        if event.error is not None:
            raise ConsulError(f"consul {self.name}: {event.error}") from event.error
        assert event.reply is not None
        self.pending.discard(target)
        if event.reply.filtered and not self.warned_filtered:
            self.warned_filtered = True
            log.warning(
                "consul %s: the agent filtered results by ACLs: the token lacks service:read "
                "or node:read; services may be missing",
                self.name,
            )
        if event.reply.default_deny and self.settings.token is None and not self.warned_anonymous:
            self.warned_anonymous = True
            log.warning(
                "consul %s: no token is set and the agent's default ACL policy is deny: only "
                "what its anonymous token may read is served (set 'token' to a token with "
                "service:read and node:read)",
                self.name,
            )
        if target.signal == CHECKS:
            self._checks(target.datacenter, event.reply.data)
        elif target.service is None:
            if not target.signal:
                self.index = event.reply.index
                self._catalog(target.datacenter, event.reply.data)
            last = self.moved.get(target)
            self.moved[target] = event.reply.index
            if last is not None and event.reply.index != last:
                self.sweep(target.datacenter)
        else:
            self.index = event.reply.index
            recovered = self.state.failing(target.datacenter, target.service)
            self.state.health(target.datacenter, target.service, event.reply.data)
            if recovered:
                log.info("consul %s: %s answers again", self.name, target)

    def _catalog(self, datacenter: str, names: list[str]) -> None:
        wanted = self.state.catalog(datacenter, names)
        running = {
            t.service for t in self.watches if t.datacenter == datacenter and t.service is not None
        }
        for name in sorted(running - wanted):
            self.stop(_Target(datacenter, name))
        for name in sorted(wanted - running):
            self.start(_Target(datacenter, name), blocking=self._budget() > 0)
        freed = self._budget()
        if freed > 0 and len(self.watches) > self.blocking:  # budget freed: watch them now
            polled = sorted(t for t, w in self.watches.items() if not w.blocking)
            for target in polled[:freed]:
                self.stop(target)
                self.start(target)

    def _checks(self, datacenter: str, states: dict[tuple[str, str], tuple[str, str]]) -> None:
        """A reply of ``datacenter``'s checks signal: wake the polled services whose
        checks changed state (a sweep for a node's own check)."""
        last = self.checks.get(datacenter)
        self.checks[datacenter] = states
        if last is None:
            return
        changed = [k for k in last.keys() | states.keys() if last.get(k) != states.get(k)]
        names = {
            check[1]
            for key in changed
            for check in (last.get(key), states.get(key))
            if check is not None
        }
        if "" in names:  # a node's check: every service on that node
            self.sweep(datacenter)
            return
        for name in names:
            watch = self.watches.get(_Target(datacenter, name))
            if watch is not None and not watch.blocking:
                watch.wake.set()

    def sweep(self, datacenter: str) -> None:
        """Read every polled service of ``datacenter`` again, at once or, within
        ``poll_interval`` of the last sweep, when that interval is up.  Sweeps asked for
        meanwhile are one."""
        pending = self.sweeps.get(datacenter)
        if pending is None or pending.done():
            name = f"consul:sweep {datacenter or 'local'}"
            self.sweeps[datacenter] = asyncio.create_task(self._sweep(datacenter), name=name)

    async def _sweep(self, datacenter: str) -> None:
        last = self.last_sweep.get(datacenter)
        if last is not None and (wait := last + self.settings.poll_interval - self.clock()) > 0:
            await self.pace(wait)
        self.last_sweep[datacenter] = self.clock()
        for target, watch in self.watches.items():
            if not watch.blocking and target.datacenter == datacenter:
                watch.wake.set()

    def revision(self) -> str:
        """The ``X-Consul-Index`` of the last reply applied (``/debug/history`` shows it
        with the updates it caused); ``""`` before any."""
        return str(self.index) if self.index else ""

    async def apply_queued(self) -> None:
        """Wait for an event, then apply it and every other one already queued."""
        self.apply(await self.events.get())
        while not self.events.empty():
            self.apply(self.events.get_nowait())

    async def close(self) -> None:
        """Cancel every query and close the session, even if cancelled meanwhile (a
        shutdown while the run is already ending after an error)."""
        tasks = [w.task for w in self.watches.values()] + list(self.stopped)
        tasks += list(self.sweeps.values())
        self.watches.clear()
        self.blocking = self.services = 0
        for task in tasks:
            task.cancel()
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await asyncio.shield(self.client.close())


class ConsulAdapter:
    """Services of a Consul agent (see the module docstring)."""

    default_priority = 200  # merge priority when registryd.yaml gives none
    log_scope = "consul"
    log_description = "Consul registry adapter: blocking queries on the catalog and health."

    def __init__(
        self,
        *,
        name: str,
        settings: Mapping[str, Any],
        context: AdapterContext,
        sleep: Sleep = asyncio.sleep,
        pace: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        """``sleep`` waits out a failed service query's retry backoff; ``pace`` waits out
        a watch's rate limit and backoff and a polled service's interval, measured by
        ``clock``; ``jitter`` returns a number in [0, 1) that picks the retry's and the
        poll interval's jitter.  Tests pass their own."""
        self.name = name
        self.settings = parse_settings(name, settings)
        self._timing = _Timing(sleep=sleep, pace=pace, clock=clock, jitter=jitter)

    def __repr__(self) -> str:
        datacenters = list(self.settings.datacenters) or "agent's"
        address = self.settings.base_url
        return f"ConsulAdapter(name={self.name!r}, {address=}, {datacenters=})"

    async def watch(self) -> AsyncIterator[Update]:
        try:
            run = _Run(self.name, self.settings, self._timing)
        except (OSError, ssl.SSLError) as exc:  # TLS files: missing, unreadable, wrong
            raise ConsulError(f"consul {self.name}: TLS setup: {describe_error(exc)}") from exc
        try:
            await run.budget(open_files_limit())
            for datacenter in self.settings.datacenters or ("",):
                run.start(_Target(datacenter))
                run.start(_Target(datacenter, signal=CHECKS))
                run.start(_Target(datacenter, signal=NODES))
            while run.pending:
                await run.apply_queued()
            full = dataclasses.replace(run.state.replace(), revision=run.revision())
            log.info(
                "consul %s: %d services, %d endpoints from %s",
                self.name,
                len(full.services),
                len(full.endpoints),
                self.settings.base_url,
            )
            yield full
            problems = run.problems()
            yield problems
            updates = follow(
                run.apply_queued,
                run.state.changes,
                run.problems,
                problems,
                every=PROBLEMS_EVERY,
                revision=run.revision,
            )
            async with contextlib.aclosing(updates):
                async for update in updates:
                    yield update
        finally:
            await run.close()
