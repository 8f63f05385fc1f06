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
``max_watches``        ``auto``              blocking queries held open at once (the
                                             catalog's included); services beyond are
                                             polled.  ``auto``: 3/4 of the agent's
                                             ``limits.http_max_conns_per_client`` (200
                                             by default) less 16 for polls, so 134,
                                             read from ``/v1/agent/self`` at each
                                             start
``poll_interval``      ``1``                 such services are read again when the
                                             catalog, a node or a check changes: at
                                             most once in this many seconds (a check
                                             of one that changes state: at once)
``kinds``              ``[typical]``         Consul service kinds to use: ``typical``,
                                             ``connect-proxy``, ``mesh-gateway``,
                                             ``terminating-gateway``,
                                             ``ingress-gateway``, ``api-gateway``
``max_response_bytes`` ``16777216``          bytes of one reply (a service's health
                       (16 MiB)              entries take about 2 KB an instance); a
                                             larger one is that query's error (at
                                             least 1024)
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

from registryd.adapter import JsonLimits
from registryd.settings import SettingsReader, go_duration

from .parse import DEFAULT_HOSTNAME, is_dns_name

__all__ = [
    "DEFAULT_HOSTNAME",
    "DEFAULT_MAX_RESPONSE_BYTES",
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
    "max_watches",
    "poll_interval",
    "max_response_bytes",
)
DEFAULT_MAX_RESPONSE_BYTES = 16 * 2**20
MIN_RESPONSE_BYTES = 1024
AUTO = "auto"
DEFAULT_MAX_WATCHES = 150  # Consul's limits.http_max_conns_per_client is 200 by default
DEFAULT_POLL_INTERVAL = 1.0
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
    max_watches: int | None = None  # None: auto, from the agent's connection limit
    poll_interval: float = DEFAULT_POLL_INTERVAL
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    @property
    def limits(self) -> JsonLimits:
        """What one reply may hold."""
        return JsonLimits(max_bytes=self.max_response_bytes)

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
    reader = SettingsReader(name, "consul", settings, SETTINGS)
    host, port, scheme = _address(reader)
    datacenters = _datacenters(reader)
    hostname = _template(reader, datacenters)
    tls = {key: reader.file(key, must_exist=False) for key in ("ca_file", "cert_file", "key_file")}
    if scheme != "https" and any(tls.values()):
        given = [key for key, value in tls.items() if value]
        raise reader.error(f"{given} need scheme https (the agent is read over http)")
    if tls["key_file"] and not tls["cert_file"]:
        raise reader.error("'key_file' needs 'cert_file' (the client certificate)")
    return ConsulSettings(
        host=host,
        port=port,
        scheme=scheme,
        datacenters=datacenters,
        token=_token(reader),
        ca_file=tls["ca_file"],
        cert_file=tls["cert_file"],
        key_file=tls["key_file"],
        verify=reader.flag("verify", True),
        stale=reader.flag("stale", False),
        wait=_wait(reader),
        hostname=hostname,
        namespace=reader.label("namespace", "default"),
        warning_is_healthy=reader.flag("warning_is_healthy", True),
        kinds=frozenset(
            "" if kind == TYPICAL else kind
            for kind in reader.names("kinds", _KIND, "kind name", default=[TYPICAL])
        ),
        max_watches=_max_watches(reader, 3 * max(1, len(datacenters))),
        poll_interval=reader.number(
            "poll_interval", DEFAULT_POLL_INTERVAL, maximum=MAX_WAIT, unit="seconds"
        ),
        max_response_bytes=reader.whole(
            "max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES, minimum=MIN_RESPONSE_BYTES
        ),
    )


def _max_watches(reader: SettingsReader, catalogs: int) -> int | None:
    if reader.get("max_watches", AUTO) == AUTO:
        return None
    value = reader.whole("max_watches", DEFAULT_MAX_WATCHES)
    if value <= catalogs:
        raise reader.error(
            f"'max_watches' must leave room for service watches beside the {catalogs} "
            f"watches of the catalog and its change signals, got {value}"
        )
    return value


