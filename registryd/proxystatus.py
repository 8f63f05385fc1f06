"""``registryd proxy-status`` and ``registryd proxy-config``: istioctl's proxy tools,
over registryd's debug port.

Both read ``/debug/syncz`` and ``/debug/config_dump`` of one or more registryd instances
(``--server``, repeatable, for replicas; default ``http://127.0.0.1:8080``) and change
nothing.  A proxy is named by its full id, its connection id, or the ``<pod>.<namespace>``
(or bare ``<pod>``) part of an Istio-style id.  Exit status: 0 when every instance
answered (and the proxy was found), 1 when an instance could not be reached or the proxy
is not connected to any (or the name is ambiguous), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from registryd import proxyconfig, proxysync

__all__ = ["DEFAULT_SERVER", "register", "run", "server_urls"]

DEFAULT_SERVER = "http://127.0.0.1:8080"
_KIND_ALIASES = {
    **{kind: kind for kind in proxyconfig.KINDS},
    **{kind.removesuffix("s"): kind for kind in proxyconfig.KINDS},
}
Found = tuple[str, Mapping[str, Any]]  # (server, its /debug/syncz entry)


class Unreachable(Exception):
    """A registryd instance did not answer (or not with JSON)."""


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


def _get(server: str, path: str, timeout: float) -> tuple[int, Any]:
    """GET ``server + path``: (status, decoded JSON body)."""
    try:
        with urllib.request.urlopen(server + path, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"{server}: {reason}") from None
    try:
        return status, json.loads(body)
    except ValueError:
        raise Unreachable(f"{server}{path}: answered {status} without JSON") from None


def _syncz(servers: Sequence[str], timeout: float, err: TextIO) -> tuple[list[Found], bool]:
    """Every instance's ``/debug/syncz`` entries, and whether all of them answered."""
    found: list[Found] = []
    complete = True
    for server in servers:
        try:
            status, entries = _get(server, "/debug/syncz", timeout)
            if status != 200 or not isinstance(entries, list):
                raise Unreachable(f"{server}/debug/syncz: answered {status}")
        except Unreachable as exc:
            print(f"registryd: error: {exc}", file=err)
            complete = False
            continue
        found.extend((server, e) for e in entries if isinstance(e, Mapping))
    return found, complete


def find_proxy(query: str, found: Sequence[Found]) -> list[Found]:
    """The connections ``query`` names: by proxy or connection id, else by the
    ``<pod>.<namespace>`` or ``<pod>`` part of the id."""
    exact = [f for f in found if query in (f[1].get("proxyID"), f[1].get("connectionID"))]
    if exact:
        return exact

    def pod(entry: Mapping[str, Any]) -> str:
        parts = str(entry.get("proxyID", "")).split("~")
        return parts[2] if len(parts) == 4 else ""

    by_pod = [f for f in found if pod(f[1]) == query]
    return by_pod or [f for f in found if pod(f[1]).partition(".")[0] == query]


def _dump(found: Found, timeout: float) -> Mapping[str, Any] | None:
    server, entry = found
    connection = urllib.parse.quote(str(entry.get("connectionID", "")), safe="")
    status, dump = _get(server, f"/debug/config_dump?proxyID={connection}", timeout)
    return dump if status == 200 and isinstance(dump, Mapping) else None


def _resolve(args: argparse.Namespace, err: TextIO) -> tuple[list[Found], int]:
    """The connections of ``args.proxy`` across the servers, and the exit status so far
    (1 if an instance did not answer; no connections if none fits the name)."""
    found, complete = _syncz(server_urls(args.server), args.timeout, err)
    matches = find_proxy(args.proxy, found)
    ids = sorted({str(e.get("proxyID", "")) for _, e in matches})
    if not matches:
        print(f"registryd: error: proxy {args.proxy!r} is not connected", file=err)
        return [], 1
    if len(ids) > 1:
        print(f"registryd: error: {args.proxy!r} names several proxies:", file=err)
        err.writelines(f"  {i}\n" for i in ids)
        return [], 1
    return matches, 0 if complete else 1


def _status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.proxy:
        return _status_of(args, out, err)
    found, complete = _syncz(server_urls(args.server), args.timeout, err)
    rows = proxysync.status_rows(found)
    if not complete and not rows:
        return 1  # nothing answered: no empty table
    if args.output == "json":
        out.write(json.dumps([r.as_json() for r in rows], indent=2) + "\n")
    else:
        out.write(proxysync.render_status(rows))
    return 0 if complete else 1


def _status_of(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    matches, status = _resolve(args, err)
    if not matches:
        return status
    documents = []
    for server, entry in matches:
        dump = _dump((server, entry), args.timeout)
        if dump is None:
            print(f"registryd: error: {entry.get('proxyID')!r} left {server}", file=err)
            return 1
        documents.append((server, entry, dump))
    if args.output == "json":
        out.write(json.dumps([proxysync.detail_json(*d) for d in documents], indent=2) + "\n")
    else:
        out.write("\n".join(proxysync.render_detail(*d) for d in documents))
    return status


def _config(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    matches, status = _resolve(args, err)
    if not matches:
        return status
    dump = _dump(matches[-1], args.timeout)  # the last listed: an instance lists oldest first
    if dump is None:
        print(f"registryd: error: {args.proxy!r} left {matches[-1][0]}", file=err)
        return 1
    kind = _KIND_ALIASES[args.kind]
    if args.output == "json":
        resources = [r for _, r in proxyconfig.dump_resources(dump, kind)]
        out.write(json.dumps(resources, indent=2) + "\n")
    else:
        out.write(proxyconfig.render(dump, kind))
    return status


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
        "--timeout", type=float, default=5.0, help="seconds to wait for each answer"
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
    except Unreachable as exc:
        print(f"registryd: error: {exc}", file=err)
        return 1
