"""The service model every registry is translated into.

These are frozen value types: adapters build them, the registry stores and merges them,
and the xDS resource builders read them.  Nothing in here does I/O or knows about Envoy.

Identity rules:

* a :class:`Service` is identified by its ``hostname`` (a fully qualified DNS name);
* an :class:`Endpoint` belongs to one service (``hostname``) and serves one of that
  service's ports, named by the *service* port number in ``service_port``; ``port`` is
  the number the workload itself listens on (after any targetPort mapping).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

__all__ = [
    "AUTO",
    "EMPTY_LABELS",
    "HTTP2_PROTOCOLS",
    "HTTP_PROTOCOLS",
    "NO_LOCALITY",
    "TLS_PROTOCOLS",
    "Endpoint",
    "Health",
    "Labels",
    "Locality",
    "Location",
    "Port",
    "Resolution",
    "Service",
    "ShardKey",
    "is_http",
    "is_ip",
]


class ShardKey(NamedTuple):
    """Which registry instance a piece of state came from: ``(provider, instance)``.

    ``provider`` is the adapter type (``serviceentry``, ``consul``…), ``instance`` the
    unique name of the configured registry.  One adapter instance owns exactly one shard.
    """

    provider: str
    instance: str

    def __str__(self) -> str:
        return f"{self.provider}/{self.instance}"


class Labels(Mapping[str, str]):
    """An immutable, hashable ``str -> str`` mapping (labels, metadata)."""

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        data = dict(items)
        for key, value in data.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"labels must map str to str, got {key!r}: {value!r}")
        self._items: dict[str, str] = dict(sorted(data.items()))
        self._hash: int | None = None

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._items.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._items == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Labels({self._items!r})"

    def matches(self, selector: Mapping[str, str]) -> bool:
        """True when every ``key: value`` of ``selector`` is present here."""
        return all(self._items.get(k) == v for k, v in selector.items())


EMPTY_LABELS = Labels()


def _labels(value: Any) -> Labels:
    if isinstance(value, Labels):
        return value
    if not value:
        return EMPTY_LABELS
    return Labels(value)


class Resolution(StrEnum):
    """How a proxy finds the addresses of a service (Istio ServiceEntry semantics)."""

    STATIC = "STATIC"  # endpoints are IP addresses known to the registry
    DNS = "DNS"  # endpoints (or the hostname) are resolved by the proxy, all addresses used
    DNS_ROUND_ROBIN = "DNS_ROUND_ROBIN"  # resolved by the proxy, one address at a time
    NONE = "NONE"  # pass through to the original destination
    ALIAS = "ALIAS"  # another name of the service named by ``Service.alias_for`` (no resources)


class Location(StrEnum):
    MESH_EXTERNAL = "MESH_EXTERNAL"
    MESH_INTERNAL = "MESH_INTERNAL"


class Health(StrEnum):
    """An endpoint's health as its registry says it.  ``UNKNOWN``: the source says
    nothing of it (a ServiceEntry endpoint); it is served as healthy, marked as Envoy's
    ``UNKNOWN`` health, as istiod serves ServiceEntry endpoints (their
    ``IstioEndpoint.HealthStatus`` is left unset)."""

    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    DRAINING = "DRAINING"
    UNKNOWN = "UNKNOWN"


AUTO = "AUTO"
"""The protocol of a port that declares none: detected per connection, as istiod does for
``protocol.Unsupported`` (an HTTP and a TCP filter chain behind the HTTP inspector)."""
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB"})
HTTP2_PROTOCOLS = frozenset({"HTTP2", "GRPC", "GRPC-WEB"})  # istio protocol.IsHTTP2
TLS_PROTOCOLS = frozenset({"TLS", "HTTPS"})  # istio protocol.IsTLS: routed by SNI


def is_http(protocol: str) -> bool:
    """Ports with these protocols get an HTTP connection manager; the rest are TCP."""
    return protocol.upper() in HTTP_PROTOCOLS


def is_ip(address: str) -> bool:
    """Whether an endpoint address is an IPv4/IPv6 address (not a DNS name or socket),
    as :func:`ipaddress.ip_address` decides.  The C parser answers the plain forms (every
    address it accepts ``ipaddress`` accepts too) in a fraction of the time; the rest
    (names, scoped IPv6) go to ``ipaddress``."""
    for family in _FAMILIES:
        try:
            socket.inet_pton(family, address)
        except (OSError, ValueError):
            continue
        return True
    return _is_ip_slow(address)


_FAMILIES = (socket.AF_INET, socket.AF_INET6)


@functools.lru_cache(maxsize=65536)
def _is_ip_slow(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class Port:
    """A service port.  ``target_port`` is the workload port when endpoints do not say (and,
    for a passthrough service, the port its traffic is sent to: istiod's
    ``PassthroughTargetPorts``, which ServiceEntries set and Kubernetes Services do not).
    ``protocol`` is upper-cased: ``HTTP``, ``HTTP2``, ``GRPC``, ``GRPC-WEB``, ``HTTPS``,
    ``TLS``, ``TCP``, ``UDP``…, or :data:`AUTO` when the registry declares none."""

    number: int
    name: str = ""
    protocol: str = "TCP"
    target_port: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.number < 65536:
            raise ValueError(f"port number {self.number} out of range 1-65535")
        if self.target_port is not None and not 0 < self.target_port < 65536:
            raise ValueError(f"targetPort {self.target_port} out of range 1-65535")
        object.__setattr__(self, "protocol", self.protocol.upper())


@dataclass(frozen=True, slots=True, kw_only=True)
class Locality:
    region: str = ""
    zone: str = ""
    subzone: str = ""

    @classmethod
    def parse(cls, text: str | None) -> Locality:
        """Parse Istio's ``region/zone/subzone`` form (any suffix may be missing)."""
        if not text:
            return NO_LOCALITY
        parts = [*text.split("/"), "", ""][:3]
        return cls(region=parts[0], zone=parts[1], subzone=parts[2])

    def __str__(self) -> str:
        """The ``region/zone/subzone`` form :meth:`parse` reads back: empty trailing parts
        left out, empty leading ones kept (a zone without a region is ``/zone``)."""
        return "/".join((self.region, self.zone, self.subzone)).rstrip("/")


