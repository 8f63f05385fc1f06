"""Adapter discovery through the ``registryd.adapters`` entry-point group.

The built-in adapters register through the same group as third-party plugins, so the
``type:`` of a registry in registryd.yaml is always an entry-point name.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, cast

from registryd.adapter import Adapter, AdapterContext, AdapterFactory, ConfigError

if TYPE_CHECKING:
    from registryd.config import RegistryConfig

__all__ = ["GROUP", "available", "create_adapter", "load_factory", "require"]

GROUP = "registryd.adapters"


def available() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def _entry_point(kind: str, registry: str) -> EntryPoint:
    found = [ep for ep in entry_points(group=GROUP) if ep.name == kind]
    if not found:
        raise ConfigError(
            f"registry {registry!r}: unknown type {kind!r} "
            f"(installed adapters: {', '.join(available()) or 'none'})"
        )
    return found[0]


def require(kind: str, *, registry: str) -> None:
    """Raise :class:`ConfigError` unless an adapter type ``kind`` is installed.  Cheap:
    nothing is imported (a typo in the config file is caught at start)."""
    _entry_point(kind, registry)


def load_factory(kind: str, *, registry: str) -> AdapterFactory:
    """Import and return the factory for adapter type ``kind``; errors name the registry
    instance."""
    entry = _entry_point(kind, registry)
    try:
        return cast(AdapterFactory, entry.load())
    except Exception as exc:
        raise ConfigError(
            f"registry {registry!r}: adapter {kind!r} failed to load: {type(exc).__name__}: {exc}"
        ) from exc


def create_adapter(reg: RegistryConfig, context: AdapterContext) -> Adapter:
    """Load the plugin and build one registry's adapter, as the daemon does at start and
    ``registryd validate`` does offline (a factory checks settings; only ``watch()`` does
    I/O).  Every error is a :class:`ConfigError` naming the registry instance."""
    factory = load_factory(reg.type, registry=reg.name)
    try:
        return factory(name=reg.name, settings=reg.settings, context=context)
    except ConfigError as exc:
        message = str(exc)
        if repr(reg.name) not in message:
            message = f"registry {reg.name!r} ({reg.type}): {message}"
        raise ConfigError(message) from exc
    except Exception as exc:
        raise ConfigError(
            f"registry {reg.name!r} ({reg.type}): bad settings: {type(exc).__name__}: {exc}"
        ) from exc