def _address(reader: SettingsReader) -> tuple[str, int, str]:
    text = reader.get("address", "127.0.0.1:8500")
    scheme = reader.get("scheme")
    if scheme is not None and scheme not in ("http", "https"):
        raise reader.error(f"'scheme' must be http or https, got {scheme!r}")
    if not isinstance(text, str) or not text.strip():
        raise reader.error(f"'address' must be host:port or a URL, got {text!r}")
    text = text.strip()
    if "://" in text:
        parsed = urllib.parse.urlsplit(text)
        if "@" in parsed.netloc:  # never echo it: it carries credentials
            raise reader.error("'address' must not carry credentials; use 'token'")
        if parsed.scheme not in ("http", "https"):
            raise reader.error(f"'address' scheme must be http or https, got {text!r}")
        if parsed.path.strip("/") or parsed.query or parsed.fragment:
            raise reader.error(f"'address' must be scheme://host[:port], got {text!r}")
        if scheme is not None and scheme != parsed.scheme:
            raise reader.error(f"'scheme' {scheme} contradicts 'address' {text!r}")
        scheme, netloc = parsed.scheme, parsed.netloc
    else:
        if "@" in text or "/" in text:
            raise reader.error("'address' must be host:port or a URL")
        netloc = text
    scheme = scheme or "http"
    host, port = _host_port(reader, netloc, 8501 if scheme == "https" else 8500)
    return host, port, scheme


def _host_port(reader: SettingsReader, netloc: str, default_port: int) -> tuple[str, int]:
    bad = reader.error(f"'address' must be host:port, [ipv6]:port or a URL, got {netloc!r}")
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
        raise reader.error(f"'address' port {port} out of range 1-65535")
    return host, port


def _datacenters(reader: SettingsReader) -> tuple[str, ...]:
    one = reader.get("datacenter")
    if one is None:
        return reader.names("datacenters", _DATACENTER, "datacenter name")
    if reader.get("datacenters") is not None:
        raise reader.error("set 'datacenter' or 'datacenters', not both")
    if not isinstance(one, str) or not _DATACENTER.fullmatch(one):
        raise reader.error(f"'datacenter': {one!r} is not a datacenter name")
    return (one,)


def _template(reader: SettingsReader, datacenters: tuple[str, ...]) -> str:
    template = reader.get("hostname", DEFAULT_HOSTNAME)
    if not isinstance(template, str) or not template:
        raise reader.error(f"'hostname' must be a template like {DEFAULT_HOSTNAME!r}")
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise reader.error(f"'hostname' {template!r}: {exc}") from None
    names = set()
    for _, field_name, spec, conversion in fields:
        if field_name is None:
            continue
        if field_name not in TEMPLATE_FIELDS or spec or conversion:
            raise reader.error(
                f"'hostname' {template!r}: only {{service}} and {{datacenter}} "
                f"may be used, got {{{field_name}}}"
            )
        names.add(field_name)
    if "service" not in names:
        raise reader.error(f"'hostname' {template!r} must contain {{service}}")
    if "datacenter" in names and not datacenters:
        raise reader.error(
            f"'hostname' {template!r} uses {{datacenter}}: set 'datacenter' or "
            f"'datacenters' (the agent's own datacenter is not looked up)"
        )
    for dc in datacenters or ("dc1",):
        sample = template.format(service="svc", datacenter=dc).lower()
        if not is_dns_name(sample):
            raise reader.error(
                f"'hostname' {template!r} does not give a DNS name (e.g. {sample!r})"
            )
    return template


def _token(reader: SettingsReader) -> str | None:
    token = reader.get("token")
    if token is None or token == "":
        return None
    if not isinstance(token, str) or token != token.strip() or not token.isprintable():
        # never show the value: it may be the secret with a stray character
        raise reader.error("'token' must be a string without spaces or control chars")
    return token


def _wait(reader: SettingsReader) -> float:
    value = reader.get("wait", DEFAULT_WAIT)
    bad = reader.error(f"'wait' must be a duration like 5m, 30s or 500ms, got {value!r}")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (parsed := go_duration(value)) is not None:
        seconds = parsed
    else:
        raise bad
    if not MIN_WAIT <= seconds <= MAX_WAIT:
        raise reader.error(f"'wait' must be between 100ms and 10m, got {value!r}")
    return seconds
