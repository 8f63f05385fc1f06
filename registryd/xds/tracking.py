"""Following one push to every proxy: what each connection was sent and when it answered.

A :class:`PushRecord` is what the push controller (:mod:`registryd.daemon.push`) tells
of each push it publishes (what triggered it, how long the debounce and the build
took); the debug view ``/debug/pushz`` and the metrics read it beside the traces.

The server reports every response it writes and every ACK/NACK it reads
(:class:`PushTracker` is one of its observers).  For the last ``keep`` pushes (snapshot
versions announced with :meth:`PushTracker.begin`) the tracker keeps one
:class:`Delivery` per connection and type: resources and bytes sent, when, and when the
proxy ACKed or NACKed that version (with its error).  A response sent for a version that
was not announced (the initial state a newly connected proxy gets) is not a push and is
not kept.  Memory is bounded by ``keep`` x connections x 4 types, and a delivery outlives
its connection with little of the client's text: its proxy id is cut to ``PROXY_KEPT``
characters (a node id can be megabytes; no real one is near that), its NACK error to
:data:`registryd.xds.stream.NACK_KEPT`.

A proxy may answer before the server's writer is told its write finished (the reader
task can run first): such an answer is held by the trace and applied when ``sent()``
comes, so a delivery is never left pending for want of an ACK already read.

The tracker tells its ``listeners`` the :class:`Outcome` of each push per proxy as it
happens: first sent to (``reached``), every response of the push ACKed (``acked``), a
response NACKed (``nacked``, once per proxy and push).  The daemon keeps these in its
change history (:mod:`registryd.daemon.history`), in the main process, so an outcome
outlives the worker process that saw it.

Times are ``time.monotonic()`` values; :attr:`PushTrace.started` is when the first
registry event of the push arrived, so ``acked_at - started`` is the time from the
registry change to that proxy's ACK.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from registryd.base.logs import clip
from registryd.xds.stream import ACK, NACK, Connection, Digest, Planned

__all__ = [
    "OUTCOME_TEXT",
    "PROXY_KEPT",
    "Delivery",
    "Outcome",
    "PushRecord",
    "PushTrace",
    "PushTracker",
    "version_number",
]

PROXY_KEPT = 1024  # characters of a proxy id kept in a delivery
OUTCOME_TEXT = 256  # characters of a proxy id and of an error kept in an Outcome
REACHED, ACKED, NACKED = "reached", "acked", "nacked"


def version_number(version_info: str) -> int | None:
    """The snapshot version in a ``<prefix>-<n>`` version_info; None if it is not ours."""
    _, _, tail = version_info.rpartition("-")
    return int(tail) if tail.isdigit() else None


@dataclass(frozen=True, slots=True, kw_only=True)
class PushRecord:
    """One push: what triggered it and how long it took.  ``started`` is the monotonic
    time of its first registry event, ``at`` the wall-clock time it was published."""

    version: int
    hostnames: int
    endpoints_only: bool
    events: int
    debounce_seconds: float
    build_seconds: float
    triggers: tuple[str, ...] = field(default=())
    sample: tuple[str, ...] = field(default=())  # some of the hostnames, sorted
    started: float = 0.0
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one push (``version``) at one proxy: ``kind`` is ``reached`` (its
    first response of the push was sent), ``acked`` (every response of the push to it
    is ACKed) or ``nacked`` (one was NACKed, ``error`` says why); ``seconds`` after the
    push's first registry event.  Small, picklable: worker processes send them on."""

    version: int
    kind: str
    seconds: float
    proxy: str = ""  # cut to OUTCOME_TEXT characters
    error: str = ""  # cut to OUTCOME_TEXT characters


@dataclass(slots=True)
class Delivery:
    """One response of one push to one connection, and the proxy's answer."""

    conn_id: str
    proxy: str
    type_url: str
    resources: int
    bytes: int
    sent_at: float
    delta: bool = False  # sent on a Delta stream
    acked_at: float | None = None
    nacked_at: float | None = None
    error: str = ""


@dataclass(slots=True)
class PushTrace:
    """One push (snapshot version) and its deliveries, keyed by (connection id, type)."""

    version: int
    started: float  # monotonic time of the push's first registry event
    published: float  # monotonic time the snapshot was handed to the server
    deliveries: dict[tuple[str, str], Delivery] = field(default_factory=dict)
    # answers read before sent() was told (connection id, type) -> (ACKed?, at, error)
    early: dict[tuple[str, str], tuple[bool, float, str]] = field(default_factory=dict)
    # connection id -> the type URLs it was sent (to judge a proxy without a scan)
    types_of: dict[str, list[str]] = field(default_factory=dict)

    def reaches(self, conn: Connection) -> bool:
        """Whether ``conn`` was connected when this push's first change came: only then
        is what it is sent of this version the push (else its initial state)."""
        return conn.connected_mono <= self.started


