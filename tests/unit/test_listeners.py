"""Sidecar outbound listeners, rule by rule against istiod (networking/core/listener.go
buildSidecarOutboundListener, tls.go buildSidecarOutboundTLSFilterChainOpts,
listener_builder.go buildVirtualOutboundListener)."""

from __future__ import annotations

import dataclasses

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from registryd.build.listeners import Conflict, Mode, build_listeners, virtual_outbound_listener
from registryd.model import AUTO, Port, Resolution
from tests.unit.factories import ep, svc

HCM = "envoy.filters.network.http_connection_manager"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"


def target(chain: listener_components_pb2.FilterChain) -> str:
    """Where a chain sends traffic: a tcp_proxy cluster or ``rds:<route>``."""
    (filt,) = chain.filters
    if filt.name == HCM:
        manager = hcm_pb2.HttpConnectionManager()
        filt.typed_config.Unpack(manager)
        assert manager.http_filters[-1].name == "envoy.filters.http.router"
        return f"rds:{manager.rds.route_config_name}"
    proxy = tcp_proxy_pb2.TcpProxy()
    filt.typed_config.Unpack(proxy)
    return proxy.cluster


def chains(listener: listener_pb2.Listener) -> list[tuple[object, ...]]:
    """``(server names, prefix ranges, application protocols, target)`` per chain, the
    default chain last as ``("default", target)``."""
    out: list[tuple[object, ...]] = []
    for chain in listener.filter_chains:
        match = chain.filter_chain_match
        ranges = [f"{r.address_prefix}/{r.prefix_len.value}" for r in match.prefix_ranges]
        out.append(
            (list(match.server_names), ranges, list(match.application_protocols), target(chain))
        )
    if listener.HasField("default_filter_chain"):
        out.append(("default", target(listener.default_filter_chain)))
    return out


def filters(listener: listener_pb2.Listener) -> list[str]:
    return [f.name for f in listener.listener_filters]


def tls(host: str, port: int = 443, **kwargs: object) -> object:
    return svc(host, Port(number=port, protocol="TLS"), **kwargs)  # type: ignore[arg-type]


def tcp(host: str, port: int = 3306, **kwargs: object) -> object:
    return svc(host, Port(number=port, protocol="TCP"), **kwargs)  # type: ignore[arg-type]


def test_http_services_share_the_wildcard_listener_behind_the_http_inspector() -> None:
    # listener.go buildSidecarOutboundListener, ListenerProtocolHTTP at the wildcard bind
    services = [svc("a.example"), svc("b.example", addresses=("10.1.0.1",))]
    listeners, conflicts = build_listeners(8080, services, Mode.SIDECAR)
    assert list(listeners) == ["0.0.0.0_8080"]  # an HTTP service's VIP is a route domain only
    listener = listeners["0.0.0.0_8080"]
    assert listener.bind_to_port.value is False
    assert chains(listener) == [
        ([], [], ["http/1.1", "h2c"], "rds:8080"),
        ("default", "PassthroughCluster"),
    ]
    assert listener.filter_chains[0].filter_chain_match.transport_protocol == "raw_buffer"
    assert filters(listener) == [HTTP_INSPECTOR]
    assert conflicts == []


def test_local_mode_binds_loopback_and_http_alone_needs_no_inspector() -> None:
    # listener.go buildSidecarOutboundListeners: proxyNoneMode binds actualLocalHosts
    listeners, _ = build_listeners(8080, [svc("a.example")], Mode.LOCAL)
    listener = listeners["127.0.0.1_8080"]
    assert listener.address.socket_address.address == "127.0.0.1"
    assert not listener.HasField("bind_to_port")  # binds its port
    assert chains(listener) == [([], [], [], "rds:8080")]
    assert filters(listener) == []


