"""Where and how the xDS service listens, as plain values: an address, the TLS material,
the gRPC server's options.

Kept apart from :mod:`registryd.xds.listen` (which binds with gRPC) so that reading the
daemon's configuration, which holds these values, loads neither gRPC nor the xDS server.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Address", "ServerOptions", "TlsFiles"]


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """PEM contents for xDS over TLS; with ``client_ca`` clients must present a
    certificate it signed (mutual TLS)."""

    cert: bytes
    key: bytes
    client_ca: bytes | None = None


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """What shapes the gRPC server besides its ports."""

    max_connection_age: float | None = None  # --keepaliveMaxServerConnectionAge
    max_connection_age_grace: float = 10.0
    reuse_port: bool = False  # True: processes share the ports (SO_REUSEPORT)
    # --rootNamespace: client certificates outside it get no Istio config types (MCP)
    root_namespace: str = "istio-system"
