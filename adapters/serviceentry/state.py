"""The files of a directory, each with its last good parse, converted incrementally.
Pure: no I/O.

:class:`FileTable` keeps the last good content of every file (a
:class:`~registryd.adapter.LastGood` table): a broken version of a file is reported and
its previous good version keeps being used.  It keeps the model up to date
incrementally: :meth:`FileTable.model` always equals :func:`~.convert.build_model` of the
files in use, but converts again only the ServiceEntries of changed files and those
whose workloadSelector matches a changed WorkloadEntry, and merges again only their
hostnames, which :attr:`FileTable.changed` lists for :func:`~.convert.diff_models`.
"""

from __future__ import annotations

from typing import Any

from registryd.adapter import LastGood

from .convert import Model, ModelBuilder
from .schema import InvalidConfig, ParsedFile, parse_file

__all__ = ["FileTable"]


class FileTable:
    """The files of a directory, each with its last good parse and its current error.

    ``load`` a file's content whenever it may have changed, ``fail`` it when it cannot be
    read, ``remove`` it when it is gone.  A file whose latest content is broken keeps its
    last good parse (a file that was never good contributes nothing) and has an entry in
    :attr:`errors`.  :meth:`model` converts what changed since its last call;
    :attr:`changed` then holds the hostnames that may differ from the previous result.
    """

    def __init__(self) -> None:
        self._files: LastGood[str, ParsedFile] = LastGood()
        self._last: dict[str, bytes | str] = {}
        self._builder = ModelBuilder()
        self._sources: dict[str, tuple[Any, ...]] | None = {}
        self.changed: frozenset[str] = frozenset()

    def load(self, source: str, data: bytes | str, parsed: ParsedFile | None = None) -> bool:
        """Parse the current content of ``source`` (``parsed``: ``data`` parsed already,
        as :func:`~.schema.parse_file` would); True if the usable state changed."""
        if self._last.get(source) == data:
            return False
        self._last[source] = data
        if parsed is None:
            try:
                parsed = parse_file(data, source)
            except InvalidConfig as exc:
                self._files.fail(source, str(exc))
                return False
        previous = self._files.good(source, parsed)
        if previous is not None and self._sources is not None:
            self._sources = {**self._sources, source: parsed.raw}  # keeps the order
        else:
            self._sources = None
        if previous is not None and previous.documents == parsed.documents:
            return False
        self._builder.set_file(source, parsed.documents)
        return True

    def fail(self, source: str, message: str) -> None:
        """``source`` exists but cannot be used (unreadable); keep its last good parse."""
        self._last.pop(source, None)
        self._files.fail(source, f"{source}: {message}")

    def remove(self, source: str) -> bool:
        """``source`` is gone; True if it contributed anything."""
        self._last.pop(source, None)
        if self._files.forget(source) is None:
            return False
        self._sources = None
        self._builder.set_file(source, ())
        return True

    def __contains__(self, source: object) -> bool:
        return source in self._files

    @property
    def known(self) -> set[str]:
        """Every file that is loaded or has an error."""
        return self._files.known()

    @property
    def errors(self) -> dict[str, str]:
        """Per file, why its current content is not used, and whether an older one is."""
        return {
            source: f"{message}; its last good content stays in use"
            if source in self._files.values
            else message
            for source, message in sorted(self._files.errors.items())
        }

    @property
    def sources(self) -> dict[str, tuple[Any, ...]]:
        """The raw documents in use, per file (the last good content of broken files).

        A new mapping whenever they changed, the same one otherwise; never modified.  The
        documents of a file that did not change are the same tuple as before, so a
        reader can redo its work for the changed files alone."""
        if self._sources is None:
            good = self._files.values
            self._sources = {s: good[s].raw for s in sorted(good)}
        return self._sources

    @property
    def notes(self) -> tuple[str, ...]:
        """The notes of the model as of the last :meth:`model`."""
        return self._builder.notes

    def model(self) -> Model:
        """The model of the files in use, equal to ``build_model`` of them."""
        self.changed = frozenset(self._builder.update())
        return self._builder.model()
