"""The settings of one ``nacos`` registry, checked once in the factory.

Contract: :func:`parse_settings` returns a frozen :class:`NacosSettings` or raises
:class:`~registryd.adapter.ConfigError` naming the registry and the setting (through
:class:`~registryd.settings.SettingsReader`).  The password never appears in a message
or in ``repr()``.  Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from registryd.adapter import JsonLimits
from registryd.settings import SettingsReader

__all__ = [
    "DEFAULT_HOSTNAME",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_MAX_SERVICES",
    "KNOWN",
    "MODES",
    "NacosSettings",
    "parse_settings",
]

DEFAULT_HOSTNAME = "{service}.{group}.{namespace}.nacos"
KNOWN = (
    "server_addr",
    "namespace",
    "groups",
    "username",
    "password",
    "hostname_template",
    "poll_interval",
    "timeout",
    "page_size",
    "max_qps",
    "zone_from",
    "weight_scale",
    "max_response_bytes",
    "max_services",
    "request_timeout",
    "mode",
    "grpc_port",
    "list_interval",
)
MODES = ("auto", "grpc", "poll")
DEFAULT_MAX_RESPONSE_BYTES = 16 * 2**20  # 10,000 instances take about 3 MB
MIN_RESPONSE_BYTES = 1024
DEFAULT_MAX_SERVICES = 10_000
_ADDRESS = re.compile(r"(?:(https?)://)?([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})/?")
_GROUP = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")  # Nacos' group name characters
_NAMESPACE = re.compile(r"[A-Za-z0-9_\-]{1,128}")
_FIELDS = ("service", "group", "namespace")


@dataclass(frozen=True, slots=True, kw_only=True)
class NacosSettings:
    """Checked settings.  ``servers`` are base URLs (``http://host:port``), tried in
    order; ``zone_from`` is ``clusterName``, ``metadata:<key>`` or ``none``;
    ``weight_scale`` multiplies Nacos' float weights before they are rounded to Envoy's
    integers (1: as Nacos' own mesh integration; 100 keeps two decimals, but then a
    default instance weighs 100 times a default endpoint of another registry).

    Bounds: every answer is read up to ``max_response_bytes`` (and parsed within
    :class:`~registryd.adapter.JsonLimits` of that size); the listing of the groups may
    name at most ``max_services`` services; every call (one page of the listing, one
    service's instance list) must be answered whole within ``request_timeout`` seconds,
    while ``timeout`` bounds connecting and any silence of a server.

    ``mode`` is how the registry is followed: ``grpc`` subscribes to every service over
    Nacos 2.x/3.x's gRPC protocol (at ``grpc_port``, by default the HTTP port + 1000)
    and lists the services every ``list_interval`` seconds; ``poll`` polls the v1 Open
    API every ``poll_interval`` seconds (the only way with Nacos 1.x); ``auto`` does the
    first and falls back to the second when the server has no gRPC."""

    servers: tuple[str, ...]
    namespace: str = "public"
    groups: tuple[str, ...] = ("DEFAULT_GROUP",)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    hostname_template: str = DEFAULT_HOSTNAME
    poll_interval: float = 2.0
    timeout: float = 5.0
    page_size: int = 500
    max_qps: float = 100.0
    zone_from: str = "clusterName"
    weight_scale: float = 1.0
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_services: int = DEFAULT_MAX_SERVICES
    request_timeout: float = 10.0
    mode: str = "auto"
    grpc_port: int | None = None
    list_interval: float = 10.0

    @property
    def limits(self) -> JsonLimits:
        """What one answer may hold."""
        return JsonLimits(max_bytes=self.max_response_bytes)


def _servers(reader: SettingsReader) -> tuple[str, ...]:
    value = reader.get("server_addr")
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, list | tuple) or not value:
        raise reader.error(f"'server_addr' must be 'host:port' or a list of them, got {value!r}")
    servers = []
    for item in value:
        match = _ADDRESS.fullmatch(item) if isinstance(item, str) else None
        if match is None or not 0 < int(match[3]) < 65536:
            raise reader.error(f"'server_addr': {item!r} is not host:port")
        servers.append(f"{match[1] or 'http'}://{match[2]}:{int(match[3])}")
    return tuple(dict.fromkeys(servers))


def _template(reader: SettingsReader) -> str:
    template = reader.text("hostname_template", DEFAULT_HOSTNAME) or DEFAULT_HOSTNAME
    try:
        template.format(**dict.fromkeys(_FIELDS, "x"))
    except (KeyError, IndexError, ValueError) as exc:
        raise reader.error(
            f"'hostname_template' may use only {{service}}, {{group}} and {{namespace}}, "
            f"got {template!r} ({exc!r})"
        ) from None
    if "{service}" not in template:
        raise reader.error(f"'hostname_template' must contain {{service}}, got {template!r}")
    return template


def _zone_from(reader: SettingsReader) -> str:
    value = reader.text("zone_from", "clusterName") or "clusterName"
    if value in ("clusterName", "none") or (value.startswith("metadata:") and value[9:]):
        return value
    raise reader.error(
        f"'zone_from' must be 'clusterName', 'metadata:<key>' or 'none', got {value!r}"
    )


def _mode(reader: SettingsReader) -> str:
    value = reader.text("mode", "auto") or "auto"
    if value not in MODES:
        raise reader.error(f"'mode' must be one of {list(MODES)}, got {value!r}")
    return value


def _grpc_port(reader: SettingsReader) -> int | None:
    value = reader.get("grpc_port")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise reader.error(f"'grpc_port' must be a port number 1-65535, got {value!r}")
    return value


def parse_settings(name: str, settings: Mapping[str, Any]) -> NacosSettings:
    """The checked settings of registry ``name``; raises ConfigError."""
    reader = SettingsReader(name, "nacos", settings, KNOWN)
    namespace = reader.text("namespace", "public") or "public"
    if not _NAMESPACE.fullmatch(namespace):
        raise reader.error(f"'namespace' must be a Nacos namespace id, got {namespace!r}")
    username = reader.text("username")
    password = reader.text("password", secret=True)
    if (username is None) != (password is None):
        raise reader.error("'username' and 'password' go together")
    return NacosSettings(
        servers=_servers(reader),
        namespace=namespace,
        groups=reader.names("groups", _GROUP, "Nacos group name", ("DEFAULT_GROUP",)),
        username=username,
        password=password,
        hostname_template=_template(reader),
        poll_interval=reader.number("poll_interval", 2.0, maximum=3600, unit="seconds"),
        timeout=reader.number("timeout", 5.0, maximum=300, unit="seconds"),
        page_size=reader.whole("page_size", 500),
        max_qps=reader.number("max_qps", 100.0, unit="requests a second"),
        zone_from=_zone_from(reader),
        weight_scale=reader.number("weight_scale", 1.0, maximum=10000),
        max_response_bytes=reader.whole(
            "max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES, minimum=MIN_RESPONSE_BYTES
        ),
        max_services=reader.whole("max_services", DEFAULT_MAX_SERVICES),
        request_timeout=reader.number("request_timeout", 10.0, maximum=300, unit="seconds"),
        mode=_mode(reader),
        grpc_port=_grpc_port(reader),
        list_interval=reader.number("list_interval", 10.0, maximum=3600, unit="seconds"),
    )