def test_tls_hosts_on_one_port_each_get_a_chain_matching_sni() -> None:
    # tls.go buildSidecarOutboundTLSFilterChainOpts: SNI when the VIP and bind are wildcard
    listeners, conflicts = build_listeners(443, [tls("b.example"), tls("a.example")], Mode.SIDECAR)
    listener = listeners["0.0.0.0_443"]
    assert chains(listener) == [
        (["a.example"], [], [], "outbound|443||a.example"),
        (["b.example"], [], [], "outbound|443||b.example"),
        ("default", "PassthroughCluster"),
    ]
    assert filters(listener) == [TLS_INSPECTOR]
    inspector = tls_inspector_pb2.TlsInspector()
    listener.listener_filters[0].typed_config.Unpack(inspector)
    assert inspector.initial_read_buffer_size.value == 512  # filters.go TLSInspector
    assert conflicts == []


def test_a_single_tls_host_still_matches_by_sni_so_unknown_names_are_not_sent_to_it() -> None:
    https = svc("a.example", Port(number=443, protocol="HTTPS"))
    listeners, _ = build_listeners(443, [https], Mode.SIDECAR)
    assert chains(listeners["0.0.0.0_443"]) == [
        (["a.example"], [], [], "outbound|443||a.example"),
        ("default", "PassthroughCluster"),
    ]
    # on loopback (no capture) the listener is that service's: no SNI match (tls.go
    # matches SNI on istiod's wildcard only)
    listeners, _ = build_listeners(443, [https], Mode.LOCAL)
    assert chains(listeners["127.0.0.1_443"]) == [([], [], [], "outbound|443||a.example")]


def test_tls_service_with_a_vip_gets_its_own_listener_without_sni() -> None:
    listeners, _ = build_listeners(443, [tls("a.example", addresses=("10.1.0.1",))], Mode.SIDECAR)
    assert list(listeners) == ["10.1.0.1_443"]
    assert chains(listeners["10.1.0.1_443"]) == [([], [], [], "outbound|443||a.example")]


def test_tcp_services_with_vips_get_vip_listeners_instead_of_sharing_the_wildcard() -> None:
    # listener.go: ListenerProtocolTCP binds the service address when it is an IP
    services = [
        tcp("a.example", addresses=("10.1.0.1",)),
        tcp("b.example", addresses=("10.1.0.2",)),
    ]
    listeners, conflicts = build_listeners(3306, services, Mode.SIDECAR)
    assert sorted(listeners) == ["10.1.0.1_3306", "10.1.0.2_3306"]
    assert chains(listeners["10.1.0.1_3306"]) == [([], [], [], "outbound|3306||a.example")]
    assert chains(listeners["10.1.0.2_3306"]) == [([], [], [], "outbound|3306||b.example")]
    assert listeners["10.1.0.1_3306"].address.socket_address.address == "10.1.0.1"
    assert conflicts == []


def test_tcp_service_without_vip_keeps_the_wildcard_next_to_a_vip_listener() -> None:
    services = [tcp("a.example", addresses=("10.1.0.1",)), tcp("b.example")]
    listeners, _ = build_listeners(3306, services, Mode.SIDECAR)
    assert chains(listeners["0.0.0.0_3306"]) == [([], [], [], "outbound|3306||b.example")]
    assert chains(listeners["10.1.0.1_3306"]) == [([], [], [], "outbound|3306||a.example")]


def test_two_tcp_services_without_vip_conflict_and_the_first_keeps_the_port() -> None:
    # listener.go mergeTCPFilterChains / ProxyStatusConflictOutboundListenerTCPOverTCP
    listeners, conflicts = build_listeners(3306, [tcp("b.example"), tcp("a.example")], Mode.SIDECAR)
    assert chains(listeners["0.0.0.0_3306"]) == [([], [], [], "outbound|3306||a.example")]
    assert conflicts == [Conflict("0.0.0.0_3306", "b.example", "a.example")]


def test_resolution_none_with_cidr_addresses_matches_the_destination_range() -> None:
    # listener.go: a CIDR address falls back to the wildcard with a filter chain match
    service = tcp(
        "range.example", resolution=Resolution.NONE, addresses=("10.2.0.0/16", "10.3.0.7/32")
    )
    listeners, _ = build_listeners(3306, [service, tcp("other.example")], Mode.SIDECAR)
    assert chains(listeners["0.0.0.0_3306"]) == [
        ([], ["10.2.0.0/16", "10.3.0.7/32"], [], "outbound|3306||range.example"),
        ("default", "outbound|3306||other.example"),
    ]


