"""etcd instances -> one service (:mod:`registryd.adapters.etcd.mapping`), pure: ports,
conflicts and duplicate endpoints."""

from __future__ import annotations

from registryd.adapters.etcd.mapping import build_service
from registryd.adapters.etcd.parse import Options
from registryd.model import (
    Location,
    Port,
    Resolution,
    Service,
)
from tests.adapters.etcd_values import OPTIONS, PREFIX, instance, naming, rich


def test_one_port_per_distinct_service_port() -> None:
    built = build_service(
        "web",
        [
            instance("c", rich("10.0.0.3", 9090, servicePort=90, portName="grpc")),
            instance("a", rich("10.0.0.1", 8080, servicePort=80, protocol="HTTP")),
            instance("b", rich("10.0.0.2", 8080, servicePort=80, protocol="HTTP")),
        ],
        Options(namespace="shop"),
    )
    assert built.service == Service(
        hostname="web",
        namespace="shop",
        ports=(
            Port(number=80, name="http-80", protocol="HTTP"),
            Port(number=90, name="grpc", protocol="GRPC"),
        ),
        resolution=Resolution.STATIC,
        location=Location.MESH_INTERNAL,
    )
    assert [(e.service_port, e.address) for e in built.endpoints] == [
        (80, "10.0.0.1"),
        (80, "10.0.0.2"),
        (90, "10.0.0.3"),
    ]
    assert built.notes == ()


def test_grpc_naming_instances_each_give_their_port() -> None:
    built = build_service(
        "greeter",
        [
            instance("a", naming("10.0.0.1:50051"), "greeter"),
            instance("b", naming("10.0.0.2:50052"), "greeter"),
        ],
        OPTIONS,
    )
    assert [p.number for p in built.service.ports] == [50051, 50052]
    assert [(e.address, e.port, e.service_port) for e in built.endpoints] == [
        ("10.0.0.1", 50051, 50051),
        ("10.0.0.2", 50052, 50052),
    ]


def test_first_key_wins_a_port_conflict_with_a_note() -> None:
    built = build_service(
        "web",
        [
            instance("b", rich("10.0.0.2", 80, protocol="GRPC")),
            instance("a", rich("10.0.0.1", 80, protocol="HTTP")),
        ],
        OPTIONS,
    )
    assert built.service.ports == (Port(number=80, name="http-80", protocol="HTTP"),)
    assert len(built.endpoints) == 2
    (note,) = built.notes
    assert f"{PREFIX}web/b declares port 80 as grpc-80/GRPC but {PREFIX}web/a as" in note


def test_same_endpoint_twice_is_kept_once_with_a_note() -> None:
    built = build_service(
        "web",
        [
            instance("old", rich("10.0.0.1", 8080, weight=5)),
            instance("new", rich("10.0.0.1", 8080, weight=1)),
        ],
        OPTIONS,
    )
    (endpoint,) = built.endpoints
    assert endpoint.weight == 1  # "new" sorts before "old"
    (note,) = built.notes
    assert "give the same endpoint 10.0.0.1:8080 for port 8080" in note
