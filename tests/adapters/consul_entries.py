"""Consul health entries as the tests write them, and the conversion of one entry."""

from __future__ import annotations

from typing import Any

from registryd.adapters.consul.parse import (
    Instance,
    Options,
    convert_entry,
)

OPTIONS = Options()


def check(status: str = "passing", check_id: str = "chk", service_id: str = "") -> dict[str, Any]:
    return {
        "Node": "n1",
        "CheckID": check_id,
        "Name": check_id,
        "Status": status,
        "ServiceID": service_id,
        "Output": "HTTP GET http://10.0.0.1/health: 200 OK secret-output",
        "Notes": "page the on-call",
        "Definition": {"HTTP": "http://x", "Header": {"Authorization": ["Bearer hunter2"]}},
    }


def entry(
    service: str = "web",
    service_id: str | None = None,
    *,
    node: str = "n1",
    node_address: Any = "10.0.0.1",
    address: Any = "",
    port: Any = 8080,
    tags: Any = None,
    meta: Any = None,
    weights: Any = None,
    checks: Any = (),
    datacenter: str = "dc1",
) -> dict[str, Any]:
    svc: dict[str, Any] = {
        "ID": service_id or service,
        "Service": service,
        "Tags": tags,
        "Address": address,
        "Meta": meta,
        "Port": port,
    }
    if weights is not None:
        svc["Weights"] = weights
    return {
        "Node": {"Node": node, "Address": node_address, "Datacenter": datacenter, "Meta": {}},
        "Service": svc,
        "Checks": list(checks),
    }


def convert(raw: Any, datacenter: str = "", options: Options = OPTIONS) -> Instance:
    return convert_entry(raw, service="web", datacenter=datacenter, options=options)


def proxy_entry(service: str = "web-sidecar-proxy", kind: str = "connect-proxy") -> dict[str, Any]:
    raw = entry(service, port=21000)
    raw["Service"]["Kind"] = kind
    raw["Service"]["Proxy"] = {"DestinationServiceName": "web"}
    return raw
