"""Checking one registry's settings (its mapping in registryd.yaml) in an adapter factory.

Contract: :class:`SettingsReader` wraps the mapping handed to the factory.  Creating it
rejects keys the adapter does not know; each reader method takes one key and returns its
validated value, or the default when the key is absent or null.  Anything else raises
:class:`~registryd.adapter.ConfigError` with one message shape for every adapter and
plugin: ``registry '<name>' (<type>): '<key>' must be ..., got <value>``.  Values of keys
read with ``secret=True`` never appear in a message.  Pure apart from :meth:`file`,
which checks that the file exists when asked to.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from registryd.adapter import ConfigError

__all__ = ["DNS_LABEL", "SettingsReader"]

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
        shown = "<redacted>" if secret else repr(value)
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
        """A file path (``~`` expanded); with ``must_exist``, of a file there now."""
        value = self.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str | os.PathLike) or not os.fspath(value):
            raise self._bad(key, "a file path", value)
        path = os.path.expanduser(os.fspath(value))
        if must_exist and not os.path.isfile(path):
            raise self.error(f"{key!r}: no such file: {path}")
        return str(path)
