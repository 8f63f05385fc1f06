"""YAML loading with limits: what a hostile or broken file may cost is bounded.  Pure.

Contract:

* :func:`load_documents` loads the ``---``-separated documents of one file with the safe
  loader (plain data only) after checking, in one pass over the parser's events (no tree
  is built for that, and the pass itself keeps no recursion), that the text stays within
  :class:`Limits`: bytes, documents, nesting depth, aliases, and the *expanded size*
  (characters of every scalar plus one per node, with every alias counted as a full copy
  of what it names: a "billion laughs" bomb is rejected by this count while it is still
  a few hundred bytes).  Only then is the text composed and constructed, which therefore
  cannot recurse deeper than ``max_depth`` nor allocate more than the expanded size.
* A problem with the whole file (not UTF-8, invalid YAML, a limit exceeded) raises
  :class:`FileProblem`, whose message says which limit and where.  A problem of one
  document (a duplicated mapping key) is returned in place of that document as a
  :class:`DocumentProblem`, so the other documents stay usable.
* :func:`shorten` and :func:`show` bound text and values that go into messages, logs
  and the debug port; :func:`bounded` does the same for loaded documents.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = [
    "DEFAULT_LIMITS",
    "DocumentProblem",
    "FileProblem",
    "Limits",
    "bounded",
    "load_documents",
    "shorten",
    "show",
]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"
MAX_MESSAGE = 2000  # characters of one error message
MAX_SHOWN = 65536  # characters of one document as shown on the debug port
MAX_STRING = 4096  # characters of one string as shown on the debug port
MAX_DISPLAY_DEPTH = 64  # nesting shown on the debug port


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What one file may hold; see docs/registries/serviceentry.md."""

    max_bytes: int = 1 << 20
    max_documents: int = 1000
    max_depth: int = 64
    max_aliases: int = 1000
    max_expanded: int = 4 << 20


DEFAULT_LIMITS = Limits()


class FileProblem(ValueError):
    """The file cannot be used at all; the message (without the file name) says why."""


@dataclass(frozen=True, slots=True)
class DocumentProblem:
    """One document that cannot be used; ``message`` says why."""

    message: str


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to about ``limit`` characters, with a marker saying how much is left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 80
_repr.maxlevel, _repr.maxlist, _repr.maxdict = 3, 5, 5


def show(value: Any) -> str:
    """A short ``repr`` of ``value`` for messages, however large or deep it is."""
    return _repr.repr(value)


def _mark(event: Any) -> str:
    mark = event.start_mark
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""


class _Budget:
    """Counts what the events of a file add up to; FileProblem once a limit is passed."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.documents = self.aliases = self.expanded = 0
        self.frames: list[list[Any]] = []  # [expanded size, anchor] per open collection
        self.anchors: dict[str, int] = {}  # anchor -> expanded size of what it names

    def event(self, event: Any) -> None:
        limits = self.limits
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            self.anchors.clear()
            if self.documents > limits.max_documents:
                plural = "" if limits.max_documents == 1 else "s"
                raise FileProblem(
                    f"more than {limits.max_documents} document{plural} (max_documents)"
                )
        elif isinstance(event, yaml.CollectionStartEvent):
            self._grow(1, event)
            self.frames.append([1, event.anchor])
            if len(self.frames) > limits.max_depth:
                raise FileProblem(
                    f"nested deeper than {limits.max_depth}{_mark(event)} (max_depth)"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            size, anchor = self.frames.pop()
            self._named(anchor, size)
            if self.frames:
                self.frames[-1][0] += size
        elif isinstance(event, yaml.ScalarEvent):
            self._leaf(1 + len(event.value), event.anchor, event)
        elif isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > limits.max_aliases:
                raise FileProblem(
                    f"more than {limits.max_aliases} aliases{_mark(event)} (max_aliases)"
                )
            self._leaf(self.anchors.get(event.anchor or "", 1), None, event)

    def _leaf(self, size: int, anchor: str | None, event: Any) -> None:
        self._grow(size, event)
        self._named(anchor, size)
        if self.frames:
            self.frames[-1][0] += size

    def _named(self, anchor: str | None, size: int) -> None:
        if anchor is not None:
            self.anchors[anchor] = size

    def _grow(self, size: int, event: Any) -> None:
        self.expanded += size
        if self.expanded > self.limits.max_expanded:
            raise FileProblem(
                f"expands to more than {self.limits.max_expanded} characters and nodes with "
                f"its aliases written out{_mark(event)} (max_expanded)"
            )


def _check(text: str, limits: Limits, loader: Any) -> None:
    """Walk the parser's events of ``text`` and enforce ``limits`` (see the module doc)."""
    budget = _Budget(limits)
    parser = loader(text)
    try:
        while parser.check_event():
            budget.event(parser.get_event())
    finally:
        parser.dispose()


