"""``registryd validate``: check configuration offline, before the daemon reads it.

What is checked and how is :mod:`registryd.tools.configcheck`; this module is the command:
its flags, text and JSON output, and exit status (with ``--diff``, a preview on running
instances instead: :mod:`registryd.tools.preview`): 0 when nothing reaches
``--failure-threshold`` (errors, by default, as ``istioctl analyze``), 1 otherwise, 2
for a usage error (raised as ConfigError).  The checks are imported only when the
command runs, so the other commands do not pay for them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from registryd.tools.analyze import Finding
    from registryd.tools.configcheck import Report

__all__ = ["register", "render_json", "render_text", "run"]


# -- output ---------------------------------------------------------------------------


def _location(finding: Finding) -> str:
    if finding.line is not None:
        return f"{finding.source}:{finding.line}"
    return finding.source


def render_text(report: Report, out: TextIO) -> None:
    """One line per finding, ``Error [code] file:line: message``, then a summary."""
    for finding in report.findings:
        label = finding.severity.value.capitalize()
        out.write(f"{label} [{finding.code}] {_location(finding)}: {finding.message}\n")
    errors, warnings = report.errors, report.warnings
    checked = f"{report.files} file{'s' * (report.files != 1)}"
    if report.registries:
        checked += f" and {report.registries} registr{'ies' if report.registries != 1 else 'y'}"
    if not report.findings:
        out.write(f"No problems found in {checked}.\n")
    else:
        out.write(f"{errors} error(s), {warnings} warning(s) in {checked}.\n")


def render_json(report: Report, out: TextIO) -> None:
    """``{"findings": [...], "errors": N, "warnings": N, "files": N, "registries": N}``."""
    body = {
        "findings": [asdict(f) for f in report.findings],
        "errors": report.errors,
        "warnings": report.warnings,
        "files": report.files,
        "registries": report.registries,
    }
    json.dump(body, out, indent=2)
    out.write("\n")


# -- command line ---------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``registryd validate`` to the command line."""
    v = subparsers.add_parser(
        "validate",
        help="check registryd.yaml and ServiceEntry/WorkloadEntry files offline",
        description="Check registryd.yaml and ServiceEntry/WorkloadEntry files without "
        "contacting any registry. Exit 0: nothing at the failure threshold; 1: problems; "
        "2: usage error.",
    )
    v.add_argument("paths", nargs="*", metavar="FILE|DIR", help="files or directories")
    v.add_argument("--config", default=None, help="registryd.yaml listing registries")
    v.add_argument("--configDir", default=None, help="directory of ServiceEntry YAML")
    v.add_argument(
        "--kubeconfig", default=None, help="as for discovery: kubernetes registries use it"
    )
    v.add_argument("-o", "--output", choices=("text", "json"), default="text")
    v.add_argument(
        "--failure-threshold",
        choices=("error", "warning"),
        default="error",
        help="the severity that makes the exit status 1 (default: error)",
    )
    v.add_argument(
        "--diff",
        action="store_true",
        help="preview the candidate files (or --config registryd.yaml) on running registryd "
        "instances (--server): what "
        "each group of connected proxies would get added, removed and changed; nothing "
        "is applied. Exit 0: it ran; 1: the files have errors; 2: bad server or usage",
    )
    v.add_argument(
        "--server",
        action="append",
        metavar="URL",
        help="with --diff: debug URL of a registryd instance (repeat, or comma-separate, "
        "for replicas)",
    )
    v.add_argument(
        "--registry",
        default="",
        help="with --diff: the serviceentry registry, if several; with --config: preview "
        "only that registry section",
    )
    v.add_argument(
        "--registry-timeout",
        type=float,
        default=30.0,
        help="with --diff --config: seconds each changed registry has for its first full "
        "state (default 30, at most 120)",
    )
    v.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="with --diff: seconds one preview may take in all (default 120)",
    )
    v.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``registryd validate`` with parsed ``args``; the exit status."""
    if args.diff:
        from registryd.tools import preview

        return preview.run(args, out or sys.stdout)
    if args.server:
        from registryd.adapter import ConfigError

        raise ConfigError("validate: --server is for --diff (a preview on a running registryd)")
    from registryd.adapter import ConfigError
    from registryd.daemon.config import kubernetes_flag_defaults
    from registryd.daemon.configure import eds_for_headless
    from registryd.tools.analyze import Finding, Severity
    from registryd.tools.configcheck import check

    eds: bool | None = None
    problems: tuple[Finding, ...] = ()
    try:  # a default of kubernetes registries: one error, then they are checked without it
        eds = eds_for_headless() if args.config else None
    except ConfigError as exc:
        problem = Finding(
            severity=Severity.ERROR, code="invalid-config", source="environment", message=str(exc)
        )
        problems = (problem,)
    report = check(
        paths=args.paths,
        config=args.config,
        config_dir=args.configDir,
        defaults=kubernetes_flag_defaults(kubeconfig=args.kubeconfig, eds_for_headless=eds),
    )
    if problems:
        report = replace(report, findings=(*problems, *report.findings))
    (render_json if args.output == "json" else render_text)(report, out or sys.stdout)
    failing = report.errors + (report.warnings if args.failure_threshold == "warning" else 0)
    return 1 if failing else 0
