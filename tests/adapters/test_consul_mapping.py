"""Consul instances -> one service (:mod:`registryd.adapters.consul.mapping`), pure: ports,
protocols, endpoints, resolution."""

from __future__ import annotations

from typing import Any

from registryd.adapters.consul.mapping import build_service
from registryd.adapters.consul.parse import Instance
from registryd.model import Locality, Location, Resolution
from tests.adapters.consul_entries import convert, entry


def instances(*raws: dict[str, Any]) -> list[Instance]:
    return [convert(r) for r in raws]


def test_service_ports_from_all_instances() -> None:
    service, endpoints, notes = build_service(
        "web.service.consul",
        instances(
            entry(service_id="a", port=8080, meta={"protocol": "http"}),
            entry(service_id="b", port=9090, node_address="10.0.0.2", meta={"protocol": "grpc"}),
            entry(service_id="c", port=8080, node_address="10.0.0.3", meta={"protocol": "http"}),
        ),
        namespace="mesh",
    )
    assert [(p.number, p.name, p.protocol) for p in service.ports] == [
        (8080, "http-8080", "HTTP"),
        (9090, "grpc-9090", "GRPC"),
    ]
    assert service.namespace == "mesh"
    assert service.resolution is Resolution.STATIC
    assert service.location is Location.MESH_INTERNAL
    assert [(e.address, e.port, e.service_port) for e in endpoints] == [
        ("10.0.0.1", 8080, 8080),
        ("10.0.0.3", 8080, 8080),
        ("10.0.0.2", 9090, 9090),
    ]
    assert all(e.locality == Locality(region="dc1") for e in endpoints)
    assert notes == []


def test_conflicting_protocols_first_instance_wins() -> None:
    service, _, notes = build_service(
        "web.service.consul",
        instances(
            entry(service_id="a", meta={"protocol": "http"}),
            entry(service_id="b", node="n2", node_address="10.0.0.2"),
        ),
    )
    assert service.ports[0].protocol == "HTTP"
    assert notes == [
        "web.service.consul: port 8080 is HTTP on web/a (node n1 in dc1) but TCP on "
        "web/b (node n2 in dc1); using HTTP"
    ]


def test_same_address_and_port_is_one_endpoint() -> None:
    _, endpoints, notes = build_service(
        "web.service.consul", instances(entry(service_id="a"), entry(service_id="b"))
    )
    assert len(endpoints) == 1
    assert "both 10.0.0.1:8080; using web/a" in notes[0]


def test_dns_addresses_make_a_dns_service() -> None:
    service, endpoints, _ = build_service(
        "db.service.consul", instances(entry(address="db.example.com", meta={"external": "y"}))
    )
    assert service.resolution is Resolution.DNS
    assert service.location is Location.MESH_EXTERNAL
    assert endpoints[0].address == "db.example.com"
