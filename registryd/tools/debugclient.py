"""The HTTP client of ``registryd proxy-status`` and ``proxy-config``: one GET of a
registryd instance's debug port, trusting nothing the other end sends.

The tools are pointed at a URL an operator typed; whatever answers there may be slow,
broken or hostile, and the command must still end, within its ``--timeout``, with one
line.  So, rather than :mod:`urllib` (whose timeout bounds each socket operation, not the
exchange, and which reads any amount):

* one deadline covers the whole exchange: connecting, the TLS handshake, the status
  line, the headers and the body (:func:`get`);
* the answer is bounded: a status line and each header line at most
  :data:`MAX_LINE` bytes, at most :data:`MAX_HEADERS` headers, a body of at most the
  caller's ``limit`` (:data:`MAX_ANSWER` by default), checked against a declared
  ``Content-Length`` before reading and while reading a chunked or unframed body;
* :func:`json_body` decodes JSON nested at most :data:`MAX_DEPTH` deep.

Errors: :class:`Unreachable` when no connection could be made (a malformed URL, refused,
unknown host, no connection in time), :class:`BadAnswer` for everything the server got
wrong once connected: a malformed, oversized or late answer.  The tools exit 2 for
both: a server that cannot be used is bad input, like a bad flag.
Their messages are one line and do not repeat the URL (the caller says where).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registryd import __version__
from registryd.jsonbound import depth

__all__ = [
    "MAX_ANSWER",
    "MAX_DEPTH",
    "MAX_HEADERS",
    "MAX_LINE",
    "Answer",
    "BadAnswer",
    "Unreachable",
    "get",
    "json_body",
    "parse_head",
    "post",
]

MAX_ANSWER = 64 << 20  # bytes of one body: a config dump of a large mesh fits
MAX_LINE = 64 << 10  # bytes of the status line or of one header line
MAX_HEADERS = 100  # header lines of one answer (http.client's limit too)
MAX_DEPTH = 128  # nesting of a JSON answer; Envoy config dumps stay under 30

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: [^\r\n]*)?\r?\n")
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n]*?)[ \t]*\r?\n")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?\r?\n")


class Unreachable(Exception):
    """No connection to the instance could be made (refused, no route, unknown host, or
    not within the deadline)."""


class BadAnswer(Exception):
    """The instance answered, but not with something usable: malformed HTTP, too big,
    too slow, not JSON, or JSON of the wrong shape."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


def parse_head(status_line: bytes, header_lines: list[bytes]) -> tuple[int, dict[str, str]]:
    """The status code and headers (lower-cased names; a repeated header's values joined
    with ``,``) of an answer's head; :class:`BadAnswer` if it is not HTTP/1.x."""
    status = _STATUS_LINE.fullmatch(status_line)
    if status is None:
        raise BadAnswer(f"not an HTTP answer: {_shown(status_line)}")
    headers: dict[str, str] = {}
    for line in header_lines:
        header = _HEADER_LINE.fullmatch(line)
        if header is None:
            raise BadAnswer(f"malformed header line: {_shown(line)}")
        name, value = (part.decode("latin-1") for part in header.groups())
        name = name.lower()
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return int(status.group(1)), headers


def body_length(headers: Mapping[str, str], limit: int) -> int | None:
    """How many body bytes follow the head: ``Content-Length``, or None for a chunked
    body or one that ends when the connection does; :class:`BadAnswer` for framing that
    is malformed, not supported or over ``limit``."""
    coding = headers.get("transfer-encoding")
    if coding is not None:
        if coding.strip().lower() != "chunked":
            raise BadAnswer(f"unsupported Transfer-Encoding {_shown(coding.encode())}")
        return None
    declared = headers.get("content-length")
    if declared is None:
        return None
    values = {v.strip() for v in declared.split(",")}
    if len(values) != 1 or not all(v.isascii() and v.isdigit() for v in values):
        raise BadAnswer(f"malformed Content-Length {_shown(declared.encode())}")
    (value,) = values
    if len(value) > 19 or int(value) > limit:
        raise BadAnswer(f"answer of {value} bytes is over the limit of {limit} bytes")
    return int(value)


def json_body(body: bytes) -> Any:
    """The JSON value of a body; :class:`BadAnswer` if it is not JSON (or holds an
    integer too long to convert) or nests deeper than :data:`MAX_DEPTH`."""
    try:
        value = json.loads(body)
    except RecursionError:
        raise BadAnswer(f"JSON nested deeper than {MAX_DEPTH}") from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadAnswer(f"not JSON ({_shown(str(exc).encode())})") from None
    if depth(value, MAX_DEPTH) > MAX_DEPTH:
        raise BadAnswer(f"JSON nested deeper than {MAX_DEPTH}")
    return value


def _shown(data: bytes, most: int = 60) -> str:
    """Bytes from the wire, for a one-line message: printable ASCII, cut short."""
    text = data[:most].decode("ascii", "backslashreplace").strip()
    text = "".join(c if c.isprintable() else "?" for c in text)
    return repr(text + ("..." if len(data) > most else ""))


