"""The Kubernetes manifests in deploy/: they parse, fit together, and the daemon they
describe accepts its own flags and config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from registryd import cli
from registryd.config import load_registries
from registryd.plugins import available

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "kustomization.yaml must list every manifest"
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name in sorted(listed):
        for doc in yaml.safe_load_all((DEPLOY / name).read_text()):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def test_deployment_runs_two_replicas_with_valid_flags(
    objects: dict[tuple[str, str], dict[str, Any]], tmp_path: Path
) -> None:
    deployment = objects[("Deployment", "registryd")]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8080}
    assert container["resources"]["requests"]["cpu"]  # the HPA needs a CPU request

    # the flags parse, with the ConfigMap's registryd.yaml where the volume puts it
    config = objects[("ConfigMap", "registryd")]["data"]["registryd.yaml"]
    (tmp_path / "registryd.yaml").write_text(config)
    args = [
        a.replace("/etc/registryd/registryd.yaml", str(tmp_path / "registryd.yaml"))
        for a in container["args"]
    ]
    settings = cli.parse_args(args)
    assert [(r.name, r.type) for r in settings.registries] == [("Kubernetes", "kubernetes")]
    assert settings.max_connection_age == 1800
    assert {r.type for r in load_registries(tmp_path / "registryd.yaml")} <= set(available())
    mount = container["volumeMounts"][0]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert mount["mountPath"] == "/etc/registryd" and volume["configMap"]["name"] == "registryd"


def test_service_exposes_istiod_ports(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    service = objects[("Service", "registryd")]
    assert {p["port"] for p in service["spec"]["ports"]} == {15010, 15012, 15014, 8080}
    deployment = objects[("Deployment", "registryd")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    served = {p["containerPort"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= served


def test_hpa_scales_two_to_five_at_80_percent_cpu(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    hpa = objects[("HorizontalPodAutoscaler", "registryd")]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert hpa["scaleTargetRef"]["name"] == "registryd"
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 80}


def test_rbac_lets_the_service_account_list_and_watch_what_the_adapter_reads(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    rules = objects[("ClusterRole", "registryd")]["rules"]
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    for need in (
        ("", "services"),
        ("", "nodes"),
        ("", "pods"),
        ("discovery.k8s.io", "endpointslices"),
    ):
        assert {"list", "watch"} <= granted.get(need, set()), need
    binding = objects[("ClusterRoleBinding", "registryd")]
    (subject,) = binding["subjects"]
    deployment = objects[("Deployment", "registryd")]
    assert subject["name"] == deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert subject["namespace"] == deployment["metadata"]["namespace"]
    assert ("ServiceAccount", subject["name"]) in objects
