"""What configures MCP: registryd.yaml's ``export:`` per registry, ``--rootNamespace``,
and ``/debug/configz`` showing whether each registry is exported."""

from __future__ import annotations

from pathlib import Path

import pytest

from registryd.adapter import ConfigError
from registryd.daemon.app import App
from registryd.daemon.config import RegistryConfig, parse_registries
from registryd.daemon.plugins import adapter_type
from registryd.model import ShardKey
from registryd.registry.store import RegistryStore
from registryd.testing import MemoryAdapter
from registryd.tools import cli
from registryd.web import views
from tests.support.harness import Harness, loopback_settings
from tests.web.test_debug import get

PATH = Path("/etc/registryd/registryd.yaml")


def test_export_is_parsed_and_is_not_an_adapter_setting() -> None:
    registries = parse_registries(
        "registries:\n"
        "- {name: vms, type: consul, export: false}\n"
        "- {name: k, type: kubernetes, export: true}\n"
        "- {name: mem, type: memory}\n"
        "- {name: later, type: memory, export: null}\n",
        PATH,
    )
    assert [(r.name, r.export) for r in registries] == [
        ("vms", False),
        ("k", True),
        ("mem", None),  # the type's default, which the store applies
        ("later", None),
    ]
    assert all("export" not in r.settings for r in registries)


@pytest.mark.parametrize("value", ['"yes"', "'false'", "1", "0", "[true]", "{a: 1}"])
def test_export_must_be_true_or_false(value: str) -> None:
    text = (
        "registries:\n"
        "- {name: ok, type: memory}\n"
        f"- {{name: vms, type: consul, export: {value}}}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_registries(text, PATH)
    message = str(info.value)
    assert "registries[1] (vms): 'export' must be true or false" in message
    assert str(PATH) in message and "\n" not in message


def test_root_namespace_defaults_to_istios() -> None:
    assert cli.parse_args(["discovery"], {}).root_namespace == "istio-system"
    assert cli.parse_args(["discovery", "--rootNamespace=mesh-root"], {}).root_namespace == (
        "mesh-root"
    )
    assert cli.parse_args(["discovery", f"--rootNamespace={'n' * 63}"], {}).root_namespace == (
        "n" * 63
    )


@pytest.mark.parametrize(
    "value", ["", "Istio-System", "-istio", "istio-", "istio.system", "istio_system", "n" * 64]
)
def test_root_namespace_must_be_a_namespace_name(value: str) -> None:
    with pytest.raises(ConfigError, match="--rootNamespace: not a namespace name") as info:
        cli.parse_args(["discovery", f"--rootNamespace={value}"], {})
    assert repr(value) in str(info.value)


def test_configz_shows_whether_each_registry_is_exported() -> None:
    store = RegistryStore(adapter_type)
    k8s, k8s_out = ShardKey("kubernetes", "k"), ShardKey("kubernetes", "k-out")
    consul, vms = ShardKey("consul", "c"), ShardKey("consul", "vms")
    store.expect(k8s)
    store.expect(k8s_out, export=True)
    store.expect(consul)
    store.expect(vms, export=False)
    shown = views.configz(store, [(k, {}) for k in (k8s, k8s_out, consul, vms)], {})
    assert {c["registry"]: c["exported"] for c in shown} == {
        "kubernetes/k": False,
        "kubernetes/k-out": True,
        "consul/c": True,
        "consul/vms": False,
    }


async def test_debug_configz_shows_what_registryd_yaml_declared() -> None:
    registries = (
        RegistryConfig(name="mem", type="memory"),
        RegistryConfig(name="hidden", type="memory", export=False),
    )
    app = App(loopback_settings(registries=registries))
    memory = app._adapters[0][1]
    assert isinstance(memory, MemoryAdapter)
    await app.start()
    try:
        shown = await get(Harness(app, memory), "/debug/configz")
    finally:
        await app.stop()
    assert [(c["registry"], c["exported"]) for c in shown] == [
        ("memory/mem", True),
        ("memory/hidden", False),
    ]