def test_headless_passthrough_service_gets_a_listener_per_endpoint_ip() -> None:
    # listener.go buildSidecarOutboundListeners: passthrough without address, per instance
    service = tcp("db.default.svc.cluster.local", resolution=Resolution.NONE)
    endpoints = [
        ep("db.default.svc.cluster.local", "10.4.0.2", service_port=3306),
        ep("db.default.svc.cluster.local", "10.4.0.1", service_port=3306),
    ]
    listeners, _ = build_listeners(
        3306,
        [service],
        Mode.SIDECAR,
        {service.hostname: endpoints},  # type: ignore[attr-defined]
    )
    assert sorted(listeners) == ["10.4.0.1_3306", "10.4.0.2_3306"]
    empty, _ = build_listeners(3306, [service], Mode.SIDECAR, {})
    assert list(empty) == ["0.0.0.0_3306"]  # no endpoints: the wildcard, match-all


def test_auto_detected_port_gets_a_tcp_and_an_http_chain() -> None:
    # listener.go ListenerProtocolAuto: TCP chain plus HTTP chain with plaintext ALPNs
    listeners, _ = build_listeners(
        7000, [svc("a.example", Port(number=7000, protocol=AUTO))], Mode.SIDECAR
    )
    listener = listeners["0.0.0.0_7000"]
    assert chains(listener) == [
        ([], [], ["http/1.1", "h2c"], "rds:7000"),
        ("default", "outbound|7000||a.example"),
    ]
    assert filters(listener) == [HTTP_INSPECTOR]


def test_an_auto_detected_service_with_a_listener_of_its_own_gets_a_route_of_its_own() -> None:
    # listener.go buildSidecarOutboundHTTPListenerOpts: a sniffed service on a bound
    # (non-wildcard) listener takes route <hostname>:<port>, for any Host
    auto = Port(number=7000, protocol=AUTO)
    vip, _ = build_listeners(7000, [svc("a.example", auto, addresses=("10.9.0.1",))], Mode.SIDECAR)
    assert chains(vip["10.9.0.1_7000"])[0][-1] == "rds:a.example:7000"
    local, _ = build_listeners(7000, [svc("a.example", auto)], Mode.LOCAL)
    (listener,) = local.values()
    assert chains(listener) == [
        ([], [], ["http/1.1", "h2c"], "rds:a.example:7000"),
        ("default", "outbound|7000||a.example"),
    ]
    # the catch-all TCP chain bounds its handshake too
    assert listener.default_filter_chain.transport_socket_connect_timeout.seconds == 15
    # two sniffed services sharing loopback: the port's route tells them apart by Host
    # (istiod gives the listener to the first; docs/xds.md: where registryd differs)
    two, _ = build_listeners(7000, [svc("a.example", auto), svc("b.example", auto)], Mode.LOCAL)
    (listener,) = two.values()
    assert chains(listener)[0][-1] == "rds:7000"


def test_http_and_tcp_services_on_one_port_are_told_apart_by_the_http_inspector() -> None:
    # listener.go HTTPOverTCP / TCPOverHTTP: merged and upgraded to sniffing
    listeners, conflicts = build_listeners(
        9000,
        [svc("a.example", Port(number=9000, protocol="HTTP")), tcp("b.example", 9000)],
        Mode.SIDECAR,
    )
    (listener,) = listeners.values()
    assert chains(listener) == [
        ([], [], ["http/1.1", "h2c"], "rds:9000"),
        ("default", "outbound|9000||b.example"),
    ]
    assert conflicts == []
    # sharing loopback, both stay reachable the same way (istiod keeps the first only;
    # docs/xds.md: where registryd differs)
    listeners, conflicts = build_listeners(
        9000,
        [svc("a.example", Port(number=9000, protocol="HTTP")), tcp("b.example", 9000)],
        Mode.LOCAL,
    )
    (listener,) = listeners.values()
    assert chains(listener) == [
        ([], [], ["http/1.1", "h2c"], "rds:9000"),
        ("default", "outbound|9000||b.example"),
    ]
    assert conflicts == []


