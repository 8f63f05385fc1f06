"""registryd.adapter.LastGood: per key the last good value and the current error."""

from __future__ import annotations

from registryd.adapter import LastGood


def test_a_broken_version_keeps_the_last_good_value_and_reports_its_error() -> None:
    table: LastGood[str, int] = LastGood()
    assert table.good("a", 1) is None
    assert table.fail("a", "a: broken") is True  # the last good value stays in use
    assert (table.get("a"), dict(table.errors)) == (1, {"a": "a: broken"})
    assert table.good("a", 2) == 1  # fixed: the error is gone
    assert (dict(table.values), dict(table.errors)) == ({"a": 2}, {})


def test_a_key_that_was_never_good_has_only_its_error() -> None:
    table: LastGood[str, int] = LastGood()
    assert table.fail("b", "b: broken") is False
    assert "b" in table and table.get("b") is None
    assert (dict(table.values), table.known()) == ({}, {"b"})


def test_forget_drops_value_and_error() -> None:
    table: LastGood[str, int] = LastGood()
    table.good("a", 1)
    table.fail("a", "a: broken")
    assert table.forget("a") == 1
    assert "a" not in table and (dict(table.values), dict(table.errors)) == ({}, {})
    assert table.forget("a") is None


def test_reset_forgets_the_keys_a_listing_does_not_name() -> None:
    table: LastGood[str, int] = LastGood()
    table.good("a", 1)
    table.good("b", 2)
    table.fail("b", "b: broken")
    table.fail("c", "c: broken")
    assert table.reset(["a"]) == {"b": 2, "c": None}
    assert (dict(table.values), dict(table.errors)) == ({"a": 1}, {})


def test_reset_within_a_scope_keeps_the_keys_outside_it() -> None:
    table: LastGood[tuple[str, str], int] = LastGood()
    table.good(("shop", "web"), 1)
    table.good(("shop", "db"), 2)
    table.good(("bank", "api"), 3)
    gone = table.reset([("shop", "web")], scope=lambda key: key[0] == "shop")
    assert gone == {("shop", "db"): 2}
    assert set(table.values) == {("shop", "web"), ("bank", "api")}
