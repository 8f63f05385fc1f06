"""Shared fixtures: a registryd wired in-process on loopback ports."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from registryd.app import App
from registryd.config import Address, RegistryConfig, Settings
from registryd.testing import MemoryAdapter


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


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    settings = loopback_settings(
        registries=(RegistryConfig(name="mem", type="memory", settings={}),)
    )
    app = App(settings)
    memory = app._adapters[0][1]
    assert isinstance(memory, MemoryAdapter)
    await app.start()
    try:
        yield Harness(app, memory)
    finally:
        await app.stop()


def _registryd_loggers() -> dict[str, logging.Logger]:
    found = {
        name: logger
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if name.startswith("registryd.") and isinstance(logger, logging.Logger)
    }
    found["registryd"] = logging.getLogger("registryd")
    return found


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    """Put every ``registryd`` logger's level, handlers and propagation back."""
    saved = {
        name: (logger.level, logger.handlers[:], logger.propagate)
        for name, logger in _registryd_loggers().items()
    }
    yield
    for name, logger in _registryd_loggers().items():
        level, handlers, propagate = saved.get(name, (logging.NOTSET, [], True))
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate
