"""Kubernetes objects (Service, EndpointSlice, Node, Namespace, Pod dicts) as the tests write
them, and the mapping options they are read with."""

from __future__ import annotations

from typing import Any

from registryd.adapters.kubernetes.mapping import Options

OPTIONS = Options(domain="cluster.local", cluster_id="east")


def service(
    name: str = "web",
    namespace: str = "shop",
    *,
    ports: Any = None,
    cluster_ip: Any = "10.96.0.10",
    labels: Any = None,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
        if ports is None
        else ports
    }
    if cluster_ip is not None:
        body["clusterIP"] = cluster_ip
    body.update(spec)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "resourceVersion": "7"}
    if labels is not None:
        metadata["labels"] = labels
    return {"metadata": metadata, "spec": body}


def ep(
    *addresses: str,
    ready: Any = True,
    serving: Any = None,
    terminating: Any = None,
    zone: str | None = None,
    node: str | None = None,
    pod: str | None = None,
) -> dict[str, Any]:
    conditions = {"ready": ready, "serving": serving, "terminating": terminating}
    item: dict[str, Any] = {
        "addresses": list(addresses),
        "conditions": {k: v for k, v in conditions.items() if v is not None},
    }
    if zone is not None:
        item["zone"] = zone
    if node is not None:
        item["nodeName"] = node
    if pod is not None:
        item["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "shop", "uid": "u-" + pod}
    return item


def endpoint_slice(
    name: str = "web-abc",
    namespace: str = "shop",
    *,
    service_name: str | None = "web",
    endpoints: Any = None,
    ports: Any = None,
    address_type: Any = "IPv4",
) -> dict[str, Any]:
    labels = {"kubernetes.io/service-name": service_name} if service_name else {}
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "addressType": address_type,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}] if ports is None else ports,
        "endpoints": [ep("10.1.0.1")] if endpoints is None else endpoints,
    }


def node(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}}


def pod(name: str, namespace: str = "shop", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running", "podIP": "10.1.0.1"},
    }
