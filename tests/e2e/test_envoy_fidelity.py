"""What istiod serves, checked with real traffic through a real Envoy: SNI routing on a
shared TLS port, per-VIP TCP listeners behind iptables-style capture, and a VIP in the
Host header.  Rules: registryd/build/listeners.py and routes.py (istiod listener.go,
tls.go, httproute.go)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from tests.e2e.admin import Admin
from tests.e2e.checks import (
    LOCAL,
    answers,
    assert_accepted,
    assert_stream_type,
    use_api,
    wait_answers,
)
from tests.e2e.conftest import Stack
from tests.e2e.entries import write_entries
from tests.support.certs import issue_server, make_tls
from tests.support.procs import free_port, http_get, listener_port, poll


def entry(
    host: str,
    port: int,
    protocol: str,
    backend_port: int,
    addresses: list[str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "hosts": [host],
        "location": "MESH_INTERNAL",
        "resolution": "STATIC",
        "ports": [{"number": port, "name": "main", "protocol": protocol}],
        "endpoints": [{"address": LOCAL, "ports": {"main": backend_port}}],
    }
    if addresses:
        spec["addresses"] = addresses
    name = host.split(".")[0]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def read_all(conn: socket.socket) -> str:
    chunks = []
    while chunk := conn.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def tls_name(port: int, sni: str, ca: Path) -> str:
    """Connect through Envoy on ``port`` with SNI ``sni``; the name the TLS backend sent
    after a handshake that verified its certificate for ``sni`` ("" if it failed)."""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with socket.create_connection((LOCAL, port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=sni) as conn:
                return read_all(conn)
    except (OSError, ssl.SSLError):
        return ""


def test_two_tls_hosts_on_one_port_are_each_reached_by_sni(stack: Stack, api_type: str) -> None:
    pki = make_tls(stack.workdir / "pki")
    hosts = ("a.tls.example", "b.tls.example")
    servers = {}
    for host in hosts:
        cert, key = issue_server(pki, host)
        servers[host] = stack.name_server(host, cert=str(cert), key=str(key))
    port = listener_port()
    write_entries(
        stack.config_dir / "tls.yaml",
        *(entry(host, port, "TLS", servers[host].port) for host in hosts),
    )
    registryd = stack.start_registryd()
    envoy = stack.start_envoy(registryd, use_api(api_type))
    assert_stream_type(registryd, api_type)
    for host in hosts:
        poll(lambda h=host: tls_name(port, h, pki.ca) == h, f"{host} by SNI", details=stack.logs)  # type: ignore[misc]
    # every host keeps its own chain: each name reaches its own backend, again and again
    for _ in range(3):
        assert [tls_name(port, h, pki.ca) for h in hosts] == list(hosts)
    before = sum(s.connections for s in servers.values())
    assert tls_name(port, "c.tls.example", pki.ca) == ""  # an unknown name reaches nobody
    assert sum(s.connections for s in servers.values()) == before
    assert_accepted(Admin(envoy.admin_port), registryd)


def capture(bootstrap: dict[str, Any], port: int) -> None:
    """Make Envoy a captured sidecar (no INTERCEPTION_MODE: NONE) and give it a listener
    that does what iptables does for ``virtualOutbound``: restore the original destination
    (from a PROXY protocol header, since tests cannot redirect) and hand the connection to
    the listener of that destination."""
    del bootstrap["node"]["metadata"]["INTERCEPTION_MODE"]
    static = bootstrap["static_resources"]
    static["clusters"].append(
        {"name": "capture-nowhere", "type": "STATIC", "connect_timeout": "1s"}
    )
    static["listeners"] = [
        {
            "name": "capture",
            "address": {"socket_address": {"address": LOCAL, "port_value": port}},
            "use_original_dst": True,
            "listener_filters": [
                {
                    "name": "envoy.filters.listener.proxy_protocol",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.listener"
                        ".proxy_protocol.v3.ProxyProtocol"
                    },
                }
            ],
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.tcp_proxy",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.network"
                                ".tcp_proxy.v3.TcpProxy",
                                "stat_prefix": "capture",
                                "cluster": "capture-nowhere",
                            },
                        }
                    ]
                }
            ],
        }
    ]


def captured(capture_port: int, destination: str, port: int) -> str:
    """Open a connection "to" ``destination:port`` through the capture listener: what the
    service there answered ("" if nothing did)."""
    header = f"PROXY TCP4 {LOCAL} {destination} 40000 {port}\r\n".encode()
    try:
        with socket.create_connection((LOCAL, capture_port), timeout=5) as conn:
            conn.sendall(header)
            return read_all(conn)
    except OSError:
        return ""


def test_tcp_services_with_vips_are_each_reached_only_at_their_own_address(
    stack: Stack, api_type: str
) -> None:
    port = listener_port()
    a = stack.name_server("a")
    b = stack.name_server("b")
    c = stack.name_server("c")
    write_entries(
        stack.config_dir / "tcp.yaml",
        entry("a.tcp.example", port, "TCP", a.port, ["127.0.0.2"]),
        entry("b.tcp.example", port, "TCP", b.port, ["127.0.0.3"]),
        entry("c.tcp.example", port, "TCP", c.port),  # no VIP: the port's wildcard
    )
    capture_port = free_port()
    registryd = stack.start_registryd()
    envoy = stack.start_envoy(
        registryd, use_api(api_type, lambda boot: capture(boot, capture_port))
    )
    assert_stream_type(registryd, api_type)
    admin = Admin(envoy.admin_port)
    poll(
        lambda: captured(capture_port, "127.0.0.2", port) == "a",
        "a.tcp.example at its VIP",
        details=stack.logs,
    )
    listeners = admin.config().raw_listeners
    assert {f"127.0.0.2_{port}", f"127.0.0.3_{port}", f"0.0.0.0_{port}"} <= listeners.keys()
    assert listeners[f"127.0.0.2_{port}"]["bind_to_port"] is False
    for _ in range(3):
        assert captured(capture_port, "127.0.0.2", port) == "a"
        assert captured(capture_port, "127.0.0.3", port) == "b"
        assert captured(capture_port, "127.0.0.9", port) == "c"  # any other address
    assert captured(capture_port, "127.0.0.2", port + 1 if port < 65535 else port - 1) == ""
    assert_accepted(admin, registryd)


def test_http_service_is_reached_by_its_vip_in_the_host_header(stack: Stack, api_type: str) -> None:
    port = listener_port()
    backend = stack.http_backend("vip-backend")
    write_entries(
        stack.config_dir / "http.yaml",
        entry("web.vip.example", port, "HTTP", backend.port, ["127.0.0.5"]),
    )
    registryd = stack.start_registryd()
    envoy = stack.start_envoy(registryd, use_api(api_type))
    wait_answers(port, f"127.0.0.5:{port}", {"vip-backend"}, details=stack.logs)
    assert answers(port, "127.0.0.5", 2) == {"vip-backend": 2}
    assert answers(port, "web.vip.example", 2) == {"vip-backend": 2}
    assert "127.0.0.5" in backend.hosts and f"127.0.0.5:{port}" in backend.hosts
    # not a VIP of anyone: istiod's allow_any virtual host passes it through, no 404
    (other,) = answers(port, "127.0.0.6", 1)
    assert other != "vip-backend" and not other.startswith("404"), other
    assert_accepted(Admin(envoy.admin_port), registryd)


def test_hosts_differing_only_in_case_do_not_break_the_routes_of_their_port(
    stack: Stack, api_type: str
) -> None:
    # a route configuration with one domain twice is rejected by Envoy as a whole
    port = listener_port()
    victim = stack.http_backend("victim")
    other = stack.http_backend("other")
    twice = entry("victim.example", port, "HTTP", victim.port)
    twice["spec"]["hosts"] = ["Victim.example", "victim.example"]
    write_entries(
        stack.config_dir / "case.yaml", twice, entry("other.example", port, "HTTP", other.port)
    )
    registryd = stack.start_registryd()
    envoy = stack.start_envoy(registryd, use_api(api_type))
    wait_answers(port, "other.example", {"other"}, details=stack.logs)
    assert answers(port, "VICTIM.example", 2) == {"victim": 2}  # Host matching ignores case
    assert_accepted(Admin(envoy.admin_port), registryd)
    status, body = http_get(registryd.http_port, "/debug/configz")
    assert status == 200 and "victim.example is listed 2 times" in body


def test_locality_weights_past_2_32_are_clamped_and_pushes_go_on(
    stack: Stack, api_type: str
) -> None:
    # endpoint_builder.go addUint32: each weight valid on its own, their sum is not
    port = listener_port()
    a = stack.http_backend("heavy-a")
    b = stack.http_backend("heavy-b")
    heavy = entry("heavy.example", port, "HTTP", a.port)
    heavy["spec"]["endpoints"] = [
        {"address": LOCAL, "ports": {"main": server.port}, "weight": 2**32 - 1} for server in (a, b)
    ]
    path = stack.config_dir / "heavy.yaml"
    write_entries(path, heavy)
    registryd = stack.start_registryd()
    envoy = stack.start_envoy(registryd, use_api(api_type))
    wait_answers(port, "heavy.example", {"heavy-a", "heavy-b"}, details=stack.logs)
    # a later edit still reaches the proxy: the push loop is alive
    heavy["spec"]["endpoints"] = heavy["spec"]["endpoints"][1:]
    write_entries(path, heavy)
    wait_answers(port, "heavy.example", {"heavy-b"}, only=True, details=stack.logs)
    assert_accepted(Admin(envoy.admin_port), registryd)
    assert "clamped" in registryd.output()
