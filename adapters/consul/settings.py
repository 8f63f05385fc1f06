"""Settings of the ``consul`` registry: validation and defaults.  Pure: no I/O.

Contract: :func:`parse_settings` turns the mapping a registry's config hands the adapter
into a frozen :class:`ConsulSettings`, or raises :class:`~registryd.adapter.ConfigError`
naming the registry (``registry 'x' (consul): ...``) and the setting at fault.  The ACL
``token`` never appears in an error message, and not in the ``repr`` of the settings.

=====================  ====================  ============================================
setting                default               meaning
=====================  ====================  ============================================
``address``            ``127.0.0.1:8500``    agent: ``host:port``, ``host`` or a URL
                                             ``http(s)://host[:port]`` (port 8500, or
                                             8501 for https, when left out)
``scheme``             ``http``              ``http`` or ``https`` (or the URL's)
``datacenter``         the agent's own       one datacenter to read
``datacenters``        none                  several: one set of watches each
``token``              none                  ACL token (``X-Consul-Token``); needs
                                             ``service:read`` and ``node:read``
``ca_file``            system CAs            CA bundle that signed the agent's cert
``cert_file``          none                  client certificate (mutual TLS)
``key_file``           in ``cert_file``      its private key
``verify``             ``true``              verify the agent's certificate and name
``stale``              ``false``             allow stale reads (any server answers)
``wait``               ``5m``                blocking-query wait; ``100ms``..``10m``
``hostname``           see below             template: ``{service}``, ``{datacenter}``
``namespace``          ``default``           namespace of every service
``warning_is_healthy`` ``true``              a ``warning`` instance still gets traffic
``kinds``              ``[typical]``         Consul service kinds to use: ``typical``,
                                             ``connect-proxy``, ``mesh-gateway``,
                                             ``terminating-gateway``,
                                             ``ingress-gateway``, ``api-gateway``
=====================  ====================  ============================================

The default ``hostname`` is ``{service}.service.consul``.  ``{datacenter}`` needs
``datacenter`` or ``datacenters`` (the agent's own datacenter is not looked up).
Environment variables (``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN``...) are not read:
everything comes from the settings.
"""

from __future__ import annotations

import ipaddress
import re
import string
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from registryd.adapter import ConfigError
from registryd.config import go_duration

from .convert import DEFAULT_HOSTNAME, is_dns_name

__all__ = [
    "DEFAULT_HOSTNAME",
    "MAX_WAIT",
    "ConsulSettings",
    "format_wait",
    "parse_settings",
]

DEFAULT_WAIT = 300.0  # Consul's own default: 5 minutes
MAX_WAIT = 600.0  # Consul caps a blocking query's wait at 10 minutes
MIN_WAIT = 0.1
SETTINGS = (
    "address",
    "scheme",
    "datacenter",
    "datacenters",
    "token",
    "ca_file",
    "cert_file",
    "key_file",
    "verify",
    "stale",
    "wait",
    "hostname",
    "namespace",
    "warning_is_healthy",
    "kinds",
)
TYPICAL = "typical"  # Consul's name for the kind of a plain service (an empty Kind)
TEMPLATE_FIELDS = frozenset({"service", "datacenter"})
_HOST = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9.]*[A-Za-z0-9])?")
_NAMESPACE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_DATACENTER = re.compile(r"[A-Za-z0-9_-]+")
_KIND = re.compile(r"[a-z][-a-z0-9]*")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsulSettings:
    """Validated settings.  ``datacenters`` is empty for the agent's own datacenter."""

    host: str = "127.0.0.1"
    port: int = 8500
    scheme: str = "http"
    datacenters: tuple[str, ...] = ()
    token: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    stale: bool = False
    wait: float = DEFAULT_WAIT
    hostname: str = DEFAULT_HOSTNAME
    namespace: str = "default"
    warning_is_healthy: bool = True
    kinds: frozenset[str] = frozenset({""})  # Service.Kind values; "" = typical

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


