"""The ServiceEntry file registry: a directory tree of Istio YAML, watched for changes.

Contract (see :mod:`registryd.adapter`):

* ``watch()`` scans ``path`` recursively for ``*.yaml``/``*.yml`` files (hidden files and
  directories and editor temporary files are skipped, symlinked files are followed,
  symlinked directories are not), then yields a :class:`~registryd.adapter.Replace` with
  the full state and a :class:`~registryd.adapter.Problems` with the per-file errors and
  the raw documents in use.
* It then follows changes (edits, files replaced by rename, deletions, new
  subdirectories, ConfigMap-style symlink swaps): the changed files are read again, the
  model is rebuilt and one ``Upsert``/``Delete`` is yielded per changed hostname, followed
  by a new ``Problems`` whenever the errors or the documents in use changed.
* A broken or unreadable file is reported under its path and its last good content
  keeps being used; other files are unaffected.
* If the directory is missing, unreadable or replaced, ``watch()`` raises; the supervisor
  restarts it with backoff.  The file watcher is released in ``finally``.

Settings: ``path`` (required, the directory), ``force_polling`` (bool, poll instead of
using inotify & co., for file systems without change notification) and
``resync_interval`` (seconds, default 30: after this long without events the tree is
checked again for changes that were not notified).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from watchfiles import Change, awatch

from registryd.adapter import AdapterContext, ConfigError, Problems, Update

from .convert import FileTable, Model, diff_models

__all__ = ["ServiceEntryAdapter", "scan_tree"]

log = logging.getLogger("registryd.serviceentry")

SUFFIXES = (".yaml", ".yml")
DEBOUNCE_MS = 50
STEP_MS = 50
SETTINGS = ("path", "force_polling", "resync_interval")

Fingerprint = tuple[int, int, int, int]  # device, inode, size, mtime


@dataclass(slots=True)
class Scan:
    """The candidate files under a directory and the subdirectories that cannot be read."""

    files: dict[str, Fingerprint] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)


def is_candidate(name: str) -> bool:
    """A file name the registry reads (not hidden, not an editor's temporary file)."""
    return name.endswith(SUFFIXES) and not name.startswith((".", "#", "~"))


def scan_tree(root: str) -> Scan:
    """List the candidate files under ``root``; OSError if ``root`` itself is unusable."""
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
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                    continue
                if not is_candidate(entry.name):
                    continue
                info = entry.stat()  # follows a symlink to the file it names
            except OSError:  # vanished meanwhile, or a dangling symlink
                continue
            if stat.S_ISREG(info.st_mode):
                scan.files[entry.path] = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    return scan


class _Tree:
    """The files of one directory tree and what was last read from each."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.table = FileTable()
        self.seen: dict[str, Fingerprint] = {}
        self.blocked: dict[str, str] = {}
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
        """Read new files, changed files and the ``touched`` ones (all when None), drop
        files that are gone; True if the usable content changed."""
        if self._identity() != self.identity:
            raise RuntimeError(f"directory {self.root} was replaced; watching it again")
        scan = scan_tree(self.root)
        changed = False
        for source in self.table.known - scan.files.keys():
            if not any(source.startswith(d + os.sep) for d in scan.blocked):
                self.seen.pop(source, None)
                changed |= self.table.remove(source)
        for source, print_ in scan.files.items():
            fresh = touched is None or source in touched or self.seen.get(source) != print_
            if not fresh:
                continue
            self.seen[source] = print_
            try:
                with open(source, "rb") as handle:
                    data = handle.read()
            except FileNotFoundError:
                self.seen.pop(source, None)
                changed |= self.table.remove(source)
            except OSError as exc:
                self.table.fail(source, f"cannot read: {exc.strerror or exc}")
            else:
                changed |= self.table.load(source, data)
        self.blocked = scan.blocked
        return changed

    def problems(self) -> Problems:
        return Problems(errors={**self.table.errors, **self.blocked}, sources=self.table.sources)


def _log_problems(name: str, old: Problems | None, new: Problems) -> None:
    before = old.errors if old is not None else {}
    for source, message in new.errors.items():
        if before.get(source) != message:
            log.warning("serviceentry %s: %s (its last good content stays in use)", name, message)
    for source in sorted(set(before) - set(new.errors)):
        log.info("serviceentry %s: %s is fine again", name, source)


def _log_notes(name: str, old: Model | None, new: Model) -> None:
    for note in new.notes:
        if old is None or note not in old.notes:
            log.warning("serviceentry %s: %s", name, note)


async def _next_batch(changes: AsyncIterator[set[tuple[Change, str]]]) -> set[tuple[Change, str]]:
    batch = await anext(changes, None)
    if batch is None:
        raise RuntimeError("the file watcher stopped")
    return batch


class ServiceEntryAdapter:
    """Istio ServiceEntry / WorkloadEntry files in a directory (see the module docstring)."""

    def __init__(self, *, name: str, settings: Mapping[str, Any], context: AdapterContext) -> None:
        where = f"registry {name!r} (serviceentry)"
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ConfigError(f"{where}: unknown settings {unknown}; known: {list(SETTINGS)}")
        path = settings.get("path")
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise ConfigError(f"{where}: setting 'path' (the ServiceEntry directory) is required")
        polling = settings.get("force_polling")
        if polling is not None and not isinstance(polling, bool):
            raise ConfigError(f"{where}: 'force_polling' must be true or false, got {polling!r}")
        resync = settings.get("resync_interval", 30)
        if isinstance(resync, bool) or not isinstance(resync, int | float) or resync <= 0:
            raise ConfigError(f"{where}: 'resync_interval' must be seconds > 0, got {resync!r}")
        self.name = name
        self.path = os.path.abspath(os.fspath(path))
        self.force_polling: bool | None = polling
        self.resync_interval = float(resync)

    async def watch(self) -> AsyncIterator[Update]:
        stop = asyncio.Event()
        changes = awatch(
            self.path,
            watch_filter=None,  # every event counts: symlink swaps touch hidden entries
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=stop,
            rust_timeout=max(1, int(self.resync_interval * 1000)),
            yield_on_timeout=True,
            force_polling=self.force_polling,
        )
        waiter: asyncio.Task[set[tuple[Change, str]]] | None = None
        try:
            tree = _Tree(self.path)
            # Start the watcher before the first scan so no change can fall in between:
            # the task installs it synchronously on its first step.
            waiter = asyncio.create_task(_next_batch(changes))
            await asyncio.sleep(0)
            if waiter.done():
                waiter.result()
            await asyncio.to_thread(tree.refresh)
            model = await asyncio.to_thread(tree.table.model)
            problems = tree.problems()
            _log_notes(self.name, None, model)
            _log_problems(self.name, None, problems)
            yield model.replace()
            yield problems
            while True:
                batch = await asyncio.shield(waiter)  # cancelling must not wait for the thread
                waiter = asyncio.create_task(_next_batch(changes))
                touched = {path for _, path in batch}
                if await asyncio.to_thread(tree.refresh, touched):
                    new_model = await asyncio.to_thread(tree.table.model)
                    _log_notes(self.name, model, new_model)
                    for update in diff_models(model, new_model):
                        yield update
                    model = new_model
                new_problems = tree.problems()
                if new_problems != problems:
                    _log_problems(self.name, problems, new_problems)
                    problems = new_problems
                    yield problems
        finally:
            stop.set()  # the watcher thread notices within one step
            if waiter is not None:
                waiter.cancel()
                await asyncio.wait([waiter])
                if not waiter.cancelled():
                    waiter.exception()  # consumed: the watch is over either way
            await changes.aclose()
