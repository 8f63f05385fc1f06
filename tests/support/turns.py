"""Waiting on the event loop in tests, by turns rather than by time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["until"]


async def until(condition: Callable[[], bool], steps: int = 1000) -> None:
    """Let the loop run, one turn at a time, until ``condition`` holds; AssertionError
    after ``steps`` turns (a hang guard counted in turns, so load cannot make it flake)."""
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")