# -- I/O ---------------------------------------------------------------------------------


async def _line(reader: asyncio.StreamReader, what: str) -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise BadAnswer(f"{what} is longer than {MAX_LINE} bytes") from None
    except asyncio.IncompleteReadError:
        raise BadAnswer(f"the answer ended in its {what}") from None


async def _exactly(reader: asyncio.StreamReader, size: int) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise BadAnswer("the answer ended before its body did") from None


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await _line(reader, "status line")
    lines: list[bytes] = []
    while (line := await _line(reader, "header line")) not in (b"\r\n", b"\n"):
        if len(lines) == MAX_HEADERS:
            raise BadAnswer(f"more than {MAX_HEADERS} header lines")
        lines.append(line)
    return parse_head(status_line, lines)


async def _chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    body = bytearray()
    while True:
        line = await _line(reader, "chunk size line")
        size = _CHUNK_SIZE.fullmatch(line)
        if size is None:
            raise BadAnswer(f"malformed chunk size line {_shown(line)}")
        length = int(size.group(1), 16)
        if length == 0:
            break
        if len(body) + length > limit:
            raise BadAnswer(f"answer is over the limit of {limit} bytes")
        body += await _exactly(reader, length)
        if await _line(reader, "chunk end") not in (b"\r\n", b"\n"):
            raise BadAnswer("a chunk is longer than its size line says")
    for _ in range(MAX_HEADERS + 1):  # trailer fields, read and ignored
        if await _line(reader, "trailer line") in (b"\r\n", b"\n"):
            return bytes(body)
    raise BadAnswer(f"more than {MAX_HEADERS} trailer lines")


async def _until_closed(reader: asyncio.StreamReader, limit: int) -> bytes:
    body = bytearray()
    while chunk := await reader.read(1 << 16):
        body += chunk
        if len(body) > limit:
            raise BadAnswer(f"answer is over the limit of {limit} bytes")
    return bytes(body)


def _target(url: str) -> tuple[str, int, ssl.SSLContext | None, str]:
    """(host, port, TLS context or None, request target) of an http(s) URL."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # an unbalanced IPv6 bracket, say
        raise Unreachable(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unreachable("not an http:// or https:// URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Unreachable("invalid port") from None
    context = ssl.create_default_context() if parts.scheme == "https" else None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port, context, target


async def _exchange(
    url: str, limit: int, connected: list[bool], body: bytes | None = None
) -> Answer:
    """GET ``url``, or POST ``body`` (JSON) to it."""
    host, port, context, target = _target(url)
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=context, limit=MAX_LINE)
    except (OSError, ValueError) as exc:  # ValueError: a host name IDNA cannot encode
        raise Unreachable(getattr(exc, "strerror", None) or str(exc)) from None
    connected.append(True)
    try:
        authority = f"[{host}]" if ":" in host else host
        method, sent = ("GET", b"") if body is None else ("POST", body)
        framing = (
            ""
            if body is None
            else f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        )
        writer.write(
            f"{method} {target} HTTP/1.1\r\nHost: {authority}:{port}\r\n"
            f"Accept: application/json\r\n{framing}"
            f"User-Agent: registryd/{__version__}\r\nConnection: close\r\n\r\n".encode()
            + sent
        )
        await writer.drain()
        status, headers = await _head(reader)
        length = body_length(headers, limit)
        if length is not None:
            answer = await _exactly(reader, length)
        elif "transfer-encoding" in headers:
            answer = await _chunked(reader, limit)
        else:
            answer = await _until_closed(reader, limit)
        return Answer(status, answer)
    except OSError as exc:
        raise BadAnswer(f"connection broken: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        writer.transport.abort()  # nothing more to say to it, nor to wait for


def post(url: str, body: bytes, *, timeout: float, limit: int = MAX_ANSWER) -> Answer:
    """:func:`get`, but POST ``body`` (JSON) to ``url``: the same deadline, limits and
    errors."""
    return _call(url, timeout, limit, body)


def get(url: str, *, timeout: float, limit: int = MAX_ANSWER) -> Answer:
    """GET ``url`` within ``timeout`` seconds in all, with a body of at most ``limit``
    bytes: :class:`Unreachable` without a connection, :class:`BadAnswer` for an answer
    that is malformed, over the limit or not complete in time (see the module
    docstring)."""
    return _call(url, timeout, limit, None)


def _call(url: str, timeout: float, limit: int, body: bytes | None) -> Answer:
    connected: list[bool] = []

    async def bounded() -> Answer:
        async with asyncio.timeout(timeout):
            return await _exchange(url, limit, connected, body)

    try:
        return asyncio.run(bounded())
    except TimeoutError:
        if not connected:
            raise Unreachable(f"no connection within {timeout:g}s") from None
        raise BadAnswer(f"no complete answer within {timeout:g}s") from None
