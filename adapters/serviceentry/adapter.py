"""The ServiceEntry file registry: a directory tree of Istio YAML, watched for changes.

Contract (see :mod:`registryd.adapter`):

* ``watch()`` scans ``path`` recursively for ``*.yaml``/``*.yml`` files (hidden files and
  directories and editor temporary files are skipped, symlinked files are followed
  when their target is inside ``path`` or ``follow_symlinks_outside`` is set, symlinked
  directories are not; a refused, dangling or looping symlink is that file's error),
  then yields a :class:`~registryd.adapter.Replace` with
  the full state and a :class:`~registryd.adapter.Problems` with the per-file errors and
  the raw documents in use.
* It then follows changes (edits, files replaced by rename, deletions, new
  subdirectories, ConfigMap-style symlink swaps): the changed files are read again, the
  model is updated and one ``Upsert``/``Delete`` is yielded per changed hostname, followed
  by a new ``Problems`` whenever the errors or the documents in use changed.  Events that
  name only regular candidate files (or hidden entries, in a tree without symlinked
  files) re-read just those files; anything else (directories, symlinks, a file in a
  directory not seen yet) rescans the tree, as does every batch once the last rescan is
  ``resync_interval`` old.
* Latency: watchfiles yields a batch once a check, every ``STEP_MS``, finds no new
  changed path (so 1-2 steps after the last new one, longer only while new paths keep
  changing, up to ``DEBOUNCE_MS``).  A file that was written less than ``settle_time``
  ago may still be being written in chunks: it is read once it has been left alone that
  long (at most max(``SETTLE_MAX``, 4 x ``settle_time``) late).  A file renamed into
  place is complete; it waits at most ``settle_time`` after its last write (the default
  is short, as every change of every file pays it).
* A broken or unreadable file is reported under its path and its last good content
  keeps being used; other files are unaffected.  Any exception while reading one file
  counts as such.  Files are loaded within :class:`~.yamlsafe.Limits`, a broken
  document keeps its last good version (:mod:`.documents`), and errors and documents
  in ``Problems`` are bounded in size.  A document whose only fault is an unknown field
  is served without that field, as istiod's ``--configDir`` serves it, and each unknown
  field is a warning naming file, line and the closest known field (:mod:`.fields`).
  Reading runs in a daemon thread (:func:`~registryd.adapter.off_loop`): cancelling
  ``watch()`` never waits for it.
* If the directory is missing, unreadable or replaced, ``watch()`` raises; the supervisor
  restarts it with backoff.  The file watcher is released in ``finally``.

Settings: ``path`` (required, the directory), ``force_polling`` (bool, poll instead of
using inotify & co., for file systems without change notification) and
``resync_interval`` (seconds, default 30: after this long without events the tree is
checked again for changes that were not notified), ``settle_time`` (seconds, default
0.02) and ``follow_symlinks_outside`` (bool, default false).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from watchfiles import Change, awatch

from registryd.adapter import AdapterContext, Update, follow, off_loop
from registryd.settings import SettingsReader

from .tree import SETTLE_TIME, FileTree

__all__ = ["ServiceEntryAdapter"]

STEP_MS = 20  # a batch is yielded 1-2 steps after its last new changed path
DEBOUNCE_MS = 500  # ...or this long after its first, while new paths keep changing
SETTINGS = (
    "path",
    "force_polling",
    "resync_interval",
    "settle_time",
    "follow_symlinks_outside",
)


async def _next_batch(changes: AsyncIterator[set[tuple[Change, str]]]) -> set[tuple[Change, str]]:
    batch = await anext(changes, None)
    if batch is None:
        raise RuntimeError("the file watcher stopped")
    return batch


class _Batches:
    """The file watcher's batches of changed paths.  The next batch is always being
    waited for, from :meth:`start` on, so no change falls between two batches."""

    def __init__(self, changes: AsyncIterator[set[tuple[Change, str]]]) -> None:
        self._changes = changes
        self._waiter: asyncio.Task[set[tuple[Change, str]]] | None = None

    async def start(self) -> None:
        """Start the watcher: its task installs it synchronously on its first step."""
        self._waiter = asyncio.create_task(_next_batch(self._changes))
        await asyncio.sleep(0)
        if self._waiter.done():
            self._waiter.result()

    async def next(self, timeout: float | None) -> set[str] | None:
        """The paths of the next batch; None when ``timeout`` seconds passed first."""
        assert self._waiter is not None
        # cancelling must not wait for the watcher thread, hence no plain await
        await asyncio.wait([self._waiter], timeout=timeout)
        if not self._waiter.done():
            return None
        touched = {path for _, path in self._waiter.result()}
        self._waiter = asyncio.create_task(_next_batch(self._changes))
        return touched

    async def close(self) -> None:
        if self._waiter is not None:
            self._waiter.cancel()
            await asyncio.wait([self._waiter])
            if not self._waiter.cancelled():
                self._waiter.exception()  # consumed: the watch is over either way


class ServiceEntryAdapter:
    """Istio ServiceEntry / WorkloadEntry files in a directory (see the module docstring)."""

    default_priority = 300  # merge priority when registryd.yaml gives none
    log_scope = "serviceentry"
    log_description = "ServiceEntry YAML registry adapter."

    def __init__(
        self,
        *,
        name: str,
        settings: Mapping[str, Any],
        context: AdapterContext,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """``clock`` and ``wall_ns`` are what the settle time and the resync interval are
        measured with (see :class:`FileTree`; tests give their own)."""
        self._clock = clock
        self._wall_ns = wall_ns
        reader = SettingsReader(name, "serviceentry", settings, SETTINGS)
        path = reader.get("path")
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise reader.error("setting 'path' (the ServiceEntry directory) is required")
        polling = reader.get("force_polling")
        if polling is not None:
            polling = reader.flag("force_polling", False)
        resync = reader.number("resync_interval", 30, unit="seconds")
        self.name = name
        self.path = os.path.abspath(os.fspath(path))
        self.force_polling: bool | None = polling
        self.resync_interval = resync
        self.settle_time = reader.number("settle_time", SETTLE_TIME, unit="seconds", maximum=60)
        self.follow_outside = reader.flag("follow_symlinks_outside", False)

    def _tree(self) -> FileTree:
        return FileTree(
            self.path,
            self.resync_interval,
            settle=self.settle_time,
            follow_outside=self.follow_outside,
            clock=self._clock,
            wall_ns=self._wall_ns,
        )

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
        batches = _Batches(changes)
        try:
            tree = self._tree()
            await batches.start()  # before the first scan, so no change can fall in between
            await off_loop(tree.apply)
            yield tree.replace()
            yield (problems := tree.problems())

            async def apply_batch() -> None:
                # files still being written are read once they had time to settle
                touched = await batches.next(tree.settle / 4 if tree.unsettled else None)
                await off_loop(tree.apply, set(tree.unsettled) if touched is None else touched)

            updates = follow(apply_batch, tree.changes, tree.problems, problems)
            async with contextlib.aclosing(updates):
                async for update in updates:
                    yield update
        finally:
            stop.set()  # the watcher thread notices within one step
            await batches.close()
            await changes.aclose()
