"""Startup checks that need no daemon: registry names, paths in registryd.yaml, log
scopes, debounce order and ``--registries`` types."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from registryd.adapter import ConfigError
from registryd.base.logs import check_scopes
from registryd.daemon.config import load_registries
from registryd.tools.cli import main, parse_args


def write(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "registryd.yaml"
    config.write_text(text)
    return config


@pytest.mark.parametrize("name", ["a", "east-1", "Kubernetes", "dc1.vms", "us_west", "x" * 63])
def test_registry_names_allowed(tmp_path: Path, name: str) -> None:
    config = write(tmp_path, f"registries:\n- {{name: '{name}', type: memory}}\n")
    assert [r.name for r in load_registries(config)] == [name]


@pytest.mark.parametrize("name", ["east/1", "a b", "-east", "east-", "x" * 64, "caf\u00e9"])
def test_registry_names_refused_with_the_rule(tmp_path: Path, name: str) -> None:
    config = write(tmp_path, f"registries:\n- {{name: '{name}', type: memory}}\n")
    with pytest.raises(ConfigError, match=r"invalid registry name .* use 1-63 letters, digits"):
        load_registries(config)


def test_kubeconfig_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "registries:\n"
        "- {name: k, type: kubernetes, kubeconfig: kube/config}\n"
        "- {name: e, type: etcd, ca_file: ../ca.pem}\n",
    )
    kube, etcd = load_registries(config)
    assert kube.settings["kubeconfig"] == str(tmp_path / "kube" / "config")
    assert etcd.settings["ca_file"] == str(tmp_path.parent / "ca.pem")


def test_home_in_a_path_setting_is_expanded_not_joined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = write(tmp_path, "registries:\n- {name: k, type: kubernetes, kubeconfig: ~/kc}\n")
    (kube,) = load_registries(config)
    assert kube.settings["kubeconfig"] == str(tmp_path / "home" / "kc")


def test_known_scopes_pass(restore_loggers: None) -> None:
    check_scopes({"default": 10, "xds": 10, "xds.server": 10, "inventory": 10}, ["inventory"])
    logging.getLogger("registryd.someplugin")
    check_scopes({"someplugin": 20})


def test_unknown_scope_names_the_scopes() -> None:
    with pytest.raises(ConfigError, match=r"unknown scope 'xsd' \(scopes: .*default.*xds"):
        check_scopes({"xsd": 10})
    with pytest.raises(ConfigError, match="unknown scope 'asyncio'"):
        check_scopes({"asyncio": 10})  # a logger outside registryd is no scope


def test_debounce_max_may_equal_but_not_undercut_after() -> None:
    settings = parse_args(["discovery", "--debounceAfter=1s", "--debounceMax=1s"], environ={})
    assert (settings.debounce_after, settings.debounce_max) == (1.0, 1.0)
    environ = {"PILOT_DEBOUNCE_AFTER": "20s"}
    with pytest.raises(ConfigError, match=r"--debounceMax \(10s\) is shorter"):
        parse_args(["discovery"], environ=environ)


def test_registries_types_are_case_insensitive_and_checked() -> None:
    settings = parse_args(["discovery", "--registries=Kubernetes"], environ={})
    assert [r.type for r in settings.registries] == ["kubernetes"]
    with pytest.raises(ConfigError, match="unknown registry type 'consol'"):
        parse_args(["discovery", "--registries=Kubernetes,consol"], environ={})


def test_the_open_files_limit_is_raised_to_the_hard_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import resource

    from registryd.tools import cli

    limits = {resource.RLIMIT_NOFILE: (1024, 65536)}
    monkeypatch.setattr(resource, "getrlimit", limits.__getitem__)
    monkeypatch.setattr(resource, "setrlimit", limits.__setitem__)
    assert cli.raise_open_files_limit() == 65536
    assert limits[resource.RLIMIT_NOFILE] == (65536, 65536)

    def refuse(kind: int, value: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    limits[resource.RLIMIT_NOFILE] = (1024, 65536)
    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert cli.raise_open_files_limit() == 1024


def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def main_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """stderr of ``registryd ARGV``, which must be one line and exit 2."""
    assert main(list(argv)) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("registryd: error: "), err
    assert "Errno" not in err and "Traceback" not in err
    return err.removeprefix("registryd: error: ").rstrip("\n")


def test_a_registry_path_that_cannot_be_read_is_a_startup_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    place = fifo(tmp_path)
    config = write(tmp_path, f"registries:\n- {{name: files, type: serviceentry, path: {place}}}\n")
    expected = f"registry 'files' (serviceentry): 'path': not a regular file (a FIFO): {place}"
    assert main_error(capsys, "discovery", "--config", str(config)) == (
        f"--config {config}:2: {expected}"
    )
    validated = main(["validate", "--config", str(config)])
    out, _ = capsys.readouterr()
    assert validated == 1 and f"--config {config}:2: {expected}\n" in out


def test_a_config_dir_that_is_not_a_directory_is_a_startup_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    place = fifo(tmp_path)
    expected = f"--configDir {place}: not a directory"
    assert main_error(capsys, "discovery", "--configDir", str(place)) == expected
    assert main_error(capsys, "validate", "--configDir", str(place)) == expected


def test_a_config_dir_that_cannot_be_listed_is_one_line_without_errno(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the kernel answers for a mode 000 directory to anyone but root, simulated so
    that the test means the same whoever runs it."""
    listed = os.scandir

    def refused(path: Any) -> Any:
        if os.fspath(path) == str(tmp_path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return listed(path)

    monkeypatch.setattr(os, "scandir", refused)
    expected = f"--configDir {tmp_path}: cannot read: Permission denied"
    assert main_error(capsys, "discovery", "--configDir", str(tmp_path)) == expected
    assert main_error(capsys, "validate", "--configDir", str(tmp_path)) == expected


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode 000 directory")
def test_a_mode_000_config_dir_is_a_startup_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    place = tmp_path / "entries"
    place.mkdir(mode=0)
    try:
        expected = f"--configDir {place}: cannot read: Permission denied"
        assert main_error(capsys, "discovery", "--configDir", str(place)) == expected
        assert main_error(capsys, "validate", "--configDir", str(place)) == expected
    finally:
        place.chmod(0o700)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "registries:\n- name: a\n  type: memory\n- name: b\n  tipe: memory\n",
            ":4: registries[1] (b): 'type' is required",
        ),
        (
            "registries:\n- {name: a, type: memory}\n- name: c\n  type: consul\n  wait: soon\n",
            ":3: registry 'c' (consul): 'wait' must be a duration",
        ),
        ("registries:\n- {name: a, type: nope}\n", ":2: registry 'a': unknown type 'nope'"),
        (
            "registries:\n- name: a\n  type: memory\n- {name: b, type: memory\n",
            ":5: invalid YAML at line 5, column 1: while parsing a flow mapping",
        ),
    ],
    ids=["missing-type", "bad-setting", "unknown-type", "yaml-syntax"],
)
def test_errors_in_registryd_yaml_name_the_file_and_line_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    config = write(tmp_path, text)
    assert main_error(capsys, "discovery", "--config", str(config)).startswith(
        f"--config {config}{expected}"
    )
    assert main(["validate", "--config", str(config)]) == 1
    out, _ = capsys.readouterr()
    finding = out.splitlines()[0]
    assert finding.startswith(f"Error [invalid-config] --config {config}{expected}")
    assert finding.count("--config") == 1 and "registryd: error" not in finding
