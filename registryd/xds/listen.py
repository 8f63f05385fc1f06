"""The gRPC server the xDS service runs in: its options and its listening ports.

Shared by the daemon's own process (``--xdsWorkers 1``) and by xDS worker processes, so
both serve with the same keepalive, stream and connection-age settings.
"""

from __future__ import annotations

import asyncio

import grpc

from registryd.errors import ConfigError
from registryd.xds.addresses import Address, ServerOptions, TlsFiles
from registryd.xds.server import XdsServer

__all__ = [
    "bind",
    "drain",
    "grpc_options",
    "stop_serving",
]

STREAM_CLOSE_STEP = 0.01  # seconds between checks that every xDS stream has closed ...
STREAM_CLOSE_STEPS = 200  # ... and at most this many checks when stopping
DRAIN_TIMEOUT = 0.5  # seconds the loop's remaining tasks get to finish after stop


def grpc_options(options: ServerOptions) -> list[tuple[str, int]]:
    """gRPC channel arguments.  Without ``reuse_port`` a port another process listens on
    is an error rather than shared, so a second daemon on the same port fails at start."""
    out = [
        ("grpc.so_reuseport", 1 if options.reuse_port else 0),
        ("grpc.max_concurrent_streams", 100000),
        ("grpc.keepalive_time_ms", 30000),
        ("grpc.keepalive_timeout_ms", 10000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    age = options.max_connection_age
    if age is not None:
        out.append(("grpc.max_connection_age_ms", int(age * 1000)))
        out.append(
            ("grpc.max_connection_age_grace_ms", int(options.max_connection_age_grace * 1000))
        )
    return out


def bind(server: grpc.aio.Server, addr: Address, tls: TlsFiles | None = None) -> int:
    """Listen on ``addr`` (with TLS, and mutual TLS when ``tls`` has a client CA); the
    port bound.  :class:`ConfigError` naming the flag if it cannot listen."""
    flag = "--grpcAddr" if tls is None else "--secureGRPCAddr"
    try:
        if tls is None:
            port = server.add_insecure_port(str(addr))
        else:
            credentials = grpc.ssl_server_credentials(
                [(tls.key, tls.cert)],
                root_certificates=tls.client_ca,
                require_client_auth=tls.client_ca is not None,
            )
            port = server.add_secure_port(str(addr), credentials)
    except RuntimeError:  # grpcio raises instead of returning 0 on some versions
        port = 0
    if port == 0:
        raise ConfigError(f"{flag} {addr}: cannot listen (address in use?)")
    return port


async def stop_serving(server: grpc.aio.Server, xds: XdsServer) -> None:
    """Stop ``server`` at once (xDS streams never end by themselves: waiting for them
    would only delay the exit; clients reconnect, to another process if there is one)
    and give the cancelled streams' handlers a bounded time to finish."""
    await server.stop(grace=None)
    for _ in range(STREAM_CLOSE_STEPS):
        if not xds.handlers:
            break
        await asyncio.sleep(STREAM_CLOSE_STEP)


async def drain(timeout: float = DRAIN_TIMEOUT) -> None:
    """Let tasks still on the loop finish (gRPC ends each cancelled stream's tasks a few
    loop turns after the server stopped) instead of letting ``asyncio.run`` cancel them:
    gRPC prints a bare ``CancelledError`` traceback for every stream task cancelled that
    way.  Bounded by ``timeout`` seconds."""
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current]
    if others:
        await asyncio.wait(others, timeout=timeout)
