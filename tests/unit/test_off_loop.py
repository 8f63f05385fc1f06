"""registryd.adapter.off_loop: work off the event loop that never holds up a shutdown."""

from __future__ import annotations

import asyncio
import threading

import pytest

from registryd.adapter import off_loop


async def test_result_and_exception_come_back() -> None:
    assert await off_loop(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        await off_loop(lambda: 1 / 0)


async def test_the_loop_keeps_running_while_the_work_runs() -> None:
    release = threading.Event()
    task = asyncio.create_task(off_loop(release.wait, 30))
    for _ in range(3):
        await asyncio.sleep(0)  # the loop turns while the thread is blocked
    assert not task.done()
    release.set()
    assert await task is True


async def test_cancelling_returns_at_once_even_while_the_work_is_stuck() -> None:
    # a SIGTERM during a long parse: the adapter task is cancelled and must not wait
    started, release = threading.Event(), threading.Event()

    def stuck() -> str:
        started.set()
        release.wait(30)
        return "late"

    task = asyncio.create_task(off_loop(stuck))
    async with asyncio.timeout(10):
        while not started.is_set():
            await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # returns although the thread is still blocked
    assert not release.is_set()
    release.set()  # let the daemon thread end; its result is dropped
