"""Istio-style scoped logging: ``--log_output_level default:info,xds:debug``.

Scopes are loggers under ``registryd`` (``xds`` is ``registryd.xds``); ``default`` is
``registryd`` itself.  Levels are Istio's: debug, info, warn, error, none.
"""

from __future__ import annotations

import logging
import sys
import time

from registryd.adapter import ConfigError

__all__ = ["LEVELS", "apply_levels", "parse_levels", "setup"]

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "none": logging.CRITICAL + 10,
}


def _logger_name(scope: str) -> str:
    return "registryd" if scope in ("default", "") else f"registryd.{scope}"


def parse_levels(text: str) -> dict[str, int]:
    """``scope:level,scope:level`` (a bare level applies to ``default``)."""
    result: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        scope, _, level = item.rpartition(":")
        if level.lower() not in LEVELS:
            raise ConfigError(
                f"--log_output_level: unknown level {level!r} in {item!r} "
                f"(use one of {', '.join(k for k in LEVELS if k != 'warning')})"
            )
        result[scope or "default"] = LEVELS[level.lower()]
    return result


def apply_levels(levels: dict[str, int]) -> None:
    for scope, level in levels.items():
        logging.getLogger(_logger_name(scope)).setLevel(level)


class _IstioFormatter(logging.Formatter):
    _names = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn"}

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        stamp += f".{int(record.msecs):03d}000Z"
        scope = record.name.removeprefix("registryd").lstrip(".") or "default"
        level = self._names.get(record.levelno, "error")
        text = f"{stamp}\t{level}\t{scope}\t{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup(levels_text: str) -> None:
    """Install the handler on the ``registryd`` logger and apply the levels."""
    levels = parse_levels(levels_text)
    root = logging.getLogger("registryd")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_IstioFormatter())
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.INFO)
    apply_levels(levels)
