"""Offline checks of registryd's configuration, for ``registryd validate``.

Contract of :func:`check`:

* Nothing is contacted and no port is opened: registryd.yaml is read with the daemon's
  own parser (:func:`registryd.daemon.config.load_registries`) and every registry's settings
  go through its adapter's factory, as at start, but no adapter is started.
* ServiceEntry/WorkloadEntry files (the given files and directories, ``config_dir`` and
  the ``path`` of every ``serviceentry`` registry in ``config``) are read as the file
  registry reads them: directories with
  :func:`~registryd.adapters.serviceentry.tree.scan_tree` (hidden files skipped,
  symlink rules), each file within the same size limits, with the same YAML loader
  (duplicate keys) and the same validation.  Every broken document is one error whose
  message is the daemon's text for it (the daemon joins a file's messages with
  `` | ``).  Every unknown field is an error of its own (``unknown-field``, with its line
  and the closest known field), as ``istioctl validate`` decodes strictly; the daemon
  serves such a document without the field and warns
  (:mod:`registryd.adapters.serviceentry.fields`).  Then
  :func:`registryd.tools.analyze.analyze` adds its warnings.
* A usage error (nothing to check, a path that does not exist) raises ConfigError;
  everything else is a :class:`~registryd.tools.analyze.Finding` of the :class:`Report`.  That
  includes whatever one file holds or is: a FIFO, device or socket is refused without
  being opened (reading it could block forever), a symlink loop is reported as one, and
  any exception while reading or loading a file or registryd.yaml (an integer too long
  to convert, nesting, anything) is that file's error; the other files are still checked.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from registryd.adapter import AdapterContext, ConfigError
from registryd.adapters.serviceentry.documents import document_key
from registryd.adapters.serviceentry.fields import located
from registryd.adapters.serviceentry.schema import InvalidConfig, parse_document
from registryd.adapters.serviceentry.tree import scan_tree
from registryd.adapters.serviceentry.yamlsafe import (
    DEFAULT_LIMITS,
    DocumentProblem,
    FileProblem,
    load_documents,
    shorten,
    show,
)
from registryd.daemon.config import (
    Unreadable,
    check_config_dir,
    check_paths,
    load_registries,
    path_problem,
    read_regular,
    with_defaults,
)
from registryd.daemon.plugins import create_adapter
from registryd.tools.analyze import Finding, Located, Severity, analyze

__all__ = ["Report", "check", "check_file", "document_lines"]

_AT_LINE = re.compile(r"\bline (\d+), column")  # in the YAML parser's messages
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Report:
    """What was checked and what was found."""

    findings: tuple[Finding, ...] = ()
    files: int = 0
    registries: int = 0

    @property
    def errors(self) -> int:
        return sum(f.severity is Severity.ERROR for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.severity is Severity.WARNING for f in self.findings)


@dataclass(slots=True)
class _Files:
    """The files to read (in order, each once) and the problems met finding them."""

    paths: dict[str, None] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def add_tree(self, root: str, *, follow_outside: bool = False) -> None:
        try:
            scan = scan_tree(root, follow_outside=follow_outside)
        except OSError as exc:  # said as the daemon says it, without a raw errno
            raise ConfigError(f"{root}: {path_problem(root) or exc.strerror or exc}") from None
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

_LINE_PREFIX = re.compile(r":(\d+): ")


def _config_error(source: str, message: str) -> Finding:
    """An error of registryd.yaml (``source``: ``--config FILE``) from the daemon's
    message for it, which starts with the same ``--config FILE`` and often its line
    (``--config FILE:LINE: ...``): the finding says those once, as its source and line."""
    line = None
    if message.startswith(source):
        rest = message[len(source) :]
        numbered = _LINE_PREFIX.match(rest)
        if numbered:
            line, rest = int(numbered.group(1)), rest[numbered.end() :]
        else:
            rest = rest.removeprefix(": ")
        message = rest
    finding = _error("invalid-config", source, message)
    return finding if line is None else dataclasses.replace(finding, line=line)


def _check_config(
    config: str,
    config_dir: str | None,
    context: AdapterContext,
    defaults: Mapping[str, Mapping[str, Any]],
    files: _Files,
) -> tuple[list[Finding], int]:
    """Findings of registryd.yaml and its number of registries, each registry with the
    ``defaults`` of its type (:func:`registryd.daemon.config.with_defaults`); the ``path`` of
    every valid serviceentry registry is added to ``files``."""
    if not os.path.lexists(config):
        raise ConfigError(f"--config {config}: no such file")
    source = f"--config {os.path.normpath(config)}"
    try:  # a FIFO, a symlink loop, a bad document...: ConfigError from the daemon's parser
        registries = with_defaults(load_registries(Path(config)), defaults)
    except ConfigError as exc:
        return [_config_error(source, str(exc))], 0
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
            create_adapter(reg, context)
        except ConfigError as exc:
            findings.append(_config_error(source, str(exc)))
            continue
        except Exception as exc:  # an adapter's bug stays this registry's problem
            problem = f"cannot be checked ({type(exc).__name__}: {show(exc)})"
            findings.append(_config_error(source, reg.where(f"registry {reg.name!r}: {problem}")))
            continue
        if reg.type == "serviceentry":
            path = os.fspath(reg.settings["path"])
            try:  # the daemon's check at start, and its words
                check_paths([reg])
            except ConfigError as exc:
                findings.append(_config_error(source, str(exc)))
                continue
            if not os.path.isdir(path):
                message = f"registry {reg.name!r} (serviceentry): 'path' {path}: not a directory"
                findings.append(_config_error(source, reg.where(message)))
                continue
            outside = reg.settings.get("follow_symlinks_outside") is True
            try:
                files.add_tree(path, follow_outside=outside)
            except ConfigError as exc:
                findings.append(_config_error(source, reg.where(f"registry {reg.name!r}: {exc}")))
    return findings, len(registries)


# -- ServiceEntry / WorkloadEntry files -----------------------------------------------


def _read(source: str) -> bytes:
    """At most one byte over the limit, as the file registry reads (adapter.py ``_load``);
    :class:`~registryd.daemon.config.Unreadable` for what is not a regular file, without
    opening it."""
    return read_regular(source, DEFAULT_LIMITS.max_bytes)


def check_file(source: str, data: bytes | str) -> tuple[list[Located], list[Finding]]:
    """The valid documents of one file and the errors of the others, with the file
    registry's messages (documents.py ``read_documents``, schema.py ``parse_file``)."""
    try:
        raws = load_documents(data, DEFAULT_LIMITS)
    except FileProblem as exc:
        return [], [_error("invalid-file", source, str(exc))]
    except Exception as exc:  # the loader's own surprises: still this file's error
        problem = " ".join(shorten(str(exc), 200).split())
        message = f"cannot be loaded ({type(exc).__name__}: {problem})"
        return [], [_error("invalid-file", source, message)]
    good: list[Located] = []
    errors: list[Finding] = []
    for index, raw in enumerate(raws, 1):
        if raw is None:  # an empty document, e.g. after a trailing ---
            continue
        if isinstance(raw, DocumentProblem):
            message = f"document {index}: {raw.message}"
            errors.append(_error("invalid-document", source, message, index))
            continue
        key = document_key(raw)
        label = f"document {index}" + (f" ({key[0]} {key[1]}/{key[2]})" if key else "")
        for line, unknown in located(data, index, raw):  # istioctl decodes strictly
            found = _error("unknown-field", source, f"{label}: {unknown.message()}", index)
            errors.append(dataclasses.replace(found, line=line) if line else found)
        try:
            doc = parse_document(raw, index=index, where=f"{source} #{index}", name_unknown=False)
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
    defaults: Mapping[str, Mapping[str, Any]] = MappingProxyType({}),
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
        found, registries = _check_config(
            config, config_dir, context or AdapterContext(), defaults, files
        )
        findings.extend(found)
    if config_dir is not None:
        check_config_dir(config_dir)
        files.add_tree(config_dir)
    for path in paths:
        if os.path.isdir(path):
            problem = path_problem(path)
            if problem is not None:
                raise ConfigError(f"validate: {path}: {problem}")
            files.add_tree(path)
        elif os.path.lexists(path):  # read (or refused) below: a FIFO, a loop...
            files.paths.setdefault(os.path.normpath(path), None)
        else:
            raise ConfigError(f"validate: {path}: no such file or directory")
    findings.extend(files.findings)
    documents: list[Located] = []
    contents: dict[str, bytes] = {}
    for source in files.paths:
        try:
            contents[source] = data = _read(source)
        except Unreadable as exc:
            findings.append(_error("unreadable-file", source, str(exc)))
            continue
        good, errors = check_file(source, data)
        documents.extend(good)
        findings.extend(errors)
    findings.extend(analyze(documents))
    # registryd.yaml first, then by file and document; errors before warnings (stable)
    findings.sort(key=lambda f: (f.source != config_source, f.source, f.document or 0))
    return Report(tuple(_with_lines(findings, contents)), len(files.paths), registries)
