"""How the ServiceEntry adapter reads its tree: which events need a rescan, and files
that are still being written."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from registryd.adapter import Problems, Replace, Upsert
from registryd.adapters.serviceentry import tree as tree_module
from tests.adapters import slow_writer
from tests.adapters.feed import Feed
from tests.support.yaml_docs import entry


def age(path: Path, seconds: float) -> None:
    """Make ``path`` look last modified ``seconds`` ago."""
    then = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(then, then))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "team").mkdir()
    for name in ("a.yaml", "team/b.yaml"):
        (tmp_path / name).write_text(entry(f"{Path(name).stem}.example", "10.0.0.1"))
    return tmp_path


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records every full scan of a tree."""
    calls: list[str] = []
    real = tree_module.scan_tree

    def counting(root: str, **options: bool) -> tree_module.Scan:
        calls.append(root)
        return real(root, **options)

    monkeypatch.setattr(tree_module, "scan_tree", counting)
    yield calls


def edit(path: Path, text: str) -> str:
    path.write_text(text)
    age(path, 1)  # written completely, a while ago
    return str(path)


def test_file_events_read_just_those_files(root: Path, scans: list[str]) -> None:
    tree = tree_module.FileTree(str(root))
    assert tree.refresh() and len(scans) == 1
    tree.table.model()
    touched = edit(root / "team" / "b.yaml", entry("b.example", "10.0.0.2"))
    assert tree.refresh({touched, str(root / ".b.yaml.tmp"), str(root / "notes.txt")})
    assert [e.address for e in tree.table.model().endpoints["b.example"]] == ["10.0.0.2"]
    assert tree.table.changed == {"b.example"}
    (root / "c.yaml").write_text(entry("c.example"))
    age(root / "c.yaml", 1)
    (root / "a.yaml").unlink()
    assert tree.refresh({str(root / "c.yaml"), str(root / "a.yaml")})
    assert set(tree.table.model().services) == {"b.example", "c.example"}
    assert len(scans) == 1  # none of it needed a rescan


def new_directory(root: Path) -> set[str]:
    (root / "new").mkdir()
    (root / "new" / "d.yaml").write_text(entry("d.example"))
    return {str(root / "new" / "d.yaml")}  # in a directory never scanned


def new_symlink(root: Path) -> set[str]:
    (root / "link.yaml").symlink_to(root / "team" / "b.yaml")
    return {str(root / "link.yaml")}


def directory_event(root: Path) -> set[str]:
    (root / "team" / "b.yaml").rename(root / "team" / "c.yaml")
    return {str(root / "team")}  # e.g. its permissions changed


def resync(root: Path) -> set[str]:
    (root / "team" / "b.yaml").rename(root / "team" / "c.yaml")
    return set()  # the watcher's timeout after a quiet period: no path at all


@pytest.mark.parametrize("change", [new_directory, new_symlink, directory_event, resync])
def test_other_events_rescan_the_tree(
    root: Path, scans: list[str], change: Callable[[Path], set[str]]
) -> None:
    tree = tree_module.FileTree(str(root))
    tree.refresh()
    tree.table.model()
    touched = change(root)
    for path in root.rglob("*.yaml"):
        age(path, 1)
    tree.refresh(touched)
    assert len(scans) == 2
    fresh = tree_module.FileTree(str(root))
    fresh.refresh()
    assert tree.table.model() == fresh.table.model()
    assert sorted(tree.table.sources) == sorted(fresh.table.sources)


def test_symlinked_files_and_an_old_scan_always_rescan(root: Path, scans: list[str]) -> None:
    tree = tree_module.FileTree(str(root), resync=60)
    tree.refresh()
    touched = edit(root / "a.yaml", entry("a.example", "10.0.0.3"))
    tree.refresh({touched})
    assert len(scans) == 1
    tree.scanned_at -= 60
    tree.refresh({touched})
    assert len(scans) == 2
    (root / "link.yaml").symlink_to(root / "team" / "b.yaml")
    tree.refresh({str(root / "link.yaml")})
    assert len(scans) == 3
    tree.refresh({edit(root / "a.yaml", entry("a.example", "10.0.0.4"))})
    tree.refresh({str(root / ".hidden")})
    assert len(scans) == 5  # a hidden entry may be what a symlink points through


def test_a_file_written_just_now_is_read_once_left_alone(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tree_module.FileTree(str(root))
    tree.refresh()
    tree.table.model()
    path = root / "a.yaml"
    path.write_text(entry("a.example", "10.0.0.5"))
    assert not tree.refresh({str(path)})
    assert list(tree.unsettled) == [str(path)]
    age(path, 1)
    assert tree.refresh(set())  # put-off files are read with any later batch
    assert tree.unsettled == {}
    path.write_text(entry("a.example", "10.0.0.6"))
    assert not tree.refresh({str(path)})
    tree.settle_max = 0  # it kept changing for too long
    assert tree.refresh({str(path)})
    assert [e.address for e in tree.table.model().endpoints["a.example"]] == ["10.0.0.6"]
    path.unlink()
    assert tree.refresh({str(path)}) and tree.unsettled == {}


async def test_a_file_written_in_chunks_is_read_once_complete(root: Path) -> None:
    addresses = [f"10.0.1.{i}" for i in range(1, 41)]
    lines = entry("a.example", *addresses).splitlines(keepends=True)  # every prefix is valid
    chunks = ["".join(lines[i : i + 8]) for i in range(0, len(lines), 8)]
    wall = slow_writer.wall_clock()
    feed = Feed(slow_writer.adapter(root, wall))
    try:
        assert isinstance(await feed.next(), Replace)
        assert isinstance(await feed.next(), Problems)
        upsert = await slow_writer.write_slowly(feed, wall, root / "a.yaml", chunks)
        assert isinstance(upsert, Upsert)
        assert [e.address for e in upsert.endpoints] == addresses
    finally:
        await feed.close()


def test_a_good_file_is_loaded_and_validated_once(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading a file whose documents are all good parses its YAML and validates each
    document once (the table takes what the reading parsed), and the table holds what
    parsing the file on its own gives; a file with a broken document still works."""
    from registryd.adapters.serviceentry import documents, schema

    loads: list[int] = []
    real_load = documents.load_documents

    def counting(data: bytes | str, *args: object) -> list[object]:
        loads.append(1)
        return real_load(data, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(documents, "load_documents", counting)
    monkeypatch.setattr(schema, "load_documents", counting)
    text = entry("b.example", "10.0.0.2") + "---\n" + entry("c.example", "10.0.0.3")
    path = edit(root / "team" / "b.yaml", text)
    tree = tree_module.FileTree(str(root))
    loads.clear()
    assert tree.take(path, text.encode())
    assert len(loads) == 1
    held = tree.table._files.get(path)
    assert held == schema.parse_file(text.encode(), path)

    broken = entry("b.example", "10.0.0.9") + "---\nkind: ServiceEntry\nspec: 3\n"
    assert tree.take(path, broken.encode())
    assert [e.address for e in tree.table.model().endpoints["b.example"]] == ["10.0.0.9"]
