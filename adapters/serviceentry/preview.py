"""Candidate files in place of some files of a ServiceEntry directory: the state the file
registry would deliver with them, computed without touching the running registry.

Contract of :func:`candidate_state`:

* The directory is read as the registry reads it (:class:`~.tree.FileTree`: the same
  scan, limits, parser and conversion), as it is on disk now; then each candidate's
  content is put in place of the file it names (:func:`place`) as if read from it:
  a broken candidate is reported, and what its file gave before stays in use, as the
  registry would do.
* A file that is broken on disk now contributes what it gives now (nothing, if it was
  never good): a registry that read it earlier may still serve an older good version.
* Errors name the candidate as the caller named it, not the file it replaces.
* Blocking (file I/O and parsing): run it off the event loop.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from registryd.adapter import Replace

from .tree import FileTree, is_candidate, scan_tree

__all__ = ["Candidate", "candidate_state", "place"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """What the registry would deliver with the candidates in place."""

    update: Replace
    placed: Mapping[str, str]  # candidate name -> the file it takes the place of
    replaced: frozenset[str]  # the candidate names whose file exists now
    errors: Mapping[str, str]  # candidate name -> why (part of) it cannot be used
    warnings: tuple[str, ...]  # unknown fields of the candidates (served without them)


def _relative(name: str, root: str) -> str:
    """``name`` as a path under ``root``; ValueError when it cannot be one."""
    if os.path.isabs(name):
        absolute = os.path.normpath(name)
        inside = os.path.commonpath([absolute, root]) == root
        name = os.path.relpath(absolute, root) if inside else os.path.basename(absolute)
    relative = os.path.normpath(name)
    parts = relative.split(os.sep)
    if not relative or relative == "." or ".." in parts:
        raise ValueError(f"candidate {name!r}: not a file name under the directory")
    if not is_candidate(parts[-1]) or any(p.startswith(".") for p in parts):
        raise ValueError(f"candidate {name!r}: the registry reads only *.yaml and *.yml files")
    return relative


def place(names: Collection[str], root: str, existing: Collection[str]) -> dict[str, str]:
    """Which file each candidate takes the place of: the file at the same path under
    ``root`` (an absolute name outside ``root``: its base name), else the only
    ``existing`` file of the same base name, else a new file at that path.
    ValueError for a name that cannot be a file of the directory, or two candidates
    for one file."""
    root = os.path.normpath(root)
    by_base: dict[str, list[str]] = {}
    for path in existing:
        by_base.setdefault(os.path.basename(path), []).append(path)
    placed: dict[str, str] = {}
    taken: dict[str, str] = {}
    for name in names:
        path = os.path.join(root, _relative(name, root))
        same = by_base.get(os.path.basename(path), [])
        if path not in existing and len(same) == 1:
            path = same[0]
        if path in taken:
            raise ValueError(f"candidates {taken[path]!r} and {name!r} both name {path}")
        placed[name] = taken[path] = path
    return placed


def candidate_state(
    root: str, files: Mapping[str, bytes], *, follow_outside: bool = False
) -> Candidate:
    """The state of the directory ``root`` with ``files`` (name -> content) in place (see
    the module docstring); ValueError for a name :func:`place` refuses, OSError when the
    directory cannot be read."""
    tree = FileTree(os.path.abspath(root), follow_outside=follow_outside)
    scan = scan_tree(tree.root, follow_outside=follow_outside)
    existing = scan.files.keys() | scan.refused.keys()
    placed = place(list(files), tree.root, existing)
    for name, path in placed.items():
        tree.take(path, files[name])
    # a broken candidate keeps the last good version of what it replaces: read that first
    # (only then: reading and parsing every replaced file would double the work)
    for name, path in placed.items():
        if path in scan.files and (path in tree.broken or path in tree.table.errors):
            tree.read(path, scan.files[path])
            tree.take(path, files[name])
    tree.read_all(keep=set(placed.values()))
    tree.convert()
    errors = {**tree.table.errors, **tree.broken}
    found: dict[str, str] = {}
    warnings: list[str] = []
    for name, path in placed.items():
        if path in errors:
            found[name] = errors[path].replace(path, name)
        warnings.extend(w.replace(path, name) for w in tree.unknown.get(path, ()))
    return Candidate(
        update=tree.model.replace(),
        placed=placed,
        replaced=frozenset(n for n, p in placed.items() if p in existing),
        errors=found,
        warnings=tuple(warnings),
    )
