"""``registryd validate --diff --server URL FILE|DIR...``: what candidate ServiceEntry /
WorkloadEntry files would change for the proxies of running registryd instances; with
``--config FILE`` instead, what a candidate registryd.yaml (its registries) would.

The files are sent to each ``--server``'s ``POST /debug/preview``
(:mod:`registryd.web.preview`), which builds what it would serve with them in place of
its files of the same path and compares it, per group of connected proxies, with what it
serves now; nothing is applied.  A file argument is sent under the path given; the files
of a directory argument (read as the file registry reads a directory) under their path
inside it.

A candidate registryd.yaml is checked here first as ``registryd validate --config``
checks it (:mod:`registryd.tools.configcheck`); when it is invalid its errors are
printed in that command's words and the exit status is 1, and no server is asked.
Otherwise it is sent with its absolute path: the daemon resolves the relative paths in
it against that path's directory, on its own machine.

Output: per server, the files placed (or the registry sections and what changed in
each), the candidate's errors and warnings, then one
block per group of proxies (``-o json``: the server's answer as is; with several
servers, an object by server URL).  Exit status: 0 when every preview ran (changes or
not), 1 when a candidate file has errors, 2 for a usage error or a server that cannot be
used (raised as ConfigError: one line).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from typing import Any, TextIO

from registryd.adapter import ConfigError
from registryd.tools import debugclient
from registryd.tools.debugclient import BadAnswer, Unreachable, json_body

__all__ = ["read_candidates", "render_text", "run"]

_TYPES = ("cds", "eds", "lds", "rds")


def _read(path: str) -> str:
    from registryd.adapters.serviceentry.yamlsafe import DEFAULT_LIMITS
    from registryd.daemon.config import Unreadable, read_regular

    try:
        data = read_regular(path, DEFAULT_LIMITS.max_bytes)
    except (OSError, Unreadable) as exc:
        raise ConfigError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    return data.decode("utf-8", "surrogateescape")


def read_candidates(paths: list[str]) -> dict[str, str]:
    """The candidate files of the command line, name -> content (see the module
    docstring); ConfigError for a path that cannot be read."""
    from registryd.adapters.serviceentry.tree import scan_tree

    if not paths:
        raise ConfigError("validate --diff: name the candidate files or directories")
    files: dict[str, str] = {}
    for path in paths:
        if os.path.isdir(path):
            try:
                scan = scan_tree(path)
            except OSError as exc:
                raise ConfigError(f"{path}: {exc.strerror or exc}") from None
            for found in sorted(scan.files):
                files[os.path.relpath(found, path)] = _read(found)
        elif os.path.lexists(path):
            files[os.path.normpath(path)] = _read(path)
        else:
            raise ConfigError(f"{path}: no such file or directory")
    return files


def _ask(server: str, body: bytes, args: argparse.Namespace) -> dict[str, Any]:
    url = server.rstrip("/") + "/debug/preview"
    try:
        answer = debugclient.post(url, body, timeout=args.timeout)
        value = json_body(answer.body)
    except (Unreachable, BadAnswer) as exc:
        raise ConfigError(f"{server}: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{url}: answered {answer.status} without a JSON object")
    if answer.status != 200:
        reason = str(value.get("error", "no reason given"))[:500]
        raise ConfigError(f"{url}: answered {answer.status}: {reason}")
    kind = "registries" if args.config else "errors"
    if not isinstance(value.get("groups"), list) or not isinstance(value.get(kind), dict):
        raise ConfigError(f"{url}: not a preview answer")
    return value


def _names(found: Mapping[str, Any]) -> list[str]:
    names = [str(n) for n in found.get("names", [])]
    if found.get("more"):
        names.append(f"... and {found['more']} more")
    return names


def _group(index: int, group: Mapping[str, Any], out: TextIO) -> None:
    proxies = group.get("proxies", {})
    count, ids = proxies.get("count", 0), [str(i) for i in proxies.get("ids", [])]
    shown = ", ".join(ids) + (", ..." if count > len(ids) else "")
    changes = group.get("changes", {})
    verdict = "" if changes else ": no changes"
    out.write(f"Group {index}: {count} prox{'ies' if count != 1 else 'y'} ({shown}){verdict}\n")
    for kind in _TYPES:
        found = changes.get(kind)
        if not found:
            continue
        for what in ("added", "removed"):
            for name in _names(found.get(what, {})):
                out.write(f"  {kind.upper()} {what}: {name}\n")
        diffs = {d.get("name"): d for d in found.get("changed", {}).get("diffs", [])}
        for name in _names(found.get("changed", {})):
            out.write(f"  {kind.upper()} changed: {name}\n")
            for entry in diffs.get(name, {}).get("diff", []):
                if "more" in entry:
                    out.write(f"      ... {entry['more']} more fields\n")
                    continue
                old, new = (json.dumps(entry.get(k)) for k in ("old", "new"))
                out.write(f"      {entry.get('path')}: {old} -> {new}\n")


def render_text(server: str, answer: Mapping[str, Any], out: TextIO) -> None:
    """One server's answer, readable (see the module docstring)."""
    what = (
        f"config {answer['config']}" if "config" in answer else f"registry {answer.get('registry')}"
    )
    out.write(
        f"Server {server}: {what}, compared with version "
        f"{answer.get('liveVersion')} ({answer.get('seconds', 0):.3f}s)\n"
    )
    _sections(answer, out)
    for name, placed in sorted(answer.get("files", {}).items()):
        how = "replaces" if placed.get("replaces") else "adds"
        out.write(f"File {name} {how} {placed.get('file')}\n")
    for name, message in sorted(answer.get("errors", {}).items()):
        out.write(f"Error [{name}]: {message}\n")
    for warning in [*answer.get("fileWarnings", []), *answer.get("warnings", [])]:
        out.write(f"Warning: {warning}\n")
    for index, group in enumerate(answer.get("groups", []), 1):
        _group(index, group, out)
    left = answer.get("groupsLeftOut") or {}
    if left.get("groups"):
        out.write(f"... {left['groups']} more groups ({left.get('proxies')} proxies) not shown\n")
    if not answer.get("groups"):
        out.write("No proxy is connected.\n")


