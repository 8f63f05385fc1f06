"""A candidate registryd.yaml for ``POST /debug/preview``: which registry sections it
changes, and the shards they would hold, worked out off to the side.

:func:`compare_sections` (pure) compares the candidate's ``registries:`` list with the
sections the daemon runs from its registryd.yaml (registries made from flags, such as
``configDir``, are not sections and stay as they are).  :class:`ConfigPreview` turns
the result into :class:`~registryd.web.candidates.CandidateRegistries`:

* a removed section: its shard is removed;
* a section whose type and settings are the same but whose ``priority`` or ``export``
  differs: the shard keeps what it holds and is merged with the new ones;
* any other change, or a new section: the candidate adapter is built with the candidate
  settings (:func:`registryd.daemon.plugins.create_adapter`, as at start) and its
  ``watch()`` iterated until its first full state (a ``Replace``); a failing run is
  started again after a short backoff, all within the request's timeout.  Then the
  generator is closed (or its task cancelled), which closes what it opened, as when the
  supervisor stops a registry.  A section without a first state in time keeps the
  state it has now (none, for a new one) and is a warning naming its last error.
  At most :data:`MAX_RUNS` candidate adapters run for one preview, side by side.

Nothing here touches the store, the running adapters or the supervisor; the candidate
adapters are the preview's own and are gone when it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registryd.adapter import AdapterContext, ConfigError, Problems, Replace, describe_error
from registryd.base.logs import clip
from registryd.daemon.config import RegistryConfig, parse_registries, with_defaults
from registryd.daemon.plugins import adapter_type, create_adapter
from registryd.model import ShardKey
from registryd.settings import redact
from registryd.web.candidates import CandidateRegistries

__all__ = ["ConfigPreview", "SectionChange", "compare_sections", "first_state"]

log = logging.getLogger("registryd.web")

RETRY: tuple[float, ...] = (0.5, 1, 2, 3, 5)  # seconds between runs of a failing candidate
MAX_RUNS = 64  # candidate registries one preview may run (each is an adapter of its own)
_ERROR_CHARS = 300  # of the last error in a warning
_VALUE_CHARS = 300  # of a setting's value in the answer


@dataclass(frozen=True, slots=True, kw_only=True)
class SectionChange:
    """One registry section, running (``old``) and in the candidate (``new``): a side is
    None where the section is not."""

    name: str
    old: RegistryConfig | None
    new: RegistryConfig | None

    @property
    def status(self) -> str:
        """``added``, ``removed``, ``changed`` or ``unchanged``."""
        if self.old is None:
            return "added"
        if self.new is None:
            return "removed"
        return "unchanged" if self.old == self.new else "changed"

    @property
    def same_content(self) -> bool:
        """Whether both sides build the same adapter (type and settings), so that only
        how the shard is merged (priority, export) may differ."""
        return (
            self.old is not None
            and self.new is not None
            and self.old.type == self.new.type
            and self.old.settings == self.new.settings
        )

    def differences(self) -> dict[str, Any]:
        """What differs, ``{key: {"old", "new"}}`` (``type``, ``priority``, ``export``
        and each setting; absent: None), values redacted as every debug view shows
        settings (:func:`registryd.settings.redact`) and strings cut to 300 characters."""
        if self.old is None or self.new is None:
            return {}
        old, new = _described(self.old), _described(self.new)
        return {
            key: {"old": old.get(key), "new": new.get(key)}
            for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)
        }

    def describe(self) -> dict[str, Any]:
        """The answer's entry of this section (JSON-ready, secrets redacted)."""
        reg = self.new or self.old
        assert reg is not None
        found: dict[str, Any] = {"type": reg.type, "status": self.status}
        if self.status == "changed":
            found["changed"] = self.differences()
        return found


def _described(reg: RegistryConfig) -> dict[str, Any]:
    shown: dict[str, Any] = redact(dict(reg.settings), clip_at=_VALUE_CHARS)
    shown.update(type=reg.type, priority=reg.priority, export=reg.export)
    return shown


def compare_sections(
    running: Sequence[RegistryConfig], candidate: Sequence[RegistryConfig], *, only: str = ""
) -> list[SectionChange]:
    """Every section of ``running`` and ``candidate`` by name (``only``: that one),
    in name order.  ConfigError when ``only`` is in neither."""
    old = {r.name: r for r in running}
    new = {r.name: r for r in candidate}
    names = sorted(old.keys() | new.keys())
    if only:
        if only not in names:
            raise ConfigError(
                f"no registry {only!r} in the candidate nor in the running configuration"
            )
        names = [only]
    return [SectionChange(name=n, old=old.get(n), new=new.get(n)) for n in names]


def _priority(reg: RegistryConfig) -> int:
    return reg.priority if reg.priority is not None else adapter_type(reg.type).default_priority


def _export(reg: RegistryConfig) -> bool:
    return reg.export if reg.export is not None else adapter_type(reg.type).default_export


