"""What ``POST /debug/preview`` needs of a candidate registryd.yaml, as values.

The HTTP side knows nothing of how registries are configured or built: the daemon hands
it a :class:`RegistryCandidates` (:mod:`registryd.daemon.configpreview`) that turns a
candidate registryd.yaml into :class:`CandidateRegistries`, the shards it would change,
which :meth:`registryd.registry.store.StoreCopy.with_shards` merges off to the side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from registryd.adapter import Replace
from registryd.model import ShardKey

__all__ = ["DEFAULT_TIMEOUT", "MAX_TIMEOUT", "CandidateRegistries", "RegistryCandidates"]

DEFAULT_TIMEOUT = 30.0  # seconds a candidate registry has for its first full state
MAX_TIMEOUT = 120.0  # the most a request may ask for


@dataclass(frozen=True, slots=True, kw_only=True)
class CandidateRegistries:
    """What a candidate registryd.yaml changes in the store's shards: ``changes`` (a
    shard's first full state under the candidate settings, or ``None``: the shard is
    removed), the ``priorities`` and ``exported`` flags of shards added or merged
    differently, and for the answer ``registries`` (per registry section, JSON-ready,
    secrets redacted) and ``warnings`` (one line each)."""

    changes: Mapping[ShardKey, Replace | None] = field(default_factory=dict)
    priorities: Mapping[ShardKey, int] = field(default_factory=dict)
    exported: Mapping[ShardKey, bool] = field(default_factory=dict)
    registries: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


class RegistryCandidates(Protocol):
    async def candidate(
        self, *, path: str, content: bytes, registry: str, timeout: float
    ) -> CandidateRegistries:
        """The shards the registryd.yaml ``content`` (read from ``path`` on this
        machine: relative paths in it are taken from its directory) would change, for
        every registry section or only ``registry`` (``""``: all); a registry that needs
        its adapter run has ``timeout`` seconds for its first full state.  Raises
        ValueError (one line) when the candidate is not valid.  Changes nothing live."""
        ...
