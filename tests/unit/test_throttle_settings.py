"""--pushThrottle and --maxRequestsPerSecond, and istiod's PILOT_PUSH_THROTTLE and
PILOT_MAX_REQUESTS_PER_SECOND (pilot/pkg/features/tuning.go PushThrottle, RequestLimit)."""

from __future__ import annotations

import pytest

from registryd.adapter import ConfigError
from registryd.daemon.config import Settings, auto_limit, cpu_count
from registryd.tools import cli


@pytest.mark.parametrize(("cpus", "limit"), [(1, 20), (2, 25), (4, 35), (17, 100), (32, 100)])
def test_auto_limit_scales_with_cpus_up_to_100_like_istiod(cpus: int, limit: int) -> None:
    assert auto_limit(cpus) == limit


def test_defaults_are_istiods_automatic_values() -> None:
    auto = auto_limit(cpu_count())
    settings = cli.parse_args(["discovery"], environ={})
    assert (settings.push_throttle, settings.max_requests_per_second) == (auto, float(auto))
    assert (Settings().push_throttle, Settings().max_requests_per_second) == (auto, float(auto))


def test_variables_apply_when_no_flag_is_given() -> None:
    environ = {"PILOT_PUSH_THROTTLE": "7", "PILOT_MAX_REQUESTS_PER_SECOND": "12.5"}
    settings = cli.parse_args(["discovery"], environ=environ)
    assert (settings.push_throttle, settings.max_requests_per_second) == (7, 12.5)


def test_flags_win_over_variables() -> None:
    environ = {"PILOT_PUSH_THROTTLE": "7", "PILOT_MAX_REQUESTS_PER_SECOND": "12.5"}
    argv = ["discovery", "--pushThrottle=3", "--maxRequestsPerSecond", "250"]
    settings = cli.parse_args(argv, environ=environ)
    assert (settings.push_throttle, settings.max_requests_per_second) == (3, 250.0)


@pytest.mark.parametrize("value", ["0", "-5"])
def test_zero_or_negative_means_the_automatic_value(value: str) -> None:
    auto = auto_limit(cpu_count())
    argv = ["discovery", f"--pushThrottle={value}", f"--maxRequestsPerSecond={value}"]
    settings = cli.parse_args(argv, environ={})
    assert (settings.push_throttle, settings.max_requests_per_second) == (auto, float(auto))
    environ = {"PILOT_PUSH_THROTTLE": value, "PILOT_MAX_REQUESTS_PER_SECOND": value}
    settings = cli.parse_args(["discovery"], environ=environ)
    assert (settings.push_throttle, settings.max_requests_per_second) == (auto, float(auto))


@pytest.mark.parametrize(
    ("argv", "environ", "fragment"),
    [
        (["--pushThrottle=many"], {}, "--pushThrottle: expected a whole number, got 'many'"),
        (["--pushThrottle=2.5"], {}, "--pushThrottle: expected a whole number"),
        ([], {"PILOT_PUSH_THROTTLE": "x"}, "PILOT_PUSH_THROTTLE: expected a whole number"),
        (["--maxRequestsPerSecond=fast"], {}, "--maxRequestsPerSecond: expected a number"),
        (["--maxRequestsPerSecond=inf"], {}, "--maxRequestsPerSecond: expected a number"),
        (["--maxRequestsPerSecond=nan"], {}, "--maxRequestsPerSecond: expected a number"),
        (
            [],
            {"PILOT_MAX_REQUESTS_PER_SECOND": "1e999"},
            "PILOT_MAX_REQUESTS_PER_SECOND: expected a number",
        ),
    ],
)
def test_invalid_values_are_one_line_errors_naming_flag_or_variable(
    argv: list[str], environ: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        cli.parse_args(["discovery", *argv], environ=environ)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_main_exits_2_on_a_bad_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PILOT_PUSH_THROTTLE", "lots")
    assert cli.main(["discovery"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["registryd: error: PILOT_PUSH_THROTTLE: expected a whole number, got 'lots'"]
