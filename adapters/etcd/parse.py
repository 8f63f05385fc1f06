"""etcd keys and values -> validated instances (:func:`parse_entry`).  Pure: no I/O.

Key layout (``prefix`` ends with ``/``; the default is ``/registryd/services/``)::

    <prefix><service>/<instance-id>

* ``<service>`` is the first path segment after the prefix.  Lower-cased, it names the
  service: the hostname is ``<service>``, or ``<service>.<hostname_suffix>`` when the
  registry has a suffix.  It must form a valid DNS name (letters, digits, ``-``, ``_``
  and ``.``; labels of at most 63 characters, 253 in all).
* ``<instance-id>`` is everything after the next ``/`` (it may contain more ``/``); it
  must not be empty.  Each instance key contributes exactly one endpoint.
* Any other key under the prefix (``<prefix>web``, ``<prefix>/x``, a key that is not
  UTF-8) is reported as an error under that key and ignored.

Values are UTF-8 JSON objects of at most :data:`MAX_VALUE_BYTES` bytes, nesting at most
:data:`MAX_DEPTH` levels, each member named once, in one of two formats, told apart by
their fields:

* **gRPC naming** (as grpc-go's etcd resolver, ``go.etcd.io/etcd/client/v3/naming``,
  writes them): ``{"Addr": "10.0.0.1:50051", "Metadata": ...}``.  ``Addr`` is
  ``<ip>:<port>`` (``[<ipv6>]:<port>`` for IPv6).  The service port is the endpoint's
  port, its protocol ``GRPC``, its name ``grpc-<port>``.  If ``Metadata`` is an object,
  its string-valued entries become the endpoint's labels; anything else in it is ignored.
  An ``Op`` field (etcd 3.4's ``clientv3/naming`` stores ``naming.Update``) must be ``0``
  (Add).  Other fields are ignored: the format belongs to grpc-go.
* **registryd format**: ``{"address": "10.0.0.1", "port": 8080, "servicePort": 80,
  "protocol": "HTTP", "portName": "http", "locality": "region/zone/subzone",
  "weight": 2, "labels": {"version": "v1"}, "health": "HEALTHY", "network": "net-1"}``.
  ``address`` (an IP address) and ``port`` (1-65535, what the instance listens on) are
  required.  ``servicePort`` defaults to ``port``; ``protocol`` (one of
  :data:`PROTOCOLS`, any case) defaults to the one the port name implies (``http``,
  ``grpc-api``…, as Istio does), else ``TCP``; ``portName`` defaults to
  ``<protocol-lower>-<servicePort>``; ``weight`` is 0 to 2^32-1, 0 meaning 1 (as in
  Istio), default 1; ``health`` is ``HEALTHY``, ``UNHEALTHY`` or ``DRAINING`` (any case),
  default ``HEALTHY``; ``labels`` maps strings to strings.  ``null`` is the same as
  absent.  Unknown fields are errors (a typo must not silently change routing).

A value with both ``Addr`` and ``address`` is an error.  Every error names the key and
each reason.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from registryd.model import Endpoint, Health, Labels, Locality, Port

__all__ = [
    "DEFAULT_PREFIX",
    "MAX_DEPTH",
    "MAX_VALUE_BYTES",
    "PROTOCOLS",
    "RICH_FIELDS",
    "Instance",
    "InvalidEntry",
    "Options",
    "decode_key",
    "parse_entry",
    "parse_key",
    "valid_hostname",
]

DEFAULT_PREFIX = "/registryd/services/"
PROTOCOLS = frozenset(
    "HTTP HTTPS HTTP2 HTTP_PROXY GRPC GRPC-WEB TCP TLS UDP MONGO MYSQL REDIS".split()
)
RICH_FIELDS = (
    "address",
    "port",
    "servicePort",
    "protocol",
    "portName",
    "locality",
    "weight",
    "labels",
    "health",
    "network",
)
_NAMING_FORMAT = "gRPC naming"
_RICH_FORMAT = "registryd"
_MAX_WEIGHT = 2**32 - 1
MAX_VALUE_BYTES = 65536  # an instance's value; larger ones are errors of their key
MAX_DEPTH = 32  # lists and objects in one value
_DNS_LABEL = re.compile(r"[a-z0-9_](?:[-a-z0-9_]{0,61}[a-z0-9_])?")
_PORT_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_]{0,61}[A-Za-z0-9])?")
_HOST_PORT = re.compile(r"(?:\[([^\[\]]+)\]|([^:\[\]]+)):(\d{1,5})")
_HEALTH = {h.value: h for h in (Health.HEALTHY, Health.UNHEALTHY, Health.DRAINING)}
_PROTOCOLS_BY_LENGTH = sorted(PROTOCOLS, key=len, reverse=True)


class InvalidEntry(ValueError):
    """A key or value that cannot be used; the message names the key and every reason."""


def valid_hostname(name: str) -> bool:
    """A lower-case DNS name: labels of ``[a-z0-9_-]`` not starting or ending with ``-``,
    at most 63 characters each and 253 in all."""
    return 0 < len(name) <= 253 and all(_DNS_LABEL.fullmatch(p) for p in name.split("."))


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """What the registry's settings say about conversion."""

    prefix: str = DEFAULT_PREFIX
    namespace: str = "default"
    hostname_suffix: str = ""  # without a leading dot; "" for none

    def hostname(self, service: str) -> str:
        name = service.lower()
        return f"{name}.{self.hostname_suffix}" if self.hostname_suffix else name


