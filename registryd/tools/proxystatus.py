"""``registryd proxy-status`` and ``registryd proxy-config``: istioctl's proxy tools,
over registryd's debug port.

Both read ``/debug/syncz`` and ``/debug/config_dump`` of one or more registryd instances
(``--server``, repeatable, for replicas; default ``http://127.0.0.1:8080``) and change
nothing.  A proxy is named by its full id, its connection id, or the ``<pod>.<namespace>``
(or bare ``<pod>``) part of an Istio-style id.  Exit status: 0 when every instance
answered (and the proxy was found); 1 when the proxy is not connected to any (or the
name is ambiguous): the question was fine, the answer is "no"; 2 for bad input or a bad
server: a usage error, a ``--server`` that is malformed or cannot be reached, or an
answer the tools cannot use.

Whatever answers at a ``--server`` URL is not trusted: :mod:`registryd.tools.debugclient`
bounds the exchange in time (``--timeout``, for all of it) and size
(``--max-answer-mib``), and the pure functions here that turn an answer into the
command's output (:func:`syncz_entries`, :func:`dump_document`, :func:`status_output`,
:func:`detail_output`, :func:`config_output`) raise only
:class:`~registryd.tools.debugclient.BadAnswer`, whatever the JSON holds: a malformed, oversized,
late or wrongly shaped answer is one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO, TypeVar

from registryd import proxyids
from registryd.tools import debugclient, proxyconfig, proxysync
from registryd.tools.debugclient import Answer, BadAnswer, Unreachable, json_body

__all__ = [
    "DEFAULT_SERVER",
    "config_output",
    "detail_output",
    "dump_document",
    "register",
    "run",
    "server_urls",
    "status_output",
    "syncz_entries",
]

DEFAULT_SERVER = "http://127.0.0.1:8080"
_KIND_ALIASES = {
    **{kind: kind for kind in proxyconfig.KINDS},
    **{kind.removesuffix("s"): kind for kind in proxyconfig.KINDS},
}
JSON = Mapping[str, Any]
Found = tuple[str, JSON]  # (server, its /debug/syncz entry)
T = TypeVar("T")


def server_urls(values: Sequence[str] | None) -> list[str]:
    """``--server`` values (each may be a comma list) as base URLs without a trailing
    slash; ``host:port`` gets ``http://``."""
    urls = []
    for value in values or [DEFAULT_SERVER]:
        for part in value.split(","):
            part = part.strip().rstrip("/")
            if part:
                urls.append(part if "://" in part else f"http://{part}")
    return urls or [DEFAULT_SERVER]


# -- answers to output: pure, and BadAnswer is the only error -------------------------


def _shaped(make: Callable[[], T]) -> T:
    """``make()``, a pure function of a server's JSON; :class:`BadAnswer` if that JSON
    has a shape it cannot read (a list where an object belongs, a string for a number,
    a version number too long to convert...)."""
    try:
        return make()
    except BadAnswer:
        raise
    except Exception as exc:  # the answer's shape, whatever it broke
        raise BadAnswer(f"unexpected JSON ({type(exc).__name__}: {_brief(exc)})") from None


def _brief(exc: BaseException, most: int = 120) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= most else text[:most] + "..."


def syncz_entries(server: str, answer: Answer) -> list[JSON]:
    """The connections of ``server``'s ``/debug/syncz`` answer: 200 and a JSON list of
    objects, each of which makes a :class:`~registryd.tools.proxysync.StatusRow`."""
    if answer.status != 200:
        raise BadAnswer(f"answered {answer.status}, not 200")
    entries = json_body(answer.body)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BadAnswer("expected a JSON list of connection objects")
    for entry in entries:
        _shaped(functools.partial(proxysync.status_row, server, entry))
    return entries


def dump_document(answer: Answer) -> JSON | None:
    """The config dump of a ``/debug/config_dump`` answer: a JSON object; None for 404
    (the proxy is no longer connected)."""
    if answer.status == 404:
        return None
    if answer.status != 200:
        raise BadAnswer(f"answered {answer.status}, not 200")
    dump = json_body(answer.body)
    if not isinstance(dump, dict):
        raise BadAnswer("expected a JSON object (a config dump)")
    return dump


