"""What registryd knows of a registry type besides its factory: the merge priority of
its registries that set none, whether they are exported to istiod over MCP when they do
not say, and the log scope (and its description) its adapters log under.  Read from the
factory's optional attributes (:class:`registryd.adapter.AdapterFactory` documents them),
so that no central table lists the built-in types and a plugin has the same say over its
own as they have.  Pure: loading a factory is :mod:`registryd.daemon.plugins`' business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from registryd.base.logs import CORE_SCOPES
from registryd.errors import ConfigError

__all__ = ["DEFAULT_PRIORITY", "AdapterType", "defaults", "type_of"]

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
    default_export: bool = True
    log_scope: str
    log_description: str


def type_of(kind: str, factory: object) -> AdapterType:
    """Registry type ``kind`` as its ``factory`` declares it: the optional attributes
    ``default_priority`` (an int; default :data:`DEFAULT_PRIORITY`), ``log_scope`` (a
    lower-case name of letters, digits, ``-`` and ``_``; default ``kind``) and
    ``log_description`` (one line; default naming the type), ``default_export`` (a
    bool; default True).  A malformed attribute raises :class:`ConfigError` naming the
    type."""
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
    export = getattr(factory, "default_export", True)
    if not isinstance(export, bool):
        raise ConfigError(
            f"adapter {kind!r}: default_export must be true or false, got {export!r:.60}"
        )
    return AdapterType(
        name=kind,
        default_priority=priority,
        default_export=export,
        log_scope=scope,
        log_description=" ".join(description.split()),
    )


def defaults(kind: str) -> AdapterType:
    """Registry type ``kind`` as if its factory declared nothing."""
    return type_of(kind, None)
