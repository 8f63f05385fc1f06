"""The adapter contract: how a registry feeds registryd.

An adapter is an object with one method, ``watch()``, an async iterator of updates for
the one shard it owns.  The contract, which the supervisor and the registry store rely on:

1. The first update after every (re)start of ``watch()`` is a :class:`Replace` carrying the
   *full* state of the shard.  Until it arrives the registry counts as not synced and the
   previous state of the shard (if any) keeps being served.
2. After it, :class:`Upsert` and :class:`Delete` carry increments, one service at a time;
   an ``Upsert`` replaces the service *and all its endpoints* in this shard.  Endpoints
   are served in the order given (within a locality), so an adapter gives them in a
   stable order: the registry's own where it has a meaningful one (as istiod does),
   else sorted.  The same state in another order is a change pushed to every proxy.
3. :class:`Problems` may be yielded at any time to report per-source problems (a broken
   file, a malformed registry entry) that did not stop the adapter, and warnings (a
   hostname defined twice, an unknown protocol taken as TCP): it replaces the adapter's
   previous problem list.  The last good state of that source stays served.  The store
   logs what is new or cleared; adapters need not log problems themselves.
4. On failure (registry unreachable, lost watch) ``watch()`` raises.  It must not swallow
   errors and spin.  The supervisor logs the error, keeps the last good shard served, and
   calls ``watch()`` again after a backoff.  An expected failure
   (:class:`RegistryUnavailable`, :class:`OSError`, :class:`TimeoutError`) is one warning
   line per retry; anything else is logged at error with its traceback.
5. ``watch()`` is cancelled on shutdown; it must release its resources in ``finally``.

Adapters are created by a factory registered in the ``registryd.adapters`` entry-point
group: ``factory(name=..., settings=..., context=...)`` returns an adapter.  Bad settings
raise :class:`ConfigError` from the factory.  The factory may also declare what registryd
needs to know of its registry type: its default merge priority and its log scope
(:class:`AdapterFactory`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from registryd.errors import ConfigError
from registryd.jsonbound import JsonLimits, JsonTooLarge, load_json, parse_json, read_capped
from registryd.model import Endpoint, Service
from registryd.offloop import off_loop

__all__ = [
    "API_VERSION",
    "PROBLEMS_EVERY",
    "Adapter",
    "AdapterContext",
    "AdapterFactory",
    "ConfigError",
    "Delete",
    "JsonLimits",
    "JsonTooLarge",
    "LastGood",
    "Problems",
    "Published",
    "RegistryUnavailable",
    "Replace",
    "Update",
    "Upsert",
    "describe_error",
    "follow",
    "increments",
    "load_json",
    "off_loop",
    "parse_json",
    "read_capped",
]

T = TypeVar("T")


API_VERSION = "1.6"
"""The version of the adapter API: :class:`Adapter`, :class:`AdapterContext`, the update
types, :func:`increments`, :class:`Published`, :class:`LastGood`, :func:`follow`,
:func:`off_loop`, :func:`describe_error`, the bounded JSON reader of
:mod:`registryd.jsonbound` (:class:`JsonLimits`, :func:`read_capped`, :func:`load_json`),
and what :mod:`registryd`
lists as public.  The minor number grows with additions, the major one with changes a
plugin must follow.  1.2 added the optional factory attributes ``default_priority``,
``log_scope`` and ``log_description`` (:class:`AdapterFactory`), 1.3 ``default_export``
and :attr:`registryd.model.Health.UNKNOWN` (a source that says nothing of health), 1.4
:attr:`Problems.status` and :func:`follow`'s ``every`` (:data:`PROBLEMS_EVERY`), 1.5
:class:`RegistryUnavailable`, 1.6 the optional ``revision`` of :class:`Replace`, :class:`Upsert`
and :class:`Delete` (the source's index or revision, shown in ``/debug/history``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Replace:
    """The full state of the shard: every service and every endpoint."""

    services: tuple[Service, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    # the source's index/revision of this state, if it has one; not part of equality
    revision: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Upsert:
    """Create or replace one service and all of its endpoints in the shard."""

    service: Service
    endpoints: tuple[Endpoint, ...] = ()
    # the source's index/revision of this change, if it has one; not part of equality
    revision: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Delete:
    """Remove one service (by hostname) and its endpoints from the shard."""

    hostname: str
    # the source's index/revision of this change, if it has one; not part of equality
    revision: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Problems:
    """Current per-source problems: ``source`` (e.g. a file path) -> error message.

    ``sources`` optionally carries the raw objects per source for the debug port.
    ``warnings`` are conditions that block nothing but deserve an operator's look (two
    definitions of one hostname: which one won), each a self-contained sentence.
    ``removed`` optionally names the sources that went away since the adapter's previous
    ``Problems`` (a deleted file): an error of theirs that is no longer listed was
    removed with them rather than fixed, and is logged so.
    ``status`` (since API 1.4) says how the adapter follows its registry now, a few short
    key/value pairs shown as they are on ``/debug/configz`` (e.g. ``{"mode": "push"}``,
    or a fallback to polling and why).
    """

    errors: Mapping[str, str] = field(default_factory=dict)
    sources: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    status: Mapping[str, str] = field(default_factory=dict)


Update = Replace | Upsert | Delete | Problems


class Built(Protocol):
    """A converted service and its endpoints, as an adapter keeps them per key."""

    @property
    def service(self) -> Service: ...

    @property
    def endpoints(self) -> tuple[Endpoint, ...]: ...


K = TypeVar("K")


class Published(Generic[K]):
    """What an adapter last handed out, per key of its own (a hostname, an object key),
    and the increments from there to its current state: the one diff every adapter that
    keeps its converted state by key needs.

    :meth:`replace` hands out everything (the full state after a (re)connect);
    :meth:`changes` compares the ``touched`` keys of ``current`` with what was handed out
    and returns the Upserts of new or changed services, then the Deletes, each sorted by
    hostname; both remember what they handed out.
    """

    def __init__(self) -> None:
        self.shown: dict[K, Built] = {}

    def replace(self, current: Mapping[K, Built]) -> Replace:
        self.shown = dict(current)
        ordered = sorted(self.shown.values(), key=lambda b: b.service.hostname)
        return Replace(
            services=tuple(b.service for b in ordered),
            endpoints=tuple(e for b in ordered for e in b.endpoints),
        )

    def changes(self, current: Mapping[K, Built], touched: Iterable[K]) -> list[Upsert | Delete]:
        upserts: list[Upsert] = []
        deletes: list[Delete] = []
        for key in touched:
            new, old = current.get(key), self.shown.get(key)
            if new is None:
                if old is not None:
                    deletes.append(Delete(hostname=old.service.hostname))
                    del self.shown[key]
                continue
            self.shown[key] = new
            if old is None or (old.service, old.endpoints) != (new.service, new.endpoints):
                upserts.append(Upsert(service=new.service, endpoints=new.endpoints))
        upserts.sort(key=lambda u: u.service.hostname)
        deletes.sort(key=lambda d: d.hostname)
        return [*upserts, *deletes]


V = TypeVar("V")


class LastGood(Generic[K, V]):
    """Per key of an adapter's source (an etcd key, a file, an API object): the last good
    parsed value and the current error, so that a broken new version never takes away
    what the key gave before.

    * :meth:`good`: the key's new version parsed; it replaces the value and clears the
      error.
    * :meth:`fail`: the key's new version is broken; the error is recorded and the last
      good value (if any) stays in use.
    * :meth:`forget`: the key is gone; value and error are both dropped.
    * :meth:`reset`: a full listing names exactly ``listed`` (within ``scope``); every
      other known key of that scope is forgotten.

    The methods return what was dropped, so the caller can update what it derives from
    the values.  Error texts are stored as given: bounding them is the caller's business.
    """

    def __init__(self) -> None:
        self._values: dict[K, V] = {}
        self._errors: dict[K, str] = {}

    @property
    def values(self) -> Mapping[K, V]:
        """The value in use per key (the last good one of a broken key); do not modify."""
        return self._values

    @property
    def errors(self) -> Mapping[K, str]:
        """The current error per broken key; do not modify."""
        return self._errors

    def get(self, key: K) -> V | None:
        return self._values.get(key)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` has a value or an error."""
        return key in self._values or key in self._errors

    def known(self) -> set[K]:
        """Every key with a value or an error."""
        return self._values.keys() | self._errors.keys()

    def good(self, key: K, value: V) -> V | None:
        """``key`` now parses to ``value``; the value it replaces, if any."""
        self._errors.pop(key, None)
        before = self._values.get(key)
        self._values[key] = value
        return before

    def fail(self, key: K, error: str) -> bool:
        """``key``'s current version is broken (``error``); whether a last good value
        stays in use."""
        self._errors[key] = error
        return key in self._values

    def forget(self, key: K) -> V | None:
        """``key`` is gone; the value it had, if any."""
        self._errors.pop(key, None)
        return self._values.pop(key, None)

    def reset(
        self, listed: Iterable[K], scope: Callable[[K], bool] | None = None
    ) -> dict[K, V | None]:
        """A full listing holds exactly the keys ``listed`` of its ``scope`` (default:
        every key): forget the other keys of that scope, and return them with the value
        each had (None for a key that only had an error)."""
        keep = set(listed)
        known = [*self._values, *(k for k in self._errors if k not in self._values)]
        gone = [k for k in known if k not in keep and (scope is None or scope(k))]
        return {key: self.forget(key) for key in gone}


PROBLEMS_EVERY = 1.0  # seconds: follow() looks at the problems at most this often


async def follow(
    apply_queued: Callable[[], Awaitable[None]],
    changes: Callable[[], Iterable[Upsert | Delete]],
    problems: Callable[[], Problems],
    shown: Problems,
    *,
    every: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    revision: Callable[[], str] | None = None,
) -> AsyncGenerator[Upsert | Delete | Problems, None]:
    """The updates after the full state, for an adapter whose watches feed a queue and
    whose converted state tells what changed: forever, wait for queued events
    (``apply_queued``) and yield the increments they caused (``changes``) at once; then
    the current ``problems`` when they differ from those last yielded (``shown`` at
    first).  Problems are diagnostics and may cost what the whole state costs to
    build: with ``every`` > 0 (:data:`PROBLEMS_EVERY` suits a watch whose events come
    one by one), while events keep coming they are looked at no more than once every
    ``every`` seconds (measured by ``clock``): after events at once if the last look is
    that long ago, else when the interval is up or the events stop.  With ``every`` 0
    (the default) they are looked at after every batch of events.  ``revision`` (since
    1.6): the source's index or revision once a batch is applied, stamped on the
    increments it caused (``""``: none)."""
    looked = -math.inf  # when problems() was last called
    owed = False  # events applied since
    pending: asyncio.Future[None] | None = None

    def look() -> Problems | None:
        """The problems if they changed since last yielded."""
        nonlocal owed, looked, shown
        owed, looked = False, clock()
        new = problems()
        if new is shown or new == shown:
            return None
        shown = new
        return new

    try:
        while True:
            if pending is None and not owed:
                await apply_queued()  # nothing to look at meanwhile: wait as it is
            else:  # owing a look at the problems: wait for events until the interval is up
                if pending is None:
                    pending = asyncio.ensure_future(apply_queued())
                timeout = max(0.0, looked + every - clock()) if owed else None
                done, _ = await asyncio.wait({pending}, timeout=timeout)
                if not done:  # no event within the interval: look now
                    if (new := look()) is not None:
                        yield new
                    continue
                ended, pending = pending, None
                ended.result()  # the adapter's error, if any
            stamp = revision() if revision is not None else ""
            for update in changes():
                yield dataclasses.replace(update, revision=stamp) if stamp else update
            owed = True
            if clock() - looked >= every and (new := look()) is not None:
                yield new
    finally:
        if pending is not None:  # closed meanwhile: its end (an error too) goes nowhere
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending


def increments(
    old_services: Mapping[str, Service],
    old_endpoints: Mapping[str, Sequence[Endpoint]],
    new_services: Mapping[str, Service],
    new_endpoints: Mapping[str, Sequence[Endpoint]],
    hostnames: Iterable[str] | None = None,
) -> list[Upsert | Delete]:
    """The updates that take a shard from the old state to the new one: an ``Upsert`` per
    new or changed hostname, then a ``Delete`` per removed one, each sorted by hostname.

    States are hostname -> service and hostname -> endpoints.  ``hostnames`` limits the
    comparison to those that may have changed (default: all of both states).
    """
    candidates = set(old_services) | set(new_services) if hostnames is None else set(hostnames)
    upserts: list[Upsert | Delete] = []
    deletes: list[Upsert | Delete] = []
    for host in sorted(candidates):
        service, before = new_services.get(host), old_services.get(host)
        if service is None:
            if before is not None:
                deletes.append(Delete(hostname=host))
            continue
        eps, old_eps = tuple(new_endpoints.get(host, ())), tuple(old_endpoints.get(host, ()))
        if before != service or old_eps != eps:
            upserts.append(Upsert(service=service, endpoints=eps))
    return upserts + deletes


class RegistryUnavailable(Exception):
    """The registry cannot be used right now, for a reason that is expected to pass: its
    server refuses connections or answers 5xx, a watch was lost, a login was refused.
    ``watch()`` raises it (or a subclass) for such failures; the supervisor then logs one
    warning line per retry, with the delay, and no traceback (the traceback only at debug
    level), as it does for :class:`OSError` (a missing file, a refused connection) and
    :class:`TimeoutError`.  Any other exception is taken for a bug and logged at error
    with its traceback.  (Since 1.5.)"""


def describe_error(
    exc: BaseException,
    limit: int = 300,
    *,
    text: str | None = None,
    own: tuple[type[BaseException], ...] = (),
) -> str:
    """``exc`` in one line for an error message or a log: ``<type>: <text>`` with the
    text's whitespace collapsed and cut to ``limit`` characters, the type alone when the
    text is empty, and ``timed out`` for any :class:`TimeoutError` (asyncio's has no
    text).  ``text`` replaces ``str(exc)``, e.g. with credentials redacted from it.
    Exceptions of the ``own`` types (an adapter's own validation errors, whose text says
    it all) are their text alone, as it is."""
    if isinstance(exc, own):
        return str(exc) if text is None else text
    if isinstance(exc, TimeoutError):
        return "timed out"
    line = " ".join((str(exc) if text is None else text).split())[:limit]
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterContext:
    """What the daemon tells every adapter about its environment: daemon-wide flags that
    any adapter may use as defaults for its own settings.  Flags that concern one registry
    type only (``--kubeconfig``, ``--kubernetesApiQPS``...) are not here: the daemon hands
    them to the registries of that type as defaults of their settings."""

    domain: str = "cluster.local"  # --domain


@runtime_checkable
class Adapter(Protocol):
    """One registry instance.  See the module docstring for the contract."""

    def watch(self) -> AsyncIterator[Update]: ...


class AdapterFactory(Protocol):
    """Builds one registry's adapter: ``factory(name=..., settings=..., context=...)``
    (the adapter class itself usually is the factory).

    Optional attributes (class attributes when the factory is a class; since API 1.2),
    read when the type is loaded, each with its default when absent:

    * ``default_priority: int = 0`` -- the merge priority of a registry of this type
      whose ``registryd.yaml`` entry sets none (higher wins the service's attributes).
      The built-in types: kubernetes 400, serviceentry 300, consul 200, etcd 100,
      nacos 50; 0 puts a plugin below all of them.
    * ``log_scope: str`` -- the log scope the adapter logs under, i.e. its logger is
      ``logging.getLogger("registryd." + log_scope)``; registryd logs the registry's
      problems there too and accepts it in ``--log_output_level``.  A lower-case name
      of letters, digits, ``-`` and ``_``, not one of registryd's own scopes (default,
      xds, push, registry, supervisor, web).  Default: the type (entry-point) name.
    * ``log_description: str`` -- that scope's one-line description on
      ``/debug/logging``.  Default: ``The <type> registry adapter.``
    * ``default_export: bool = True`` (since 1.3) -- whether a registry of this type
      whose entry sets no ``export:`` is part of what registryd serves an istiod over
      MCP.  Only ``kubernetes`` says False: istiod reads its own clusters.

    A malformed attribute is the registry's :class:`ConfigError` when its adapter is
    built.
    """

    def __call__(
        self, *, name: str, settings: Mapping[str, Any], context: AdapterContext
    ) -> Adapter: ...
