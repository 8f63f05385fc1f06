"""``registryd validate``: check configuration offline, before the daemon reads it.

Contract:

* Nothing is contacted and no port is opened: registryd.yaml is read with the daemon's
  own parser (:func:`registryd.config.load_registries`) and every registry's settings
  go through its adapter's factory, as at start, but no adapter is started.
* ServiceEntry/WorkloadEntry files (the FILE and DIR arguments, ``--configDir`` and the
  ``path`` of every ``serviceentry`` registry in ``--config``) are read as the file
  registry reads them: directories with :func:`~registryd.adapters.serviceentry.adapter.scan_tree`
  (hidden files skipped, symlink rules), each file within the same size limits, with the
  same YAML loader (duplicate keys) and the same validation.  Every broken document is
  one error whose message is the daemon's text for it; the daemon joins a file's
  messages with `` | ``.  Then :func:`registryd.analyze.analyze` adds its warnings.
* Exit status: 0 when nothing reaches ``--failure-threshold`` (errors, by default, as
  ``istioctl analyze``), 1 otherwise, 2 for a usage error (raised as ConfigError).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from registryd.adapter import AdapterContext, ConfigError
from registryd.adapters.serviceentry.adapter import scan_tree
from registryd.adapters.serviceentry.schema import InvalidConfig, parse_document
from registryd.adapters.serviceentry.yamlsafe import (
    DEFAULT_LIMITS,
    DocumentProblem,
    FileProblem,
    load_documents,
    show,
)
from registryd.analyze import Finding, Located, Severity, analyze
from registryd.config import RegistryConfig, load_registries
from registryd.plugins import load_factory

__all__ = ["Report", "check", "register", "render_json", "render_text", "run"]

_AT_LINE = re.compile(r"\bline (\d+), column")  # in the YAML parser's messages
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Report:
    """What was checked and what was found."""

    findings: tuple[Finding, ...] = ()
    files: int = 0
    registries: int = 0

    def count(self, severity: Severity) -> int:
        return sum(f.severity is severity for f in self.findings)


@dataclass(slots=True)
class _Files:
    """The files to read (in order, each once) and the problems met finding them."""

    paths: dict[str, None] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def add_tree(self, root: str, *, follow_outside: bool = False) -> None:
        try:
            scan = scan_tree(root, follow_outside=follow_outside)
        except OSError as exc:
            raise ConfigError(str(exc)) from None
        for path in sorted(scan.files):
            self.paths.setdefault(os.path.normpath(path), None)
        for path, problem in sorted(scan.refused.items()):
            self.findings.append(_error("unreadable-file", os.path.normpath(path), problem))
        for directory, problem in sorted(scan.blocked.items()):
            message = problem.removeprefix(f"{directory}: ")
            self.findings.append(_error("unreadable-file", os.path.normpath(directory), message))


def _error(code: str, source: str, message: str, document: int | None = None) -> Finding:
    lines = _AT_LINE.findall(message)  # the problem's mark comes after its context's
    return Finding(
        severity=Severity.ERROR,
        code=code,
        source=source,
        message=message,
        document=document,
        line=int(lines[-1]) if lines else None,
    )


# -- registryd.yaml -------------------------------------------------------------------


def _create(reg: RegistryConfig, context: AdapterContext) -> None:
    """Build the registry's adapter as the daemon does at start (app.py ``_create``),
    and drop it: factories check settings, ``watch()`` alone does I/O."""
    factory = load_factory(reg.type, registry=reg.name)
    try:
        factory(name=reg.name, settings=reg.settings, context=context)
    except ConfigError as exc:
        message = str(exc)
        if repr(reg.name) not in message:
            message = f"registry {reg.name!r} ({reg.type}): {message}"
        raise ConfigError(message) from exc
    except Exception as exc:
        raise ConfigError(
            f"registry {reg.name!r} ({reg.type}): bad settings: {type(exc).__name__}: {exc}"
        ) from exc


def _check_config(
    config: str, config_dir: str | None, context: AdapterContext, files: _Files
) -> tuple[list[Finding], int]:
    """Findings of registryd.yaml and its number of registries; the ``path`` of every
    valid serviceentry registry is added to ``files``."""
    if not os.path.isfile(config):
        raise ConfigError(f"--config {config}: no such file")
    source = f"--config {os.path.normpath(config)}"
    try:
        registries = load_registries(Path(config))
    except ConfigError as exc:
        return [_error("invalid-config", source, str(exc))], 0
    findings = []
    if config_dir is not None and any(r.name == "configDir" for r in registries):
        findings.append(
            _error(
                "invalid-config",
                source,
                f"--config {config}: registry name 'configDir' is taken by --configDir; "
                "rename that registry",
            )
        )
    for reg in registries:
        try:
            _create(reg, context)
        except ConfigError as exc:
            findings.append(_error("invalid-config", source, str(exc)))
            continue
        if reg.type == "serviceentry":
            path = os.fspath(reg.settings["path"])
            if not os.path.isdir(path):
                message = f"registry {reg.name!r} (serviceentry): 'path' {path}: not a directory"
                findings.append(_error("invalid-config", source, message))
                continue
            outside = reg.settings.get("follow_symlinks_outside") is True
            try:
                files.add_tree(path, follow_outside=outside)
            except ConfigError as exc:
                findings.append(_error("invalid-config", source, f"registry {reg.name!r}: {exc}"))
    return findings, len(registries)


# -- ServiceEntry / WorkloadEntry files -----------------------------------------------


def _read(source: str) -> bytes:
    """At most one byte over the limit, as the file registry reads (adapter.py ``_load``)."""
    with open(source, "rb") as handle:
        return handle.read(DEFAULT_LIMITS.max_bytes + 1)


def check_file(source: str, data: bytes | str) -> tuple[list[Located], list[Finding]]:
    """The valid documents of one file and the errors of the others, with the file
    registry's messages (documents.py ``read_documents``, schema.py ``parse_file``)."""
    try:
        raws = load_documents(data, DEFAULT_LIMITS)
    except FileProblem as exc:
        return [], [_error("invalid-file", source, str(exc))]
    good: list[Located] = []
    errors: list[Finding] = []
    for index, raw in enumerate(raws, 1):
        if raw is None:  # an empty document, e.g. after a trailing ---
            continue
        if isinstance(raw, DocumentProblem):
            message = f"document {index}: {raw.message}"
            errors.append(_error("invalid-document", source, message, index))
            continue
        try:
            doc = parse_document(raw, index=index, where=f"{source} #{index}")
        except InvalidConfig as exc:
            errors.append(_error("invalid-document", source, str(exc), index))
            continue
        except Exception as exc:  # a validation bug stays this document's problem
            problem = f"cannot be validated ({type(exc).__name__}: {show(exc)})"
            message = f"document {index}: {problem}"
            errors.append(_error("invalid-document", source, message, index))
            continue
        good.append(Located(source, index, doc))
    return good, errors


