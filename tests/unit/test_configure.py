"""Configuration in one place: istiod's variables reach the builder through Settings, made
by registryd.daemon.configure alone; nothing else in the package reads the environment."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2

from registryd.adapter import Replace
from registryd.build.builder import SnapshotBuilder
from registryd.daemon.app import App
from registryd.daemon.config import Settings
from registryd.daemon.configure import VARIABLES, go_bool
from registryd.model import Health, ShardKey
from registryd.tools import cli
from registryd.xds.snapshot import EDS
from tests.unit.factories import ep, svc

PACKAGE = Path(__file__).resolve().parents[2]
KEY = ShardKey("memory", "mem")
CLUSTER = "outbound|8080||a.example"


def served_addresses(settings: Settings) -> list[str]:
    """The endpoint addresses the daemon made of ``settings`` sends for a service with
    one healthy and one UNHEALTHY endpoint."""
    app = App(settings)
    app.store.expect(KEY)
    endpoints = (ep(address="10.0.0.1"), ep(address="10.0.0.2", health=Health.UNHEALTHY))
    app.store.apply(KEY, Replace(services=(svc(),), endpoints=endpoints))
    snapshot = app.push.push_now()
    cla = endpoint_pb2.ClusterLoadAssignment.FromString(snapshot.tables[EDS][CLUSTER].body)
    return [lb.endpoint.address.socket_address.address for lb in cla.endpoints[0].lb_endpoints]


@pytest.mark.parametrize(
    ("environ", "send"),
    [
        ({}, True),
        ({"PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS": "false"}, False),
        ({"PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS": "0", "PILOT_SEND_UNHEALTHY_ENDPOINTS": "1"}, True),
        ({"PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS": "F"}, False),
        ({"PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS": " TRUE "}, True),
        ({"PILOT_SEND_UNHEALTHY_ENDPOINTS": "false"}, True),  # then the automatic one
    ],
)
def test_send_unhealthy_follows_istiods_variables(environ: dict[str, str], send: bool) -> None:
    settings = cli.parse_args(["discovery"], environ)
    assert settings.send_unhealthy_endpoints is send
    assert settings.ignored == ()


@pytest.mark.parametrize("send", [True, False])
async def test_send_unhealthy_reaches_the_builder_through_settings(send: bool) -> None:
    environ = {"PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS": str(send).lower()}
    addresses = served_addresses(cli.parse_args(["discovery"], environ))
    assert addresses == (["10.0.0.1", "10.0.0.2"] if send else ["10.0.0.1"])


async def test_the_builder_does_not_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS", "false")
    assert SnapshotBuilder().options.send_unhealthy is True
    assert served_addresses(Settings()) == ["10.0.0.1", "10.0.0.2"]
    assert served_addresses(Settings(send_unhealthy_endpoints=False)) == ["10.0.0.1"]


@pytest.mark.parametrize(
    ("environ", "send", "ignored"),
    [
        (
            {"PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS": "nonsense"},
            True,
            ["ignoring PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS='nonsense': not a boolean"],
        ),
        (
            {"PILOT_SEND_UNHEALTHY_ENDPOINTS": "yes", "PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS": "0"},
            False,
            ["ignoring PILOT_SEND_UNHEALTHY_ENDPOINTS='yes': not a boolean"],
        ),
        (
            {"PILOT_SEND_UNHEALTHY_ENDPOINTS": "1", "PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS": "?"},
            True,
            [],  # istiod does not look at the second once the first says true
        ),
    ],
)
def test_a_bad_send_unhealthy_value_is_ignored_with_a_warning_as_before(
    environ: dict[str, str], send: bool, ignored: list[str]
) -> None:
    settings = cli.parse_args(["discovery"], environ)
    assert settings.send_unhealthy_endpoints is send
    assert [text.partition(" (")[0] for text in settings.ignored] == ignored


async def test_app_logs_what_settings_ignored_in_the_push_scope(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = cli.parse_args(["discovery"], {"PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS": "x" * 99})
    with caplog.at_level(logging.WARNING, "registryd.push"):
        App(settings)
    (record,) = [r for r in caplog.records if r.name == "registryd.push"]
    expected = f"ignoring PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS={'x' * 40!r}: not a boolean"
    assert record.getMessage() == f"{expected} (true/false/1/0)"


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", True), ("True", True), ("T", True), ("FALSE", False), ("f", False), ("tRuE", None)],
)
def test_go_bool_is_strconv_parse_bool(text: str, value: bool | None) -> None:
    assert go_bool(text) is value


def test_every_variable_read_is_documented_in_the_readme() -> None:
    readme = (PACKAGE / "README.md").read_text(encoding="utf-8")
    assert [name for name in VARIABLES if name not in readme] == []


# Where the package may touch the environment, and why: only configure reads it for
# configuration.  Anything else found is a setting read behind Settings' back.
ALLOWED = {
    "registryd/daemon/configure.py": "the one place flags, variables and files become Settings",
    # in-cluster detection (KUBERNETES_SERVICE_HOST/PORT, the Kubernetes client's own
    # contract) and, not moved yet, PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES: `registryd
    # validate` reports a bad value per registry, which the daemon's settings cannot say
    "adapters/kubernetes/settings.py": "a registry's environment, read by its adapter",
}
READS_ENVIRONMENT = re.compile(r"\bos\.environ\b|\bgetenv\b|\benviron\s*\[|\bos\.putenv\b")


def test_only_configure_reads_the_environment() -> None:
    found = sorted(
        str(path.relative_to(PACKAGE))
        for folder in ("registryd", "adapters")
        for path in (PACKAGE / folder).rglob("*.py")
        if READS_ENVIRONMENT.search(path.read_text(encoding="utf-8"))
    )
    assert found, "the pattern finds nothing: the test would pass whatever the code does"
    assert [path for path in found if path not in ALLOWED] == []