def _config_request(args: argparse.Namespace, out: TextIO) -> dict[str, Any] | None:
    """The request for the candidate registryd.yaml ``args.config``, or None when it is
    invalid (its errors written to ``out`` as ``registryd validate --config`` writes them)."""
    from dataclasses import replace

    from registryd.daemon.config import MAX_CONFIG_BYTES, Unreadable, kubernetes_flag_defaults
    from registryd.daemon.config import read_regular as read
    from registryd.tools.analyze import Severity
    from registryd.tools.configcheck import check
    from registryd.tools.validate import render_text as render_report

    if args.paths:
        raise ConfigError("validate --diff: give candidate files or --config, not both")
    if args.timeout <= args.registry_timeout:
        raise ConfigError(
            f"validate --diff: --timeout {args.timeout:g} leaves no room for "
            f"--registry-timeout {args.registry_timeout:g}: make it longer"
        )
    report = check(
        config=args.config, defaults=kubernetes_flag_defaults(kubeconfig=args.kubeconfig)
    )
    source = f"--config {os.path.normpath(args.config)}"
    errors = tuple(
        f for f in report.findings if f.source == source and f.severity is Severity.ERROR
    )
    if errors:
        render_report(replace(report, findings=errors), out)
        return None
    try:
        content = read(args.config, MAX_CONFIG_BYTES).decode("utf-8", "surrogateescape")
    except Unreadable as exc:
        raise ConfigError(f"--config {args.config}: {exc}") from None
    request: dict[str, Any] = {
        "config": {"path": os.path.abspath(args.config), "content": content},
        "timeout": args.registry_timeout,
    }
    if args.registry:
        request["registry"] = args.registry
    return request


def _sections(answer: Mapping[str, Any], out: TextIO) -> None:
    for name, section in sorted(answer.get("registries", {}).items()):
        status = section.get("status")
        line = f"Registry {name} ({section.get('type')}): {status}"
        if section.get("firstState") is False:
            line += " (no first state: kept as it is now)"
        out.write(line + "\n")
        for key, change in sorted(section.get("changed", {}).items()):
            old, new = (json.dumps(change.get(k)) for k in ("old", "new"))
            out.write(f"  {key}: {old} -> {new}\n")


def run(args: argparse.Namespace, out: TextIO) -> int:
    """``registryd validate --diff``: the exit status (see the module docstring)."""
    if not args.server:
        raise ConfigError("validate --diff needs --server URL (a registryd debug port)")
    servers = [s for value in args.server for s in value.split(",") if s]
    if args.config:
        config = _config_request(args, out)
        if config is None:
            return 1
        body = json.dumps(config).encode()
        answers = {server: _ask(server, body, args) for server in servers}
        _show(servers, answers, args, out)
        return 0
    files = read_candidates(args.paths)
    request: dict[str, Any] = {"files": files}
    if args.registry:
        request["registry"] = args.registry
    body = json.dumps(request).encode()
    answers = {server: _ask(server, body, args) for server in servers}
    _show(servers, answers, args, out)
    return 1 if any(answer["errors"] for answer in answers.values()) else 0


def _show(
    servers: list[str],
    answers: Mapping[str, Mapping[str, Any]],
    args: argparse.Namespace,
    out: TextIO,
) -> None:
    if args.output == "json":
        shown: Any = answers[servers[0]] if len(servers) == 1 else answers
        json.dump(shown, out, indent=2)
        out.write("\n")
    else:
        for server, answer in answers.items():
            render_text(server, answer, out)
