"""Registry answers bounded before they are parsed: JSON read with byte, item and depth
limits, parsed off the event loop when large.

Why: ``json.loads`` of an answer builds every object it holds before the caller can look
at it, in the thread that runs it.  A 63 MB body of ``{}`` grew the daemon to 5.9 GB and
held the event loop (``/healthz``) for seconds.  An adapter that reads a registry over
HTTP therefore reads the body with :func:`read_capped` and parses it with
:func:`load_json` (or :func:`parse_json`, the pure part), so that any answer costs at
most a bounded amount of memory and the loop keeps serving.

Contract:

* :func:`read_capped` reads at most ``max_bytes`` bytes of a body and raises
  :class:`JsonTooLarge` instead of reading further.
* :func:`parse_json` raises :class:`JsonTooLarge` *before parsing* when the body is over
  ``max_bytes`` or holds more than ``max_items`` objects and arrays.  Items are counted
  as the ``{`` and ``[`` bytes of the body, inside strings too: a cheap upper bound that
  a real answer stays far below (the default allows one per 16 bytes), and one that
  never lets a body of millions of ``{}`` materialise.  A value nested deeper than
  ``max_depth`` raises :class:`JsonTooLarge` after parsing (nesting costs no memory
  beyond the bytes; it is bounded so that no caller recursing over the value can fail).
  Anything that is not JSON raises :class:`ValueError` (nesting too deep for the parser
  itself is the ``max_depth`` error).
  Memory is bounded by the bytes and the items: at most about fifteen times
  ``max_bytes`` (measured; a body of short strings is the worst case).
* :func:`load_json` is :func:`parse_json` in a thread of its own
  (:func:`registryd.offloop.off_loop`) for bodies over :data:`INLINE_BYTES`, on the loop
  for smaller ones (a thread costs more than they do).

Every error message names the limit it met.  Pure apart from :func:`read_capped` (I/O)
and :func:`load_json` (a thread).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

from registryd.offloop import off_loop

__all__ = [
    "DEFAULT_MAX_BYTES",
    "INLINE_BYTES",
    "JsonLimits",
    "JsonTooLarge",
    "check_size",
    "depth",
    "load_json",
    "parse_json",
    "read_capped",
]

DEFAULT_MAX_BYTES = 16 * 2**20  # 10,000 Nacos instances take about 3 MB
DEFAULT_MAX_DEPTH = 64  # registry objects nest about 10 deep
BYTES_PER_ITEM = 16  # max_items by default: one object or array per 16 bytes
INLINE_BYTES = 64 * 2**10  # bodies up to this size are parsed on the event loop


class JsonTooLarge(ValueError):
    """An answer over one of its :class:`JsonLimits`; the message names the limit, and
    ``limit`` is the name of the field (``max_bytes``, ``max_items``, ``max_depth``)."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True, slots=True, kw_only=True)
class JsonLimits:
    """What one answer may hold: ``max_bytes`` of body, ``max_items`` objects and arrays
    (default: one per :data:`BYTES_PER_ITEM` bytes of ``max_bytes``), ``max_depth``
    levels of nesting."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    max_items: int | None = None

    @property
    def items(self) -> int:
        """``max_items``, or its default."""
        return self.max_items if self.max_items is not None else self.max_bytes // BYTES_PER_ITEM


async def read_capped(chunks: AsyncIterable[bytes], max_bytes: int) -> bytes:
    """The bytes of ``chunks`` (e.g. ``response.content.iter_chunked(65536)``) joined;
    :class:`JsonTooLarge` as soon as they pass ``max_bytes`` (nothing more is read)."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > max_bytes:
            raise JsonTooLarge(f"the answer is larger than {max_bytes} bytes", "max_bytes")
    return bytes(body)


def _raw(body: bytes | str) -> bytes:
    return body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body


def check_size(body: bytes | str, limits: JsonLimits) -> None:
    """:class:`JsonTooLarge` when ``body`` is over the byte or item limit (see the module
    docstring: items are counted as ``{`` and ``[`` bytes)."""
    raw = _raw(body)
    if len(raw) > limits.max_bytes:
        raise JsonTooLarge(f"the answer is larger than {limits.max_bytes} bytes", "max_bytes")
    items = raw.count(b"{") + raw.count(b"[")
    if items > limits.items:
        raise JsonTooLarge(
            f"the answer holds more than {limits.items} objects and arrays ({items})",
            "max_items",
        )


def depth(value: Any, stop: int) -> int:
    """How deep ``value`` nests (a scalar: 0, ``[]``: 1), counted up to ``stop + 1``
    levels at most.  Level by level, without recursion."""
    level = [value] if isinstance(value, dict | list) else []
    deepest = 0
    while level and deepest <= stop:
        deepest += 1
        inner: list[Any] = []
        for item in level:
            values = item.values() if type(item) is dict else item
            inner += [v for v in values if type(v) is dict or type(v) is list]
        level = inner
    return deepest


def parse_json(body: bytes | str, limits: JsonLimits) -> Any:
    """The JSON value of ``body`` (UTF-8; undecodable bytes become U+FFFD) within
    ``limits``: :class:`JsonTooLarge` naming the limit, :class:`ValueError` when it is
    not JSON.  Pure."""
    check_size(body, limits)
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    too_deep = JsonTooLarge(
        f"the answer is nested deeper than {limits.max_depth} levels", "max_depth"
    )
    try:
        value = json.loads(text)
    except RecursionError:
        raise too_deep from None
    if depth(value, limits.max_depth) > limits.max_depth:
        raise too_deep
    return value


async def load_json(body: bytes | str, limits: JsonLimits) -> Any:
    """:func:`parse_json` of ``body``, in a thread of its own when the body is larger
    than :data:`INLINE_BYTES`."""
    check_size(body, limits)  # cheap: no thread for what is refused anyway
    if len(body) <= INLINE_BYTES:
        return parse_json(body, limits)
    return await off_loop(parse_json, body, limits)
