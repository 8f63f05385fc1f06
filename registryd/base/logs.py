"""Istio-style scoped logging: ``--log_output_level default:info,xds:debug``.

Contract:

* Scopes are loggers under ``registryd``: scope ``xds`` is logger ``registryd.xds`` and a
  deeper logger such as ``registryd.xds.server`` is scope ``xds.server`` (its full name
  minus the ``registryd.`` prefix, the same name the formatters print).  ``default`` is
  ``registryd`` itself.  registryd's own scopes are :data:`CORE_SCOPES`; each registry
  type logs under the scope its adapter declares (``log_scope``, see
  :class:`registryd.adapter.AdapterFactory`), which callers pass in.
* Levels are Istio's: debug, info, warn, error, none (``warning`` is accepted as an alias
  of ``warn``, names are case-insensitive).
* A scope's *output level* is its logger's effective level: a scope without a level of
  its own follows its parent, so changing ``default`` also moves every scope that has
  not been given its own level (Python's logger hierarchy).
* :func:`setup` installs one handler on ``registryd`` writing to stderr, either Istio's
  tab-separated text (``time<TAB>level<TAB>scope<TAB>msg``) or, with ``as_json=True``,
  one JSON object per line: ``{"time", "level", "scope", "msg"}`` plus ``"error"`` (the
  formatted traceback) when the record carries exception info.
* :func:`list_scopes`, :func:`get_scope` and :func:`set_scope_level` are the runtime
  control surface (served over HTTP by :mod:`registryd.web.logging_api`).  The scopes
  "in use" are ``default`` plus every logger already created under ``registryd.``;
  setting a level never creates a scope.
* Text a client sent (node ids, NACK messages, resource names) goes through
  :func:`clip` before it is logged or kept: control characters are escaped (a newline
  in a node id cannot forge a log line) and it is cut to a bounded length with a marker
  saying how much was left out.  The text formatter escapes control characters in every
  message as well.  :class:`LogThrottle` rate-limits a kind of line per client and
  overall, and says how many lines it suppressed.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TypedDict

from registryd.errors import ConfigError

__all__ = [
    "CORE_SCOPES",
    "LEVELS",
    "JsonFormatter",
    "LogThrottle",
    "ScopeInfo",
    "TextFormatter",
    "UnknownScopeError",
    "apply_levels",
    "check_scopes",
    "clip",
    "escape",
    "get_scope",
    "level_name",
    "level_value",
    "list_scopes",
    "parse_levels",
    "scope_name",
    "set_scope_level",
    "setup",
]

ROOT = "registryd"

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "none": logging.CRITICAL + 10,
}

_LEVEL_CHOICES = ", ".join(k for k in LEVELS if k != "warning")

CORE_SCOPES: Mapping[str, str] = MappingProxyType(
    {
        "default": "Unscoped logging messages.",
        "xds": "xDS (ADS) server: client streams, requests and responses.",
        "push": "Debounced pushes of registry changes to xDS clients.",
        "registry": "Merged service registry store.",
        "supervisor": "Registry adapter supervision and restarts.",
        "web": "HTTP debug and readiness endpoints.",
    }
)
"""registryd's own scopes and their descriptions.  A registry type's scope and its
description come from its adapter (:class:`registryd.daemon.plugins.AdapterType`); the
functions below take them as ``described``/``adapters`` arguments."""


class ScopeInfo(TypedDict):
    """One scope as served by the logging API."""

    name: str
    description: str
    output_level: str


class UnknownScopeError(LookupError):
    """The scope names no logger in use; ``str()`` is a one-line message."""

    def __str__(self) -> str:
        return f"unknown scope {self.args[0]!r}"


def logger_name(scope: str) -> str:
    """The logger behind log scope ``scope`` (``default`` is ``registryd``)."""
    return ROOT if scope in ("default", "") else f"{ROOT}.{scope}"


def scope_name(logger_name: str) -> str:
    """``registryd`` → ``default``; ``registryd.xds.server`` → ``xds.server``; any other
    logger keeps its own name."""
    if logger_name == ROOT:
        return "default"
    return logger_name.removeprefix(f"{ROOT}.")


def level_value(name: str) -> int:
    """Istio level name (case-insensitive) → :mod:`logging` level; ``ValueError`` if unknown."""
    try:
        return LEVELS[name.strip().lower()]
    except KeyError:
        shown = clip(repr(name), 64)
        raise ValueError(f"unknown level {shown} (use one of {_LEVEL_CHOICES})") from None


def level_name(level: int) -> str:
    """A logger threshold → the Istio level whose output it matches.

    Thresholds between Istio levels round up to the next level (25 → ``warn``: info lines
    are not shown); anything above ``CRITICAL`` is ``none`` and ``NOTSET`` is ``debug``.
    """
    if level <= logging.DEBUG:
        return "debug"
    if level <= logging.INFO:
        return "info"
    if level <= logging.WARNING:
        return "warn"
    if level <= logging.CRITICAL:
        return "error"
    return "none"


def _record_level(levelno: int) -> str:
    """A record's level → the Istio name printed for it (rounds down; ``CRITICAL`` is
    ``error``)."""
    if levelno < logging.INFO:
        return "debug"
    if levelno < logging.WARNING:
        return "info"
    if levelno < logging.ERROR:
        return "warn"
    return "error"


def parse_levels(text: str) -> dict[str, int]:
    """``scope:level,scope:level`` (a bare level applies to ``default``)."""
    result: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        scope, _, level = item.rpartition(":")
        if level.lower() not in LEVELS:
            raise ConfigError(
                f"--log_output_level: unknown level {level!r} in {item!r} "
                f"(use one of {_LEVEL_CHOICES})"
            )
        result[scope or "default"] = LEVELS[level.lower()]
    return result


def check_scopes(levels: dict[str, int], adapters: Iterable[str] = ()) -> None:
    """:class:`ConfigError` naming the first scope of ``levels`` that is neither one of
    :data:`CORE_SCOPES`, an adapter's scope (``adapters``: the log scopes of the
    installed registry types, iterated only when a scope is none of the others, since
    finding them loads every adapter), a sub-scope of one (``xds.server``) nor a logger
    already in use."""
    in_use = {
        scope_name(name)
        for name in list(logging.Logger.manager.loggerDict)
        if name.startswith(f"{ROOT}.")
    }

    def known_in(names: Iterable[str], scope: str) -> bool:
        return scope in names or scope.split(".", 1)[0] in names

    loaded: set[str] | None = None
    for scope in levels:
        if known_in(CORE_SCOPES, scope) or scope in in_use:
            continue
        if loaded is None:
            loaded = set(adapters)
        if known_in(loaded, scope):
            continue
        raise ConfigError(
            f"--log_output_level: unknown scope {clip(scope, 64)!r} "
            f"(scopes: {', '.join(sorted({*CORE_SCOPES, *loaded}))})"
        )


def apply_levels(levels: dict[str, int]) -> None:
    for scope, level in levels.items():
        logging.getLogger(logger_name(scope)).setLevel(level)


_NONE: Mapping[str, str] = MappingProxyType({})


def list_scopes(described: Mapping[str, str] = _NONE) -> list[ScopeInfo]:
    """``default`` first, then every existing ``registryd.*`` logger sorted by scope name.
    ``described`` gives the descriptions of scopes other than :data:`CORE_SCOPES` (the
    adapters'); any other scope is described by its logger's name."""
    prefix = f"{ROOT}."
    names = {
        scope_name(name)
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if name.startswith(prefix) and isinstance(logger, logging.Logger)
    }
    names.discard("default")  # a logger literally named registryd.default is not a scope
    return [_info("default", described), *(_info(name, described) for name in sorted(names))]


def _existing_logger(scope: str) -> logging.Logger:
    if scope == "default":
        return logging.getLogger(ROOT)
    existing = logging.Logger.manager.loggerDict.get(logger_name(scope)) if scope else None
    if not isinstance(existing, logging.Logger):
        raise UnknownScopeError(scope)
    return existing


def _info(scope: str, described: Mapping[str, str]) -> ScopeInfo:
    logger = _existing_logger(scope)
    description = CORE_SCOPES.get(scope) or described.get(scope)
    return ScopeInfo(
        name=scope,
        description=description or f"Messages from the {logger.name} logger.",
        output_level=level_name(logger.getEffectiveLevel()),
    )


def get_scope(scope: str, described: Mapping[str, str] = _NONE) -> ScopeInfo:
    """One scope (``described`` as for :func:`list_scopes`); :class:`UnknownScopeError`
    if no such logger exists yet."""
    return _info(scope, described)


def set_scope_level(scope: str, level: str, described: Mapping[str, str] = _NONE) -> ScopeInfo:
    """Set an existing scope's level by Istio name and return the updated scope
    (``described`` as for :func:`list_scopes`).

    Raises :class:`UnknownScopeError` (unknown scope) or ``ValueError`` (unknown level);
    nothing changes in either case.
    """
    value = level_value(level)
    logger = _existing_logger(scope)
    logger.setLevel(value)
    return _info(scope, described)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
CLIP = 256  # characters of client text kept by default


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with control characters (and Unicode line separators) written as
    ``\\n``, ``\\x1b``, ``\\u2028``...: one log record stays one line."""
    return _CONTROL.sub(_escaped, text)


def clip(text: object, limit: int = CLIP, *, escaped: bool = True) -> str:
    """Client-supplied ``text`` made safe to log or keep: escaped (:func:`escape`; not
    with ``escaped=False``) and cut to at most ``limit`` characters of the original,
    with ``...(N more chars)`` telling how much was cut."""
    value = text if isinstance(text, str) else str(text)
    cut = len(value) - limit
    kept = value[:limit] if cut > 0 else value
    if escaped:
        kept = escape(kept)
    return f"{kept}...({cut} more chars)" if cut > 0 else kept


class LogThrottle:
    """Rate limits for one kind of log line: ``burst`` lines at once, then ``rate`` per
    second, both per key (a client) and, with ``total_burst``/``total_rate``, for all
    keys together.

    :meth:`allow` says whether to log now; when it does after lines were suppressed it
    first logs ``N <what> lines suppressed`` on ``logger``.  Keys must be forgotten
    (:meth:`forget`) when their client leaves; at most ``max_keys`` are kept (the oldest
    go first, which only resets their budget)."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        rate: float = 1.0,
        burst: int = 5,
        total_rate: float = 10.0,
        total_burst: int = 50,
        max_keys: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self._rate, self._burst = rate, burst
        self._total: list[float] = [float(total_burst), clock()]
        self._total_rate, self._total_burst = total_rate, total_burst
        self._keys: dict[str, list[float]] = {}
        self._max_keys = max_keys
        self._clock = clock
        self.suppressed = 0  # lines suppressed since the last one logged
        self.suppressed_total = 0

    @staticmethod
    def _take(bucket: list[float], rate: float, burst: int, now: float) -> bool:
        bucket[0] = min(float(burst), bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if bucket[0] >= 1:
            bucket[0] -= 1
            return True
        return False

    def allow(self, key: str) -> bool:
        now = self._clock()
        bucket = self._keys.get(key)
        if bucket is None:
            if len(self._keys) >= self._max_keys:
                self._keys.pop(next(iter(self._keys)))
            bucket = self._keys[key] = [float(self._burst), now]
        if not self._take(bucket, self._rate, self._burst, now) or not self._take(
            self._total, self._total_rate, self._total_burst, now
        ):
            self.suppressed += 1
            self.suppressed_total += 1
            return False
        if self.suppressed:
            self._log.warning("%d %s lines suppressed", self.suppressed, self._what)
            self.suppressed = 0
        return True

    def forget(self, key: str) -> None:
        self._keys.pop(key, None)


def _timestamp(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return stamp + f".{int(record.msecs):03d}000Z"


class TextFormatter(logging.Formatter):
    """``2024-05-01T12:00:00.123000Z<TAB>info<TAB>xds<TAB>message`` (+ traceback lines)."""

    def format(self, record: logging.LogRecord) -> str:
        level = _record_level(record.levelno)
        message = escape(record.getMessage())
        text = f"{_timestamp(record)}\t{level}\t{scope_name(record.name)}\t{message}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line, like istiod's ``--log_as_json``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": _timestamp(record),
            "level": _record_level(record.levelno),
            "scope": scope_name(record.name),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup(levels_text: str, *, as_json: bool = False) -> None:
    """Install the handler on the ``registryd`` logger and apply the levels.

    The levels are parsed first, so a bad ``levels_text`` raises :class:`ConfigError`
    before anything changes.
    """
    levels = parse_levels(levels_text)
    root = logging.getLogger(ROOT)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.INFO)
    apply_levels(levels)
