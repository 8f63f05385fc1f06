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

import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, cast

from registryd.adapter import Adapter, AdapterContext, AdapterFactory, ConfigError
from registryd.logs import CORE_SCOPES

if TYPE_CHECKING:
    from registryd.config import RegistryConfig

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
DEFAULT_PRIORITY = 0  # the merge priority of a type that declares none: below the built-ins
_SCOPE = re.compile(r"[a-z0-9]([a-z0-9_-]*[a-z0-9])?")


@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterType:
    """An installed registry type as registryd uses it besides its factory: the merge
    priority of its registries that set none, and the log scope its adapters log under
    (logger ``registryd.<log_scope>``, where registryd logs their problems too) with
    that scope's description for ``/debug/logging``."""

    name: str
    default_priority: int = DEFAULT_PRIORITY
    log_scope: str
    log_description: str


def type_of(kind: str, factory: object) -> AdapterType:
    """Registry type ``kind`` as its ``factory`` declares it: the optional attributes
    ``default_priority`` (an int; default :data:`DEFAULT_PRIORITY`), ``log_scope`` (a
    lower-case name of letters, digits, ``-`` and ``_``; default ``kind``) and
    ``log_description`` (one line; default naming the type).  A malformed attribute
    raises :class:`ConfigError` naming the type."""
    priority = getattr(factory, "default_priority", DEFAULT_PRIORITY)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ConfigError(
            f"adapter {kind!r}: default_priority must be an integer, got {priority!r:.60}"
        )
    scope = getattr(factory, "log_scope", kind)
    if not isinstance(scope, str) or not _SCOPE.fullmatch(scope) or scope in CORE_SCOPES:
        raise ConfigError(
            f"adapter {kind!r}: log_scope must be a lower-case name of letters, digits, "
            f"'-' and '_' other than registryd's own ({', '.join(CORE_SCOPES)}), "
            f"got {scope!r:.60}"
        )
    description = getattr(factory, "log_description", f"The {kind} registry adapter.")
    if not isinstance(description, str) or not description.strip():
        raise ConfigError(
            f"adapter {kind!r}: log_description must be a non-empty string, got {description!r:.60}"
        )
    return AdapterType(
        name=kind,
        default_priority=priority,
        log_scope=scope,
        log_description=" ".join(description.split()),
    )


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
        type_of(reg.type, factory)
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