def _key(reg: RegistryConfig) -> ShardKey:
    return ShardKey(reg.type, reg.name)


async def first_state(
    reg: RegistryConfig,
    context: AdapterContext,
    *,
    timeout: float,
    retry: Sequence[float] = RETRY,
    sleep: Any = asyncio.sleep,
) -> Replace | str:
    """The first full state of a new adapter for ``reg``, or why there is none within
    ``timeout`` seconds (``registry NAME: no first state within Ns: <last error>``).
    The adapter is closed either way (see the module docstring)."""
    last = "no error reported"

    async def attempts() -> Replace:
        nonlocal last
        for attempt in itertools.count():
            try:
                adapter = create_adapter(reg, context)
                updates = adapter.watch()
                async with contextlib.aclosing(updates):  # type: ignore[type-var]
                    async for update in updates:
                        if isinstance(update, Replace):
                            return update
                        if isinstance(update, Problems) and update.errors:
                            message = next(iter(update.errors.values()))
                            last = clip(" ".join(message.split()), _ERROR_CHARS, escaped=False)
                last = "watch() ended without a full state"
            except ConfigError as exc:  # settings that can never work: no retry
                last = str(exc)
                raise
            except Exception as exc:
                last = describe_error(exc, _ERROR_CHARS)
            await sleep(retry[min(attempt, len(retry) - 1)])
        raise AssertionError("unreachable")  # pragma: no cover

    try:
        return await asyncio.wait_for(attempts(), timeout)
    except (TimeoutError, ConfigError):
        return f"registry {reg.name}: no first state within {timeout:g}s: {last}"


class ConfigPreview:
    """:class:`~registryd.web.candidates.RegistryCandidates` for a daemon running
    ``running`` (its registries, those from flags included) with ``defaults`` of each
    type's settings (:attr:`registryd.daemon.config.Settings.registry_defaults`) and
    only the registry ``types`` of ``--registries`` (lower case; empty: all): a
    candidate section of another type is left out, as the daemon leaves it out."""

    def __init__(
        self,
        *,
        running: Sequence[RegistryConfig],
        defaults: Mapping[str, Mapping[str, Any]],
        context: AdapterContext,
        types: frozenset[str] = frozenset(),
        retry: Sequence[float] = RETRY,
    ) -> None:
        self._sections = [r for r in running if r.origin is not None]
        self._from_flags = {r.name for r in running if r.origin is None}
        self._defaults = defaults
        self._context = context
        self._types = types
        self._retry = retry

    def parse(self, *, path: str, content: bytes) -> list[RegistryConfig]:
        """The candidate's sections, checked as at start (each adapter's factory reads
        its settings); ConfigError with the text ``registryd validate`` gives."""
        registries = with_defaults(parse_registries(content, Path(path)), self._defaults)
        if self._types:
            registries = [r for r in registries if r.type.lower() in self._types]
        for reg in registries:
            if reg.name in self._from_flags:
                taken = f"registry name {reg.name!r} is taken by a flag; rename that registry"
                raise ConfigError(reg.where(taken))
            create_adapter(reg, self._context)
        return registries

    async def candidate(
        self, *, path: str, content: bytes, registry: str, timeout: float
    ) -> CandidateRegistries:
        sections = compare_sections(
            self._sections, self.parse(path=path, content=content), only=registry
        )
        changes: dict[ShardKey, Replace | None] = {}
        priorities: dict[ShardKey, int] = {}
        exported: dict[ShardKey, bool] = {}
        runs: dict[str, RegistryConfig] = {}
        for section in sections:
            old, new = section.old, section.new
            if section.status == "unchanged":
                continue
            if new is None:
                assert old is not None
                changes[_key(old)] = None
            elif section.same_content:
                priorities[_key(new)], exported[_key(new)] = _priority(new), _export(new)
            else:
                runs[section.name] = new
        if len(runs) > MAX_RUNS:
            raise ConfigError(
                f"the candidate adds or changes {len(runs)} registries; a preview runs at most "
                f"{MAX_RUNS}: name one with --registry, or preview it in parts"
            )
        found = await asyncio.gather(
            *(
                first_state(reg, self._context, timeout=timeout, retry=self._retry)
                for reg in runs.values()
            )
        )
        warnings = []
        described = {s.name: s.describe() for s in sections}
        for (name, reg), state in zip(runs.items(), found, strict=True):
            if isinstance(state, str):
                warnings.append(state)
                described[name]["firstState"] = False
                continue
            described[name]["firstState"] = True
            old = next(s.old for s in sections if s.name == name)
            if old is not None and _key(old) != _key(reg):  # another type: another shard
                changes[_key(old)] = None
            changes[_key(reg)] = state
            priorities[_key(reg)], exported[_key(reg)] = _priority(reg), _export(reg)
        return CandidateRegistries(
            changes=changes,
            priorities=priorities,
            exported=exported,
            registries=described,
            warnings=tuple(warnings),
        )
