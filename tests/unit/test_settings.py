"""SettingsReader: the checks adapters and plugins run on a registry's settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from registryd.adapter import ConfigError
from registryd.settings import DNS_LABEL, SettingsReader

KNOWN = ("on", "name", "secret", "rate", "count", "namespace", "zones", "file")


def reader(**settings: Any) -> SettingsReader:
    return SettingsReader("reg", "demo", settings, KNOWN)


def fails(message: str, **settings: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        read_all(reader(**settings))
    text = str(caught.value)
    assert text.startswith("registry 'reg' (demo): "), text
    assert message in text, text
    return caught.value


def read_all(r: SettingsReader) -> None:
    r.flag("on", False)
    r.text("name")
    r.text("secret", secret=True)
    r.number("rate", 1, maximum=10, unit="seconds")
    r.whole("count", 3)
    r.label("namespace", "default")
    r.names("zones", re.compile(r"[a-z]+-\d"), "zone name")
    r.file("file")


def test_unknown_keys_are_listed_with_the_known_ones() -> None:
    error = fails("unknown settings ['colour', 'size']", colour=1, size=2)
    assert str(list(KNOWN)) in str(error)


def test_absent_and_null_give_the_defaults() -> None:
    r = reader(on=None, rate=None, zones=None)
    assert r.flag("on", True) is True
    assert r.text("name") is None and r.text("name", "x") == "x"
    assert r.number("rate", 2.5) == 2.5
    assert r.whole("count", 3) == 3
    assert r.label("namespace", "default") == "default"
    assert r.names("zones", DNS_LABEL, "zone", default=["a"]) == ("a",)
    assert r.file("file") is None


def test_good_values() -> None:
    r = reader(on=True, name="x", rate=10, count=7, namespace="shop", zones=["eu-1", "us-2"])
    assert r.flag("on", False) is True
    assert r.text("name") == "x"
    assert r.number("rate", 1, maximum=10) == 10.0
    assert r.whole("count", 1) == 7
    assert r.label("namespace", "default") == "shop"
    assert r.names("zones", re.compile(r"[a-z]+-\d"), "zone name") == ("eu-1", "us-2")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"on": "yes"}, "'on' must be true or false, got 'yes'"),
        ({"name": " "}, "'name' must be a non-empty string"),
        ({"name": 3}, "'name' must be a non-empty string, got 3"),
        ({"rate": "fast"}, "'rate' must be a number of seconds, got 'fast'"),
        ({"rate": True}, "'rate' must be a number of seconds"),
        ({"rate": 0}, "'rate' must be > 0 and <= 10, got 0"),
        ({"rate": 11}, "'rate' must be > 0 and <= 10, got 11"),
        ({"count": 0}, "'count' must be a whole number >= 1, got 0"),
        ({"count": 1.5}, "'count' must be a whole number >= 1"),
        ({"namespace": "Shop"}, "'namespace' must be a DNS label like 'default', got 'Shop'"),
        ({"zones": []}, "'zones' must be a non-empty list of zone names"),
        ({"zones": "eu-1"}, "'zones' must be a non-empty list of zone names"),
        ({"zones": ["eu-1", "EU"]}, "'zones': 'EU' is not a zone name"),
        ({"zones": ["eu-1", "eu-1"]}, "'zones' lists a zone name twice"),
        ({"file": 3}, "'file' must be a file path, got 3"),
        ({"file": "/no/such/file.pem"}, "'file': no such file: /no/such/file.pem"),
    ],
)
def test_bad_values_name_the_registry_and_the_key(settings: dict[str, Any], message: str) -> None:
    fails(message, **settings)


@pytest.mark.parametrize("value", [12345, "", "  "])
def test_secret_values_are_never_shown(value: Any) -> None:
    error = fails("'secret' must be a non-empty string, got <redacted>", secret=value)
    assert "12345" not in str(error)


def test_files_may_be_checked_for_existence_or_not(tmp_path: Path) -> None:
    there = tmp_path / "ca.pem"
    there.write_text("x")
    assert reader(file=str(there)).file("file") == str(there)
    assert reader(file=str(tmp_path / "later.pem")).file("file", must_exist=False) == str(
        tmp_path / "later.pem"
    )


def test_error_names_the_registry() -> None:
    assert str(reader().error("'a' and 'b' go together")) == (
        "registry 'reg' (demo): 'a' and 'b' go together"
    )