@dataclass(frozen=True, slots=True)
class Instance:
    """One good instance key: the service port it serves and its endpoint."""

    key: str
    port: Port
    endpoint: Endpoint
    raw: Any = field(compare=False)  # the decoded JSON value, for the debug port

    @property
    def hostname(self) -> str:
        return self.endpoint.hostname


# -- keys -------------------------------------------------------------------------------


def decode_key(key: bytes) -> str:
    """The key as text: the name used for it in errors and the debug port."""
    return key.decode("utf-8", "backslashreplace")


def parse_key(key: bytes, options: Options) -> tuple[str, str]:
    """``(hostname, instance id)`` of an instance key; :class:`InvalidEntry` otherwise."""
    text = decode_key(key)
    layout = f"{options.prefix}<service>/<instance-id>"
    try:
        key.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEntry(f"{text}: key is not UTF-8") from None
    if not text.startswith(options.prefix):
        raise InvalidEntry(f"{text}: key is not under the prefix {options.prefix}")
    service, slash, instance = text[len(options.prefix) :].partition("/")
    if not slash or not service or not instance:
        raise InvalidEntry(f"{text}: key does not match {layout}")
    hostname = options.hostname(service)
    if not valid_hostname(hostname):
        raise InvalidEntry(
            f"{text}: service name {service!r} does not make a valid DNS name ({hostname!r})"
        )
    return hostname, instance


# -- values -----------------------------------------------------------------------------


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members; ValueError naming a member given twice."""
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate member {json.dumps(name)[:100]}")
        result[name] = value
    return result


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (without recursing)."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth + 1)
            if deepest > MAX_DEPTH:
                break
            pending.extend(
                (v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def _decode(key: str, value: bytes) -> Any:
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidEntry(f"{key}: value is larger than {MAX_VALUE_BYTES} bytes")
    if not value.strip():
        raise InvalidEntry(f"{key}: value is empty (expected a JSON object)")
    try:
        raw = json.loads(value, object_pairs_hook=_unique)
    except UnicodeDecodeError:
        raise InvalidEntry(f"{key}: value is not UTF-8 text") from None
    except RecursionError:
        raise InvalidEntry(f"{key}: value nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise InvalidEntry(f"{key}: value is not valid JSON: {exc}") from None
    if _depth(raw) > MAX_DEPTH:
        raise InvalidEntry(f"{key}: value nests deeper than {MAX_DEPTH} levels")
    return raw


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    if value is None:
        return "null"
    return "a number"


def _ip(value: str) -> str | None:
    """The IP address ``value`` in canonical form, None if it is not one."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _port_number(value: Any, name: str, errs: list[str]) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
        return value
    errs.append(f"{name}: must be an integer 1-65535, got {json.dumps(value)}")
    return None


def _string(obj: Mapping[str, Any], name: str, errs: list[str]) -> str | None:
    value = obj.get(name)
    if value is None or isinstance(value, str):
        return value
    errs.append(f"{name}: must be a string, got {_type_name(value)}")
    return None


def _labels(value: Any, name: str, errs: list[str]) -> Labels:
    if value is None:
        return Labels()
    if not isinstance(value, dict):
        errs.append(f"{name}: must be an object of strings, got {_type_name(value)}")
        return Labels()
    bad = sorted(k for k, v in value.items() if not k or not isinstance(v, str))
    if bad:
        errs.append(f"{name}: keys must be non-empty and values strings; bad: {bad}")
        return Labels()
    return Labels(value)


def _protocol_from_name(name: str) -> str:
    upper = name.upper()
    for protocol in _PROTOCOLS_BY_LENGTH:
        if upper == protocol or upper.startswith(protocol + "-"):
            return protocol
    return "TCP"


def _protocol(raw: Mapping[str, Any], port_name: str | None, errs: list[str]) -> str:
    protocol = _string(raw, "protocol", errs)
    if protocol is None:
        return _protocol_from_name(port_name) if port_name else "TCP"
    if protocol.upper() not in PROTOCOLS:
        errs.append(f"protocol: must be one of {', '.join(sorted(PROTOCOLS))}, got {protocol!r}")
        return "TCP"
    return protocol.upper()


def _weight(value: Any, errs: list[str]) -> int:
    if value is None:
        return 1
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_WEIGHT:
        return value or 1
    errs.append(f"weight: must be an integer 0-{_MAX_WEIGHT}, got {json.dumps(value)}")
    return 1


