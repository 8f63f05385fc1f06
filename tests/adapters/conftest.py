"""Fixtures shared by the adapter tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.adapters.feed import Feed


@pytest.fixture
async def feeds() -> AsyncIterator[list[Feed]]:
    """Feeds started by the test (it appends them), all closed at the end."""
    started: list[Feed] = []
    try:
        yield started
    finally:
        for feed in started:
            await feed.close()