NO_LOCALITY = Locality()


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    """A service as the mesh sees it.  ``hostname`` is its identity.

    Hostnames are case-insensitive (DNS): they are stored lower-cased, so two spellings of
    one name are one service.  ``alias_for`` names the service an ``ALIAS`` service stands
    for (a Kubernetes ExternalName): an alias has no resources of its own; its names route
    to that service when it is known.  ``kubernetes`` says a Kubernetes Service defines
    it, for the few rules istiod keeps for those (a headless one's pods are reached as
    ``<pod>.<hostname>``: its routes take ``*.<hostname>`` too).  ``created`` is when the
    registry says it was created (POSIX seconds), if it says: where services compete for
    one listener, the oldest comes first, as in istiod.
    """

    hostname: str
    namespace: str = "default"
    ports: tuple[Port, ...] = ()
    resolution: Resolution = Resolution.STATIC
    location: Location = Location.MESH_EXTERNAL
    labels: Labels = field(default=EMPTY_LABELS)
    addresses: tuple[str, ...] = ()
    export_to: tuple[str, ...] = ()
    alias_for: str = ""
    kubernetes: bool = False
    created: float | None = None

    def __post_init__(self) -> None:
        if not self.hostname:
            raise ValueError("service hostname must not be empty")
        object.__setattr__(self, "hostname", self.hostname.lower())
        object.__setattr__(self, "alias_for", self.alias_for.lower())
        if (self.resolution is Resolution.ALIAS) != bool(self.alias_for):
            raise ValueError(f"service {self.hostname}: alias_for is set exactly for ALIAS")
        object.__setattr__(self, "labels", _labels(self.labels))
        object.__setattr__(self, "ports", tuple(self.ports))
        numbers = [p.number for p in self.ports]
        if len(numbers) != len(set(numbers)):
            raise ValueError(f"service {self.hostname}: duplicate port numbers {numbers}")

    def port(self, number: int) -> Port | None:
        for port in self.ports:
            if port.number == number:
                return port
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One address serving one port of one service.

    ``source`` names the registry instance the endpoint came from; the registry store
    fills it in, adapters may leave it ``None``.
    """

    hostname: str
    address: str
    port: int
    service_port: int
    locality: Locality = NO_LOCALITY
    weight: int = 1
    health: Health = Health.HEALTHY
    labels: Labels = field(default=EMPTY_LABELS)
    network: str = ""
    cluster_id: str = ""  # the cluster it runs in, for registries that know (Kubernetes)
    source: ShardKey | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _labels(self.labels))
        object.__setattr__(self, "hostname", self.hostname.lower())
        if not 0 < self.port < 65536:
            raise ValueError(f"endpoint {self.address}: port {self.port} out of range")
        if self.weight < 0:
            raise ValueError(f"endpoint {self.address}: negative weight {self.weight}")
