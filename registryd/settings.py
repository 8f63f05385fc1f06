"""Checking one registry's settings (its mapping in registryd.yaml) in an adapter factory.

Contract: :class:`SettingsReader` wraps the mapping handed to the factory.  Creating it
rejects keys the adapter does not know; each reader method takes one key and returns its
validated value, or the default when the key is absent or null.  Anything else raises
:class:`~registryd.adapter.ConfigError` with one message shape for every adapter and
plugin: ``registry '<name>' (<type>): '<key>' must be ..., got <value>``.  Values of keys
read with ``secret=True`` never appear in a message.  Pure apart from :meth:`file`,
which checks that the file exists when asked to.

:func:`redact` is the one redaction rule every debug view uses on settings, raw
registry config and node metadata: values under secret-looking keys are replaced by
``<redacted>``, the password of ``user:password@`` in any string (URLs, addresses) too,
and nesting deeper than :data:`MAX_DEPTH` is cut with a marker, so no data the daemon
accepted can make a view fail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from registryd.errors import ConfigError

__all__ = [
    "DNS_LABEL",
    "MAX_DEPTH",
    "REDACTED",
    "TOO_DEEP",
    "SettingsReader",
    "go_duration",
    "redact",
]

REDACTED = "<redacted>"
TOO_DEEP = "<nested too deep>"
MAX_DEPTH = 32
SECRET_KEY = re.compile(
    r"token|passw(?:or)?d|pwd|secret|credential|private[_.-]?key|auth|api[_.-]?key|"
    r"access[_.-]?key|session[_.-]?key|cookie|signature|bearer|jwt",
    re.I,
)
# user:password@ in a URL (after //) or at the start of an address
_URL_PASSWORD = re.compile(r"(?:(?<=//)|^)([^/@:\s]*):([^/@\s]+)@")


def _scrub(text: str, clip_at: int | None) -> str:
    text = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)
    if clip_at is not None and len(text) > clip_at:
        return f"{text[:clip_at]}...({len(text) - clip_at} more chars)"
    return text


def redact(value: Any, *, clip_at: int | None = None, _depth: int = 0) -> Any:
    """``value`` as plain JSON-ready data (mappings become dicts with string keys,
    sequences lists) with secrets redacted (see the module docstring); strings longer
    than ``clip_at`` are cut with a marker.  Never raises on nesting or cycles: below
    :data:`MAX_DEPTH` levels a value is replaced by :data:`TOO_DEEP`."""
    if isinstance(value, str):
        return _scrub(value, clip_at)
    if isinstance(value, Mapping | list | tuple) and _depth >= MAX_DEPTH:
        return TOO_DEEP
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            name = _scrub(str(key), clip_at)
            if SECRET_KEY.search(name) and item not in (None, ""):
                out[name] = REDACTED
            else:
                out[name] = redact(item, clip_at=clip_at, _depth=_depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [redact(item, clip_at=clip_at, _depth=_depth + 1) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _scrub(str(value), clip_at)


DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")  # RFC 1123: namespaces


class SettingsReader:
    """Validated reads of one registry's settings (see the module docstring)."""

    def __init__(
        self, name: str, provider: str, settings: Mapping[str, Any], known: Sequence[str]
    ) -> None:
        self.where = f"registry {name!r} ({provider})"
        self.settings = settings
        unknown = sorted(str(key) for key in set(settings) - set(known))
        if unknown:
            raise self.error(f"unknown settings {unknown}; known: {list(known)}")

    def error(self, message: str) -> ConfigError:
        """A ConfigError naming the registry: ``raise reader.error("...")``."""
        return ConfigError(f"{self.where}: {message}")

    def get(self, key: str, default: Any = None) -> Any:
        """The raw value; ``default`` when absent or null."""
        value = self.settings.get(key)
        return default if value is None else value

    def _bad(self, key: str, expected: str, value: Any, secret: bool = False) -> ConfigError:
        shown = REDACTED if secret else repr(value)
        return self.error(f"{key!r} must be {expected}, got {shown}")

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self._bad(key, "true or false", value)
        return value

    def text(self, key: str, default: str | None = None, *, secret: bool = False) -> str | None:
        """A non-empty string (surrounding spaces count as empty)."""
        value = self.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self._bad(key, "a non-empty string", value, secret)
        return value

    def number(
        self, key: str, default: float, *, maximum: float | None = None, unit: str = ""
    ) -> float:
        """A number > 0 (and <= ``maximum``); ``unit`` names it in messages."""
        value = self.get(key, default)
        expected = f"a number of {unit}" if unit else "a number"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._bad(key, expected, value)
        if value <= 0 or (maximum is not None and value > maximum):
            limit = f" and <= {maximum:g}" if maximum is not None else ""
            raise self._bad(key, f"> 0{limit}", value)
        return float(value)

    def whole(self, key: str, default: int, *, minimum: int = 1) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._bad(key, f"a whole number >= {minimum}", value)
        return value

    def label(self, key: str, default: str, *, what: str = "a DNS label like 'default'") -> str:
        """A DNS label (lower-case letters, digits, inner '-'; at most 63): a namespace."""
        value = self.get(key, default)
        if not isinstance(value, str) or not DNS_LABEL.fullmatch(value):
            raise self._bad(key, what, value)
        return value

    def names(
        self, key: str, pattern: re.Pattern[str], what: str, default: Sequence[str] = ()
    ) -> tuple[str, ...]:
        """A non-empty list of distinct strings matching ``pattern``, each a ``what``
        (e.g. "namespace name"), in the given order."""
        value = self.settings.get(key)
        if value is None:
            return tuple(default)
        if not isinstance(value, list | tuple) or not value:
            raise self.error(f"{key!r} must be a non-empty list of {what}s, got {value!r}")
        for item in value:
            if not isinstance(item, str) or not pattern.fullmatch(item):
                raise self.error(f"{key!r}: {item!r} is not a {what}")
        if len(set(value)) != len(value):
            raise self.error(f"{key!r} lists a {what} twice: {list(value)}")
        return tuple(value)

    def file(self, key: str, *, must_exist: bool = True) -> str | None:
        """A file path (``~`` expanded); with ``must_exist``, of a file there now.  Name
        the setting ``path``, ``kubeconfig`` or ``*_file``: such settings of registryd.yaml
        are made absolute, relative to that file, before they reach the adapter (the one
        rule for paths, :func:`registryd.daemon.config.parse_registries`)."""
        value = self.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str | os.PathLike) or not os.fspath(value):
            raise self._bad(key, "a file path", value)
        path = os.path.expanduser(os.fspath(value))
        if must_exist and not os.path.isfile(path):
            raise self.error(f"{key!r}: no such file: {path}")
        return str(path)


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def go_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (``30m``, ``1h30m``, ``500ms``, ``1.5s``: every part
    with a unit); None if ``text`` is not one.  For flags and adapter settings alike
    (also importable as ``registryd.daemon.config.go_duration``, where API 1.0 placed it)."""
    text = text.strip()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)