def _health(value: Any, errs: list[str]) -> Health:
    if value is None:
        return Health.HEALTHY
    if isinstance(value, str) and value.upper() in _HEALTH:
        return _HEALTH[value.upper()]
    errs.append(f"health: must be one of {', '.join(_HEALTH)}, got {json.dumps(value)}")
    return Health.HEALTHY


def _locality(value: str | None, errs: list[str]) -> Locality:
    if not value:
        return Locality()
    if value.count("/") > 2:
        errs.append(f"locality: must be region/zone/subzone, got {value!r}")
        return Locality()
    return Locality.parse(value)


def _rich_address(raw: Mapping[str, Any], errs: list[str]) -> str | None:
    if raw.get("address") is None:
        errs.append("address: required")
        return None
    address = _string(raw, "address", errs)
    if address is None:
        return None
    ip = _ip(address)
    if ip is None:
        errs.append(f"address: must be an IP address, got {address!r}")
    return ip


def _rich(hostname: str, raw: Mapping[str, Any], errs: list[str]) -> tuple[Port, Endpoint] | None:
    unknown = sorted(set(raw) - set(RICH_FIELDS))
    if unknown:
        errs.append(f"unknown fields {unknown} (known: {', '.join(RICH_FIELDS)})")
    ip = _rich_address(raw, errs)
    port = service_port = None
    if raw.get("port") is None:
        errs.append("port: required")
    else:
        port = service_port = _port_number(raw["port"], "port", errs)
    if raw.get("servicePort") is not None:
        service_port = _port_number(raw["servicePort"], "servicePort", errs)
    port_name = _string(raw, "portName", errs)
    if port_name is not None and not _PORT_NAME.fullmatch(port_name):
        errs.append(f"portName: must be 1-63 letters, digits, '-' or '_', got {port_name!r}")
    protocol = _protocol(raw, port_name, errs)
    locality = _locality(_string(raw, "locality", errs), errs)
    network = _string(raw, "network", errs) or ""
    weight = _weight(raw.get("weight"), errs)
    health = _health(raw.get("health"), errs)
    labels = _labels(raw.get("labels"), "labels", errs)
    if errs or ip is None or port is None or service_port is None:
        return None
    name = port_name or f"{protocol.lower()}-{service_port}"
    endpoint = Endpoint(
        hostname=hostname,
        address=ip,
        port=port,
        service_port=service_port,
        locality=locality,
        weight=weight,
        health=health,
        labels=labels,
        network=network,
    )
    return Port(number=service_port, name=name, protocol=protocol), endpoint


def _naming(hostname: str, raw: Mapping[str, Any], errs: list[str]) -> tuple[Port, Endpoint] | None:
    if "address" in raw:
        errs.append("has both Addr (gRPC naming format) and address (registryd format)")
    op = raw.get("Op")
    if op is not None and (op != 0 or isinstance(op, bool)):
        errs.append(f"Op: a stored endpoint must be 0 (Add), got {json.dumps(op)}")
    addr = raw["Addr"]
    if not isinstance(addr, str):
        errs.append(f"Addr: must be a string <ip>:<port>, got {_type_name(addr)}")
        return None
    match = _HOST_PORT.fullmatch(addr)
    if match is None:
        errs.append(f"Addr: must be <ip>:<port> or [<ipv6>]:<port>, got {addr!r}")
        return None
    host = match.group(1) or match.group(2)
    ip = _ip(host)
    if ip is None or (match.group(1) is not None) != (":" in ip):
        errs.append(f"Addr: host must be an IP address, got {host!r} in {addr!r}")
    port = _port_number(int(match.group(3)), "Addr: port", errs)
    metadata = raw.get("Metadata")
    labels: dict[str, str] = {}
    if isinstance(metadata, dict):
        labels = {k: v for k, v in metadata.items() if k and isinstance(v, str)}
    if errs or ip is None or port is None:
        return None
    endpoint = Endpoint(
        hostname=hostname, address=ip, port=port, service_port=port, labels=Labels(labels)
    )
    return Port(number=port, name=f"grpc-{port}", protocol="GRPC"), endpoint


def parse_entry(key: bytes, value: bytes, options: Options) -> Instance:
    """Convert one key and its value; :class:`InvalidEntry` names the key and every reason."""
    hostname, _ = parse_key(key, options)
    text = decode_key(key)
    raw = _decode(text, value)
    if not isinstance(raw, dict):
        raise InvalidEntry(f"{text}: value must be a JSON object, got {_type_name(raw)}")
    errs: list[str] = []
    if "Addr" in raw:
        fmt, result = _NAMING_FORMAT, _naming(hostname, raw, errs)
    else:
        fmt, result = _RICH_FORMAT, _rich(hostname, raw, errs)
    if result is None:
        raise InvalidEntry(f"{text}: invalid {fmt} value: {'; '.join(errs)}")
    port, endpoint = result
    return Instance(key=text, port=port, endpoint=endpoint, raw=raw)
