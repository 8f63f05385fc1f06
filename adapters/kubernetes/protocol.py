"""A Kubernetes Service port's protocol, as istiod infers it.  Pure.

The rule is istiod's ``ConvertProtocol`` (pkg/config/kube/conversion.go) over
``protocol.Parse`` (pkg/config/protocol/instance.go):

1. ``protocol: UDP`` → ``UDP``, whatever the names say.
2. The text to read is ``appProtocol`` when the port has one (even an empty one; the port
   name is then *not* consulted), else the port name.  Three ``appProtocol`` values
   Kubernetes defines are mapped first, exactly as spelled: ``kubernetes.io/h2c`` →
   ``HTTP2``, ``kubernetes.io/ws`` → ``HTTP``, ``kubernetes.io/wss`` → ``HTTPS``.
3. A text starting with ``grpc-web`` (any case) → ``GRPC-WEB``.
4. Otherwise the part before the first ``-`` (or the whole text), in any case, if it is
   one of ``tcp``, ``udp``, ``grpc``, ``grpc-web``, ``http``, ``http_proxy``, ``http2``,
   ``https``, ``tls``, ``mongo``, ``redis``, ``mysql``.
5. Nothing found: ``TCP`` on the well-known ports 25 (SMTP), 53 (DNS), 3306 (MySQL) and
   27017 (MongoDB), where sniffing would break the protocol; else
   :data:`~registryd.model.AUTO` (istiod's ``protocol.Unsupported``: detected per
   connection by the xDS builder).
"""

from __future__ import annotations

from registryd.model import AUTO

__all__ = ["WELL_KNOWN_TCP_PORTS", "port_protocol"]

WELL_KNOWN_TCP_PORTS = frozenset({25, 53, 3306, 27017})  # conversion.go wellKnownPorts
_KUBERNETES_APP_PROTOCOLS = {
    "kubernetes.io/h2c": "HTTP2",
    "kubernetes.io/ws": "HTTP",
    "kubernetes.io/wss": "HTTPS",
}
_PARSED = {  # protocol.Parse, lower-case input
    "tcp": "TCP",
    "udp": "UDP",
    "grpc": "GRPC",
    "grpc-web": "GRPC-WEB",
    "http": "HTTP",
    "http_proxy": "HTTP_PROXY",
    "http2": "HTTP2",
    "https": "HTTPS",
    "tls": "TLS",
    "mongo": "MONGO",
    "redis": "REDIS",
    "mysql": "MYSQL",
}
_GRPC_WEB = "grpc-web"


def port_protocol(
    number: int, name: str, kube_protocol: str = "TCP", app_protocol: str | None = None
) -> str:
    """The registryd protocol of a Service port (see the module docstring).
    ``kube_protocol`` is the port's ``protocol`` field (``TCP``, ``UDP``, ``SCTP``);
    ``app_protocol`` None means the field is absent."""
    if kube_protocol == "UDP":
        return "UDP"
    text = name
    if app_protocol is not None:
        known = _KUBERNETES_APP_PROTOCOLS.get(app_protocol)
        if known is not None:
            return known
        text = app_protocol
    if text[: len(_GRPC_WEB)].lower() == _GRPC_WEB:
        return "GRPC-WEB"
    found = _PARSED.get(text.split("-", 1)[0].lower())
    if found is not None:
        return found
    return "TCP" if number in WELL_KNOWN_TCP_PORTS else AUTO
