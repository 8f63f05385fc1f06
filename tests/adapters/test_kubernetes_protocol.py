"""Port protocols (:mod:`registryd.adapters.kubernetes.protocol`), as istiod converts them."""

from __future__ import annotations

import pytest

from registryd.adapters.kubernetes.protocol import port_protocol
from registryd.model import AUTO


@pytest.mark.parametrize(
    ("number", "name", "kube_protocol", "app_protocol", "expected"),
    [
        (80, "http", "TCP", None, "HTTP"),
        (80, "http-web", "TCP", None, "HTTP"),
        (80, "HTTP-Web", "TCP", None, "HTTP"),
        (80, "http2-api", "TCP", None, "HTTP2"),
        (80, "grpc", "TCP", None, "GRPC"),
        (80, "grpc-api", "TCP", None, "GRPC"),
        (80, "grpc-web", "TCP", None, "GRPC-WEB"),
        (80, "GRPC-Web-ui", "TCP", None, "GRPC-WEB"),
        (80, "https-admin", "TCP", None, "HTTPS"),
        (80, "tcp-db", "TCP", None, "TCP"),
        (80, "tls-passthrough", "TCP", None, "TLS"),
        (80, "mongo-main", "TCP", None, "MONGO"),
        (80, "redis", "TCP", None, "REDIS"),
        (80, "mysql-primary", "TCP", None, "MYSQL"),
        (80, "http_proxy", "TCP", None, "HTTP_PROXY"),
        (80, "udp-stats", "TCP", None, "UDP"),  # protocol.Parse knows "udp" too
        (80, "web", "TCP", None, AUTO),  # protocol.Unsupported: sniffed
        (80, "", "TCP", None, AUTO),
        (80, "httpx", "TCP", None, AUTO),
        (80, "web", "SCTP", None, AUTO),
        (25, "web", "TCP", None, "TCP"),  # wellKnownPorts: never sniffed
        (53, "", "TCP", None, "TCP"),
        (3306, "db", "TCP", None, "TCP"),
        (27017, "db", "TCP", None, "TCP"),
        (3306, "http", "TCP", None, "HTTP"),  # a name still wins on a well-known port
        (53, "dns", "UDP", None, "UDP"),
        (80, "http", "UDP", "http", "UDP"),  # UDP whatever the names say
        (80, "tcp", "TCP", "http", "HTTP"),  # appProtocol wins over the name
        (80, "web", "TCP", "HTTP2", "HTTP2"),
        (80, "web", "TCP", "grpc", "GRPC"),
        (80, "web", "TCP", "grpc-web", "GRPC-WEB"),
        (80, "web", "TCP", "https", "HTTPS"),
        (80, "http", "TCP", "tcp", "TCP"),
        (80, "web", "TCP", "kubernetes.io/h2c", "HTTP2"),
        (80, "web", "TCP", "kubernetes.io/ws", "HTTP"),
        (80, "web", "TCP", "kubernetes.io/wss", "HTTPS"),
        (80, "web", "TCP", "Kubernetes.io/H2C", AUTO),  # the Kubernetes names: exact case
        (80, "grpc", "TCP", "example.com/custom", AUTO),  # appProtocol set: name not read
        (80, "http", "TCP", "", AUTO),
        (3306, "http", "TCP", "example.com/custom", "TCP"),
    ],
)
def test_convert_protocol_as_istiod_kube_conversion_go_ConvertProtocol(
    number: int, name: str, kube_protocol: str, app_protocol: str | None, expected: str
) -> None:
    assert port_protocol(number, name, kube_protocol, app_protocol) == expected
