"""The etcd registry's settings: validated once, when the registry is configured.  Pure.

:func:`parse_settings` turns the registry's mapping from registryd.yaml into
:class:`EtcdSettings` or raises :class:`~registryd.adapter.ConfigError` naming the
registry instance, the setting and what is wrong.  The password never appears in an
error message or in the ``repr`` of the result.

* ``endpoints`` (default ``["127.0.0.1:2379"]``): etcd client addresses, ``host:port``
  or ``[ipv6]:port``, without a scheme; tried in this order on every (re)connect.
* ``prefix`` (default ``/registryd/services/``): the key prefix holding the instances;
  must end with ``/``.  (Not ``/registry/...``: Kubernetes keeps its own objects there.)
* ``username`` / ``password`` (default none; both or neither): etcd's user and password.
* ``ca_file`` (PEM CA bundle to verify etcd's certificate), ``cert_file`` / ``key_file``
  (PEM client certificate and its key; both or neither); default none.
* ``timeout`` (default ``5``): seconds; the deadline of every request (connect and list,
  liveness probe, watch creation).
* ``namespace`` (default ``default``): the namespace of the services.
* ``hostname_suffix`` (default none): with ``svc.example``, service ``web`` has the
  hostname ``web.svc.example`` (a leading dot is ignored; lower-cased).

TLS is used when any of ``ca_file``, ``cert_file``, ``key_file`` is set (without
``ca_file``, etcd's certificate is verified against the system's roots).  The files must
exist when the registry is configured; they are read again on every connect, so
renewed certificates are picked up by the next reconnect.  A relative path in
registryd.yaml is relative to that file, as for every ``path``, ``kubeconfig`` and
``*_file`` setting (:func:`registryd.daemon.config.parse_registries` resolves them
before the settings reach the adapter).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from registryd.settings import SettingsReader

from .parse import DEFAULT_PREFIX, Options, valid_hostname

__all__ = [
    "DEFAULT_ENDPOINTS",
    "DEFAULT_TIMEOUT",
    "SETTINGS",
    "EtcdSettings",
    "format_endpoint",
    "parse_settings",
]

SETTINGS = (
    "endpoints",
    "prefix",
    "username",
    "password",
    "ca_file",
    "cert_file",
    "key_file",
    "timeout",
    "namespace",
    "hostname_suffix",
)
DEFAULT_ENDPOINTS = ("127.0.0.1:2379",)
DEFAULT_TIMEOUT = 5.0
_MAX_TIMEOUT = 300.0
_ENDPOINT = re.compile(r"(?:\[([^\[\]]+)\]|([^:\[\]/]+)):(\d{1,5})")
_LABEL = r"[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")

Endpoint = tuple[str, int]  # (host, port)


@dataclass(frozen=True, slots=True, kw_only=True)
class EtcdSettings:
    """One etcd registry's validated settings."""

    endpoints: tuple[Endpoint, ...]
    options: Options
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def tls(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file))

    @property
    def prefix(self) -> str:
        return self.options.prefix


def format_endpoint(endpoint: Endpoint) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _endpoint(reader: SettingsReader, text: Any) -> Endpoint:
    if not isinstance(text, str):
        raise reader.error(f"'endpoints' must list host:port strings, got {text!r}")
    if "://" in text:
        raise reader.error(
            f"endpoint {text!r}: write host:port without a scheme "
            f"(TLS is switched on by ca_file/cert_file/key_file)"
        )
    match = _ENDPOINT.fullmatch(text.strip())
    if match is None:
        raise reader.error(f"endpoint {text!r} is not host:port or [ipv6]:port")
    port = int(match.group(3))
    if not 0 < port < 65536:
        raise reader.error(f"endpoint {text!r}: port out of range 1-65535")
    if match.group(1) is not None:
        try:
            ipaddress.IPv6Address(match.group(1))
        except ValueError:
            raise reader.error(f"endpoint {text!r}: not an IPv6 address") from None
        return (match.group(1), port)
    host = match.group(2)
    if not _HOST.fullmatch(host) or len(host) > 253:
        raise reader.error(f"endpoint {text!r}: {host!r} is not a host name or IP")
    return (host, port)


def _endpoints(reader: SettingsReader) -> tuple[Endpoint, ...]:
    value = reader.get("endpoints", list(DEFAULT_ENDPOINTS))
    if not isinstance(value, list | tuple) or not value:
        raise reader.error("'endpoints' must be a non-empty list of host:port strings")
    return tuple(_endpoint(reader, item) for item in value)


def _prefix(reader: SettingsReader) -> str:
    value = reader.get("prefix", DEFAULT_PREFIX)
    if not isinstance(value, str) or not value.endswith("/") or value == "/":
        raise reader.error(
            f"'prefix' must be a key prefix ending with '/' (e.g. {DEFAULT_PREFIX}), got {value!r}"
        )
    return value


def _suffix(reader: SettingsReader) -> str:
    value = reader.get("hostname_suffix", "")
    suffix = value.lstrip(".").lower() if isinstance(value, str) else ""
    if value != "" and not valid_hostname(suffix):
        raise reader.error(
            f"'hostname_suffix' must be a DNS name such as svc.example, got {value!r}"
        )
    return suffix


def parse_settings(name: str, settings: Mapping[str, Any]) -> EtcdSettings:
    """Validate the settings of the etcd registry ``name`` (see the module docstring)."""
    reader = SettingsReader(name, "etcd", settings, SETTINGS)
    username = reader.text("username")
    password = reader.text("password", secret=True)
    if (username is None) != (password is None):
        raise reader.error("'username' and 'password' go together: set both or neither")
    cert_file, key_file = reader.file("cert_file"), reader.file("key_file")
    if (cert_file is None) != (key_file is None):
        raise reader.error("'cert_file' and 'key_file' go together: set both or neither")
    options = Options(
        prefix=_prefix(reader),
        namespace=reader.label("namespace", "default"),
        hostname_suffix=_suffix(reader),
    )
    return EtcdSettings(
        endpoints=_endpoints(reader),
        options=options,
        username=username,
        password=password,
        ca_file=reader.file("ca_file"),
        cert_file=cert_file,
        key_file=key_file,
        timeout=reader.number("timeout", DEFAULT_TIMEOUT, maximum=_MAX_TIMEOUT, unit="seconds"),
    )
