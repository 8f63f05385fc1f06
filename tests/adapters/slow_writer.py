"""A file written piece by piece while the ServiceEntry adapter watches it, on clocks the
test holds: the adapter's wall clock says every piece was written just now until the test
says the file has settled, and its monotonic clock stands still (``settle_max`` never
runs out).  So whether a partial file is read depends on the settle rule alone, not on
how fast the machine writes."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from registryd.adapter import AdapterContext, Update
from registryd.adapters.serviceentry import ServiceEntryAdapter
from tests.adapters.feed import HANG_GUARD, Feed
from tests.support.fake_time import FakeTime

SETTLE = 60.0  # seconds, the largest settle time: the pieces are written well within it


async def read_after(wall: FakeTime, count: int, feed: Feed) -> None:
    """Until ``wall`` was read more than ``count`` times (or ``feed`` has an update): the
    adapter reads it from a worker thread, for each file it finds modified."""
    async with asyncio.timeout(HANG_GUARD):
        while wall.reads <= count and feed.queue.empty():
            await asyncio.sleep(0.01)


def wall_clock() -> FakeTime:
    """A wall clock the test sets (:attr:`FakeTime.now`, seconds since the epoch); the
    adapter reads it with :meth:`FakeTime.ns`."""
    return FakeTime(start=time.time())


def adapter(root: Path, wall: FakeTime, **settings: Any) -> ServiceEntryAdapter:
    """The adapter on ``root`` with the settle time :data:`SETTLE`, on ``wall`` and a
    monotonic clock that stands still."""
    return ServiceEntryAdapter(
        name="files",
        settings={"path": str(root), "settle_time": SETTLE, **settings},
        context=AdapterContext(),
        clock=FakeTime(),
        wall_ns=wall.ns,
    )


async def write_slowly(feed: Feed, wall: FakeTime, path: Path, pieces: list[str]) -> Update:
    """Write ``pieces`` to ``path`` one by one, each looked at by the adapter while the
    wall clock says it was written just now; then let the file settle and return the
    first update that follows (any update before would be a partial file's)."""
    wall.now = time.time() + SETTLE / 2  # every write: less than SETTLE ago
    _write(path, "", "w")
    for piece in pieces:
        reads = wall.reads
        _write(path, piece, "a")
        await read_after(wall, reads, feed)  # the adapter found the file changed, unsettled
        assert feed.queue.empty(), f"a partial file was read: {feed.queue.get_nowait()}"
    wall.now = os.stat(path).st_mtime_ns / 1e9 + SETTLE + 1  # settled now
    _write(path.parent / "nudge.txt", "", "w")  # an event: unsettled files are looked at
    return await feed.next()


def _write(path: Path, text: str, mode: str) -> None:
    with open(path, mode) as handle:
        handle.write(text)
