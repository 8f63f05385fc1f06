"""``registryd wait``: block until a change has reached the proxies (as ``istioctl
experimental wait`` does for Istio config), for scripts and CI pipelines.

``--for hostname/<host>`` waits for the newest version of that hostname's resources,
``--for push/<id>`` for one push (its version, as ``/debug/pushz`` and
``/debug/history`` show it).  It polls ``/debug/waitz`` (read-only) of every
``--server`` (repeatable, for replicas) until each says every selected proxy has ACKed
that version or a later one (see :mod:`registryd.web.waitz` for what counts), and
exits:

* 0 when every server is satisfied;
* 1 as soon as a selected proxy NACKed it: each such proxy, its server and its error
  are printed;
* 2 on timeout (``--timeout``, default 30s, as istioctl's), naming the proxies still
  pending and the servers that never answered, and on a bad argument (one line).

A server that cannot be reached or answers 5xx is asked again until the timeout, so a
daemon or worker restarting during the wait is tolerated.  ``--proxy`` (repeatable)
selects proxies: a full proxy or connection id, its ``<pod>.<namespace>`` or ``<pod>``
part (as ``registryd proxy-status`` takes them), or a glob (``*``, ``?``, ``[...]``) on
the proxy or connection id; without it, every connected proxy.  A ``--proxy`` that
names no connected proxy keeps the wait going (the proxy may still connect).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from registryd.base.logs import clip
from registryd.settings import go_duration
from registryd.tools import debugclient
from registryd.tools.debugclient import BadAnswer, Unreachable, json_body
from registryd.tools.proxystatus import DEFAULT_SERVER, server_urls
from registryd.web.waitz import parse_target

__all__ = ["register", "run"]

ANSWER_LIMIT = 16 << 20  # bytes of one /debug/waitz answer
SHOWN = 20  # pending proxies named on timeout
POLL = 0.25  # seconds between polls of a server not yet satisfied


@dataclass(slots=True)
class _Server:
    url: str
    done: bool = False
    last: dict[str, Any] = field(default_factory=dict)  # its last usable answer
    problem: str = "not asked yet"  # why it is not satisfied, when no answer says


TEXT_SHOWN = 300  # characters of a server's text in one line (more are cut, see clip)


def _duration(text: str) -> float:
    try:
        value: float | None = float(text)
    except ValueError:
        value = go_duration(text)  # ValueError: argparse reports it
    if value is None or not (math.isfinite(value) and value > 0):
        raise ValueError(text)
    return value


def _ask(server: _Server, query: str, timeout: float) -> str | None:
    """Poll ``server`` once; a bad-argument message (exit 2) if it refuses the question."""
    try:
        answer = debugclient.get(
            f"{server.url}/debug/waitz?{query}", timeout=timeout, limit=ANSWER_LIMIT
        )
        body = json_body(answer.body) if answer.body else None
    except (Unreachable, BadAnswer) as exc:
        server.problem = clip(exc, TEXT_SHOWN)
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if answer.status == 400:
        return clip(error or "the server refused the question", TEXT_SHOWN)
    if answer.status != 200 or not isinstance(body, dict):
        server.problem = clip(error or f"answered {answer.status}", TEXT_SHOWN)
        return None
    if not isinstance(body.get("proxies"), list) or not isinstance(body.get("summary"), dict):
        server.problem = "unexpected JSON from /debug/waitz"
        return None
    server.last, server.problem = body, ""
    server.done = body.get("done") is True
    if not server.done and body.get("unanswered"):
        server.problem = "; ".join(clip(u, TEXT_SHOWN) for u in body["unanswered"])
    return None


def _bad_url(url: str) -> str:
    """Why ``url`` cannot be a server's debug URL (``""``: it can)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http:// or https:// URL"
    return ""


def _nacks(servers: Sequence[_Server]) -> list[str]:
    return [
        f"{clip(p.get('proxyID'), TEXT_SHOWN)} ({s.url}) NACKed {clip(p.get('type'), TEXT_SHOWN)} "
        f"version {p.get('version')}: {clip(p.get('error'), TEXT_SHOWN)}"
        for s in servers
        for p in s.last.get("proxies", [])
        if isinstance(p, dict) and p.get("state") == "nacked"
    ]


