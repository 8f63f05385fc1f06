"""Adapter discovery through the ``registryd.adapters`` entry-point group.

The built-in adapters register through the same group as third-party plugins, so the
``type:`` of a registry in registryd.yaml is always an entry-point name.  What registryd
knows of a registry type besides its factory (its default merge priority, its log scope
and that scope's description) comes from the factory too (:class:`AdapterType`, read by
:func:`type_of` from the optional attributes :class:`registryd.adapter.AdapterFactory`
documents), so that no central table lists the built-in types and a plugin has the
same say over its own as they have.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, cast

from registryd.adapter import Adapter, AdapterContext, AdapterFactory
from registryd.errors import ConfigError
from registryd.registry.types import DEFAULT_PRIORITY, AdapterType, type_of

if TYPE_CHECKING:
    from registryd.daemon.config import RegistryConfig

__all__ = [
    "DEFAULT_PRIORITY",
    "GROUP",
    "AdapterType",
    "adapter_type",
    "adapter_types",
    "available",
    "create_adapter",
    "load_factory",
    "require",
    "type_of",
]

GROUP = "registryd.adapters"


def adapter_type(kind: str) -> AdapterType:
    """Installed registry type ``kind``.  One that is not installed, fails to load or
    declares malformed attributes has the defaults of :func:`type_of`: its registries
    serve nothing until that is fixed, and building their adapter
    (:func:`create_adapter`) reports why."""
    try:
        return type_of(kind, load_factory(kind, registry=kind))
    except ConfigError:
        return type_of(kind, None)


def adapter_types() -> Iterator[AdapterType]:
    """Every installed registry type, loaded one by one as the iteration asks (loading
    them all imports every adapter: ask only when a core scope does not answer)."""
    for kind in available():
        yield adapter_type(kind)


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


def require(reg: RegistryConfig) -> None:
    """Raise :class:`ConfigError` (naming the registry and where it is defined) unless
    the adapter type of ``reg`` is installed.  Cheap: nothing is imported (a typo in the
    config file is caught at start)."""
    try:
        _entry_point(reg.type, reg.name)
    except ConfigError as exc:
        raise ConfigError(reg.where(str(exc))) from None


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
    I/O).  Every error is a :class:`ConfigError` naming the registry instance, and where
    it is defined (:attr:`RegistryConfig.origin`: registryd.yaml's name and line)."""
    try:
        factory = load_factory(reg.type, registry=reg.name)
    except ConfigError as exc:
        raise ConfigError(reg.where(str(exc))) from exc
    try:
        type_of(reg.type, factory)
        return factory(name=reg.name, settings=reg.settings, context=context)
    except ConfigError as exc:
        message = str(exc)
        if repr(reg.name) not in message:
            message = f"registry {reg.name!r} ({reg.type}): {message}"
        raise ConfigError(reg.where(message)) from exc
    except Exception as exc:
        raise ConfigError(
            reg.where(
                f"registry {reg.name!r} ({reg.type}): bad settings: {type(exc).__name__}: {exc}"
            )
        ) from exc
