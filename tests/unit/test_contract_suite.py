"""The contract suite itself: it must not hide an adapter's broken clean-up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from registryd.adapter import Adapter, Replace, Update
from registryd.testing.contract import AdapterContract
from tests.unit.factories import svc


class CleanupFails:
    """A correct adapter except that closing its watch() raises."""

    async def watch(self) -> AsyncIterator[Update]:
        try:
            yield Replace(services=(svc("alpha.example"),))
            while True:
                yield Replace(services=(svc("alpha.example"),))
        finally:
            raise OSError("socket close failed")


class Contract(AdapterContract):
    timeout = 5.0

    async def create(self) -> Adapter:
        return CleanupFails()

    async def add_service(self, name: str) -> str:
        return f"{name}.example"


def test_an_error_from_aclose_fails_the_contract() -> None:
    with pytest.raises(AssertionError, match=r"aclose\(\) of watch\(\) raised OSError"):
        Contract().test_first_update_is_the_full_state()
