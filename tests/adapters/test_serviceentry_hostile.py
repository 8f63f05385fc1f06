"""Hostile and broken files in a watched directory: each one is that file's error, what
is parsed and shown is bounded, and a later good edit still reaches the registry."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from registryd.adapter import AdapterContext, ConfigError, Problems, Replace, Upsert
from registryd.adapters.serviceentry import ServiceEntryAdapter
from registryd.adapters.serviceentry import tree as tree_module
from registryd.adapters.serviceentry.tree import OUTSIDE
from registryd.adapters.serviceentry.yamlsafe import DEFAULT_LIMITS, MAX_MESSAGE
from tests.adapters import slow_writer
from tests.adapters.feed import Feed
from tests.support.yaml_docs import entry

LOL = "[" + ",".join(["lol"] * 9) + "]"
BOMB = "\n".join(
    [f"a: &a {LOL}"]
    + [
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
)


def adapter(path: Path, **settings: Any) -> ServiceEntryAdapter:
    return ServiceEntryAdapter(
        name="files", settings={"path": str(path), **settings}, context=AdapterContext()
    )


def replace_file(path: Path, text: str | bytes) -> None:
    """Write a temporary file and rename it over ``path`` (read at once, no settling)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(text.encode() if isinstance(text, str) else text)
    os.replace(temporary, path)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "entries"
    directory.mkdir()
    (directory / "a.yaml").write_text(entry("a.example", "10.0.0.1"))
    return directory


@pytest.fixture
async def feed(root: Path) -> AsyncIterator[Feed]:
    started = Feed(adapter(root))
    try:
        assert isinstance(await started.next(), Replace)
        assert (await started.expect(Problems)).errors == {}
        yield started
    finally:
        await started.close()


async def poisoned(feed: Feed, path: Path, text: str | bytes) -> str:
    """Write ``text`` to ``path``; the error the registry then reports for it."""
    replace_file(path, text)
    problems = await feed.expect(Problems)
    assert list(problems.errors) == [str(path)], problems.errors
    return problems.errors[str(path)]


async def recovers(feed: Feed, path: Path, address: str) -> None:
    """A good edit of ``path`` after the poison is served, and its error is cleared."""
    replace_file(path, entry("a.example", address))
    upsert = await feed.expect(Upsert)
    assert [e.address for e in upsert.endpoints] == [address]
    assert (await feed.expect(Problems)).errors == {}


# -- item 1: any exception while parsing one file is that file's error -------------------


async def test_a_list_where_a_string_belongs_is_that_files_error(feed: Feed, root: Path) -> None:
    text = entry("a.example", "10.0.0.9").replace("networking.istio.io/v1", "[a]")
    error = await poisoned(feed, root / "a.yaml", text)
    assert "unsupported apiVersion ['a']" in error
    assert "its last good version stays in use" in error
    await recovers(feed, root / "a.yaml", "10.0.0.2")


async def test_nesting_deeper_than_the_recursion_limit(feed: Feed, root: Path) -> None:
    error = await poisoned(feed, root / "a.yaml", "x: " + "[" * 5000 + "]" * 5000)
    assert f"nested deeper than {DEFAULT_LIMITS.max_depth}" in error and "max_depth" in error
    await recovers(feed, root / "a.yaml", "10.0.0.2")


