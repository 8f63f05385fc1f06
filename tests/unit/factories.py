"""Small builders for model values shared by the unit tests."""

from __future__ import annotations

from registryd.model import Endpoint, Health, Locality, Port, Resolution, Service, ShardKey

MEM = ShardKey("memory", "mem")


def svc(
    host: str = "a.example",
    *ports: Port,
    resolution: Resolution = Resolution.STATIC,
    namespace: str = "default",
    export_to: tuple[str, ...] = (),
    addresses: tuple[str, ...] = (),
    alias_for: str = "",
) -> Service:
    return Service(
        hostname=host,
        namespace=namespace,
        ports=ports or (Port(number=8080, name="http", protocol="HTTP"),),
        resolution=Resolution.ALIAS if alias_for else resolution,
        export_to=export_to,
        addresses=addresses,
        alias_for=alias_for,
    )


def ep(
    host: str = "a.example",
    address: str = "10.0.0.1",
    *,
    port: int = 9000,
    service_port: int = 8080,
    weight: int = 1,
    health: Health = Health.HEALTHY,
    locality: str = "",
) -> Endpoint:
    return Endpoint(
        hostname=host,
        address=address,
        port=port,
        service_port=service_port,
        weight=weight,
        health=health,
        locality=Locality.parse(locality),
    )
