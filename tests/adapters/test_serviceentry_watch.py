"""The ServiceEntry adapter against a real directory: settings, first state, live changes."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from watchfiles import awatch

from registryd.adapter import (
    AdapterContext,
    ConfigError,
    Delete,
    Problems,
    Replace,
    Upsert,
)
from registryd.adapters.serviceentry import ServiceEntryAdapter
from registryd.adapters.serviceentry import adapter as watch_module
from registryd.adapters.serviceentry import tree as tree_module
from registryd.adapters.serviceentry.tree import is_candidate, scan_tree
from tests.adapters.feed import Feed as SharedFeed
from tests.support.yaml_docs import entry

WITHIN = 60.0  # seconds: a hang guard for every wait, never what a test asserts
T = TypeVar("T")


def adapter(path: Path | str, **settings: Any) -> ServiceEntryAdapter:
    return ServiceEntryAdapter(
        name="files", settings={"path": str(path), **settings}, context=AdapterContext()
    )


class Feed(SharedFeed):
    def __init__(self, source: ServiceEntryAdapter) -> None:
        super().__init__(source, WITHIN)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "entries"
    (root / "team").mkdir(parents=True)
    (root / "a.yaml").write_text(entry("a.example", "10.0.0.1"))
    (root / "team" / "b.yml").write_text(entry("b.example", "10.0.0.2"))
    return root


@pytest.fixture
async def feed(tree: Path) -> AsyncIterator[Feed]:
    started = Feed(adapter(tree))
    try:
        yield started
    finally:
        await started.close()


async def started(feed: Feed) -> Replace:
    replace = await feed.expect(Replace, timeout=5)
    problems = await feed.expect(Problems)
    assert problems.errors == {}
    return replace


def replace_file(path: Path, text: str) -> None:
    """Write like editors and ``kubectl cp`` do: a temporary file renamed over the old."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def addresses(update: Upsert) -> list[str]:
    return [e.address for e in update.endpoints]


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "setting 'path'"),
        ({"path": ""}, "setting 'path'"),
        ({"path": 3}, "setting 'path'"),
        ({"path": "x", "pth": "y"}, "unknown settings ['pth']"),
        ({"path": "x", "force_polling": "yes"}, "force_polling"),
        ({"path": "x", "resync_interval": 0}, "resync_interval"),
    ],
)
def test_bad_settings(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="registry 'files'") as raised:
        ServiceEntryAdapter(name="files", settings=settings, context=AdapterContext())
    assert message in str(raised.value)


def test_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert adapter("conf").path == str(tmp_path / "conf")


def test_scan_skips_hidden_and_temporary_files(tree: Path) -> None:
    (tree / ".hidden.yaml").write_text("x")
    (tree / ".git").mkdir()
    (tree / ".git" / "c.yaml").write_text("x")
    for name in ("#a.yaml#", "a.yaml~", "a.yaml.swp", "notes.txt", "4913"):
        (tree / name).write_text("x")
    (tree / "link.yaml").symlink_to(tree / "a.yaml")
    (tree / "dangling.yaml").symlink_to(tree / "missing.yaml")
    found = sorted(Path(p).relative_to(tree).as_posix() for p in scan_tree(str(tree)).files)
    assert found == ["a.yaml", "link.yaml", "team/b.yml"]
    assert is_candidate("x.yml") and not is_candidate(".x.yaml")


# -- the first state --------------------------------------------------------------------


async def test_first_update_is_the_full_state(feed: Feed, tree: Path) -> None:
    replace = await feed.expect(Replace, timeout=5)
    assert sorted(s.hostname for s in replace.services) == ["a.example", "b.example"]
    assert sorted(e.address for e in replace.endpoints) == ["10.0.0.1", "10.0.0.2"]
    problems = await feed.expect(Problems)
    assert problems.errors == {}
    assert sorted(problems.sources) == [str(tree / "a.yaml"), str(tree / "team" / "b.yml")]
    assert problems.sources[str(tree / "a.yaml")][0]["kind"] == "ServiceEntry"


async def test_a_deleted_broken_file_is_reported_as_removed(tree: Path) -> None:
    broken = tree / "broken.yaml"
    broken.write_text(entry("c.example", "10.0.0.3").replace("hosts", "hostz"))
    feed = Feed(adapter(tree))
    try:
        await feed.expect(Replace, timeout=5)
        assert list((await feed.expect(Problems)).errors) == [str(broken)]
        broken.unlink()
        problems = await feed.expect(Problems)
        assert problems.errors == {}
        assert problems.removed == (str(broken),)  # gone, not fixed: the store says so
    finally:
        await feed.close()


