"""The files of a ServiceEntry directory tree: which to read, when, and what they gave.

Contract:

* :func:`scan_tree` lists the ``*.yaml``/``*.yml`` files under a directory, skipping
  hidden entries and editor temporary files; a symlinked file is followed when its
  target stays inside the directory (anywhere, with ``follow_outside``), and a refused,
  dangling or looping one is that file's error; subdirectories that cannot be read are
  reported, the directory itself being unusable is an ``OSError``.
* :class:`FileTree` keeps what was last read from each file and turns the changed files
  into the model (:mod:`.convert`) and the per-file problems.  A file modified less than
  ``settle`` ago may still be being written: it is put off until it has been left alone
  that long, or ``settle_max`` has passed.  A broken file keeps its last good content;
  any exception while reading one file is that file's error.  Its methods block (file
  I/O and parsing): callers run them off the event loop.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from registryd.adapter import Delete, Problems, Replace, Upsert, describe_error

from .convert import Model, diff_models
from .documents import Kept, read_documents
from .state import FileTable
from .yamlsafe import DEFAULT_LIMITS, FileProblem, Limits, bounded, shorten

__all__ = ["OUTSIDE", "SETTLE_TIME", "FileTree", "Scan", "is_candidate", "scan_tree"]

SUFFIXES = (".yaml", ".yml")
SETTLE_TIME = 0.02  # seconds: a file modified more recently may still be being written
SETTLE_MAX = 1.0  # seconds (at least 4 settle times): read a file changing that long
OUTSIDE = "symlink to a file outside the directory, not followed (follow_symlinks_outside)"

Fingerprint = tuple[int, int, int, int]  # device, inode, size, mtime


@dataclass(slots=True)
class Scan:
    """The candidate files under a directory, the subdirectories that cannot be read and
    the candidate names that cannot be used (symlinks that dangle, loop or leave)."""

    files: dict[str, Fingerprint] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)  # the directories read
    links: bool = False  # whether any of the files is a symlink


def is_candidate(name: str) -> bool:
    """A file name the registry reads (not hidden, not an editor's temporary file)."""
    return name.endswith(SUFFIXES) and not name.startswith((".", "#", "~"))


def outside(path: str, root: str) -> bool:
    """Whether ``path``, with every symlink resolved, lies outside the directory ``root``."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, top]) != top


def _link_problem(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if isinstance(exc, FileNotFoundError):
        return "dangling symlink (its target does not exist)"
    return f"cannot follow symlink: {exc.strerror or exc}"


def scan_tree(root: str, *, follow_outside: bool = False) -> Scan:
    """List the candidate files under ``root``; OSError if ``root`` itself is unusable.

    Symlinked files are followed when they stay inside ``root`` (anywhere, with
    ``follow_outside``); the others, and dangling or looping ones, are ``refused``."""
    scan = Scan()
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as iterator:
                entries = list(iterator)
        except OSError as exc:
            if directory == root:
                raise OSError(exc.errno, f"cannot read directory {root}: {exc.strerror}") from exc
            scan.blocked[directory] = f"{directory}: cannot read directory: {exc.strerror}"
            continue
        scan.dirs.add(directory)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                    continue
                if not is_candidate(entry.name):
                    continue
                link = entry.is_symlink()
                scan.links = scan.links or link
                if link and not follow_outside and outside(entry.path, root):
                    scan.refused[entry.path] = OUTSIDE
                    continue
                info = entry.stat()  # follows a symlink to the file it names
            except OSError as exc:  # vanished meanwhile, or a symlink that goes nowhere
                if entry.is_symlink() and os.path.lexists(entry.path):
                    scan.refused[entry.path] = _link_problem(exc)
                continue
            if stat.S_ISREG(info.st_mode):
                scan.files[entry.path] = _fingerprint(info)
                scan.links = scan.links or entry.is_symlink()
    return scan


def _fingerprint(info: os.stat_result) -> Fingerprint:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


class FileTree:
    """The files of one directory tree and what was last read from each."""

    def __init__(
        self,
        root: str,
        resync: float = 30.0,
        *,
        settle: float = SETTLE_TIME,
        follow_outside: bool = False,
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """``clock`` measures the resync interval and how long a file was put off;
        ``wall_ns`` (nanoseconds, as mtimes) how long ago a file was modified."""
        self.root = root
        self.clock = clock
        self.wall_ns = wall_ns
        self.resync = resync
        self.settle = settle
        self.settle_max = max(SETTLE_MAX, 4 * settle)
        self.follow_outside = follow_outside
        self.limits = limits
        self.table = FileTable()
        self.kept: dict[str, tuple[Kept, ...]] = {}  # file -> its documents in use
        self.broken: dict[str, str] = {}  # file -> errors of some of its documents
        self.unknown: dict[str, tuple[str, ...]] = {}  # file -> its unknown-field warnings
        self._shown: tuple[Mapping[str, Any], dict[str, list[Any]]] = ({}, {})
        self.seen: dict[str, Fingerprint] = {}
        self.blocked: dict[str, str] = {}
        self.dirs: set[str] = set()
        self.links = True  # until a scan tells: only a rescan sees through symlinks
        self.scanned_at = -float("inf")
        self.unsettled: dict[str, float] = {}  # file -> when its reading was first put off
        self.removed: set[str] = set()  # files gone since the last problems()
        self.model = Model()  # the files in use, converted
        self.shown = Model()  # as last handed out
        self.touched_hosts: set[str] = set()  # hostnames that may differ between the two
        self.identity = self._identity()

    def _identity(self) -> tuple[int, int]:
        try:
            info = os.stat(self.root)
        except OSError as exc:
            raise OSError(exc.errno, f"directory {self.root}: {exc.strerror}") from exc
        if not stat.S_ISDIR(info.st_mode):
            raise NotADirectoryError(f"{self.root} is not a directory")
        return (info.st_dev, info.st_ino)

    def refresh(self, touched: set[str] | None = None) -> bool:
        """Read the ``touched`` files (all when None; only new and changed ones when
        empty), drop files that are gone; True if the usable content changed."""
        if self._identity() != self.identity:
            raise RuntimeError(f"directory {self.root} was replaced; watching it again")
        if touched is not None:
            resync = not touched
            touched = touched | self.unsettled.keys()
            direct = None if resync else self._direct(touched)
            if direct is not None:
                return any([self._read(path, print_) for path, print_ in direct.items()])
        return self._rescan(touched)

    def _direct(self, touched: set[str]) -> dict[str, Fingerprint | None] | None:
        """The candidate files among ``touched`` with their fingerprints (None: gone), or
        None when only a rescan can tell what changed."""
        if self.links or self.clock() - self.scanned_at >= self.resync:
            return None
        result: dict[str, Fingerprint | None] = {}
        for path in touched:
            relative = path[len(self.root) :]
            if not path.startswith(self.root) or not relative.startswith(os.sep):
                return None
            if os.sep + "." in relative:
                continue  # hidden: never read, and no file here is a symlink
            if path in self.dirs or os.path.dirname(path) not in self.dirs:
                return None
            try:
                info: os.stat_result | None = os.lstat(path)
            except FileNotFoundError:
                info = None
            except OSError:
                return None
            if info is not None and not stat.S_ISREG(info.st_mode):
                return None  # a directory, a symlink...
            if is_candidate(os.path.basename(path)):
                result[path] = None if info is None else _fingerprint(info)
        return result

    def read(self, source: str, print_: Fingerprint) -> bool:
        """Read ``source`` (of fingerprint ``print_``, from :func:`scan_tree`) now, as
        the first reading does; True if the usable content changed."""
        return self._read(source, print_, settle=False)

    def read_all(self, *, keep: Collection[str] = ()) -> None:
        """The first reading of the tree (:meth:`apply` with no argument), except that the
        files of ``keep`` are neither read nor dropped: they hold what :meth:`take` gave
        them (a preview's candidates, which need not exist)."""
        if self._rescan(None, frozenset(keep)):
            self.convert()

    def _rescan(self, touched: set[str] | None, keep: Collection[str] = frozenset()) -> bool:
        scan = scan_tree(self.root, follow_outside=self.follow_outside)
        changed = False
        for source in self.table.known - scan.files.keys() - scan.refused.keys() - set(keep):
            if not any(source.startswith(d + os.sep) for d in scan.blocked):
                changed |= self._gone(source)
        for source, problem in scan.refused.items():
            if source in keep:
                continue
            self.seen.pop(source, None)
            self.unsettled.pop(source, None)
            self._fail(source, problem)
        for source in self.unsettled.keys() - scan.files.keys():
            del self.unsettled[source]
        for source, print_ in scan.files.items():
            if source in keep:
                continue
            if touched is None:  # the first reading: nothing to wait for
                changed |= self._read(source, print_, settle=False)
            elif source in touched or self.seen.get(source) != print_:
                changed |= self._read(source, print_)
        self.blocked, self.dirs, self.links = scan.blocked, scan.dirs, scan.links
        self.scanned_at = self.clock()
        return changed

    def _read(self, source: str, print_: Fingerprint | None, *, settle: bool = True) -> bool:
        """Read ``source`` (``print_``: its fingerprint, None when it is gone), unless it
        was modified too recently to be complete (``settle``); True if the usable content
        changed."""
        if print_ is None:
            return self._gone(source)
        if settle and not self._settled(source, print_[3]):
            return False
        self.seen[source] = print_
        try:
            return self._load(source)
        except Exception as exc:  # MemoryError, RecursionError, a bug: this file's error
            self._fail(source, f"cannot be read ({describe_error(exc)})")
            return False

    def _load(self, source: str) -> bool:
        if not self.follow_outside and outside(source, self.root):  # swapped since the scan
            self._fail(source, OUTSIDE)
            return False
        try:
            with open(source, "rb") as handle:
                data = handle.read(self.limits.max_bytes + 1)
        except FileNotFoundError:
            return self._gone(source)
        except OSError as exc:
            self._fail(source, f"cannot read: {exc.strerror or exc}")
            return False
        return self.take(source, data)

    def take(self, source: str, data: bytes) -> bool:
        """Use ``data`` as what was read from ``source`` now (at most one byte over the
        size limit is enough to refuse it); True if the usable content changed.  Callers
        then :meth:`convert`.  Also how a preview puts candidate content in place of a
        file's (:mod:`.preview`)."""
        try:
            reading = read_documents(data, source, self.kept.get(source, ()), self.limits)
        except FileProblem as exc:
            self._fail(source, str(exc))
            return False
        if not reading.documents and reading.errors and source not in self.table:
            self._fail(source, " | ".join(reading.errors))  # nothing to show: never good
            return False
        self.kept[source] = reading.documents
        if reading.warnings:
            self.unknown[source] = reading.warnings
        else:
            self.unknown.pop(source, None)
        if reading.errors:
            self.broken[source] = f"{source}: {' | '.join(reading.errors)}"
        else:
            self.broken.pop(source, None)
        return self.table.load(source, reading.data, reading.parsed)

    def _fail(self, source: str, problem: str) -> None:
        """``source`` cannot be used now; what it gave before stays in use."""
        self.broken.pop(source, None)
        self.table.fail(source, problem)

    def _gone(self, source: str) -> bool:
        self.removed.add(source)
        self.seen.pop(source, None)
        self.unsettled.pop(source, None)
        self.kept.pop(source, None)
        self.broken.pop(source, None)
        self.unknown.pop(source, None)
        return self.table.remove(source)

    def _settled(self, source: str, mtime_ns: int) -> bool:
        """False (and put off) while ``source`` was modified less than ``settle`` ago."""
        now = self.clock()
        since = self.unsettled.setdefault(source, now)
        if 0 <= self.wall_ns() - mtime_ns < self.settle * 1e9:
            if now - since < self.settle_max:
                return False
        del self.unsettled[source]
        return True

    def apply(self, touched: set[str] | None = None) -> None:
        """:meth:`refresh` (all files when ``touched`` is None), then convert what changed;
        blocking work, run off the event loop."""
        if self.refresh(touched):
            self.convert()

    def convert(self) -> None:
        """Convert what changed since the last conversion into :attr:`model`."""
        self.model = self.table.model()
        self.touched_hosts |= self.table.changed

    def replace(self) -> Replace:
        """The full state; what :meth:`changes` compares with from now on."""
        self.shown, self.touched_hosts = self.model, set()
        return self.model.replace()

    def changes(self) -> list[Upsert | Delete]:
        """The increments from the model last handed out to the current one."""
        if self.model is self.shown:
            return []
        updates = diff_models(self.shown, self.model, self.touched_hosts)
        self.shown, self.touched_hosts = self.model, set()
        return updates

    def problems(self) -> Problems:
        """Errors per file (and blocked directory) and the documents in use, all
        bounded in size (see :mod:`.yamlsafe`), and the files removed since the last
        call."""
        errors = {**self.table.errors, **self.broken, **self.blocked}
        removed, self.removed = tuple(sorted(self.removed - errors.keys())), set()
        return Problems(
            errors={source: shorten(errors[source]) for source in sorted(errors)},
            sources=self._sources(),
            warnings=tuple(
                shorten(note)
                for note in (
                    *(w for source in sorted(self.unknown) for w in self.unknown[source]),
                    *self.table.notes,
                )
            ),
            removed=removed,
        )

    def _sources(self) -> dict[str, list[Any]]:
        """The documents in use, cut down for display; the same mapping until they change,
        and only the files whose documents changed are cut down again."""
        old_raw, old_shown = self._shown
        raw = self.table.sources
        if raw is old_raw:
            return old_shown
        shown = {
            source: old_shown[source]
            if old_raw.get(source) is docs
            else [bounded(doc) for doc in docs]
            for source, docs in raw.items()
        }
        self._shown = (raw, shown)
        return shown