class _NoDuplicates(yaml.constructor.SafeConstructor):
    """For the safe loaders: refuse mapping keys that appear twice in one mapping (``<<``
    merges may still be overridden, as YAML allows)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == _MERGE:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    known = key in seen
                except TypeError:  # unhashable: the base class says so
                    continue
                if known:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {show(key)}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc]


class _StrictLoader(_NoDuplicates, _Loader):  # type: ignore[misc,valid-type]
    pass


class _PyStrictLoader(_NoDuplicates, yaml.SafeLoader):
    pass


def _yaml_error(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = ", ".join(filter(None, (exc.context, exc.problem)))
        return f"invalid YAML{at}: {reason}"
    return f"invalid YAML: {exc}"


def load_documents(data: bytes | str, limits: Limits = DEFAULT_LIMITS) -> list[Any]:
    """The documents of ``data`` (empty ones included, as None), each a loaded value or
    a :class:`DocumentProblem`; :class:`FileProblem` if the file cannot be used."""
    size = len(data.encode() if isinstance(data, str) else data)
    if size > limits.max_bytes:
        raise FileProblem(f"file is larger than {limits.max_bytes} bytes (max_bytes)")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise FileProblem(f"not UTF-8 text: {exc}") from None
    try:
        _check(text, limits, _Loader)
        return _construct(text, _Loader)
    except yaml.YAMLError as exc:
        if _Loader is yaml.SafeLoader:
            raise FileProblem(_yaml_error(exc)) from None
    # libyaml is stricter in rare corners (e.g. [2001:db8::]); the pure-Python loader
    # decides, and its error is the one reported
    try:
        _check(text, limits, yaml.SafeLoader)
        return _construct(text, yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise FileProblem(_yaml_error(exc)) from None


def _construct(text: str, base: Any) -> list[Any]:
    strict: Any = _StrictLoader if base is _Loader else _PyStrictLoader
    loader = strict(text)
    documents: list[Any] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            try:
                documents.append(loader.construct_document(node))
            except yaml.constructor.ConstructorError as exc:
                loader.constructed_objects.clear()
                loader.recursive_objects.clear()
                loader.state_generators = []
                documents.append(DocumentProblem(_yaml_error(exc)))
    finally:
        loader.dispose()
    return documents


def bounded(value: Any, budget: int = MAX_SHOWN) -> Any:
    """``value`` (a loaded document) cut down to about ``budget`` characters for display:
    long strings end with a marker, collections end with a marker item once the budget
    is spent, and nesting stops at :data:`MAX_DISPLAY_DEPTH` (which also ends the
    cycles YAML anchors can make)."""
    return _bounded(value, [budget], 0)


def _bounded(value: Any, left: list[int], depth: int) -> Any:
    if isinstance(value, dict | list) and depth >= MAX_DISPLAY_DEPTH:
        return "... [nested too deep to show]"
    if isinstance(value, str):
        cut = value if len(value) <= MAX_STRING else shorten(value, MAX_STRING)
        cut = cut if len(cut) <= max(left[0], 0) else shorten(cut, max(left[0], 0))
        left[0] -= len(cut) + 1
        return cut
    left[0] -= 2
    if isinstance(value, dict):
        result: dict[Any, Any] = {}
        for index, (key, item) in enumerate(value.items()):
            if left[0] <= 0:
                result["..."] = f"[{len(value) - index} more entries]"
                break
            result[_bounded(key, left, depth + 1)] = _bounded(item, left, depth + 1)
        return result
    if isinstance(value, list):
        items: list[Any] = []
        for index, item in enumerate(value):
            if left[0] <= 0:
                items.append(f"... [{len(value) - index} more items]")
                break
            items.append(_bounded(item, left, depth + 1))
        return items
    left[0] -= 8
    return value