async def test_broken_file_at_start_is_reported_and_others_are_served(tree: Path) -> None:
    (tree / "broken.yaml").write_text(entry("c.example", "10.0.0.3").replace("hosts", "hostz"))
    feed = Feed(adapter(tree))
    try:
        replace = await feed.expect(Replace, timeout=5)
        assert sorted(s.hostname for s in replace.services) == ["a.example", "b.example"]
        problems = await feed.expect(Problems)
        assert list(problems.errors) == [str(tree / "broken.yaml")]
        assert "spec.hosts: required" in problems.errors[str(tree / "broken.yaml")]
    finally:
        await feed.close()


async def test_missing_directory_raises(tmp_path: Path) -> None:
    feed = Feed(adapter(tmp_path / "nowhere"))
    try:
        error = await feed.error()
        assert isinstance(error, FileNotFoundError)
        assert "nowhere" in str(error)
    finally:
        await feed.close()


async def test_a_file_instead_of_a_directory_raises(tmp_path: Path) -> None:
    (tmp_path / "file.yaml").write_text("")
    feed = Feed(adapter(tmp_path / "file.yaml"))
    try:
        assert isinstance(await feed.error(), NotADirectoryError)
    finally:
        await feed.close()


# -- live changes -----------------------------------------------------------------------


async def test_edit_yields_upsert(feed: Feed, tree: Path) -> None:
    await started(feed)
    (tree / "a.yaml").write_text(entry("a.example", "10.0.0.1", "10.0.0.9"))
    upsert = await feed.expect(Upsert)
    assert upsert.service.hostname == "a.example"
    assert addresses(upsert) == ["10.0.0.1", "10.0.0.9"]
    problems = await feed.expect(Problems)  # the documents in use changed
    assert problems.errors == {}


async def test_replace_by_rename_and_unchanged_content(feed: Feed, tree: Path) -> None:
    await started(feed)
    replace_file(tree / "team" / "b.yml", entry("b.example", "10.0.0.2"))  # same content
    replace_file(tree / "a.yaml", entry("a.example", "10.0.0.7"))
    upsert = await feed.expect(Upsert)  # nothing came for the unchanged file before this
    assert (upsert.service.hostname, addresses(upsert)) == ("a.example", ["10.0.0.7"])


async def test_delete_file_yields_delete(feed: Feed, tree: Path) -> None:
    await started(feed)
    (tree / "team" / "b.yml").unlink()
    assert await feed.expect(Delete) == Delete(hostname="b.example")
    problems = await feed.expect(Problems)
    assert str(tree / "team" / "b.yml") not in problems.sources


async def test_new_subdirectory_and_file(feed: Feed, tree: Path) -> None:
    await started(feed)
    (tree / "new" / "deeper").mkdir(parents=True)
    (tree / "new" / "deeper" / "c.yaml").write_text(entry("c.example", "10.0.0.3"))
    upsert = await feed.expect(Upsert)
    assert (upsert.service.hostname, addresses(upsert)) == ("c.example", ["10.0.0.3"])


async def test_a_hostname_defined_twice_is_a_warning(feed: Feed, tree: Path) -> None:
    await started(feed)
    (tree / "c.yaml").write_text(entry("a.example", "10.0.0.3"))
    upsert = await feed.expect(Upsert)
    assert addresses(upsert) == ["10.0.0.1", "10.0.0.3"]  # combined
    problems = await feed.expect(Problems)
    assert problems.errors == {}
    (warning,) = problems.warnings
    assert "host a.example is defined by" in warning
    assert "a.yaml" in warning and "c.yaml" in warning
    (tree / "c.yaml").unlink()
    assert addresses(await feed.expect(Upsert)) == ["10.0.0.1"]
    assert (await feed.expect(Problems)).warnings == ()


async def test_removed_subdirectory(feed: Feed, tree: Path) -> None:
    await started(feed)
    shutil.rmtree(tree / "team")
    assert await feed.expect(Delete) == Delete(hostname="b.example")


