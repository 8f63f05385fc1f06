"""The keys under the prefix, converted incrementally.  Pure: no I/O.

:class:`KeyTable` holds what was read from each key and keeps the last good value of
every key: a malformed new value is reported in :meth:`KeyTable.problems` under its key
and the previous good value of that key keeps being used (a key that never had a good
value contributes nothing).  Any failure while converting one value is that key's error,
never the table's; messages are cut to :data:`MAX_MESSAGE` characters.  Deleting the key
drops both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from registryd.adapter import (
    Delete,
    LastGood,
    Problems,
    Published,
    Replace,
    Upsert,
    describe_error,
)

from .mapping import Built, build_service
from .parse import Instance, InvalidEntry, Options, decode_key, parse_entry

__all__ = ["MAX_MESSAGE", "KeyTable"]

MAX_MESSAGE = 2000  # characters of one error message


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to about ``limit`` characters, with a marker saying how much is left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


class KeyTable:
    """The keys under the prefix, each with its last good value and its current error.

    Feed it with :meth:`put`, :meth:`delete` (watch events) or :meth:`reset` (a full
    listing); then :meth:`replace` gives the full state, or :meth:`changes` the
    Upsert/Delete increments since the state last handed out, and :meth:`problems` the
    per-key errors and the decoded values in use.  Only services whose keys changed are
    converted again.
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        self._keys: LastGood[str, Instance] = LastGood()
        self._last: dict[str, bytes] = {}  # the value last read per key
        self._hosts: dict[str, dict[str, Instance]] = {}  # hostname -> key -> instance
        self._built: dict[str, Built] = {}  # as converted now
        self._published: Published[str] = Published()  # as last handed out
        self._dirty: set[str] = set()
        self._sources: dict[str, Any] | None = None

    # -- input ------------------------------------------------------------------------
    def put(self, key: bytes, value: bytes) -> None:
        """``key`` now holds ``value``."""
        text = decode_key(key)
        if self._last.get(text) == value and text in self._keys:
            return
        self._last[text] = value
        try:
            instance = parse_entry(key, value, self.options)
        except InvalidEntry as exc:
            self._keys.fail(text, shorten(str(exc)))
            return
        except Exception as exc:  # a conversion bug must stay this key's problem
            self._keys.fail(text, shorten(f"{text}: cannot be converted ({describe_error(exc)})"))
            return
        previous = self._keys.good(text, instance)
        if previous is not None and previous == instance:
            if previous.raw != instance.raw:
                self._sources = None
            return
        self._drop(text, previous)
        self._hosts.setdefault(instance.hostname, {})[text] = instance
        self._dirty.add(instance.hostname)
        self._sources = None

    def delete(self, key: bytes) -> None:
        """``key`` is gone."""
        self._forget(decode_key(key))

    def reset(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """The prefix holds exactly ``items`` (a full listing): keys not in it are gone."""
        listed = dict(items)
        for text, previous in self._keys.reset(decode_key(k) for k in listed).items():
            self._last.pop(text, None)
            self._drop(text, previous)
        for key, value in listed.items():
            self.put(key, value)

    def _forget(self, text: str) -> None:
        self._last.pop(text, None)
        self._drop(text, self._keys.forget(text))

    def _drop(self, text: str, instance: Instance | None) -> None:
        """``instance``, the value ``text`` had (if any), no longer counts."""
        if instance is None:
            return
        keys = self._hosts[instance.hostname]
        del keys[text]
        if not keys:
            del self._hosts[instance.hostname]
        self._dirty.add(instance.hostname)
        self._sources = None

    # -- output -----------------------------------------------------------------------
    def _rebuild(self) -> dict[str, Built | None]:
        """Convert the changed services again: hostname -> new result (None: gone)."""
        result: dict[str, Built | None] = {}
        for hostname in sorted(self._dirty):
            keys = self._hosts.get(hostname)
            result[hostname] = (
                build_service(hostname, keys.values(), self.options) if keys else None
            )
        self._dirty.clear()
        return result

    def replace(self) -> Replace:
        """The full state (and from now on, what :meth:`changes` compares with)."""
        self._apply(self._rebuild())
        return self._published.replace(self._built)

    def changes(self) -> list[Upsert | Delete]:
        """Upserts of new or changed services, then Deletes of removed ones, by hostname."""
        rebuilt = self._rebuild()
        self._apply(rebuilt)
        return self._published.changes(self._built, rebuilt)

    def _apply(self, rebuilt: Mapping[str, Built | None]) -> None:
        for hostname, built in rebuilt.items():
            if built is None:
                self._built.pop(hostname, None)
            else:
                self._built[hostname] = built

    @property
    def notes(self) -> tuple[str, ...]:
        """Notes of the services as last handed out (see :func:`build_service`)."""
        return tuple(n for h in sorted(self._built) for n in self._built[h].notes)

    @property
    def errors(self) -> dict[str, str]:
        return dict(sorted(self._keys.errors.items()))

    @property
    def sources(self) -> dict[str, Any]:
        """The decoded value in use per key (the last good one for a broken key).  A new
        mapping whenever it changed, the same one otherwise; never modified."""
        if self._sources is None:
            good = self._keys.values
            self._sources = {k: good[k].raw for k in sorted(good)}
        return self._sources

    def problems(self) -> Problems:
        return Problems(errors=self.errors, sources=self.sources, warnings=self.notes)