async def test_an_unexpected_exception_while_reading_is_that_files_error(
    feed: Feed, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tree_module.read_documents

    def exhausted(data: bytes | str, source: str, *args: Any) -> Any:
        if b"10.0.0.9" in (data if isinstance(data, bytes) else data.encode()):
            raise MemoryError()
        return real(data, source, *args)

    monkeypatch.setattr(tree_module, "read_documents", exhausted)
    error = await poisoned(feed, root / "a.yaml", entry("a.example", "10.0.0.9"))
    assert "cannot be read (MemoryError" in error
    await recovers(feed, root / "a.yaml", "10.0.0.2")


# -- item 2: size attacks ----------------------------------------------------------------


async def test_a_billion_laughs_file_is_rejected_at_once(feed: Feed, root: Path) -> None:
    assert len(BOMB) < 400
    error = await poisoned(feed, root / "bomb.yaml", BOMB)
    assert "max_expanded" in error and len(error) < 500
    (root / "bomb.yaml").unlink()
    assert (await feed.expect(Problems)).errors == {}
    await recovers(feed, root / "a.yaml", "10.0.0.2")


async def test_a_bomb_in_an_ignored_field_of_a_valid_entry(feed: Feed, root: Path) -> None:
    bomb = "\n".join("  " + line for line in BOMB.splitlines())
    text = entry("a.example", "10.0.0.9").replace("metadata:", f"x-bomb:\n{bomb}\nmetadata:")
    error = await poisoned(feed, root / "a.yaml", text)
    assert "max_expanded" in error
    await recovers(feed, root / "a.yaml", "10.0.0.2")


async def test_too_many_documents(feed: Feed, root: Path) -> None:
    text = "---\n{}\n" * (DEFAULT_LIMITS.max_documents + 1)
    error = await poisoned(feed, root / "many.yaml", text)
    assert f"more than {DEFAULT_LIMITS.max_documents} documents (max_documents)" in error


async def test_too_many_aliases(feed: Feed, root: Path) -> None:
    text = "a: &a x\nb: [" + ", ".join(["*a"] * (DEFAULT_LIMITS.max_aliases + 1)) + "]\n"
    error = await poisoned(feed, root / "aliases.yaml", text)
    assert "(max_aliases)" in error


async def test_a_file_over_the_size_limit(feed: Feed, root: Path) -> None:
    padding = "# " + "x" * DEFAULT_LIMITS.max_bytes + "\n"
    error = await poisoned(feed, root / "a.yaml", padding + entry("a.example", "10.0.0.9"))
    assert f"larger than {DEFAULT_LIMITS.max_bytes} bytes (max_bytes)" in error
    await recovers(feed, root / "a.yaml", "10.0.0.2")


async def test_error_messages_are_bounded(feed: Feed, root: Path) -> None:
    hosts = ", ".join(f"bad_host_{i}" for i in range(20000))
    text = entry("a.example", "10.0.0.9").replace("[a.example]", f"[{hosts}]")
    error = await poisoned(feed, root / "a.yaml", text)
    assert len(error) < MAX_MESSAGE + 100 and "more characters]" in error


async def test_documents_shown_are_bounded(feed: Feed, root: Path) -> None:
    note = "n" * 500_000
    text = entry("a.example", "10.0.0.9").replace("namespace: test}", "namespace: test, x: y}")
    text += f"  x-note: {note}\n"
    replace_file(root / "a.yaml", text)
    await feed.expect(Upsert)
    problems = await feed.expect(Problems)
    shown = problems.sources[str(root / "a.yaml")][0]["spec"]["x-note"]
    assert len(shown) < 5000 and shown.endswith("more characters]")


# -- item 3: symlinks --------------------------------------------------------------------


async def test_a_symlink_leaving_the_directory_is_not_followed(
    feed: Feed, root: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text(entry("secret.example", "10.9.9.9"))
    (root / "x.yaml").symlink_to(secret)
    problems = await feed.expect(Problems)
    assert problems.errors == {str(root / "x.yaml"): f"{root / 'x.yaml'}: {OUTSIDE}"}
    assert str(root / "x.yaml") not in problems.sources
    assert "secret" not in repr(problems)
    replace_file(root / "a.yaml", entry("a.example", "10.0.0.2"))
    assert [e.address for e in (await feed.expect(Upsert)).endpoints] == ["10.0.0.2"]


async def test_symlinks_leaving_the_directory_are_followed_when_allowed(
    root: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "outside.yaml"
    secret.write_text(entry("outside.example", "10.9.9.9"))
    (root / "x.yaml").symlink_to(secret)
    with pytest.raises(ConfigError, match="follow_symlinks_outside"):
        adapter(root, follow_symlinks_outside="yes")
    feed = Feed(adapter(root, follow_symlinks_outside=True))
    try:
        replace = await feed.expect(Replace)
        assert sorted(s.hostname for s in replace.services) == ["a.example", "outside.example"]
    finally:
        await feed.close()


async def test_symlinks_inside_the_directory_are_followed(feed: Feed, root: Path) -> None:
    (root / "data").mkdir()
    (root / "data" / "b.yaml").write_text(entry("b.example", "10.0.0.5"))
    (root / "link.yaml").symlink_to(root / "data" / "b.yaml")
    upsert = await feed.expect(Upsert)
    assert upsert.service.hostname == "b.example"


async def test_dangling_and_looping_symlinks_are_reported(feed: Feed, root: Path) -> None:
    (root / "dangling.yaml").symlink_to(root / "missing.yaml")
    (root / "loop.yaml").symlink_to(root / "loop.yaml")
    problems = await feed.expect(Problems)
    assert problems.errors == {
        str(root / "dangling.yaml"): f"{root / 'dangling.yaml'}: dangling symlink "
        "(its target does not exist)",
        str(root / "loop.yaml"): f"{root / 'loop.yaml'}: symlink loop",
    }
    (root / "dangling.yaml").unlink()
    (root / "loop.yaml").unlink()
    assert (await feed.expect(Problems)).errors == {}


async def test_only_files_of_entries_show_their_documents(feed: Feed, root: Path) -> None:
    text = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/bin/sh\n"
    replace_file(root / "passwd.yaml", text)
    problems = await feed.expect(Problems)
    error = problems.errors[str(root / "passwd.yaml")]
    assert "got a str" in error and "root:x" not in error and "daemon" not in error
    assert sorted(problems.sources) == [str(root / "a.yaml")]


# -- item 4: duplicate keys --------------------------------------------------------------


async def test_duplicate_mapping_keys_are_an_error(feed: Feed, root: Path) -> None:
    text = entry("a.example", "10.0.0.9") + "spec: {}\n"
    error = await poisoned(feed, root / "a.yaml", text)
    assert "duplicate key 'spec'" in error
    await recovers(feed, root / "a.yaml", "10.0.0.2")


# -- item 5: partial writes and broken documents -----------------------------------------


def test_settle_time_is_a_setting(root: Path) -> None:
    assert adapter(root).settle_time == tree_module.SETTLE_TIME
    assert adapter(root, settle_time=2).settle_time == 2
    with pytest.raises(ConfigError, match="settle_time"):
        adapter(root, settle_time=0)


async def test_a_slow_writer_is_read_only_once_done(root: Path) -> None:
    """Pieces written one by one, each prefix a valid file: only the whole is served."""
    addresses = [f"10.0.1.{i}" for i in range(1, 6)]
    lines = entry("a.example", *addresses).splitlines(keepends=True)
    pieces = ["".join(lines[:-5]), *lines[-5:]]
    wall = slow_writer.wall_clock()
    feed = Feed(slow_writer.adapter(root, wall))
    try:
        await feed.expect(Replace)
        await feed.expect(Problems)
        upsert = await slow_writer.write_slowly(feed, wall, root / "a.yaml", pieces)
        assert isinstance(upsert, Upsert)
        assert [e.address for e in upsert.endpoints] == addresses
    finally:
        await feed.close()


def documents(*texts: str) -> str:
    return "---\n".join(texts)


async def test_a_broken_document_keeps_its_last_good_version(feed: Feed, root: Path) -> None:
    path = root / "many.yaml"
    replace_file(path, documents(entry("b.example", "10.0.0.2"), entry("c.example", "10.0.0.3")))
    assert {(await feed.expect(Upsert)).service.hostname for _ in range(2)} == {
        "b.example",
        "c.example",
    }
    await feed.expect(Problems)
    broken_b = entry("b.example", "10.0.0.8").replace("hosts", "hostz")
    replace_file(path, documents(broken_b, entry("c.example", "10.0.0.4")))
    upsert = await feed.expect(Upsert)
    assert (upsert.service.hostname, [e.address for e in upsert.endpoints]) == (
        "c.example",
        ["10.0.0.4"],
    )
    problems = await feed.expect(Problems)
    error = problems.errors[str(path)]
    assert "document 1 (ServiceEntry test/b)" in error and "last good version" in error
    hosts = [d["spec"]["hosts"] for d in problems.sources[str(path)]]
    assert hosts == [["b.example"], ["c.example"]]
    replace_file(path, documents(entry("b.example", "10.0.0.7"), entry("c.example", "10.0.0.4")))
    upsert = await feed.expect(Upsert)
    assert [e.address for e in upsert.endpoints] == ["10.0.0.7"]
    assert (await feed.expect(Problems)).errors == {}