async def test_broken_edit_keeps_old_services_and_fix_clears_problem(
    feed: Feed, tree: Path
) -> None:
    await started(feed)
    path = tree / "a.yaml"
    path.write_text(entry("a.example", "10.0.0.1") + "  ports: [\n")
    problems = await feed.expect(Problems)  # no Delete or Upsert before it
    assert list(problems.errors) == [str(path)]
    assert str(path) in problems.errors[str(path)]
    assert "invalid YAML" in problems.errors[str(path)]
    assert str(path) in problems.sources  # the last good content is still in use

    path.write_text(entry("a.example", "not-an-ip"))
    problems = await feed.expect(Problems)
    assert "not an IP address" in problems.errors[str(path)]

    path.write_text(entry("a.example", "10.0.0.5"))
    upsert = await feed.expect(Upsert)
    assert addresses(upsert) == ["10.0.0.5"]
    problems = await feed.expect(Problems)
    assert problems.errors == {}


async def test_fix_back_to_the_same_content_only_clears_the_problem(feed: Feed, tree: Path) -> None:
    await started(feed)
    good = (tree / "a.yaml").read_text()
    (tree / "a.yaml").write_text("kind: [")
    assert (await feed.expect(Problems)).errors
    (tree / "a.yaml").write_text(good)
    assert (await feed.expect(Problems)).errors == {}


async def test_configmap_style_symlink_swap(tmp_path: Path) -> None:
    root = tmp_path / "mount"
    (root / "..v1").mkdir(parents=True)
    (root / "..v1" / "a.yaml").write_text(entry("a.example", "10.0.0.1"))
    (root / "..data").symlink_to("..v1")
    (root / "a.yaml").symlink_to("..data/a.yaml")
    feed = Feed(adapter(root))
    try:
        replace = await started(feed)
        assert [e.address for e in replace.endpoints] == ["10.0.0.1"]
        (root / "..v2").mkdir()
        (root / "..v2" / "a.yaml").write_text(entry("a.example", "10.0.0.2"))
        (root / "..data_tmp").symlink_to("..v2")
        os.replace(root / "..data_tmp", root / "..data")
        upsert = await feed.expect(Upsert)
        assert addresses(upsert) == ["10.0.0.2"]
    finally:
        await feed.close()


async def test_directory_removed_while_watching_raises(feed: Feed, tree: Path) -> None:
    await started(feed)
    shutil.rmtree(tree)
    error = await feed.error()
    assert isinstance(error, OSError | RuntimeError), error
    assert str(tree) in str(error)


# The watcher thread wakes every resync_interval when nothing changes: with an hour, a
# cancel or close that waited for it would hang (and meet the hang guard).
AN_HOUR = 3600


async def test_cancel_does_not_wait_for_the_watcher_and_releases_it(tree: Path) -> None:
    feed = Feed(adapter(tree, resync_interval=AN_HOUR))
    await started(feed)
    await feed.close()  # a hang guard only
    assert feed.task.cancelled()


async def test_closing_the_iterator_releases_the_watcher(tree: Path) -> None:
    updates = adapter(tree, resync_interval=AN_HOUR).watch()
    assert isinstance(await anext(updates), Replace)
    assert isinstance(await anext(updates), Problems)
    await asyncio.wait_for(updates.aclose(), WITHIN)  # type: ignore[attr-defined]


async def test_the_watcher_batches_changes_after_a_short_quiet_time(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How soon an edit shows is the watcher's step and debounce the adapter asks for."""
    asked: list[dict[str, Any]] = []

    def recording_awatch(*paths: Any, **options: Any) -> Any:
        asked.append(options)
        return awatch(*paths, **options)

    monkeypatch.setattr(watch_module, "awatch", recording_awatch)
    feed = Feed(adapter(tree, resync_interval=7))
    try:
        await started(feed)
    finally:
        await feed.close()
    (options,) = asked
    # a batch 1-2 steps after the last change, at most a debounce after the first
    assert options["step"] == watch_module.STEP_MS <= 50
    assert options["debounce"] == watch_module.DEBOUNCE_MS <= 1000
    assert options["rust_timeout"] == 7000  # a resync check every resync_interval


async def test_restarted_watch_starts_with_replace_again(tree: Path) -> None:
    source = adapter(tree)
    for _ in range(2):
        feed = Feed(source)
        await started(feed)
        await feed.close()


async def test_unreadable_file_is_reported_and_kept(
    feed: Feed, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await started(feed)
    path = tree / "a.yaml"
    real_open = open

    def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(tree_module, "open", guarded_open, raising=False)
    path.write_text(path.read_text())
    problems = await feed.expect(Problems)  # and no Delete before it
    assert problems.errors == {
        str(path): f"{path}: cannot read: Permission denied; its last good content stays in use"
    }
    assert str(path) in problems.sources
    monkeypatch.undo()
    path.write_text(path.read_text())
    assert (await feed.expect(Problems)).errors == {}
