"""The example ``registryd.yaml`` files under examples/: each passes the checks the daemon
runs at start — the config file parser, then every registry's own settings parser (its
adapter factory) — with the files it names present.  Files the example ships (the
ServiceEntry directory) must exist as they are; files the user brings (a kubeconfig) are
put where the example expects them."""

from __future__ import annotations

from pathlib import Path

import pytest

from registryd.adapter import AdapterContext, ConfigError
from registryd.daemon.config import RegistryConfig, load_registries
from registryd.daemon.plugins import load_factory
from registryd.tools import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BUILT_IN = {"serviceentry", "consul", "etcd", "kubernetes"}

# example → the registries it configures, as (name, type)
EXPECTED = {
    "consul": [("dc1", "consul")],
    "etcd": [("services", "etcd")],
    "kubernetes": [("east", "kubernetes"), ("west", "kubernetes")],
    "mixed": [("vms", "serviceentry"), ("dc1", "consul"), ("services", "etcd")],
    "nacos": [("nacos", "nacos")],
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home directory with the kubeconfig the Kubernetes examples name (the user's own;
    its content is read only when a registry connects)."""
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)  # not in a pod: the kubeconfig is used
    return tmp_path


def build(registry: RegistryConfig) -> object:
    """The adapter the daemon would build for ``registry``: its settings validated, no
    connection made."""
    factory = load_factory(registry.type, registry=registry.name)
    return factory(name=registry.name, settings=registry.settings, context=AdapterContext())


def test_every_example_config_is_tested() -> None:
    found = {path.parent.name for path in EXAMPLES.glob("*/registryd.yaml")}
    assert found == EXPECTED.keys()


@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_example_config_passes_the_daemons_checks(example: str, home: Path) -> None:
    path = EXAMPLES / example / "registryd.yaml"
    registries = load_registries(path)
    assert [(r.name, r.type) for r in registries] == EXPECTED[example]
    for registry in registries:
        build(registry)
    # and the command line takes it as it is
    settings = cli.parse_args(["discovery", "--config", str(path)])
    assert [(r.name, r.type) for r in settings.registries] == EXPECTED[example]


def test_mixed_example_uses_every_built_in_registry_and_the_example_serviceentries(
    home: Path,
) -> None:
    path = EXAMPLES / "mixed" / "registryd.yaml"
    registries = load_registries(path)
    (files,) = (r for r in registries if r.type == "serviceentry")
    assert Path(files.settings["path"]) == (EXAMPLES / "serviceentries").resolve()
    # its Kubernetes part is the local cluster of --kubeconfig, as its comment says
    kubeconfig = str(home / ".kube" / "config")
    settings = cli.parse_args(["discovery", "--config", str(path), "--kubeconfig", kubeconfig])
    assert {r.type for r in settings.registries} == BUILT_IN


def test_mixed_example_runs_without_a_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    path = EXAMPLES / "mixed" / "registryd.yaml"
    settings = cli.parse_args(["discovery", "--config", str(path)])
    assert "kubernetes" not in {r.type for r in settings.registries}
    for registry in settings.registries:
        build(registry)


def test_kubernetes_example_fails_to_start_without_the_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the check above can fail: a missing file is a settings error naming the registry
    monkeypatch.setenv("HOME", str(tmp_path))
    (east, _) = load_registries(EXAMPLES / "kubernetes" / "registryd.yaml")
    with pytest.raises(ConfigError, match=r"registry 'east' \(kubernetes\): 'kubeconfig'"):
        build(east)
