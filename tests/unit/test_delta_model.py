"""Delta ADS against a model client: whatever the order of registry changes,
subscriptions, unsubscriptions, wildcard changes and reconnects (with
``initial_resource_versions``), a client that applies every response (resources replace,
``removed_resources`` delete) ends up holding exactly what it is subscribed to, byte for
byte as the snapshot has it."""

from __future__ import annotations

from typing import Any

from envoy.service.discovery.v3 import discovery_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registryd.model import Port
from registryd.xds import resources as res
from registryd.xds.delta import DeltaConnection
from registryd.xds.snapshot import EDS, RDS, Snapshot
from registryd.xds.stream import _empty
from tests.unit.factories import ep, svc
from tests.unit.test_delta import Registry

HOSTS = ("a.example", "b.example", "c.example")
PORTS = (8080, 9090)
TYPES = (res.CLUSTER_TYPE, res.ENDPOINT_TYPE, res.LISTENER_TYPE, res.ROUTE_TYPE)
NAMES = {
    res.CLUSTER_TYPE: [f"outbound|{p}||{h}" for h in HOSTS for p in PORTS],
    res.ENDPOINT_TYPE: [f"outbound|{p}||{h}" for h in HOSTS for p in PORTS],
    res.LISTENER_TYPE: [f"0.0.0.0_{p}" for p in PORTS],
    res.ROUTE_TYPE: [str(p) for p in PORTS],
}
_EMPTY_TABLE = {res.ENDPOINT_TYPE: EDS, res.ROUTE_TYPE: RDS}

steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("upsert"),
            st.sampled_from(HOSTS),
            st.sampled_from(PORTS),
            st.sampled_from(["HTTP", "TCP", "HTTP2"]),
            st.integers(1, 3),
        ),
        st.tuples(st.just("delete"), st.sampled_from(HOSTS)),
        st.tuples(st.just("sub"), st.sampled_from(TYPES), st.sampled_from(["*", 0, 1, 2, 3])),
        st.tuples(st.just("unsub"), st.sampled_from(TYPES), st.sampled_from(["*", 0, 1, 2, 3])),
        st.tuples(st.just("reconnect")),
    ),
    max_size=25,
)


class ModelClient:
    """Holds resources by type and name as a Delta client does."""

    def __init__(self) -> None:
        self.held: dict[str, dict[str, tuple[str, bytes]]] = {t: {} for t in TYPES}
        self.names: dict[str, set[str]] = {t: set() for t in TYPES}
        self.wildcard: dict[str, bool] = dict.fromkeys(TYPES, False)
        self.started: set[str] = set()
        self.conn = DeltaConnection(peer="model", version_prefix="m")

    def request(self, type_url: str, sub: list[str], unsub: list[str]) -> None:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, resource_names_subscribe=sub, resource_names_unsubscribe=unsub
        )
        if type_url not in self.started:
            self.started.add(type_url)
            request.initial_resource_versions.update(
                {n: v for n, (v, _) in self.held[type_url].items()}
            )
            if not sub and type_url in (res.CLUSTER_TYPE, res.LISTENER_TYPE):
                self.wildcard[type_url] = "*" not in unsub
        for name in sub:
            if name == "*":
                self.wildcard[type_url] = True
            else:
                self.names[type_url].add(name)
        for name in unsub:
            if name == "*":
                self.wildcard[type_url] = False
                for held in list(self.held[type_url]):
                    if held not in self.names[type_url]:
                        del self.held[type_url][held]  # held only through the wildcard
            else:
                self.names[type_url].discard(name)
                self.held[type_url].pop(name, None)
        self.conn.on_request(request)

    def reconnect(self) -> None:
        self.conn = DeltaConnection(peer="model", version_prefix="m")
        started, self.started = self.started, set()
        for type_url in TYPES:
            if type_url in started:
                names = sorted(self.names[type_url]) + (["*"] if self.wildcard[type_url] else [])
                self.request(type_url, names, [])

    def apply(self, snapshot: Snapshot) -> None:
        for planned in self.conn.plan(snapshot):
            response = discovery_pb2.DeltaDiscoveryResponse.FromString(planned.payload)
            held = self.held[response.type_url]
            for name in response.removed_resources:
                held.pop(name, None)
            for resource in response.resources:
                held[resource.name] = (resource.version, resource.resource.value)
            ack = discovery_pb2.DeltaDiscoveryRequest(
                type_url=response.type_url, response_nonce=response.nonce
            )
            assert not self.conn.on_request(ack).replan

    def expected(self, snapshot: Snapshot, type_url: str) -> dict[str, bytes]:
        visible = self.conn.visible(snapshot, type_url)
        names = set(self.names[type_url])
        if self.wildcard[type_url]:
            names |= visible.keys()
        out = {}
        for name in names:
            if name in visible:
                out[name] = visible[name].body
            elif type_url in _EMPTY_TABLE:
                out[name] = _empty(_EMPTY_TABLE[type_url], name).body
        return out


def _name(type_url: str, pick: Any) -> str:
    if pick == "*":
        return "*"
    names = [*NAMES[type_url], "outbound|1||unknown"]
    return names[pick % len(names)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_client_holds_exactly_what_it_subscribed_to(operations: list[tuple[Any, ...]]) -> None:
    reg = Registry()
    snapshot = reg.upsert(svc("a.example"), ep("a.example"))
    client = ModelClient()
    for op in operations:
        if op[0] == "upsert":
            _, host, port, protocol, count = op
            service = svc(host, Port(number=port, name="p", protocol=protocol))
            endpoints = [ep(host, f"10.0.0.{i}", service_port=port) for i in range(count)]
            snapshot = reg.upsert(service, *endpoints)
        elif op[0] == "delete":
            snapshot = reg.delete(op[1])
        elif op[0] == "sub":
            client.request(op[1], [_name(op[1], op[2])], [])
        elif op[0] == "unsub":
            if op[1] in client.started:
                client.request(op[1], [], [_name(op[1], op[2])])
        else:
            client.reconnect()
        client.apply(snapshot)
        for type_url in client.started:
            got = {n: body for n, (_, body) in client.held[type_url].items()}
            assert got == client.expected(snapshot, type_url), (type_url, op)