def status_output(found: Sequence[Found], output: str) -> str:
    """The ``proxy-status`` table (or JSON) of connections from :func:`syncz_entries`."""

    def make() -> str:
        rows = proxysync.status_rows(found)
        if output == "json":
            return json.dumps([r.as_json() for r in rows], indent=2) + "\n"
        return proxysync.render_status(rows)

    return _shaped(make)


def detail_output(documents: Sequence[tuple[str, JSON, JSON]], output: str) -> str:
    """``proxy-status PROXY_ID``: per ``(server, syncz entry, config dump)``."""

    def make() -> str:
        if output == "json":
            return json.dumps([proxysync.detail_json(*d) for d in documents], indent=2) + "\n"
        return "\n".join(proxysync.render_detail(*d) for d in documents)

    return _shaped(make)


def config_output(dump: JSON, kind: str, output: str) -> str:
    """``proxy-config KIND``: the ``kind`` table of a config dump, or its resources as
    JSON."""

    def make() -> str:
        if output == "json":
            resources = [r for _, r in proxyconfig.dump_resources(dump, kind)]
            if not all(isinstance(r, dict) for r in resources):
                raise BadAnswer(f"unexpected JSON: one of the {kind} is not an object")
            return json.dumps(resources, indent=2) + "\n"
        return proxyconfig.render(dump, kind)

    return _shaped(make)


# -- I/O -------------------------------------------------------------------------------


def _fetch(server: str, path: str, args: argparse.Namespace, decode: Callable[[Answer], T]) -> T:
    """``decode`` of ``server``'s answer to GET ``path``; the errors say where."""
    try:
        answer = debugclient.get(server + path, timeout=args.timeout, limit=args.max_answer)
        return decode(answer)
    except Unreachable as exc:
        raise Unreachable(f"{server}: {exc}") from None
    except BadAnswer as exc:
        raise BadAnswer(f"{server}{path}: {exc}") from None


def _syncz(args: argparse.Namespace, err: TextIO) -> tuple[list[Found], int]:
    """Every instance's ``/debug/syncz`` entries, and the exit status so far: 0 when all
    answered, 2 when one could not be reached or answered something unusable."""
    found: list[Found] = []
    status = 0
    for server in server_urls(args.server):
        try:
            entries = _fetch(server, "/debug/syncz", args, functools.partial(syncz_entries, server))
        except (Unreachable, BadAnswer) as exc:
            print(f"registryd: error: {exc}", file=err)
            status = 2
            continue
        found.extend((server, e) for e in entries)
    return found, status


def find_proxy(query: str, found: Sequence[Found]) -> list[Found]:
    """The connections ``query`` names (:func:`registryd.proxyids.select`, as the
    daemon's ``/debug/config_dump`` resolves ``proxyID``)."""
    ids = [(str(e.get("proxyID", "")), str(e.get("connectionID", ""))) for _, e in found]
    return [found[i] for i in proxyids.select(query, ids)]


def _dump(found: Found, args: argparse.Namespace, show: Callable[[JSON], str]) -> JSON | None:
    """The config dump of a connection (None: it left), which ``show`` (the command's
    output) was tried on, so that a dump it cannot read is reported with its URL."""
    server, entry = found
    connection = urllib.parse.quote(str(entry.get("connectionID", "")), safe="")

    def decode(answer: Answer) -> JSON | None:
        dump = dump_document(answer)
        if dump is not None:
            show(dump)
        return dump

    return _fetch(server, f"/debug/config_dump?proxyID={connection}", args, decode)


