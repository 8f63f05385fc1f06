"""Flags, durations, addresses and the registryd.yaml registry list."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from registryd.adapter import AdapterContext, ConfigError
from registryd.adapters.kubernetes.adapter import KubernetesAdapter
from registryd.adapters.kubernetes.settings import KubernetesSettings
from registryd.base.logs import parse_levels
from registryd.daemon.config import Settings, load_registries, parse_address, parse_duration
from registryd.daemon.plugins import available, create_adapter, load_factory
from registryd.testing import MemoryAdapter
from registryd.tools import cli
from registryd.xds.addresses import Address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":15010", Address("0.0.0.0", 15010)),
        ("127.0.0.1:8080", Address("127.0.0.1", 8080)),
        ("[::1]:15010", Address("::1", 15010)),
        ("localhost:0", Address("localhost", 0)),
        (" :80 ", Address("0.0.0.0", 80)),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address("--grpcAddr", text) == expected


@pytest.mark.parametrize("text", ["15010", "host:", "host:port", "::1:80", "[::1]", "a:b:80", ""])
def test_parse_address_rejects_garbage(text: str) -> None:
    with pytest.raises(ConfigError, match="--grpcAddr: expected"):
        parse_address("--grpcAddr", text)


def test_parse_address_rejects_port_out_of_range() -> None:
    with pytest.raises(ConfigError, match="--httpAddr: port 70000 out of range"):
        parse_address("--httpAddr", ":70000")


def test_address_str() -> None:
    assert str(Address("::1", 80)) == "[::1]:80"
    assert str(Address("0.0.0.0", 80)) == "0.0.0.0:80"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30m", 1800.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("2h0m5s", 7205.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration("--x", text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["infinite", "inf", "0", ""])
def test_parse_duration_no_limit(text: str) -> None:
    assert parse_duration("--x", text) is None


@pytest.mark.parametrize("text", ["30", "abc", "30x", "-5s", "1h 30m", "m", "30M", "5s10"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--debounceMax: expected a duration"):
        parse_duration("--debounceMax", text)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registryd.yaml"
    path.write_text(text)
    return path


def test_load_registries_resolves_relative_paths_against_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "registries:\n"
        "- {name: mesh, type: serviceentry, path: entries, extra: 1}\n"
        "- {name: mem, type: memory}\n",
    )
    mesh, mem = load_registries(path)
    assert (mesh.name, mesh.type) == ("mesh", "serviceentry")
    assert mesh.settings == {"path": str((tmp_path / "entries").resolve()), "extra": 1}
    assert (mem.name, mem.type, dict(mem.settings)) == ("mem", "memory", {})


def test_load_registries_resolves_file_settings_but_not_other_strings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "registries:\n"
        "- {name: dc1, type: consul, ca_file: tls/ca.pem, address: 'consul:8500', token: x}\n",
    )
    (dc1,) = load_registries(path)
    assert dc1.settings == {
        "ca_file": str((tmp_path / "tls" / "ca.pem").resolve()),
        "address": "consul:8500",
        "token": "x",
    }


def test_load_registries_keeps_absolute_paths(tmp_path: Path) -> None:
    target = (tmp_path / "elsewhere").resolve()
    path = write(tmp_path, f"registries:\n- {{name: a, type: serviceentry, path: '{target}'}}\n")
    assert load_registries(path)[0].settings["path"] == str(target)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("registries: " + "[" * 10_000 + "]" * 10_000, "nested deeper than 64"),
        ("registries:\n- {name: a, type: memory, priority: " + "9" * 4301 + "}", "4301 digits"),
        ("registries: []\nregistries: []\n", "duplicate key 'registries'"),
        ("registries: []\n---\nregistries: []\n", "more than 1 document "),
        ("x" * (1 << 20) + "x", "larger than 1048576 bytes"),
    ],
)
def test_load_registries_turns_any_problem_of_the_file_into_config_error(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "registryd.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^--config {path}(:[0-9]+)?: .*{message}"):
        load_registries(path)


def test_load_registries_does_not_open_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo, loop = tmp_path / "fifo.yaml", tmp_path / "loop.yaml"
    os.mkfifo(fifo)  # opened for reading, it would wait for a writer
    loop.symlink_to(loop.name)
    with pytest.raises(ConfigError, match=r"fifo.yaml: not a regular file \(a FIFO\)$"):
        load_registries(fifo)
    with pytest.raises(ConfigError, match=r"loop\.yaml: symlink loop$"):
        load_registries(loop)
    with pytest.raises(ConfigError, match=r"not a regular file \(a directory\)$"):
        load_registries(tmp_path)


def test_load_registries_priority_defaults_to_the_types_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "registries:\n"
        + "".join(
            f"- {{name: {kind}, type: {kind}}}\n"
            for kind in ("etcd", "memory", "kubernetes", "consul", "serviceentry")
        ),
    )
    priorities = {r.type: r.priority for r in load_registries(path)}
    assert priorities == {
        "kubernetes": 400,
        "serviceentry": 300,
        "consul": 200,
        "etcd": 100,
        "memory": 0,  # any plugin
    }


def test_load_registries_explicit_priority_is_not_an_adapter_setting(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "registries:\n"
        "- {name: inv, type: memory, priority: 500}\n"
        "- {name: k, type: kubernetes, priority: -3}\n"
        "- {name: se, type: serviceentry, priority: 0}\n",
    )
    inv, k, se = load_registries(path)
    assert (inv.priority, k.priority, se.priority) == (500, -3, 0)
    assert "priority" not in inv.settings


@pytest.mark.parametrize("value", ["high", "'300'", "1.5", "true", "null", "[1]"])
def test_load_registries_priority_must_be_an_integer(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"registries:\n- {{name: inv, type: memory, priority: {value}}}\n")
    with pytest.raises(ConfigError) as info:
        load_registries(path)
    message = str(info.value)
    assert (
        "registries[0] (inv): 'priority' must be an integer (higher wins the merge), got "
        in message
    )
    assert str(path) in message


def test_load_registries_empty_file(tmp_path: Path) -> None:
    assert load_registries(write(tmp_path, "")) == []
    assert load_registries(write(tmp_path, "registries: []\n")) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "registries:\n- {name: a, type: memory}\n- {name: a, type: consul}\n",
            r"registries\[1\]: duplicate registry name 'a'",
        ),
        ("registries:\n- {type: memory}\n", r"registries\[0\]: 'name' is required"),
        ("registries:\n- {name: a}\n", r"registries\[0\] \(a\): 'type' is required"),
        ("registries: [\n", "invalid YAML"),
        (
            "registries: []\nregistry: []\nzones: 1\n",
            r":2: unknown top-level key 'registry' \(did you mean 'registries'\?\), "
            r"and \['zones'\]; registryd.yaml has only 'registries'",
        ),
        ("- a\n", "expected a mapping"),
        ("registries: {a: 1}\n", "'registries' must be a list"),
        ("registries:\n- just-a-string\n", r"registries\[0\]: expected a mapping"),
    ],
)
def test_load_registries_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_registries(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_load_registries_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_registries(tmp_path / "nope.yaml")


def test_parse_args_defaults() -> None:
    settings = cli.parse_args(["discovery"])
    assert settings.grpc_addr == Address("0.0.0.0", 15010)
    assert settings.http_addr == Address("0.0.0.0", 8080)
    assert settings.monitoring_addr == Address("0.0.0.0", 15014)
    assert settings.domain == "cluster.local"
    assert settings.registries == ()
    assert settings.max_connection_age is None
    assert settings.debounce_after == pytest.approx(0.1)
    assert settings.debounce_max == pytest.approx(10.0)


def test_parse_args_flags(tmp_path: Path) -> None:
    settings = cli.parse_args(
        [
            "discovery",
            "--grpcAddr=127.0.0.1:1",
            "--domain=corp.local",
            f"--configDir={tmp_path}",
            "--keepaliveMaxServerConnectionAge=30m",
            "--debounceAfter=5ms",
        ]
    )
    assert settings.grpc_addr == Address("127.0.0.1", 1)
    assert settings.domain == "corp.local"
    assert settings.max_connection_age == 1800.0
    assert settings.debounce_after == pytest.approx(0.005)
    (registry,) = settings.registries
    assert (registry.name, registry.type) == ("configDir", "serviceentry")
    assert registry.settings["path"] == str(tmp_path.resolve())


def test_debounce_follows_istiods_environment_unless_flags_say_otherwise() -> None:
    environ = {
        "PILOT_DEBOUNCE_AFTER": "50ms",
        "PILOT_DEBOUNCE_MAX": "2s",
        "PILOT_ENABLE_EDS_DEBOUNCE": "false",
    }
    settings = cli.parse_args(["discovery"], environ)
    assert (settings.debounce_after, settings.debounce_max) == (pytest.approx(0.05), 2.0)
    assert settings.eds_debounce is False
    flags = ["discovery", "--debounceAfter=5ms", "--enableEDSDebounce"]
    settings = cli.parse_args(flags, environ)
    assert settings.debounce_after == pytest.approx(0.005) and settings.eds_debounce is True
    assert cli.parse_args(["discovery", "--enableEDSDebounce=false"], {}).eds_debounce is False
    assert cli.parse_args(["discovery"], {}).eds_debounce is True


def test_gc_freeze_is_on_unless_turned_off() -> None:
    assert cli.parse_args(["discovery"], {}).gc_freeze is True
    assert cli.parse_args(["discovery", "--gcFreeze=false"], {}).gc_freeze is False
    with pytest.raises(ConfigError, match="--gcFreeze: expected true or false"):
        cli.parse_args(["discovery", "--gcFreeze=sometimes"], {})


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"PILOT_DEBOUNCE_AFTER": "soon"}, "PILOT_DEBOUNCE_AFTER: expected a duration"),
        ({"PILOT_ENABLE_EDS_DEBOUNCE": "maybe"}, "PILOT_ENABLE_EDS_DEBOUNCE: expected true"),
    ],
)
def test_bad_debounce_environment_is_named(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        cli.parse_args(["discovery"], environ)


def test_parse_args_registries_filter(tmp_path: Path) -> None:
    config = write(tmp_path, "registries:\n- {name: a, type: memory}\n- {name: b, type: consul}\n")
    settings = cli.parse_args(["discovery", f"--config={config}", "--registries", "consul"])
    assert [r.name for r in settings.registries] == ["b"]


def test_config_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--configDir .*: no such file or directory"):
        cli.parse_args(["discovery", f"--configDir={tmp_path / 'missing'}"])


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["discovery", "--bogus"], "--bogus"),
        (["discovery", "--grpcAddr", "nope"], "--grpcAddr"),
        (["discovery", "--debounceMax", "soon"], "--debounceMax"),
        (["discovery", "--log_output_level", "default:loud"], "--log_output_level"),
        (["discovery", "--configDir", "/nonexistent/registryd-test"], "--configDir"),
        (["serve"], "serve"),
        ([], "missing command"),
    ],
)
def test_main_with_bad_flags_prints_one_line_and_returns_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("registryd: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in captured.err


def test_main_with_bad_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, "registries:\n  - name: [unclosed\n")
    assert cli.main(["discovery", f"--config={config}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("registryd: error: --config")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("default:info", {"default": logging.INFO}),
        ("debug", {"default": logging.DEBUG}),
        ("default:warn, xds:DEBUG", {"default": logging.WARNING, "xds": logging.DEBUG}),
        ("registry:none", {"registry": logging.CRITICAL + 10}),
        ("", {}),
    ],
)
def test_parse_levels(text: str, expected: dict[str, int]) -> None:
    assert parse_levels(text) == expected


def test_parse_levels_rejects_unknown_level() -> None:
    with pytest.raises(ConfigError, match="unknown level 'loud' in 'xds:loud'"):
        parse_levels("default:info,xds:loud")


def test_load_factory_memory() -> None:
    factory = load_factory("memory", registry="mem")
    adapter = factory(name="mem", settings={}, context=None)  # type: ignore[arg-type]
    assert isinstance(adapter, MemoryAdapter)
    assert adapter.name == "mem"


def test_load_factory_unknown_type_names_registry_and_lists_adapters() -> None:
    installed = available()
    assert {"memory", "serviceentry"} <= set(installed)
    with pytest.raises(ConfigError) as info:
        load_factory("zookeeper", registry="zk-east")
    message = str(info.value)
    assert "'zk-east'" in message
    assert "'zookeeper'" in message
    assert f"installed adapters: {', '.join(installed)}" in message


def test_zero_duration_with_unit_means_no_limit_like_zero() -> None:
    # Go prints a zero duration as "0s"; a 0 ms max connection age would make gRPC
    # send GOAWAY to every client right after it connects.
    assert parse_duration("--keepaliveMaxServerConnectionAge", "0s") is None
    settings = cli.parse_args(["discovery", "--keepaliveMaxServerConnectionAge=0s"])
    assert settings.max_connection_age is None


def test_config_dir_registry_name_must_not_clash_with_config_file(tmp_path: Path) -> None:
    # Both would become ShardKey('serviceentry', 'configDir') and overwrite each other.
    config = write(tmp_path, "registries:\n- {name: configDir, type: serviceentry, path: .}\n")
    with pytest.raises(ConfigError, match="configDir"):
        cli.parse_args(["discovery", f"--config={config}", f"--configDir={tmp_path}"])


def test_kubeconfig_adds_the_local_cluster_as_a_kubernetes_registry(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    settings = cli.parse_args(
        ["discovery", f"--kubeconfig={kubeconfig}", "--clusterID=east", "--kubernetesApiQPS=20"]
    )
    (registry,) = settings.registries
    assert (registry.name, registry.type) == ("east", "kubernetes")
    assert dict(registry.settings) == {"kubeconfig": str(kubeconfig.resolve()), "qps": 20.0}


def test_registries_kubernetes_in_cluster_like_istiod() -> None:
    settings = cli.parse_args(["discovery", "--registries=Kubernetes"])
    (registry,) = settings.registries
    assert (registry.name, registry.type) == ("Kubernetes", "kubernetes")
    assert dict(registry.settings) == {}  # in-cluster credentials, rates by default


def test_kubeconfig_does_not_add_a_second_kubernetes_registry(tmp_path: Path) -> None:
    config = write(tmp_path, "registries:\n- {name: west, type: kubernetes}\n")
    settings = cli.parse_args(["discovery", f"--config={config}", "--kubeconfig=kc"])
    assert [r.name for r in settings.registries] == ["west"]
    clash = write(tmp_path, "registries:\n- {name: Kubernetes, type: serviceentry, path: .}\n")
    with pytest.raises(ConfigError, match="clusterID"):
        cli.parse_args(["discovery", f"--config={clash}", "--kubeconfig=kc"])
    with pytest.raises(ConfigError, match="kubernetesApiQPS"):
        cli.parse_args(["discovery", "--kubernetesApiQPS=0"])


def kubernetes_settings(settings: Settings, name: str) -> KubernetesSettings:
    """The settings of the adapter the daemon creates for registry ``name`` (created as
    the daemon creates it: registry config and the daemon-wide context)."""
    registry = next(r for r in settings.registries if r.name == name)
    adapter = create_adapter(registry, AdapterContext(domain=settings.domain))
    assert isinstance(adapter, KubernetesAdapter)
    return adapter.settings


def kubeconfig_file(path: Path) -> Path:
    path.write_text("apiVersion: v1\nkind: Config\n")
    return path


def test_kubernetes_flags_reach_the_kubernetes_adapter(tmp_path: Path) -> None:
    kubeconfig = kubeconfig_file(tmp_path / "kubeconfig")
    flags = [f"--kubeconfig={kubeconfig}", "--kubernetesApiQPS=20", "--kubernetesApiBurst=30"]
    settings = cli.parse_args(["discovery", *flags, "--domain=corp.example"])
    local = kubernetes_settings(settings, "Kubernetes")
    assert (local.kubeconfig, local.qps, local.burst) == (str(kubeconfig.resolve()), 20.0, 30)
    assert (local.cluster_id, local.domain) == ("Kubernetes", "corp.example")


def test_registryd_yaml_kubernetes_settings_win_over_the_flags(tmp_path: Path) -> None:
    flag = kubeconfig_file(tmp_path / "flag.kubeconfig")
    own = kubeconfig_file(tmp_path / "own.kubeconfig")
    config = write(
        tmp_path,
        "registries:\n"
        "- {name: east, type: kubernetes, kubeconfig: own.kubeconfig, qps: 5}\n"
        "- {name: west, type: kubernetes, burst: null}\n"
        "- {name: files, type: serviceentry, path: .}\n",
    )
    flags = [f"--kubeconfig={flag}", "--kubernetesApiQPS=20", "--kubernetesApiBurst=30"]
    settings = cli.parse_args(["discovery", f"--config={config}", *flags])
    east = kubernetes_settings(settings, "east")
    assert (east.kubeconfig, east.qps, east.burst) == (str(own), 5.0, 30)
    west = kubernetes_settings(settings, "west")  # null: not set, so the flag
    assert (west.kubeconfig, west.qps, west.burst) == (str(flag.resolve()), 20.0, 30)
    files = next(r for r in settings.registries if r.name == "files")
    assert dict(files.settings) == {"path": str(tmp_path.resolve())}


def test_without_kubernetes_flags_the_settings_defaults_hold(tmp_path: Path) -> None:
    kubeconfig = kubeconfig_file(tmp_path / "kc")
    config = write(tmp_path, "registries:\n- {name: east, type: kubernetes, kubeconfig: kc}\n")
    settings = cli.parse_args(["discovery", f"--config={config}"])
    (registry,) = settings.registries
    assert dict(registry.settings) == {"kubeconfig": str(kubeconfig)}
    east = kubernetes_settings(settings, "east")
    assert (east.qps, east.burst) == (80.0, 160)


def test_exposure_warnings_for_non_loopback_plaintext_xds_and_debug() -> None:
    from registryd.daemon.app import exposure_warnings

    defaults = exposure_warnings(cli.parse_args(["discovery"]))
    assert [w.split(" listen")[0] for w in defaults] == [
        "plaintext xDS",
        "debug endpoints",
        "debug endpoints",
    ]
    assert "--grpcAddr off" in defaults[0]
    local = cli.parse_args(
        [
            "discovery",
            "--grpcAddr=127.0.0.1:15010",
            "--httpAddr=localhost:8080",
            "--monitoringAddr=[::1]:15014",
        ]
    )
    assert exposure_warnings(local) == []


def test_max_unknown_names_flag() -> None:
    assert cli.parse_args(["discovery"]).max_unknown_names == 10000
    assert cli.parse_args(["discovery", "--xdsMaxUnknownNames=0"]).max_unknown_names == 0
    with pytest.raises(ConfigError, match="xdsMaxUnknownNames"):
        cli.parse_args(["discovery", "--xdsMaxUnknownNames=-1"])