def document_lines(data: bytes | str) -> list[int]:
    """The first line of each document's content (1-based), in document order; empty if
    the YAML cannot be parsed."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for loader in dict.fromkeys((_LOADER, yaml.SafeLoader)):
        lines: list[int] = []
        starting = False
        try:
            for event in yaml.parse(text, Loader=loader):
                if isinstance(event, yaml.DocumentStartEvent):
                    starting = True
                elif starting:
                    mark = event.start_mark
                    lines.append(mark.line + 1 if mark else 0)
                    starting = False
            return lines
        except yaml.YAMLError:
            continue
    return []


def _with_lines(findings: Iterable[Finding], contents: dict[str, bytes]) -> list[Finding]:
    """Findings of a document without a line get the line where the document starts."""
    lines: dict[str, list[int]] = {}
    result = []
    for finding in findings:
        if finding.line is None and finding.document is not None and finding.source in contents:
            if finding.source not in lines:
                lines[finding.source] = document_lines(contents[finding.source])
            found = lines[finding.source]
            if finding.document <= len(found) and found[finding.document - 1]:
                finding = dataclasses.replace(finding, line=found[finding.document - 1])
        result.append(finding)
    return result


def check(
    *,
    paths: Sequence[str] = (),
    config: str | None = None,
    config_dir: str | None = None,
    context: AdapterContext | None = None,
) -> Report:
    """Check ``config``, ``config_dir`` and ``paths`` (see the module docstring);
    :class:`ConfigError` for a usage error (nothing to check, a path that is missing)."""
    if not (paths or config or config_dir):
        raise ConfigError("validate: nothing to check; give --config, --configDir or files")
    files = _Files()
    findings: list[Finding] = []
    registries = 0
    config_source = f"--config {os.path.normpath(config)}" if config else None
    if config is not None:
        found, registries = _check_config(config, config_dir, context or AdapterContext(), files)
        findings.extend(found)
    if config_dir is not None:
        if not os.path.isdir(config_dir):
            raise ConfigError(f"--configDir {config_dir}: not a directory")
        files.add_tree(config_dir)
    for path in paths:
        if os.path.isdir(path):
            files.add_tree(path)
        elif os.path.exists(path):
            files.paths.setdefault(os.path.normpath(path), None)
        else:
            raise ConfigError(f"validate: {path}: no such file or directory")
    findings.extend(files.findings)
    documents: list[Located] = []
    contents: dict[str, bytes] = {}
    for source in files.paths:
        try:
            contents[source] = data = _read(source)
        except OSError as exc:
            findings.append(_error("unreadable-file", source, f"cannot read: {exc.strerror}"))
            continue
        good, errors = check_file(source, data)
        documents.extend(good)
        findings.extend(errors)
    findings.extend(analyze(documents))
    # registryd.yaml first, then by file and document; errors before warnings (stable)
    findings.sort(key=lambda f: (f.source != config_source, f.source, f.document or 0))
    return Report(tuple(_with_lines(findings, contents)), len(files.paths), registries)


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
    errors, warnings = report.count(Severity.ERROR), report.count(Severity.WARNING)
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
        "errors": report.count(Severity.ERROR),
        "warnings": report.count(Severity.WARNING),
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
    v.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``registryd validate`` with parsed ``args``; the exit status."""
    kubeconfig = str(Path(args.kubeconfig).resolve()) if args.kubeconfig else None
    report = check(
        paths=args.paths,
        config=args.config,
        config_dir=args.configDir,
        context=AdapterContext(kubeconfig=kubeconfig),
    )
    (render_json if args.output == "json" else render_text)(report, out or sys.stdout)
    failing = {Severity.ERROR} if args.failure_threshold == "error" else set(Severity)
    return 1 if any(f.severity in failing for f in report.findings) else 0