def test_udp_ports_and_aliases_get_no_listener() -> None:
    services = [
        svc("a.example", Port(number=53, protocol="UDP")),
        svc("b.example", Port(number=53, protocol="TCP"), alias_for="c.example"),
    ]
    listeners, _ = build_listeners(53, services, Mode.SIDECAR)
    assert listeners == {}


def test_tls_chain_matches_alias_names_too() -> None:
    listeners, _ = build_listeners(
        443, [tls("a.example")], Mode.SIDECAR, aliases={"a.example": ["alias.example"]}
    )
    assert chains(listeners["0.0.0.0_443"])[0][0] == ["a.example", "alias.example"]


def test_virtual_outbound_hands_connections_to_their_original_destination() -> None:
    # listener_builder.go buildVirtualOutboundListener
    listener = virtual_outbound_listener()
    assert listener.name == "virtualOutbound"
    assert listener.address.socket_address.port_value == 15001
    assert listener.use_original_dst.value
    assert chains(listener) == [
        ([], [], [], "BlackHoleCluster"),
        ([], [], [], "PassthroughCluster"),
    ]
    assert listener.filter_chains[0].filter_chain_match.destination_port.value == 15001


def test_the_http_connection_manager_has_istiods_defaults() -> None:
    built, _ = build_listeners(8080, [svc("a.example")], Mode.SIDECAR)
    (listener,) = built.values()
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    assert manager.normalize_path.value is True
    assert manager.path_with_escaped_slashes_action == manager.KEEP_UNCHANGED
    assert manager.proxy_100_continue
    assert manager.HasField("stream_idle_timeout") and manager.stream_idle_timeout.seconds == 0
    assert [u.upgrade_type for u in manager.upgrade_configs] == ["websocket"]
    assert manager.HasField("use_remote_address") and not manager.use_remote_address.value
    assert manager.rds.config_source.HasField("initial_fetch_timeout")


def test_filter_chains_bound_their_handshakes_and_bound_listeners_accept_one_at_a_time() -> None:
    sidecar, _ = build_listeners(3306, [tcp("db.example")], Mode.SIDECAR)
    local, _ = build_listeners(3306, [tcp("db.example")], Mode.LOCAL)
    for listener in (*sidecar.values(), *local.values()):
        for chain in listener.filter_chains:
            assert chain.transport_socket_connect_timeout.seconds == 15
    (bound,) = local.values()
    assert bound.max_connections_to_accept_per_socket_event.value == 1
    (unbound,) = sidecar.values()
    assert not unbound.HasField("max_connections_to_accept_per_socket_event")
    virtual = virtual_outbound_listener()
    assert [c.name for c in virtual.filter_chains] == [
        "virtualOutbound-blackhole",
        "virtualOutbound-catchall-tcp",
    ]
    assert virtual.max_connections_to_accept_per_socket_event.value == 1


def test_mysql_and_mongo_share_a_listener_with_their_own_protocol_only() -> None:
    # listener.go isConflictWithWellKnownPort: sniffing would break server-first protocols
    mysql = svc("db.example", Port(number=3306, protocol="MYSQL"))
    auto = svc("app.example", Port(number=3306, protocol=AUTO))
    listeners, conflicts = build_listeners(3306, [mysql, auto], Mode.SIDECAR)
    (listener,) = listeners.values()
    assert chains(listener) == [  # app.example comes first (by name) and keeps the port
        ([], [], ["http/1.1", "h2c"], "rds:3306"),
        ("default", "outbound|3306||app.example"),
    ]
    assert conflicts == [Conflict("0.0.0.0_3306", "db.example", "app.example")]