def format_wait(seconds: float) -> str:
    """The ``wait`` query parameter for ``seconds``: ``300s``, ``1500ms``."""
    milliseconds = round(seconds * 1000)
    if milliseconds % 1000 == 0:
        return f"{milliseconds // 1000}s"
    return f"{milliseconds}ms"


def parse_settings(name: str, settings: Mapping[str, Any]) -> ConsulSettings:
    """Validate ``settings`` of registry ``name`` (see the module docstring)."""
    where = f"registry {name!r} (consul)"
    unknown = sorted(str(k) for k in set(settings) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"{where}: unknown settings {unknown}; known: {list(SETTINGS)}")
    host, port, scheme = _address(where, settings)
    datacenters = _datacenters(where, settings)
    hostname = _template(where, settings.get("hostname", DEFAULT_HOSTNAME), datacenters)
    tls = {
        key: _optional_text(where, settings, key) for key in ("ca_file", "cert_file", "key_file")
    }
    if scheme != "https" and any(tls.values()):
        given = [key for key, value in tls.items() if value]
        raise ConfigError(f"{where}: {given} need scheme https (the agent is read over http)")
    if tls["key_file"] and not tls["cert_file"]:
        raise ConfigError(f"{where}: 'key_file' needs 'cert_file' (the client certificate)")
    return ConsulSettings(
        host=host,
        port=port,
        scheme=scheme,
        datacenters=datacenters,
        token=_token(where, settings.get("token")),
        ca_file=tls["ca_file"],
        cert_file=tls["cert_file"],
        key_file=tls["key_file"],
        verify=_flag(where, settings, "verify", True),
        stale=_flag(where, settings, "stale", False),
        wait=_wait(where, settings.get("wait", DEFAULT_WAIT)),
        hostname=hostname,
        namespace=_namespace(where, settings.get("namespace", "default")),
        warning_is_healthy=_flag(where, settings, "warning_is_healthy", True),
        kinds=_kinds(where, settings.get("kinds", [TYPICAL])),
    )


def _address(where: str, settings: Mapping[str, Any]) -> tuple[str, int, str]:
    text = settings.get("address", "127.0.0.1:8500")
    scheme = settings.get("scheme")
    if scheme is not None and scheme not in ("http", "https"):
        raise ConfigError(f"{where}: 'scheme' must be http or https, got {scheme!r}")
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: 'address' must be host:port or a URL, got {text!r}")
    text = text.strip()
    if "://" in text:
        parsed = urllib.parse.urlsplit(text)
        if "@" in parsed.netloc:  # never echo it: it carries credentials
            raise ConfigError(f"{where}: 'address' must not carry credentials; use 'token'")
        if parsed.scheme not in ("http", "https"):
            raise ConfigError(f"{where}: 'address' scheme must be http or https, got {text!r}")
        if parsed.path.strip("/") or parsed.query or parsed.fragment:
            raise ConfigError(f"{where}: 'address' must be scheme://host[:port], got {text!r}")
        if scheme is not None and scheme != parsed.scheme:
            raise ConfigError(f"{where}: 'scheme' {scheme} contradicts 'address' {text!r}")
        scheme, netloc = parsed.scheme, parsed.netloc
    else:
        if "@" in text or "/" in text:
            raise ConfigError(f"{where}: 'address' must be host:port or a URL")
        netloc = text
    scheme = scheme or "http"
    host, port = _host_port(where, netloc, 8501 if scheme == "https" else 8500)
    return host, port, scheme


def _host_port(where: str, netloc: str, default_port: int) -> tuple[str, int]:
    bad = ConfigError(f"{where}: 'address' must be host:port, [ipv6]:port or a URL, got {netloc!r}")
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", netloc)
    if not match:
        try:  # a bare IPv6 address without a port
            return str(ipaddress.IPv6Address(netloc)), default_port
        except ValueError:
            raise bad from None
    host = match.group(1) or match.group(3)
    digits = match.group(2) or match.group(4)
    if match.group(1):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad from None
    elif not _HOST.fullmatch(host):
        raise bad
    port = int(digits) if digits else default_port
    if not 0 < port < 65536:
        raise ConfigError(f"{where}: 'address' port {port} out of range 1-65535")
    return host, port