def _pending(server: _Server) -> list[str]:
    if server.problem:
        return [f"{server.url}: {server.problem}"]
    body = server.last
    if not body.get("published", True):
        return [f"{server.url}: version {body.get('version')} is not pushed yet"]
    proxies = [p for p in body.get("proxies", []) if isinstance(p, dict)]
    waiting = [
        f"{clip(p.get('proxyID'), TEXT_SHOWN)} ({server.url}): "
        + ", ".join(clip(t, TEXT_SHOWN).upper() for t in p.get("types", []))
        for p in proxies
        if p.get("state") == "pending"
    ]
    waiting += [
        f"{server.url}: no connected proxy matches --proxy {clip(u, 120)}"
        for u in body.get("unmatched", [])
    ]
    return waiting


def run(
    args: argparse.Namespace,
    out: TextIO | None = None,
    err: TextIO | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> int:
    """Run ``registryd wait`` as parsed by :func:`register` (see the module docstring)."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        kind, value = parse_target(args.target)
    except ValueError as exc:
        print(f"registryd: error: {exc}", file=err)
        return 2
    query = urllib.parse.urlencode(
        [("for", f"{kind}/{value}"), *(("proxy", p) for p in args.proxy)]
    )
    servers = [_Server(url) for url in server_urls(args.server)]
    for server in servers:
        bad = _bad_url(server.url)
        if bad:
            print(f"registryd: error: --server {clip(server.url, 80)}: {bad}", file=err)
            return 2
    deadline = clock() + args.timeout
    while True:
        for server in servers:
            if server.done:
                continue
            left = deadline - clock()
            refused = _ask(server, query, max(min(args.request_timeout, left), 0.05))
            if refused:
                print(f"registryd: error: {server.url}: {refused}", file=err)
                return 2
        nacks = _nacks(servers)
        if nacks:
            for line in nacks:
                print(f"registryd: NACK: {line}", file=err)
            return 1
        if all(s.done for s in servers):
            for s in servers:
                summary = s.last.get("summary", {})
                print(
                    f"{kind}/{value}: version {s.last.get('version')} ACKed by "
                    f"{summary.get('acked', 0)} proxies on {s.url}",
                    file=out,
                )
            return 0
        left = deadline - clock()
        if left <= 0:
            pending = [line for s in servers if not s.done for line in _pending(s)]
            print(
                f"registryd: error: timed out after {args.timeout:g}s waiting for "
                f"{kind}/{value}; pending: {len(pending)}",
                file=err,
            )
            for line in pending[:SHOWN]:
                print(f"  {line}", file=err)
            if len(pending) > SHOWN:
                print(f"  ... and {len(pending) - SHOWN} more", file=err)
            return 2
        sleep(min(POLL, left))


def register(subparsers: Any) -> None:
    """Add ``wait`` to the ``registryd`` command line."""
    wait = subparsers.add_parser(
        "wait",
        help="block until a change has reached the proxies (like istioctl experimental wait)",
        description="Exit 0 once every selected proxy ACKed the change (on every --server), "
        "1 when one NACKed it (printing which and why), 2 on timeout or a bad argument.",
    )
    wait.add_argument(
        "--for",
        dest="target",
        required=True,
        metavar="hostname/<host>|push/<id>",
        help="the change: the current version of a hostname's resources, or a push",
    )
    wait.add_argument(
        "--proxy",
        action="append",
        default=[],
        metavar="PROXY",
        help="a proxy id, connection id, <pod>.<namespace>, <pod>, or a glob on the ids; "
        "repeatable (default: every connected proxy)",
    )
    wait.add_argument(
        "--server",
        action="append",
        metavar="URL",
        help=f"debug URL of a registryd instance; repeat (or comma-separate) for replicas: "
        f"all must be satisfied (default {DEFAULT_SERVER})",
    )
    wait.add_argument(
        "--timeout",
        type=_duration,
        default=30.0,
        help="how long to wait in all: seconds or a duration such as 30s, 2m (default 30s)",
    )
    wait.add_argument(
        "--request-timeout",
        type=_duration,
        default=5.0,
        help="how long one poll of a server may take (default 5s)",
    )
    wait.set_defaults(run=run)
