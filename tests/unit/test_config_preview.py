"""A candidate registryd.yaml against the running sections (registryd.daemon.configpreview):
which sections are added, removed, changed (and how) or unchanged, and the shards that
makes, with the candidate adapters run off to the side."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from registryd.adapter import AdapterContext, ConfigError, Replace
from registryd.daemon.config import RegistryConfig, parse_registries
from registryd.daemon.configpreview import (
    MAX_RUNS,
    ConfigPreview,
    compare_sections,
    first_state,
)
from registryd.model import ShardKey
from registryd.settings import REDACTED
from tests.support.procs import free_port

ETCD = {"name": "main", "type": "etcd", "endpoints": ["127.0.0.1:2379"], "prefix": "/a/"}


def sections(path: Path, *items: dict[str, Any]) -> list[RegistryConfig]:
    text = yaml.safe_dump({"registries": list(items)})
    path.write_text(text)
    return parse_registries(text, path)


def entry(host: str, port: int) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": {"name": host.split(".")[0], "namespace": "default"},
            "spec": {
                "hosts": [host],
                "ports": [{"number": port, "name": "http", "protocol": "HTTP"}],
                "resolution": "STATIC",
                "endpoints": [{"address": "10.0.0.1"}],
            },
        }
    )


def test_sections_are_added_removed_changed_or_unchanged(tmp_path: Path) -> None:
    running = sections(
        tmp_path / "running.yaml",
        ETCD,
        {**ETCD, "name": "gone"},
        {**ETCD, "name": "same"},
        {**ETCD, "name": "moved", "priority": 10},
    )
    candidate = sections(
        tmp_path / "candidate.yaml",
        {**ETCD, "prefix": "/b/", "password": "hunter2", "username": "u"},
        {**ETCD, "name": "same"},
        {**ETCD, "name": "moved", "priority": 20},
        {**ETCD, "name": "new"},
    )
    found = {s.name: s for s in compare_sections(running, candidate)}
    assert {n: s.status for n, s in found.items()} == {
        "gone": "removed",
        "main": "changed",
        "moved": "changed",
        "new": "added",
        "same": "unchanged",
    }
    assert found["moved"].same_content and not found["main"].same_content
    assert found["moved"].differences() == {"priority": {"old": 10, "new": 20}}
    assert found["main"].describe() == {
        "type": "etcd",
        "status": "changed",
        "changed": {
            "password": {"old": None, "new": REDACTED},
            "prefix": {"old": "/a/", "new": "/b/"},
            "username": {"old": None, "new": "u"},
        },
    }
    assert found["new"].describe() == {"type": "etcd", "status": "added"}
    # a section of another type is changed, and builds another adapter
    retyped = sections(tmp_path / "c2.yaml", {"name": "main", "type": "serviceentry", "path": "."})
    (main,) = compare_sections(running, retyped, only="main")
    assert main.status == "changed" and not main.same_content
    assert main.differences()["type"] == {"old": "etcd", "new": "serviceentry"}


def test_one_section_only(tmp_path: Path) -> None:
    running = sections(tmp_path / "r.yaml", ETCD, {**ETCD, "name": "other"})
    candidate = sections(tmp_path / "c.yaml", {**ETCD, "prefix": "/b/"})
    assert [s.name for s in compare_sections(running, candidate, only="other")] == ["other"]
    with pytest.raises(ConfigError, match="no registry 'nope'"):
        compare_sections(running, candidate, only="nope")


def preview_of(running: list[RegistryConfig], **extra: Any) -> ConfigPreview:
    flags = RegistryConfig(name="configDir", type="serviceentry", settings={"path": "/nowhere"})
    return ConfigPreview(
        running=[*running, flags], defaults={}, context=AdapterContext(), retry=(0,), **extra
    )


async def test_candidate_shards_from_serviceentry_directories(tmp_path: Path) -> None:
    for name, host in (("one", "one.example"), ("two", "two.example")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "s.yaml").write_text(entry(host, 80))
    one = {"name": "one", "type": "serviceentry", "path": "one"}
    running = sections(tmp_path / "r.yaml", one, {**ETCD, "name": "gone"})
    candidate = yaml.safe_dump(
        {"registries": [{**one, "priority": 7}, {**one, "name": "two", "path": "two"}]}
    )
    found = await preview_of(running).candidate(
        path=str(tmp_path / "c.yaml"), content=candidate.encode(), registry="", timeout=30
    )
    one_key, two_key = ShardKey("serviceentry", "one"), ShardKey("serviceentry", "two")
    assert set(found.changes) == {ShardKey("etcd", "gone"), two_key}
    assert found.changes[ShardKey("etcd", "gone")] is None
    added = found.changes[two_key]
    assert isinstance(added, Replace)
    assert [s.hostname for s in added.services] == ["two.example"]  # read from ./two
    assert found.priorities[one_key] == 7 and one_key not in found.changes
    assert found.registries["two"] == {
        "type": "serviceentry",
        "status": "added",
        "firstState": True,
    }
    assert found.registries["one"]["changed"] == {"priority": {"old": 300, "new": 7}}
    assert found.warnings == ()
    assert "configDir" not in found.registries  # made from a flag: not a section


async def test_an_invalid_candidate_or_a_name_taken_by_a_flag_is_a_config_error(
    tmp_path: Path,
) -> None:
    preview = preview_of([])
    path = str(tmp_path / "c.yaml")
    bad = yaml.safe_dump({"registries": [{**ETCD, "prefix": "no-slash"}]}).encode()
    with pytest.raises(ConfigError, match="'prefix' must be a key prefix"):
        await preview.candidate(path=path, content=bad, registry="", timeout=1)
    taken = yaml.safe_dump({"registries": [{**ETCD, "name": "configDir"}]}).encode()
    with pytest.raises(ConfigError, match="'configDir' is taken by a flag"):
        await preview.candidate(path=path, content=taken, registry="", timeout=1)


async def test_no_first_state_in_time_says_the_last_error() -> None:
    reg = RegistryConfig(
        name="down",
        type="etcd",
        settings={"endpoints": [f"127.0.0.1:{free_port()}"], "timeout": 1},
    )
    sleeps: list[float] = []

    async def sleep(delay: float) -> None:  # the deadline, after two failed runs
        sleeps.append(delay)
        if len(sleeps) == 2:
            raise TimeoutError
        await asyncio.sleep(0)

    found = await first_state(reg, AdapterContext(), timeout=30, retry=(0.5, 1), sleep=sleep)
    assert isinstance(found, str)
    assert found.startswith("registry down: no first state within 30s: ")
    assert found != "registry down: no first state within 30s: no error reported"
    assert sleeps == [0.5, 1]


async def test_a_preview_runs_a_bounded_number_of_candidate_registries(tmp_path: Path) -> None:
    many = [{**ETCD, "name": f"r{i}"} for i in range(MAX_RUNS + 1)]
    content = yaml.safe_dump({"registries": many}).encode()
    with pytest.raises(ConfigError, match=f"adds or changes {MAX_RUNS + 1} registries"):
        await preview_of([]).candidate(
            path=str(tmp_path / "c.yaml"), content=content, registry="", timeout=1
        )


def test_setting_values_in_the_answer_are_cut(tmp_path: Path) -> None:
    running = sections(tmp_path / "r.yaml", ETCD)
    candidate = sections(tmp_path / "c.yaml", {**ETCD, "namespace": "a" * 5000})
    (main,) = compare_sections(running, candidate)
    assert len(main.differences()["namespace"]["new"]) < 400


async def test_another_type_is_another_shard_and_disabled_types_are_left_out(
    tmp_path: Path,
) -> None:
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "s.yaml").write_text(entry("main.example", 80))
    running = sections(tmp_path / "r.yaml", ETCD)
    retyped = {"name": "main", "type": "serviceentry", "path": "main"}
    content = yaml.safe_dump({"registries": [retyped]}).encode()
    found = await preview_of(running, types=frozenset({"etcd", "serviceentry"})).candidate(
        path=str(tmp_path / "c.yaml"), content=content, registry="", timeout=30
    )
    assert set(found.changes) == {ShardKey("etcd", "main"), ShardKey("serviceentry", "main")}
    assert found.changes[ShardKey("etcd", "main")] is None
    assert found.priorities == {ShardKey("serviceentry", "main"): 300}
    assert found.registries["main"]["changed"]["type"] == {"old": "etcd", "new": "serviceentry"}
    content = yaml.safe_dump({"registries": [retyped, {**ETCD, "name": "off"}]}).encode()
    only = await preview_of([], types=frozenset({"serviceentry"})).candidate(
        path=str(tmp_path / "c.yaml"), content=content, registry="", timeout=30
    )
    assert set(only.registries) == {"main"}  # --registries leaves etcd out
