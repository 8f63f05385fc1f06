"""The Kubernetes registry's settings (:mod:`registryd.adapters.kubernetes.settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from registryd.adapter import AdapterContext, ConfigError
from registryd.adapters.kubernetes.settings import parse_settings


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\n")
    return path


def test_settings_defaults(kubeconfig: Path) -> None:
    context = AdapterContext(domain="corp.example")
    settings = parse_settings("east", {"kubeconfig": str(kubeconfig)}, context)
    assert settings.kubeconfig == str(kubeconfig)
    assert settings.context is None
    assert settings.cluster_id == "east"  # the registry's name
    assert settings.namespaces == ()
    assert settings.namespace_selector is None
    assert (settings.qps, settings.burst) == (80.0, 160)  # istiod's flag defaults
    assert settings.domain == "corp.example"  # --domain, from the context
    assert settings.max_response_bytes == 16 * 2**20


def test_settings_given(kubeconfig: Path) -> None:
    settings = parse_settings(
        "east",
        {
            "kubeconfig": str(kubeconfig),
            "context": "prod",
            "cluster_id": "cluster-1",
            "namespaces": ["shop", "billing"],
            "namespace_selector": "mesh=on",
            "qps": 10,
            "burst": 20,
            "domain": "Corp.Example.",
        },
        AdapterContext(),
    )
    assert settings.context == "prod"
    assert settings.cluster_id == "cluster-1"
    assert settings.namespaces == ("billing", "shop")
    assert settings.namespace_selector is not None and str(settings.namespace_selector) == "mesh=on"
    assert (settings.qps, settings.burst, settings.domain) == (10.0, 20, "corp.example")


def test_settings_in_cluster_needs_the_pod_environment() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    settings = parse_settings("local", {}, AdapterContext(), env)
    assert settings.kubeconfig is None and settings.source == "in-cluster config"
    with pytest.raises(ConfigError, match="not running in a pod"):
        parse_settings("local", {}, AdapterContext(), {})
    with pytest.raises(ConfigError, match="'context' needs a kubeconfig"):
        parse_settings("local", {"context": "x"}, AdapterContext(), env)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"bogus": 1}, "unknown settings"),
        ({"kubeconfig": "/no/such/kubeconfig"}, "no such file"),
        ({"kubeconfig": 3}, "file path"),
        ({"context": ""}, "context"),
        ({"cluster_id": "has space"}, "cluster_id"),
        ({"cluster_id": ""}, "cluster_id"),
        ({"namespaces": "shop"}, "namespaces"),
        ({"namespaces": []}, "namespaces"),
        ({"namespaces": ["Shop"]}, "namespace name"),
        ({"namespaces": ["a", "a"]}, "twice"),
        ({"namespace_selector": "a in ()"}, "namespace_selector"),
        ({"namespace_selector": ""}, "namespace_selector"),
        ({"qps": 0}, "qps"),
        ({"qps": "fast"}, "qps"),
        ({"burst": 0}, "burst"),
        ({"burst": 1.5}, "burst"),
        ({"domain": "not a domain"}, "domain"),
        ({"max_response_bytes": 512}, "'max_response_bytes' must be a whole number >= 1024"),
        ({"max_response_bytes": 1.5e6}, "'max_response_bytes' must be a whole number"),
    ],
)
def test_bad_settings_name_the_registry(
    kubeconfig: Path, settings: dict[str, Any], message: str
) -> None:
    values = {"kubeconfig": str(kubeconfig), **settings}
    with pytest.raises(ConfigError, match=message) as caught:
        parse_settings("east", values, AdapterContext())
    assert "registry 'east' (kubernetes)" in str(caught.value)


def test_a_registry_name_that_is_no_cluster_id_needs_one(kubeconfig: Path) -> None:
    with pytest.raises(ConfigError, match="registry name"):
        parse_settings("east/1", {"kubeconfig": str(kubeconfig)}, AdapterContext())
    settings = parse_settings("east/1", {"kubeconfig": str(kubeconfig), "cluster_id": "e1"})
    assert settings.cluster_id == "e1"
