"""Consul instances -> one service per hostname (:func:`build_service`).  Pure: no I/O.

Instances are taken in (datacenter, node, service id) order; see :mod:`.parse` for how
one health entry becomes an instance.

* ports: one service port per distinct ``Service.Port`` of the instances, named
  ``<protocol>-<port>`` (``http-8080``); the endpoint port is the same number.  The
  protocol is ``Service.Meta["protocol"]``, else the ``protocol|<value>`` tag, else TCP;
  Istio's names (``http``, ``http2``, ``grpc``, ``grpc-web``, ``https``, ``tls``,
  ``tcp``, ``udp``, ``mongo``, ``mysql``, ``redis``, ``http_proxy``) in any case; an
  unknown value means TCP and a note.  When instances disagree on one port's protocol
  the first instance wins, with a note.
* two instances with the same address and port give one endpoint (the first), with a
  note.
"""

from __future__ import annotations

from collections.abc import Sequence

from registryd.model import Endpoint, Locality, Location, Port, Resolution, Service, is_ip

from .parse import Instance

__all__ = ["build_service"]


def build_service(
    hostname: str, instances: Sequence[Instance], namespace: str = "default"
) -> tuple[Service, tuple[Endpoint, ...], list[str]]:
    """The service ``hostname`` made of ``instances`` (in order), its endpoints (sorted
    by service port, address, port) and notes on conflicts."""
    ports: dict[int, tuple[str, Instance]] = {}
    found: dict[tuple[int, str, int], tuple[Endpoint, Instance]] = {}
    notes: list[str] = []
    for instance in instances:
        notes.extend(instance.notes)
        first = ports.setdefault(instance.port, (instance.protocol, instance))
        if first[0] != instance.protocol:
            notes.append(
                f"{hostname}: port {instance.port} is {first[0]} on {_who(first[1])} but "
                f"{instance.protocol} on {_who(instance)}; using {first[0]}"
            )
        endpoint = Endpoint(
            hostname=hostname,
            address=instance.address,
            port=instance.port,
            service_port=instance.port,
            locality=Locality(region=instance.datacenter),
            weight=instance.weight,
            health=instance.health,
            labels=instance.labels,
        )
        key = (instance.port, instance.address, instance.port)
        if key in found:
            notes.append(
                f"{hostname}: {_who(instance)} and {_who(found[key][1])} are both "
                f"{instance.address}:{instance.port}; using {_who(found[key][1])}"
            )
            continue
        found[key] = (endpoint, instance)
    service = Service(
        hostname=hostname,
        namespace=namespace,
        ports=tuple(
            Port(number=n, name=f"{p.lower()}-{n}", protocol=p)
            for n, (p, _) in sorted(ports.items())
        ),
        resolution=(
            Resolution.STATIC if all(is_ip(i.address) for i in instances) else Resolution.DNS
        ),
        location=(
            Location.MESH_EXTERNAL if any(i.external for i in instances) else Location.MESH_INTERNAL
        ),
    )
    return service, tuple(found[k][0] for k in sorted(found)), notes


def _who(instance: Instance) -> str:
    where = f" in {instance.datacenter}" if instance.datacenter else ""
    return f"{instance.service}/{instance.id} (node {instance.node or '?'}{where})"
