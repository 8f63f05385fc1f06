"""Validated etcd instances -> one service (:func:`build_service`).  Pure: no I/O.

All instance keys whose ``<service>`` lower-cases to the same name form one
:class:`~registryd.model.Service` (namespace from the registry's settings, resolution
``STATIC``, location ``MESH_INTERNAL``) with one :class:`~registryd.model.Port` per
distinct service port.  Instances are taken in key order: when two disagree on a service
port's name or protocol, the first one's wins; when two give the same endpoint (service
port, address, port), the first one's attributes win.  Both are *notes* (warnings in
:meth:`~.state.KeyTable.problems`; the instances are still used), not errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from registryd.model import Endpoint, Location, Service

from .parse import Instance, Options

__all__ = ["Built", "build_service"]

EndpointKey = tuple[int, str, int]  # (service port, address, port)


@dataclass(frozen=True, slots=True)
class Built:
    """One service as converted from its instances."""

    service: Service
    endpoints: tuple[Endpoint, ...]
    notes: tuple[str, ...] = ()


def _port_note(hostname: str, first: Instance, other: Instance) -> str:
    return (
        f"service {hostname}: {other.key} declares port {other.port.number} as "
        f"{other.port.name}/{other.port.protocol} but {first.key} as "
        f"{first.port.name}/{first.port.protocol}; the first is used"
    )


def _endpoint_note(hostname: str, first: Instance, other: Instance) -> str:
    e = other.endpoint
    return (
        f"service {hostname}: {other.key} and {first.key} give the same endpoint "
        f"{e.address}:{e.port} for port {e.service_port}; the first one's attributes are used"
    )


def build_service(hostname: str, instances: Iterable[Instance], options: Options) -> Built:
    """The service ``hostname`` from its instances (taken in key order; see the module
    docstring for ports and endpoints several instances disagree on)."""
    ports: dict[int, Instance] = {}
    found: dict[EndpointKey, Instance] = {}
    notes: list[str] = []
    for instance in sorted(instances, key=lambda i: i.key):
        first = ports.setdefault(instance.port.number, instance)
        if first.port != instance.port:
            notes.append(_port_note(hostname, first, instance))
        e = instance.endpoint
        same = found.setdefault((e.service_port, e.address, e.port), instance)
        if same is not instance:
            notes.append(_endpoint_note(hostname, same, instance))
    service = Service(
        hostname=hostname,
        namespace=options.namespace,
        ports=tuple(ports[n].port for n in sorted(ports)),
        location=Location.MESH_INTERNAL,
    )
    endpoints = tuple(found[k].endpoint for k in sorted(found))
    return Built(service=service, endpoints=endpoints, notes=tuple(notes))
