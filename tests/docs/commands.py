"""The shell commands of the documentation, as a reader would type them.

:func:`documented` reads README.md and every ``docs/**/*.md`` and yields each command of
their fenced ``sh``, ``bash``, ``shell`` and ``console`` blocks: a logical line of a
``sh`` block (continued by a trailing backslash or an open quote, with the body of a
here-document attached) or a ``$ `` line of a ``console`` block with the output shown
under it.  Each command is split into its pipeline and ``&&``/``;`` segments, each
segment a list of words with comments removed.  Nothing is run here.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
SEPARATORS = frozenset({"&&", "||", "|", ";"})
_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
_HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")
# a code span in prose that starts like one of this repository's own commands
_INLINE = re.compile(
    r"`((?:\.venv/bin/)?(?:python3? -m (?:bench|registryd|tests)\b"
    r"|registryd (?:--|(?:discovery|validate|proxy-status|proxy-config|version)\b))[^`]*)`"
)


@dataclass(frozen=True)
class Fence:
    """One fenced block: where it opens (1-based line), its language tag, its lines."""

    file: str
    line: int
    language: str
    body: tuple[str, ...]


@dataclass(frozen=True)
class Command:
    """One documented command: ``text`` as written (continuations joined), its
    ``segments`` (the words of each part of a pipeline or ``&&`` list; redirections are
    words too), and for a ``console`` block the ``output`` shown under it."""

    file: str
    line: int
    language: str
    text: str
    segments: tuple[tuple[str, ...], ...]
    output: str = ""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown page under docs/, in a stable order."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def fences(path: Path, root: Path = ROOT) -> Iterator[Fence]:
    """Every fenced block of ``path`` (indented ones too, e.g. inside a list item)."""
    name = str(path.relative_to(root))
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, marker, language = opening.groups()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(marker):
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        yield Fence(name, i + 1, language, tuple(body))
        i = j + 1


def split_words(text: str) -> tuple[tuple[str, ...], ...]:
    """``text`` as shell words, comments dropped, split at ``&&``, ``||``, ``|``, ``;``.

    Raises ValueError for text the shell would not accept either (an open quote)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    segments: list[tuple[str, ...]] = []
    current: list[str] = []
    for word in lexer:
        if word in SEPARATORS:
            segments.append(tuple(current))
            current = []
        else:
            current.append(word)
    segments.append(tuple(current))
    return tuple(s for s in segments if s)


def _sh_commands(fence: Fence) -> Iterator[Command]:
    lines = fence.body
    i = 0
    while i < len(lines):
        start = i
        text = lines[i]
        i += 1
        while True:
            if text.endswith("\\") and i < len(lines):
                text = text[:-1] + " " + lines[i].strip()
                i += 1
                continue
            try:
                segments = split_words(text)
            except ValueError:  # an open quote: the command goes on on the next line
                if i >= len(lines):
                    raise ValueError(f"{fence.file}:{fence.line + 1 + start}: open quote") from None
                text += "\n" + lines[i]
                i += 1
                continue
            break
        heredoc = _HEREDOC.search(text)
        if heredoc is not None:  # the body belongs to the command, up to its terminator
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                i += 1
            i += 1
        if segments:
            yield Command(fence.file, fence.line + 1 + start, fence.language, text, segments)


def _console_commands(fence: Fence) -> Iterator[Command]:
    lines = fence.body
    starts = [n for n, line in enumerate(lines) if line.startswith("$ ")]
    for k, n in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        text = lines[n][2:]
        output = "\n".join(lines[n + 1 : end]).rstrip("\n")
        yield Command(fence.file, fence.line + 1 + n, "console", text, split_words(text), output)


def documented(root: Path = ROOT) -> list[Command]:
    """Every command of every shell block of the documentation."""
    found: list[Command] = []
    for path in doc_files(root):
        for fence in fences(path, root):
            if fence.language == "console":
                found.extend(_console_commands(fence))
            elif fence.language in SHELL_LANGUAGES:
                found.extend(_sh_commands(fence))
    return found


def inline(root: Path = ROOT) -> list[Command]:
    """The code spans of the prose (outside fenced blocks) that are one of this
    repository's commands (``registryd …``, ``python -m bench.…``), often a synopsis
    (``[--files N]``) or a part (``registryd validate --config``).  ``segments`` holds
    the span's words, unsplit: placeholders such as ``{a|b}`` are not shell."""
    found: list[Command] = []
    for path in doc_files(root):
        inside = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _FENCE.match(line):
                inside = not inside
            elif not inside:
                for span in _INLINE.findall(line):
                    name = str(path.relative_to(root))
                    found.append(Command(name, number, "inline", span, (tuple(span.split()),)))
    return found
