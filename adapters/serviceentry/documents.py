"""One file's documents, each kept at its last good version.  Pure: no I/O.

Contract of :func:`read_documents`:

* The file is loaded within its :class:`~.yamlsafe.Limits`; a problem of the whole file
  (not UTF-8, invalid YAML, a limit passed) raises :class:`~.yamlsafe.FileProblem`, and
  the caller keeps everything it used from that file before.
* Otherwise every document is validated on its own (:func:`~.schema.parse_document`).
  A broken document (also one whose validation fails in an unexpected way) is
  reported, and its last good version, found by kind, namespace and name (by its
  position when those cannot be read), stays in use; the good documents of the same
  file are used as they are now.  A document that was never good contributes nothing.
* The result lists the documents in use (:class:`Kept`, in file order), content that
  holds exactly those (the original text when every document is good, so the parser
  of :mod:`.state` reads it as before), the per-document errors, and a warning per
  unknown field of the documents read good now (:mod:`.fields`: they are served without
  those fields, as istiod serves them), naming the file, the line and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from registryd.adapter import describe_error

from .fields import located, warning
from .schema import Document, InvalidConfig, ParsedFile, parse_document
from .yamlsafe import DEFAULT_LIMITS, DocumentProblem, Limits, load_documents

__all__ = ["Kept", "Reading", "document_key", "read_documents"]

DocKey = tuple[str, str, str]  # kind, namespace, name


@dataclass(frozen=True, slots=True)
class Kept:
    """A good document in use: its identity (None if unreadable) and its loaded value."""

    key: DocKey | None
    raw: Any


@dataclass(frozen=True, slots=True)
class Reading:
    """What one file gives: the documents in use, content holding just them, errors."""

    documents: tuple[Kept, ...]
    data: bytes | str
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    parsed: ParsedFile | None = None  # ``data`` parsed, when every document is good


def document_key(raw: Any) -> DocKey | None:
    """``(kind, namespace, name)`` of a loaded document, None unless all are readable."""
    if not isinstance(raw, dict):
        return None
    meta = raw.get("metadata")
    kind = raw.get("kind")
    if not isinstance(meta, dict) or not isinstance(kind, str):
        return None
    name, namespace = meta.get("name"), meta.get("namespace") or "default"
    if not isinstance(name, str) or not isinstance(namespace, str):
        return None
    return (kind, namespace, name)


def _parse(raw: Any, index: int, source: str) -> Document | str:
    """Document ``index`` parsed, or why it cannot be used."""
    if isinstance(raw, DocumentProblem):
        return f"document {index}: {raw.message}"
    try:
        return parse_document(raw, index=index, where=f"{source} #{index}")
    except InvalidConfig as exc:
        return str(exc)
    except Exception as exc:  # a validation bug must stay this document's problem
        return f"document {index}: cannot be validated ({describe_error(exc)})"


def read_documents(
    data: bytes | str,
    source: str,
    previous: tuple[Kept, ...] = (),
    limits: Limits = DEFAULT_LIMITS,
) -> Reading:
    """The documents of ``source`` to use now, given those used before (``previous``);
    see the module docstring."""
    loaded = load_documents(data, limits)
    by_key = {kept.key: kept for kept in previous if kept.key is not None}
    used: list[Kept] = []
    parsed: list[Document] = []
    errors: list[str] = []
    warnings: list[str] = []
    for index, raw in enumerate(loaded, 1):
        if raw is None:  # an empty document, e.g. after a trailing ---
            continue
        document = _parse(raw, index, source)
        key = None if isinstance(raw, DocumentProblem) else document_key(raw)
        if not isinstance(document, str):
            used.append(Kept(key, raw))
            parsed.append(document)
            label = f"document {index}" + (f" ({key[0]} {key[1]}/{key[2]})" if key else "")
            warnings.extend(warning(source, at, label, f) for at, f in located(data, index, raw))
            continue
        problem = document
        before = by_key.get(key) if key is not None else _at(previous, len(used))
        if before is not None and all(before.key is None or k.key != before.key for k in used):
            used.append(before)
            problem += "; its last good version stays in use"
        errors.append(problem)
    if not errors:
        raws = tuple(raw for raw in loaded if raw is not None)
        whole = ParsedFile(source, tuple(parsed), raws)  # as parse_file would parse data
        return Reading(tuple(used), data, (), tuple(warnings), whole)
    text = yaml.safe_dump_all([kept.raw for kept in used], sort_keys=False)
    return Reading(tuple(used), text, tuple(errors), tuple(warnings))


def _at(previous: tuple[Kept, ...], position: int) -> Kept | None:
    return previous[position] if position < len(previous) else None
