"""The registry states :class:`tests.differential.mcp.McpPair` compares: what etcd, Consul
and Nacos hold, each covering what the registry's mapping does (protocols, several
ports, localities, weights, labels, unhealthy and draining instances, DNS names, one
hostname in several registries).  Every hostname ends with
:data:`tests.differential.mcp.DOMAIN`."""

from __future__ import annotations

from typing import Any

from tests.differential.mcp import NacosInstance, RegistryState

__all__ = ["STATES"]


def _etcd(address: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"address": address, "port": port, **extra}


def _consul(
    node: str, address: str, service: str, port: int, status: str = "passing", **extra: Any
) -> dict[str, Any]:
    return {
        "Node": node,
        "Address": address,
        "Service": {"ID": f"{service}-{node}", "Service": service, "Port": port, **extra},
        "Checks": [
            {
                "CheckID": f"service:{service}-{node}",
                "Name": "alive",
                "Status": status,
                "ServiceID": f"{service}-{node}",
            }
        ],
    }


def _http(address: str, port: int, **extra: Any) -> dict[str, Any]:
    return _etcd(address, port, protocol="HTTP", portName="http", **extra)


STATES: tuple[RegistryState, ...] = (
    RegistryState(
        name="etcd: HTTP, TCP and gRPC services, localities, weights, labels, health",
        expect={"web.mesh.example": 3, "db.mesh.example": 1, "api.mesh.example": 2},
        etcd={
            "web/a": _http("10.1.0.1", 8080, servicePort=80),
            "web/b": _http(
                "10.1.0.2",
                8080,
                servicePort=80,
                locality="us-east1/us-east1-b",
                weight=3,
                labels={"version": "v2"},
            ),
            "web/c": _http("10.1.0.3", 8080, servicePort=80, health="DRAINING"),
            "db/a": _etcd("10.2.0.1", 5432, protocol="TCP", portName="tcp-db"),
            "api/a": _etcd("10.3.0.1", 9090, protocol="GRPC", portName="grpc"),
            "api/b": _etcd("10.3.0.2", 9090, protocol="GRPC", portName="grpc", health="UNHEALTHY"),
        },
    ),
    RegistryState(
        name="etcd: one address serving two ports, two instances on one address",
        expect={"multi.mesh.example": 4},
        etcd={
            "multi/a-http": _http("10.9.0.1", 8080),
            "multi/a-admin": _etcd("10.9.0.1", 9901, protocol="HTTP", portName="http-admin"),
            "multi/b-1": _http("10.9.0.2", 8080),
            "multi/b-2": _http("10.9.0.2", 8081, servicePort=8080),
        },
    ),
    RegistryState(
        name="consul: meta protocol, tags, weights, a critical check, a DNS-named external",
        expect={"web.mesh.example": 2, "cache.mesh.example": 1, "ext.mesh.example": 1},
        consul=(
            _consul("vm-1", "10.4.0.1", "web", 8080, Meta={"protocol": "http", "version": "v1"}),
            _consul(
                "vm-2",
                "10.4.0.2",
                "web",
                8080,
                "critical",
                Meta={"protocol": "http"},
                Weights={"Passing": 5, "Warning": 1},
            ),
            _consul("vm-3", "10.4.0.3", "cache", 6379, Tags=["protocol|redis", "tier|cache"]),
            _consul(
                "vm-4",
                "10.4.0.4",
                "ext",
                5432,
                Address="db.internal.example",
                Meta={"external": "true"},
            ),
        ),
    ),
    RegistryState(
        name="nacos: clusters as zones, float weights, an unhealthy instance, two ports",
        expect={"orders.mesh.example": 3},
        nacos=(
            NacosInstance(
                "orders", "10.5.0.1", 8080, {"metadata": {"protocol": "http"}, "cluster": "z1"}
            ),
            NacosInstance(
                "orders", "10.5.0.2", 8080, {"metadata": {"protocol": "http"}, "weight": 2.5}
            ),
            NacosInstance("orders", "10.5.0.3", 9090, {"healthy": False}),
        ),
    ),
    RegistryState(
        name="one hostname in all three registries (etcd's attributes win), one in two",
        expect={"shared.mesh.example": 3, "pay.mesh.example": 2},
        etcd={
            "shared/a": _http("10.6.0.1", 8080),
            "pay/a": _etcd("10.6.1.1", 7000, protocol="GRPC", portName="grpc"),
        },
        consul=(
            _consul("vm-5", "10.7.0.1", "shared", 8080, Meta={"protocol": "http"}),
            _consul("vm-6", "10.7.0.2", "pay", 7000, Meta={"protocol": "grpc"}),
        ),
        nacos=(NacosInstance("shared", "10.8.0.1", 8080, {"metadata": {"protocol": "http"}}),),
    ),
)
