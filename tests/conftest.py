"""Shared fixtures: a registryd wired in-process on loopback ports
(:mod:`tests.support.harness`), and every ``registryd`` logger put back after a test."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from registryd.daemon.app import App
from registryd.daemon.config import RegistryConfig
from registryd.testing import MemoryAdapter
from tests.support.harness import Harness, loopback_settings


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
