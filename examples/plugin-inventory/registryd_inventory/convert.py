"""Inventory JSON -> registryd services and endpoints.  Pure: no I/O.

The inventory answers ``GET <url>`` with::

    {"services": [
      {"name": "billing", "namespace": "payments", "port": 8080, "protocol": "http",
       "instances": [
         {"host": "10.0.0.5", "port": 18080, "zone": "eu-west-1a", "healthy": true,
          "weight": 2, "tags": {"version": "v2"}}]}]}

Each service becomes ``<name>.<hostname_suffix>`` with one port; each instance one
endpoint (``port`` defaults to the service port, ``healthy`` to true, ``weight`` to 1).
A malformed service or instance is reported under ``<name>`` (or ``#<index>``) and left
out; the rest is served.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from registryd.model import Endpoint, Health, Labels, Locality, Port, Service

__all__ = ["Inventory", "convert"]

PROTOCOLS = {"http": "HTTP", "http2": "HTTP2", "grpc": "GRPC", "tcp": "TCP"}


@dataclass(frozen=True, slots=True)
class Inventory:
    """One reading of the inventory: services by hostname, their endpoints, errors."""

    services: Mapping[str, Service] = field(default_factory=dict)
    endpoints: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)


def _port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{where}: port must be 1-65535, got {value!r}")
    return value


def _service(raw: Any, suffix: str) -> tuple[Service, tuple[Endpoint, ...]]:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ValueError("a service needs a non-empty 'name'")
    name = raw["name"]
    protocol = PROTOCOLS.get(str(raw.get("protocol", "tcp")).lower())
    if protocol is None:
        raise ValueError(f"unknown protocol {raw.get('protocol')!r} (use {sorted(PROTOCOLS)})")
    number = _port(raw.get("port"), "service port")
    host = f"{name}.{suffix}"
    service = Service(
        hostname=host,
        namespace=str(raw.get("namespace") or "default"),
        ports=(Port(number=number, name=protocol.lower(), protocol=protocol),),
    )
    endpoints = []
    for i, inst in enumerate(raw.get("instances") or []):
        if not isinstance(inst, dict) or not isinstance(inst.get("host"), str):
            raise ValueError(f"instance {i}: needs a 'host'")
        weight = inst.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise ValueError(f"instance {i}: weight must be an integer >= 0, got {weight!r}")
        endpoints.append(
            Endpoint(
                hostname=host,
                address=inst["host"],
                port=_port(inst.get("port", number), f"instance {i}"),
                service_port=number,
                locality=Locality(zone=str(inst.get("zone") or "")),
                weight=weight,
                health=Health.HEALTHY if inst.get("healthy", True) else Health.UNHEALTHY,
                labels=Labels({str(k): str(v) for k, v in (inst.get("tags") or {}).items()}),
            )
        )
    return service, tuple(endpoints)


def convert(document: Any, suffix: str) -> Inventory:
    """The services of one inventory document; raises ValueError if it is not one."""
    if not isinstance(document, dict) or not isinstance(document.get("services"), list):
        raise ValueError("the inventory must be a JSON object with a 'services' list")
    services: dict[str, Service] = {}
    endpoints: dict[str, tuple[Endpoint, ...]] = {}
    errors: dict[str, str] = {}
    for index, raw in enumerate(document["services"]):
        source = raw.get("name") if isinstance(raw, dict) else None
        source = source if isinstance(source, str) and source else f"#{index}"
        try:
            service, found = _service(raw, suffix)
        except ValueError as exc:
            errors[source] = str(exc)
            continue
        services[service.hostname] = service
        endpoints[service.hostname] = found
    return Inventory(services, endpoints, errors)