def _resolve(args: argparse.Namespace, err: TextIO) -> tuple[list[Found], int]:
    """The connections of ``args.proxy`` across the servers, and the exit status so far
    (see :func:`_syncz`; no connections if none fits the name)."""
    found, status = _syncz(args, err)
    if status and not found:
        return [], status  # nothing answered: whether the proxy is connected is unknown
    matches = find_proxy(args.proxy, found)
    ids = sorted({str(e.get("proxyID", "")) for _, e in matches})
    if not matches:
        print(f"registryd: error: proxy {args.proxy!r} is not connected", file=err)
        return [], max(status, 1)
    if len(ids) > 1:
        print(f"registryd: error: {args.proxy!r} names several proxies:", file=err)
        err.writelines(f"  {i}\n" for i in ids)
        return [], max(status, 1)
    return matches, status


def _status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.proxy:
        return _status_of(args, out, err)
    found, status = _syncz(args, err)
    if status and not found:
        return status  # nothing answered: no empty table
    out.write(status_output(found, args.output))
    return status


def _status_of(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    matches, status = _resolve(args, err)
    if not matches:
        return status
    documents = []
    for server, entry in matches:

        def show(dump: JSON, server: str = server, entry: JSON = entry) -> str:
            return detail_output([(server, entry, dump)], args.output)

        dump = _dump((server, entry), args, show)
        if dump is None:
            print(f"registryd: error: {entry.get('proxyID')!r} left {server}", file=err)
            return max(status, 1)
        documents.append((server, entry, dump))
    out.write(detail_output(documents, args.output))
    return status


def _config(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    matches, status = _resolve(args, err)
    if not matches:
        return status
    kind = _KIND_ALIASES[args.kind]
    show = functools.partial(config_output, kind=kind, output=args.output)
    dump = _dump(matches[-1], args, show)  # the last listed: an instance lists oldest first
    if dump is None:
        print(f"registryd: error: {args.proxy!r} left {matches[-1][0]}", file=err)
        return max(status, 1)
    out.write(show(dump))
    return status


def _seconds(text: str) -> float:
    value = float(text)  # argparse turns ValueError into a usage error
    if not (math.isfinite(value) and value > 0):
        raise ValueError(text)
    return value


def _mebibytes(text: str) -> int:
    value = int(text)
    if not 0 < value <= 1 << 20:
        raise ValueError(text)
    return value << 20


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        action="append",
        metavar="URL",
        help=f"debug URL of a registryd instance; repeat (or comma-separate) for replicas "
        f"(default {DEFAULT_SERVER})",
    )
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=5.0,
        help="seconds each exchange with an instance may take in all: connecting, "
        "the headers and the whole body (default 5)",
    )
    parser.add_argument(
        "--max-answer-mib",
        dest="max_answer",
        type=_mebibytes,
        default=debugclient.MAX_ANSWER,
        metavar="MIB",
        help=f"largest answer read from an instance, in MiB (default "
        f"{debugclient.MAX_ANSWER >> 20})",
    )


def register(subparsers: Any) -> None:
    """Add ``proxy-status`` and ``proxy-config`` to the ``registryd`` command line."""
    status = subparsers.add_parser(
        "proxy-status",
        help="xDS sync state of connected proxies (like istioctl proxy-status)",
        description="One row per connected proxy: CDS, LDS, EDS, RDS each SYNCED, NOT SENT, "
        "STALE or NACKED; with PROXY_ID, what that proxy was sent and ACKed, per type and "
        "per resource.",
    )
    status.add_argument("proxy", nargs="?", metavar="PROXY_ID")
    _common(status)
    status.set_defaults(run=run)
    config = subparsers.add_parser(
        "proxy-config",
        help="the config a proxy is served, as a table (like istioctl proxy-config)",
        description="The clusters, endpoints, listeners or routes registryd serves a proxy, "
        "from /debug/config_dump.",
    )
    config.add_argument(
        "kind",
        choices=sorted(_KIND_ALIASES),
        metavar="KIND",
        help=("clusters, endpoints, listeners or routes"),
    )
    config.add_argument("proxy", metavar="PROXY_ID")
    _common(config)
    config.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``proxy-status`` or ``proxy-config`` as parsed by :func:`register`."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        if args.command == "proxy-status":
            return _status(args, out, err)
        return _config(args, out, err)
    except (Unreachable, BadAnswer) as exc:
        print(f"registryd: error: {exc}", file=err)
        return 2
