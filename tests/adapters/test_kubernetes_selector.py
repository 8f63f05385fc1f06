"""Label selectors (:mod:`registryd.adapters.kubernetes.selector`): strings and objects."""

from __future__ import annotations

from typing import Any

import pytest

from registryd.adapters.kubernetes.selector import parse_selector


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("mesh=on", {"mesh": "on"}, True),
        ("mesh==on", {"mesh": "off"}, False),
        ("mesh!=off", {}, True),  # absent keys match !=
        ("mesh", {"mesh": ""}, True),
        ("!mesh", {"mesh": "on"}, False),
        ("env in (prod, staging)", {"env": "staging"}, True),
        ("env notin (prod)", {}, True),
        ("env in (prod),team=a", {"env": "prod", "team": "b"}, False),
        (
            "istio.io/rev=canary, example.com/x",
            {"istio.io/rev": "canary", "example.com/x": ""},
            True,
        ),
    ],
)
def test_string_selectors(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


def test_object_selectors() -> None:
    selector = parse_selector(
        {
            "matchLabels": {"mesh": "on"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector.matches({"mesh": "on", "env": "dev"})
    assert not selector.matches({"mesh": "on", "env": "dev", "legacy": "1"})
    assert str(selector) == "mesh=on,env in (dev,prod),!legacy"


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "a=b,",
        "a in ()",
        "bad key=1",
        "a=b=c",
        7,
        {},
        {"matchLabels": {"a": "b c"}},
        {"matchExpressions": [{"key": "a", "operator": "Near"}]},
        {"matchExpressions": [{"key": "a", "operator": "In"}]},
        {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
        {"matchLabel": {"a": "b"}},
    ],
)
def test_bad_selectors(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_selector(value)
