"""The etcd key table (:mod:`registryd.adapters.etcd.state`), pure: increments, the last good
value of each key, full listings, problems and notes."""

from __future__ import annotations

from registryd.adapter import Delete, Problems, Replace, Upsert
from registryd.adapters.etcd.parse import Options
from registryd.adapters.etcd.state import KeyTable
from tests.adapters.etcd_values import OPTIONS, PREFIX, key, naming, rich, value


def test_table_changes() -> None:
    table = KeyTable(OPTIONS)
    assert table.replace() == Replace()
    table.put(key("web", "a"), rich("10.0.0.1"))
    table.put(key("web", "b"), rich("10.0.0.2"))
    (upsert,) = table.changes()
    assert isinstance(upsert, Upsert)
    assert [e.address for e in upsert.endpoints] == ["10.0.0.1", "10.0.0.2"]
    assert table.changes() == []

    table.put(key("web", "b"), rich("10.0.0.2"))  # same value
    table.put(key("web", "b"), b' {"port": 8080,  "address": "10.0.0.2"}')  # same meaning
    assert table.changes() == []

    table.put(key("api", "a"), rich("10.0.0.3"))
    table.delete(key("web", "a"))
    table.delete(key("web", "b"))
    table.delete(key("nothing", "here"))
    changes = table.changes()
    assert [type(c).__name__ for c in changes] == ["Upsert", "Delete"]
    assert changes[1] == Delete(hostname="web")
    assert table.changes() == []


def test_table_keeps_the_last_good_value() -> None:
    table = KeyTable(OPTIONS)
    good = {"address": "10.0.0.1", "port": 8080}
    table.put(key("web", "a"), value(**good))
    table.replace()
    sources = table.sources

    table.put(key("web", "a"), b"{broken")
    assert table.changes() == []
    problems = table.problems()
    assert list(problems.errors) == [f"{PREFIX}web/a"]
    assert problems.sources == {f"{PREFIX}web/a": good}
    assert table.sources is sources  # unchanged: the same mapping

    table.put(key("web", "a"), rich("10.0.0.9"))
    (upsert,) = table.changes()
    assert isinstance(upsert, Upsert) and upsert.endpoints[0].address == "10.0.0.9"
    assert table.problems().errors == {}
    assert table.sources is not sources


def test_table_broken_new_key_contributes_nothing_and_delete_clears_it() -> None:
    table = KeyTable(OPTIONS)
    table.put(key("web", "a"), b"[]")
    table.put(f"{PREFIX}stray".encode(), rich())
    assert table.changes() == []
    assert sorted(table.errors) == [f"{PREFIX}stray", f"{PREFIX}web/a"]
    table.delete(key("web", "a"))
    table.delete(f"{PREFIX}stray".encode())
    assert table.problems() == Problems()


def test_table_reset_is_a_full_listing() -> None:
    table = KeyTable(OPTIONS)
    table.put(key("web", "a"), rich("10.0.0.1"))
    table.put(key("web", "b"), rich("10.0.0.2"))
    table.put(key("gone", "a"), rich("10.0.0.3"))
    table.put(key("bad", "a"), b"x")
    table.replace()

    table.reset(
        [
            (key("web", "a"), b"{still broken"),  # broken now: keeps its last good value
            (key("web", "c"), rich("10.0.0.4")),
            (key("new", "a"), naming("10.0.0.5:50051")),
        ]
    )
    replace = table.replace()
    assert [s.hostname for s in replace.services] == ["new", "web"]
    assert [(e.hostname, e.address) for e in replace.endpoints] == [
        ("new", "10.0.0.5"),
        ("web", "10.0.0.1"),
        ("web", "10.0.0.4"),
    ]
    assert list(table.errors) == [f"{PREFIX}web/a"]
    assert table.changes() == []


def test_table_raw_only_change_updates_sources_without_an_upsert() -> None:
    table = KeyTable(OPTIONS)
    table.put(key("g", "a"), naming("10.0.0.1:1", Metadata={"n": 1}))
    table.replace()
    before = table.sources
    table.put(key("g", "a"), naming("10.0.0.1:1", Metadata={"n": 2}))
    assert table.changes() == []
    assert table.sources is not before
    assert table.sources[f"{PREFIX}g/a"] == {"Addr": "10.0.0.1:1", "Metadata": {"n": 2}}


def test_table_notes_are_warnings_of_its_problems() -> None:
    table = KeyTable(OPTIONS)
    table.put(key("web", "a"), rich("10.0.0.1", 80, protocol="HTTP"))
    table.put(key("web", "b"), rich("10.0.0.2", 80, protocol="TCP"))
    table.replace()
    (note,) = table.notes
    assert "declares port 80" in note
    assert table.problems().warnings == (note,)
    assert table.problems().errors == {}
    table.delete(key("web", "b"))
    table.changes()
    assert table.notes == () and table.problems().warnings == ()


def test_hostnames_differing_in_case_are_one_service() -> None:
    table = KeyTable(Options(hostname_suffix="svc.example"))
    table.put(key("Web", "a"), rich("10.0.0.1"))
    table.put(key("web", "b"), rich("10.0.0.2"))
    replace = table.replace()
    assert [s.hostname for s in replace.services] == ["web.svc.example"]
    assert len(replace.endpoints) == 2
