"""Real upstream servers on 127.0.0.1: an HTTP server and a gRPC server that say who
they are.  Both run on threads of the test process and are stopped by their fixtures."""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc

__all__ = ["GREETER_METHOD", "GreeterServer", "HttpBackend", "NameServer"]

GREETER_SERVICE = "e2e.Greeter"
GREETER_METHOD = f"/{GREETER_SERVICE}/SayHello"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _NamedServer

    def do_GET(self) -> None:
        # Count before answering: a client that has read the answer must find it counted.
        self.server.count_request(self.headers.get("Host", ""))
        body = self.server.name.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", self.server.name)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests count requests instead."""


class _NamedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str, address: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((address, port), _Handler)
        self.name = name
        self.hosts: list[str] = []
        self._lock = threading.Lock()

    def count_request(self, host: str) -> None:
        with self._lock:
            self.hosts.append(host)


class HttpBackend:
    """An HTTP/1.1 server on 127.0.0.1 (or another loopback ``address``) answering every
    GET with its ``name``."""

    def __init__(self, name: str, address: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self._server = _NamedServer(name, address, port)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def hosts(self) -> list[str]:
        """The Host header of every request served so far."""
        return list(self._server.hosts)

    def start(self) -> HttpBackend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class GreeterServer:
    """A gRPC server on 127.0.0.1 with one unary method, ``/e2e.Greeter/SayHello``, on raw
    bytes: it answers ``hello <request> from <name>``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.unary_unary_rpc_method_handler(
            self._say_hello, request_deserializer=None, response_serializer=None
        )
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(GREETER_SERVICE, {"SayHello": handler}),)
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    def _say_hello(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.calls += 1
        return b"hello " + request + b" from " + self.name.encode()

    def start(self) -> GreeterServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None).wait(timeout=5)


class _NameHandler(socketserver.BaseRequestHandler):
    server: _TcpNameServer

    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(5)
        try:
            if self.server.tls is not None:
                conn = self.server.tls.wrap_socket(conn, server_side=True)
            self.server.count()
            conn.sendall(self.server.name.encode())
        except (OSError, ssl.SSLError):
            return  # a client that went away or spoke no TLS: nothing to count
        finally:
            conn.close()


class _TcpNameServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str, address: str, tls: ssl.SSLContext | None) -> None:
        super().__init__((address, 0), _NameHandler)
        self.name = name
        self.tls = tls
        self.connections = 0
        self._lock = threading.Lock()

    def count(self) -> None:
        with self._lock:
            self.connections += 1


class NameServer:
    """A TCP server that writes its ``name`` to every connection and closes it; with
    ``cert``/``key`` it does so over TLS (after the handshake)."""

    def __init__(
        self, name: str, address: str = "127.0.0.1", cert: str = "", key: str = ""
    ) -> None:
        tls = None
        if cert:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(cert, key)
        self.name = name
        self._server = _TcpNameServer(name, address, tls)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def connections(self) -> int:
        return self._server.connections

    def start(self) -> NameServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