def _datacenters(where: str, settings: Mapping[str, Any]) -> tuple[str, ...]:
    one, many = settings.get("datacenter"), settings.get("datacenters")
    if one is not None and many is not None:
        raise ConfigError(f"{where}: set 'datacenter' or 'datacenters', not both")
    if one is not None:
        many = [one]
        key = "datacenter"
    else:
        key = "datacenters"
    if many is None:
        return ()
    if not isinstance(many, list | tuple) or not many:
        raise ConfigError(f"{where}: 'datacenters' must be a non-empty list of names")
    for dc in many:
        if not isinstance(dc, str) or not _DATACENTER.fullmatch(dc):
            raise ConfigError(f"{where}: '{key}' must be datacenter names, got {dc!r}")
    if len(set(many)) != len(many):
        raise ConfigError(f"{where}: 'datacenters' lists a datacenter twice: {list(many)}")
    return tuple(many)


def _template(where: str, template: Any, datacenters: tuple[str, ...]) -> str:
    if not isinstance(template, str) or not template:
        raise ConfigError(f"{where}: 'hostname' must be a template like {DEFAULT_HOSTNAME!r}")
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{where}: 'hostname' {template!r}: {exc}") from None
    names = set()
    for _, field_name, spec, conversion in fields:
        if field_name is None:
            continue
        if field_name not in TEMPLATE_FIELDS or spec or conversion:
            raise ConfigError(
                f"{where}: 'hostname' {template!r}: only {{service}} and {{datacenter}} "
                f"may be used, got {{{field_name}}}"
            )
        names.add(field_name)
    if "service" not in names:
        raise ConfigError(f"{where}: 'hostname' {template!r} must contain {{service}}")
    if "datacenter" in names and not datacenters:
        raise ConfigError(
            f"{where}: 'hostname' {template!r} uses {{datacenter}}: set 'datacenter' or "
            f"'datacenters' (the agent's own datacenter is not looked up)"
        )
    for dc in datacenters or ("dc1",):
        sample = template.format(service="svc", datacenter=dc).lower()
        if not is_dns_name(sample):
            raise ConfigError(
                f"{where}: 'hostname' {template!r} does not give a DNS name (e.g. {sample!r})"
            )
    return template


def _token(where: str, token: Any) -> str | None:
    if token is None or token == "":
        return None
    if not isinstance(token, str) or token != token.strip() or not token.isprintable():
        # never show the value: it may be the secret with a stray character
        raise ConfigError(f"{where}: 'token' must be a string without spaces or control chars")
    return token


def _optional_text(where: str, settings: Mapping[str, Any], key: str) -> str | None:
    value = settings.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key!r} must be a file path, got {value!r}")
    return value


def _flag(where: str, settings: Mapping[str, Any], key: str, default: bool) -> bool:
    value = settings.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key!r} must be true or false, got {value!r}")
    return value


def _wait(where: str, value: Any) -> float:
    bad = ConfigError(f"{where}: 'wait' must be a duration like 5m, 30s or 500ms, got {value!r}")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (parsed := go_duration(value)) is not None:
        seconds = parsed
    else:
        raise bad
    if not MIN_WAIT <= seconds <= MAX_WAIT:
        raise ConfigError(f"{where}: 'wait' must be between 100ms and 10m, got {value!r}")
    return seconds


def _namespace(where: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAMESPACE.fullmatch(value):
        raise ConfigError(f"{where}: 'namespace' must be a DNS label like 'default', got {value!r}")
    return value


def _kinds(where: str, value: Any) -> frozenset[str]:
    """Kind names -> ``Service.Kind`` values (``typical`` is the empty kind).  Any
    lower-case name is taken, so kinds newer than this list work too."""
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{where}: 'kinds' must be a non-empty list like [typical]: {value!r}")
    for kind in value:
        if not isinstance(kind, str) or not _KIND.fullmatch(kind):
            raise ConfigError(f"{where}: 'kinds' must be names like connect-proxy, got {kind!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: 'kinds' lists a kind twice: {list(value)}")
    return frozenset("" if kind == TYPICAL else kind for kind in value)