class PushTracker:
    def __init__(self, keep: int = 20) -> None:
        self._keep = keep
        self._traces: OrderedDict[int, PushTrace] = OrderedDict()
        self.listeners: list[Callable[[Outcome], None]] = []  # told each Outcome

    def _tell(self, trace: PushTrace, kind: str, at: float, delivery: Delivery) -> None:
        outcome = Outcome(
            trace.version,
            kind,
            at - trace.started,
            clip(delivery.proxy, OUTCOME_TEXT, escaped=False),
            clip(delivery.error, OUTCOME_TEXT, escaped=False),
        )
        for listener in self.listeners:
            listener(outcome)

    def _answer(
        self, trace: PushTrace, delivery: Delivery, answer: tuple[bool, float, str]
    ) -> None:
        """Record ``answer`` on ``delivery`` and tell what it makes of the proxy."""
        acked, at, _ = answer
        conn = delivery.conn_id
        mine = [trace.deliveries[(conn, t)] for t in trace.types_of.get(conn, ())]
        was_nacked = any(d.nacked_at is not None for d in mine)
        was_acked = all(d.acked_at is not None for d in mine)
        _record(delivery, *answer)
        if not self.listeners:
            return
        if not acked and not was_nacked:
            self._tell(trace, NACKED, at, delivery)
        elif acked and not was_acked and all(d.acked_at is not None for d in mine):
            self._tell(trace, ACKED, at, delivery)

    def begin(self, version: int, started: float, published: float) -> None:
        """Announce a push: responses of snapshot ``version`` are kept from now on."""
        self._traces[version] = PushTrace(version, started, published)
        while len(self._traces) > self._keep:
            self._traces.popitem(last=False)

    def traces(self) -> list[PushTrace]:
        """The kept pushes, newest first."""
        return list(reversed(self._traces.values()))

    def get(self, version: int) -> PushTrace | None:
        return self._traces.get(version)

    # -- server observer -------------------------------------------------------------
    def sent(
        self, conn: Connection, planned: Planned, version: int, started: float, finished: float
    ) -> None:
        trace = self._traces.get(version)
        if trace is None or not trace.reaches(conn):
            return  # not a push, or a proxy that connected after the change
        key = (conn.id, planned.type_url)
        types = trace.types_of.setdefault(conn.id, [])
        first = not types
        if planned.type_url not in types:
            types.append(planned.type_url)
        delivery = trace.deliveries[key] = Delivery(
            conn_id=conn.id,
            proxy=clip(conn.proxy_id, PROXY_KEPT, escaped=False),
            type_url=planned.type_url,
            resources=len(planned.names),
            bytes=len(planned.payload),
            sent_at=finished,
            delta=conn.delta,
        )
        if first and self.listeners:
            self._tell(trace, REACHED, finished, delivery)
        answer = trace.early.pop(key, None)
        if answer is not None:
            self._answer(trace, delivery, answer)

    def failed(self, conn: Connection, planned: Planned) -> None:
        pass  # the connection closes; its delivery stays unanswered

    def synced(self, conn: Connection, version: int, at: float) -> None:
        pass  # per-response times are kept by sent()

    def answered(self, conn: Connection, digest: Digest, version_info: str, at: float) -> None:
        """An ACK (of ``version_info``) or NACK (of the version it rejected) from ``conn``,
        on a state-of-the-world or a Delta stream alike."""
        if digest.kind not in (ACK, NACK) or digest.state is None:
            return
        number = version_number(version_info if digest.kind == ACK else digest.state.nack_version)
        trace = self._traces.get(number) if number is not None else None
        if trace is None:
            return
        key = (conn.id, digest.state.type_url)
        answer = (digest.kind == ACK, at, digest.state.last_nack if digest.kind == NACK else "")
        delivery = trace.deliveries.get(key)
        if delivery is not None:
            self._answer(trace, delivery, answer)
        elif trace.reaches(conn):  # its sent() is still to come
            trace.early[key] = answer


def _record(delivery: Delivery, acked: bool, at: float, error: str) -> None:
    if acked:
        delivery.acked_at = at
    else:
        delivery.nacked_at = at
        delivery.error = error
