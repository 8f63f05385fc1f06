"""registryd wired in-process on loopback ports: the settings (:func:`loopback_settings`)
and the running app with one memory registry (:class:`Harness`; the ``harness`` fixture
of tests/conftest.py starts one)."""

from __future__ import annotations

import asyncio

from registryd.daemon.app import App
from registryd.daemon.config import Settings
from registryd.testing import MemoryAdapter
from registryd.xds.addresses import Address

__all__ = ["Harness", "loopback_settings"]


class Harness:
    """A running in-process registryd with one memory registry named ``mem``."""

    def __init__(self, app: App, memory: MemoryAdapter) -> None:
        self.app = app
        self.memory = memory

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.app.grpc_port}"

    def push(self) -> None:
        """Push whatever is pending now instead of waiting for the debounce."""
        self.app.push.push_now()

    async def settle(self) -> None:
        """Push once the registry has applied every change made to ``memory``: they reach
        the store through the registry's task, so a push right after ``memory.set`` may
        not have them yet (and a later push would send them again)."""
        for _ in range(10_000):
            if not self.memory.pending:
                self.push()
                return
            await asyncio.sleep(0)
        raise AssertionError("the registry task never took the memory registry's changes")


def loopback_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "grpc_addr": Address("127.0.0.1", 0),
        "http_addr": Address("127.0.0.1", 0),
        "monitoring_addr": Address("127.0.0.1", 0),
        "secure_grpc_addr": Address("127.0.0.1", 0),
        "debounce_after": 0.01,
        "debounce_max": 1.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
