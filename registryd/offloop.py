"""Work that must not hold the event loop, in a thread that never holds up shutdown.

Used by adapters (parsing a registry's content: re-exported as
:func:`registryd.adapter.off_loop`) and by :mod:`registryd.jsonbound`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["off_loop"]

T = TypeVar("T")


async def off_loop(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` run in a daemon thread of its own, for work that must not hold
    the event loop (parsing a registry's content).  Unlike :func:`asyncio.to_thread`,
    nothing waits for that thread: when the caller is cancelled (shutdown) this returns
    at once, and the daemon can exit while the thread is still busy; its result is then
    dropped.  ``function`` must therefore touch only state its caller owns."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        outcome: tuple[T | None, BaseException | None]
        try:
            outcome = (function(*args), None)
        except BaseException as exc:
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    threading.Thread(
        target=run, name=getattr(function, "__name__", "off-loop"), daemon=True
    ).start()
    return await future
