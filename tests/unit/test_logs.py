"""Scoped Istio-style logging: level parsing, text/JSON output, scope listing and
runtime level changes (``registryd.base.logs``) plus the logging flags of the CLI."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import pytest

from registryd.adapter import ConfigError
from registryd.base import logs
from registryd.tools import cli
from tests.support.fake_time import FakeTime

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


pytestmark = pytest.mark.usefixtures("restore_loggers")


# --- parsing and level names -------------------------------------------------------


def test_parse_levels() -> None:
    assert logs.parse_levels("default:info,xds:debug") == {
        "default": logging.INFO,
        "xds": logging.DEBUG,
    }
    assert logs.parse_levels("debug") == {"default": logging.DEBUG}
    assert logs.parse_levels(" push:WARNING , registry:none ") == {
        "push": logging.WARNING,
        "registry": logging.CRITICAL + 10,
    }
    assert logs.parse_levels("") == {}


def test_parse_levels_rejects_unknown_level() -> None:
    with pytest.raises(ConfigError, match=r"--log_output_level: unknown level 'loud'"):
        logs.parse_levels("default:info,xds:loud")


@pytest.mark.parametrize(
    ("level", "name"),
    [
        (logging.NOTSET, "debug"),
        (logging.DEBUG, "debug"),
        (15, "info"),
        (logging.INFO, "info"),
        (25, "warn"),
        (logging.WARNING, "warn"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "error"),
        (logging.CRITICAL + 10, "none"),
    ],
)
def test_level_name(level: int, name: str) -> None:
    assert logs.level_name(level) == name


def test_level_value() -> None:
    assert logs.level_value("DEBUG") == logging.DEBUG
    assert logs.level_value("warn") == logs.level_value("warning") == logging.WARNING
    assert logs.level_value("none") > logging.CRITICAL
    with pytest.raises(ValueError, match=r"unknown level 'loud' \(use one of debug, info"):
        logs.level_value("loud")


def test_scope_name() -> None:
    assert logs.scope_name("registryd") == "default"
    assert logs.scope_name("registryd.xds") == "xds"
    assert logs.scope_name("registryd.xds.server") == "xds.server"


# --- output formats ----------------------------------------------------------------


def test_text_output_is_istio_tab_separated(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("default:info,xds:debug")
    logging.getLogger("registryd.xds").debug("stream %d opened", 7)
    logging.getLogger("registryd.push").debug("hidden")
    logging.getLogger("registryd.push").warning("slow push")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    stamp, level, scope, msg = lines[0].split("\t")
    assert STAMP.match(stamp)
    assert (level, scope, msg) == ("debug", "xds", "stream 7 opened")
    assert lines[1].split("\t")[1:] == ["warn", "push", "slow push"]


def test_json_output_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("default:info", as_json=True)
    logging.getLogger("registryd").info("starting")
    logging.getLogger("registryd.xds.server").info('client "a"\nconnected')
    logging.getLogger("registryd.xds").debug("hidden at info")
    logging.getLogger("registryd.push").error("push failed")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    entries = [json.loads(line) for line in lines]
    for entry in entries:
        assert list(entry) == ["time", "level", "scope", "msg"]
        assert STAMP.match(entry["time"])
    assert [(e["level"], e["scope"], e["msg"]) for e in entries] == [
        ("info", "default", "starting"),
        ("info", "xds.server", 'client "a"\nconnected'),
        ("error", "push", "push failed"),
    ]


def test_json_output_carries_traceback_as_error(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("default:info", as_json=True)
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logging.getLogger("registryd.registry").exception("merge failed")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    entry = json.loads(lines[0])
    assert (entry["level"], entry["scope"], entry["msg"]) == ("error", "registry", "merge failed")
    assert entry["error"].startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: division by zero" in entry["error"]


def test_setup_with_bad_levels_changes_nothing() -> None:
    root = logging.getLogger("registryd")
    handlers, level = root.handlers[:], root.level
    with pytest.raises(ConfigError):
        logs.setup("default:loud", as_json=True)
    assert root.handlers == handlers
    assert root.level == level


# --- scopes ------------------------------------------------------------------------


def test_list_scopes_default_first_then_existing_loggers_sorted() -> None:
    logging.getLogger("registryd").setLevel(logging.WARNING)
    logging.getLogger("registryd.zz_test_b").setLevel(logging.DEBUG)
    logging.getLogger("registryd.aa_test_a")
    logging.getLogger("registryd.mm_parent_ph.child")  # parent is only a placeholder
    logging.getLogger("registrydother")
    logging.getLogger("other.registryd.x")
    scopes = logs.list_scopes()
    names = [s["name"] for s in scopes]
    assert names[0] == "default"
    assert names[1:] == sorted(names[1:])
    assert len(names) == len(set(names))
    assert {"aa_test_a", "zz_test_b", "mm_parent_ph.child"} <= set(names)
    assert "mm_parent_ph" not in names
    assert not any("other" in n for n in names)
    by_name = {s["name"]: s for s in scopes}
    assert by_name["default"]["output_level"] == "warn"
    assert by_name["aa_test_a"]["output_level"] == "warn"  # inherits from default
    assert by_name["zz_test_b"]["output_level"] == "debug"
    assert set(by_name["zz_test_b"]) == {"name", "description", "output_level"}
    assert by_name["default"]["description"] == "Unscoped logging messages."


def test_adapter_scopes_are_described_by_the_caller_core_scopes_by_logs() -> None:
    logging.getLogger("registryd.zz_test_plugin")
    described = {"zz_test_plugin": "From the plugin.", "xds": "Not this one."}
    by_name = {s["name"]: s["description"] for s in logs.list_scopes(described)}
    assert by_name["zz_test_plugin"] == "From the plugin."
    assert logs.get_scope("xds", described)["description"] == logs.CORE_SCOPES["xds"]
    assert logs.get_scope("zz_test_plugin")["description"] == (
        "Messages from the registryd.zz_test_plugin logger."
    )
    # no registry type is described by logs itself: its adapter says
    assert set(logs.CORE_SCOPES) == {"default", "xds", "push", "registry", "supervisor", "web"}


def test_adapter_scopes_are_looked_up_only_when_a_scope_is_not_a_core_one() -> None:
    def adapters() -> Iterator[str]:
        looked.append(True)
        yield "zz_plugin_scope"

    looked: list[bool] = []
    logs.check_scopes({"default": 10, "xds.server": 20}, adapters())
    assert looked == []  # no adapter loaded for core scopes
    logs.check_scopes({"zz_plugin_scope.sub": 10}, adapters())
    assert looked == [True]
    with pytest.raises(ConfigError, match=r"unknown scope 'zz_nope' \(scopes: .*zz_plugin_scope"):
        logs.check_scopes({"zz_nope": 10}, adapters())


def test_get_scope() -> None:
    logging.getLogger("registryd.xds").setLevel(logging.ERROR)
    assert logs.get_scope("xds")["output_level"] == "error"
    assert logs.get_scope("xds")["name"] == "xds"
    with pytest.raises(logs.UnknownScopeError, match="unknown scope 'no_such_scope'"):
        logs.get_scope("no_such_scope")
    with pytest.raises(logs.UnknownScopeError):
        logs.get_scope("")


def test_set_scope_level_changes_the_logger() -> None:
    logger = logging.getLogger("registryd.xds")
    logger.setLevel(logging.INFO)
    assert not logger.isEnabledFor(logging.DEBUG)
    info = logs.set_scope_level("xds", "DEBUG")
    assert info["output_level"] == "debug"
    assert logger.level == logging.DEBUG
    assert logger.isEnabledFor(logging.DEBUG)
    logs.set_scope_level("xds", "none")
    assert not logger.isEnabledFor(logging.CRITICAL)
    assert logs.get_scope("xds")["output_level"] == "none"


def test_set_default_moves_scopes_without_their_own_level() -> None:
    child = logging.getLogger("registryd.inherit_test")
    child.setLevel(logging.NOTSET)
    logs.set_scope_level("default", "error")
    assert logs.get_scope("inherit_test")["output_level"] == "error"
    assert not child.isEnabledFor(logging.WARNING)


def test_set_scope_level_rejects_unknown_scope_and_level() -> None:
    with pytest.raises(logs.UnknownScopeError):
        logs.set_scope_level("never_created_scope", "debug")
    assert "registryd.never_created_scope" not in logging.Logger.manager.loggerDict
    logger = logging.getLogger("registryd.xds")
    logger.setLevel(logging.INFO)
    with pytest.raises(ValueError, match="unknown level"):
        logs.set_scope_level("xds", "loud")
    assert logger.level == logging.INFO


# --- flags -------------------------------------------------------------------------


def test_logging_flags_default_off() -> None:
    settings = cli.parse_args(["discovery"])
    assert settings.log_as_json is False
    assert settings.allow_remote_log_level is False
    assert settings.log_output_level == "default:info"


@pytest.mark.parametrize(
    ("argv", "as_json", "remote"),
    [
        (["--log_as_json"], True, False),
        (["--log_as_json=true"], True, False),
        (["--log_as_json=false"], False, False),
        (["--allowRemoteLogLevel"], False, True),
        (["--log_as_json", "--allowRemoteLogLevel=1"], True, True),
    ],
)
def test_logging_flags(argv: list[str], as_json: bool, remote: bool) -> None:
    settings = cli.parse_args(["discovery", *argv])
    assert settings.log_as_json is as_json
    assert settings.allow_remote_log_level is remote


def test_bool_flag_rejects_other_values() -> None:
    with pytest.raises(ConfigError, match="--log_as_json"):
        cli.parse_args(["discovery", "--log_as_json=maybe"])


def test_clip_escapes_control_characters_and_cuts_long_text() -> None:
    assert logs.clip("a\nb\r\tc\x1b[31m\u2028") == "a\\nb\\r\\tc\\x1b[31m\\u2028"
    assert logs.clip("x" * 300, 10) == "xxxxxxxxxx...(290 more chars)"
    assert logs.clip(ValueError("bad\nline")) == "bad\\nline"


def test_text_formatter_keeps_one_record_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("default:info")
    logging.getLogger("registryd").info("node %s", "evil\n2024-01-01T00:00:00Z\terror\tforged")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("node evil\\n2024-01-01T00:00:00Z\\terror\\tforged")


def test_log_throttle_per_key_and_overall(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeTime()
    logger = logging.getLogger("registryd.test-throttle")
    throttle = logs.LogThrottle(
        logger, "NACK", rate=1, burst=2, total_rate=10, total_burst=3, clock=clock
    )
    with caplog.at_level(logging.WARNING, logger="registryd"):
        assert [throttle.allow("a") for _ in range(4)] == [True, True, False, False]
        assert caplog.messages == []
        assert throttle.allow("b")  # another key has its own budget...
        assert caplog.messages == ["2 NACK lines suppressed"]  # said before b's line
        assert not throttle.allow("c")  # ...until the overall one runs out
        clock.now += 1  # one more line per key, ten overall
        assert throttle.allow("a")
    assert caplog.messages == ["2 NACK lines suppressed", "1 NACK lines suppressed"]
    assert throttle.suppressed == 0 and throttle.suppressed_total == 3
    throttle.forget("a")
    assert throttle.allow("a") and throttle.allow("a")  # a forgotten key starts afresh
