"""Reading Kubernetes objects (:mod:`registryd.adapters.kubernetes.parse`), pure: Service,
EndpointSlice and Node dicts -> typed objects or errors naming the object."""

from __future__ import annotations

from typing import Any

import pytest

from registryd.adapters.kubernetes.objects import (
    NODE,
    SERVICE,
    NodeLocality,
)
from registryd.adapters.kubernetes.parse import (
    ObjectError,
    object_source,
    parse_node,
    parse_service,
    parse_slice,
)
from registryd.model import AUTO, Port
from tests.adapters.kube_objects import endpoint_slice, ep, node, service


def test_service_ports_take_app_protocol_and_name() -> None:
    parsed = parse_service(
        service(
            ports=[
                {"name": "http-web", "port": 80, "targetPort": 8080},
                {"name": "api", "port": 81, "targetPort": 9090, "appProtocol": "grpc"},
                {"name": "h2c", "port": 82, "appProtocol": "kubernetes.io/h2c"},
                {"name": "raw", "port": 83, "targetPort": "raw"},
            ]
        )
    )
    assert parsed.ports == (
        Port(number=80, name="http-web", protocol="HTTP", target_port=8080),
        Port(number=81, name="api", protocol="GRPC", target_port=9090),
        Port(number=82, name="h2c", protocol="HTTP2", target_port=82),  # absent: = port
        Port(number=83, name="raw", protocol=AUTO, target_port=None),  # named targetPort
    )


def test_service_creation_time_orders_services_as_istiod_does() -> None:
    # kube/conversion.go ConvertService: CreationTime from metadata.creationTimestamp
    obj = service()
    assert parse_service(obj).created is None
    obj["metadata"]["creationTimestamp"] = "2026-12-07T08:30:01Z"
    assert parse_service(obj).created == 1796632201.0
    obj["metadata"]["creationTimestamp"] = "yesterday"
    with pytest.raises(ObjectError, match="creationTimestamp"):
        parse_service(obj)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (service(ports=[{"name": "http"}]), "no port number"),
        (service(ports=[{"name": "http", "port": "80"}]), "no port number"),
        (service(ports=[{"name": "http", "port": 70000}]), "out of range"),
        (service(ports=[{"name": "a", "port": 80}, {"port": 81}]), "needs a name"),
        (service(ports=[{"name": "a", "port": 80}, {"name": "a", "port": 81}]), "twice"),
        (service(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}]), "twice"),
        (service(ports=[{"name": "a", "port": 80, "targetPort": 0}]), "out of range"),
        (service(ports=[{"name": "a", "port": 80, "protocol": "QUIC"}]), "protocol"),
        (service(ports="80"), "not a list"),
        (service(cluster_ip="10.96.0.300"), "not an IP"),
        (service(type="Magic"), "spec.type"),
        (service(type="ExternalName", cluster_ip=None), "externalName"),
        (service(type="ExternalName", externalName="not a name!"), "not a DNS name"),
        (service(labels={"app": 7}), "labels"),
        ({"metadata": {"namespace": "shop"}, "spec": {}}, "metadata.name"),
        ({"metadata": {"name": "web"}, "spec": {}}, "namespace"),
        ({"metadata": {"name": "web", "namespace": "shop"}}, "spec"),
    ],
)
def test_malformed_services_are_errors(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(ObjectError, match=message):
        parse_service(obj)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (endpoint_slice(address_type="IPX"), "addressType"),
        (endpoint_slice(address_type=None), "addressType"),
        (endpoint_slice(address_type=[]), "addressType"),  # unhashable: found by the fuzzer
        (endpoint_slice(endpoints=[{"addresses": []}]), "no addresses"),
        (endpoint_slice(endpoints=[ep("10.1.0")]), "not an IPv4"),
        (endpoint_slice(endpoints=[ep("10.1.0.1", ready="yes")]), "ready"),
        (endpoint_slice(endpoints=[{"addresses": ["10.1.0.1"], "zone": 3}]), "zone"),
        (endpoint_slice(ports=[{"name": "http", "port": -1}]), "out of range"),
        (endpoint_slice(endpoints="x"), "not a list"),
    ],
)
def test_malformed_slices_are_errors(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(ObjectError, match=message):
        parse_slice(obj)


def test_object_sources_name_kind_namespace_and_name() -> None:
    assert object_source(SERVICE, service()) == "Service/shop/web"
    assert object_source(NODE, node("n1", {})) == "Node/n1"
    assert object_source(SERVICE, {"metadata": {"name": "x"}}) == "Service/x"
    assert object_source(SERVICE, "junk") == "Service/?"


def test_node_locality_parsing() -> None:
    assert parse_node(node("n", {})) == NodeLocality()
    with pytest.raises(ObjectError):
        parse_node({"metadata": {"name": "n", "labels": {"a": 1}}})