def test_services_exported_to_some_namespaces_come_first_as_istiod_lists_them() -> None:
    # PushContext.servicesExportedToNamespace: exported-to services, then public ones
    mysql = svc("web.example", Port(number=3306, protocol="MYSQL"), export_to=("default",))
    auto = svc("mail.example", Port(number=3306, protocol=AUTO))
    listeners, _ = build_listeners(3306, [auto, mysql], Mode.SIDECAR)
    (listener,) = listeners.values()
    assert chains(listener) == [([], [], [], "outbound|3306||web.example")]
    assert filters(listener) == []  # MySQL alone: no inspector


def test_a_sniffed_port_after_an_http_service_adds_nothing_to_the_wildcard_listener() -> None:
    # listener.go: the HTTP listener on the wildcard already sniffs ("Unsupported"), so a
    # later auto-detected service exits early; its virtual host is in route <port>
    http = svc("a.example", Port(number=8000, protocol="HTTP"))
    auto = svc("b.example", Port(number=8000, protocol=AUTO))
    listeners, _ = build_listeners(8000, [http, auto], Mode.SIDECAR)
    assert chains(listeners["0.0.0.0_8000"]) == [
        ([], [], ["http/1.1", "h2c"], "rds:8000"),
        ("default", "PassthroughCluster"),
    ]


def test_a_mongo_port_gets_envoys_mongo_filter_before_the_tcp_proxy() -> None:
    # networkfilter.go buildNetworkFiltersStack (PILOT_ENABLE_MONGO_FILTER, on by default)
    mongo = svc("db.example", Port(number=27017, protocol="MONGO"))
    (listener,) = build_listeners(27017, [mongo], Mode.SIDECAR)[0].values()
    (chain,) = listener.filter_chains
    names = [f.name for f in chain.filters]
    assert names == ["envoy.filters.network.mongo_proxy", "envoy.filters.network.tcp_proxy"]


def http_filter_names(listener: listener_pb2.Listener) -> list[str]:
    manager = hcm_pb2.HttpConnectionManager()
    (chain,) = [*listener.filter_chains, listener.default_filter_chain][:1]
    chain.filters[0].typed_config.Unpack(manager)
    return [f.name for f in manager.http_filters]


def test_a_grpc_web_port_gets_the_grpc_web_filter_when_its_service_comes_first() -> None:
    # listener_builder.go buildHTTPConnectionManager: the protocol of the port the chain
    # is built for; the services after it share that chain
    web = svc("web.example", Port(number=8002, protocol="GRPC-WEB"))
    plain = svc("z.example", Port(number=8002, protocol="HTTP"))
    for mode in Mode:
        (listener,) = build_listeners(8002, [web, plain], mode)[0].values()
        assert http_filter_names(listener) == [
            "envoy.filters.http.grpc_web",
            "envoy.filters.http.router",
        ]
    earlier = svc("a.example", Port(number=8002, protocol="HTTP"))
    (listener,) = build_listeners(8002, [earlier, web], Mode.SIDECAR)[0].values()
    assert http_filter_names(listener) == ["envoy.filters.http.router"]


def test_the_http_chain_keeps_the_place_where_http_first_came() -> None:
    # istiod appends filter chains in service order: HTTP (a.example) before TLS (b.example)
    http = svc("a.example", Port(number=80, protocol="HTTP"))
    tls = svc("b.example", Port(number=80, protocol="TLS"))
    listeners, _ = build_listeners(80, [tls, http], Mode.SIDECAR)
    assert [c[-1] for c in chains(listeners["0.0.0.0_80"])] == [
        "rds:80",
        "outbound|80||b.example",
        "PassthroughCluster",
    ]


def test_the_oldest_service_takes_a_shared_wildcard_port_then_the_first_by_name() -> None:
    # model.SortServicesByCreationTime: creation time first; none counts as new
    auto = Port(number=80, protocol=AUTO)
    old = dataclasses.replace(svc("zeta.example", auto), created=1_000.0)
    young = dataclasses.replace(svc("alpha.example", auto), created=2_000.0)
    plain = svc("aaa.example", auto)
    listeners, _ = build_listeners(80, [plain, young, old], Mode.SIDECAR)
    assert chains(listeners["0.0.0.0_80"])[-1] == ("default", "outbound|80||zeta.example")
