"""Fuzz targets for the xDS protocol logic beyond :mod:`tests.fuzz.targets`: a Delta
(incremental) ADS stream fed random DeltaDiscoveryRequests.

Each request is digested by :meth:`DeltaConnection.on_request`, checked by the server's
subscription limits (small ones, so refusals happen) and answered with
:meth:`DeltaConnection.plan`, against a snapshot that changes part-way.  Properties: a
refusal (``_Refused``, the server's own "the client broke a limit") ends the stream and
is the only error allowed; every planned payload decodes as a DeltaDiscoveryResponse
that says what the plan says (names, removals, nonce); and the snapshot's response cache
never keeps a response naming something the server never had; the sizes a state keeps
of its names (what the limits read) are exact.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.fuzz.targets import Target

__all__ = ["TARGETS"]

_TYPES = [
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "type.googleapis.com/envoy.config.listener.v3.Listener",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
]
_NAMES = [
    "*",
    "",
    "80",
    "a.example:80",
    "b.example:80",
    "outbound|80||a.example",
    "outbound|80||b.example",
    "outbound|443||dns.example",
    "0.0.0.0_80",
    "PassthroughCluster",
]
_name = st.sampled_from(_NAMES) | st.text(max_size=40) | st.just("n" * 1100)  # over MAX_NAME
_names = st.lists(_name, max_size=6)
_request = st.fixed_dictionaries(
    {
        "type_url": st.sampled_from(_TYPES) | st.text(max_size=20),
        "subscribe": _names,
        "unsubscribe": _names,
        "initial": st.dictionaries(
            _name, st.sampled_from(["fuzz-1", "fuzz-2"]) | st.text(max_size=8), max_size=4
        ),
        # "0": the nonce of this stream's latest response of the type, so ACKs happen
        "response_nonce": st.sampled_from(["", "0", "1-1", "2-1"]) | st.text(max_size=8),
        "error": st.none() | st.text(max_size=200),
        "node_id": st.none()
        | st.text(max_size=60)
        | st.sampled_from(["sidecar~1.2.3.4~a.shop~shop.svc.cluster.local", "~~~"]),
        "metadata": st.dictionaries(
            st.sampled_from(["GENERATOR", "NAMESPACE", "INTERCEPTION_MODE"]),
            st.sampled_from(["grpc", "shop", "NONE", ""]) | st.text(max_size=10),
            max_size=3,
        ),
        "advance": st.booleans(),  # plan against the next snapshot from now on
    }
)

_SNAPSHOTS: list[Any] = []


def _snapshots() -> list[Any]:
    """Two snapshots of one builder: ``a.example`` changes, ``b.example`` appears."""
    if _SNAPSHOTS:
        return _SNAPSHOTS
    from registryd.adapter import Replace
    from registryd.build.builder import SnapshotBuilder
    from registryd.build.clusters import BuildOptions
    from registryd.model import Endpoint, Port, Resolution, Service, ShardKey
    from registryd.registry.store import RegistryStore

    store = RegistryStore()
    builder = SnapshotBuilder(BuildOptions())
    shard = ShardKey("memory", "fuzz")
    a = Service(hostname="a.example", ports=(Port(number=80, protocol="HTTP"),))
    dns = Service(hostname="dns.example", resolution=Resolution.DNS, ports=(Port(number=443),))
    b = Service(hostname="b.example", namespace="shop", ports=(Port(number=80, protocol="HTTP"),))
    for services, address in (((a, dns), "10.0.0.1"), ((a, b), "10.0.0.2")):
        endpoints = (Endpoint(hostname="a.example", address=address, port=80, service_port=80),)
        store.apply(shard, Replace(services=services, endpoints=endpoints))
        _SNAPSHOTS.append(builder.build(store.view))
    return _SNAPSHOTS


def _delta_request(raw: dict[str, Any], nonces: dict[str, str]) -> Any:
    from envoy.service.discovery.v3 import discovery_pb2
    from google.rpc import status_pb2

    nonce = raw["response_nonce"]
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=raw["type_url"],
        resource_names_subscribe=raw["subscribe"],
        resource_names_unsubscribe=raw["unsubscribe"],
        initial_resource_versions=raw["initial"],
        response_nonce=nonces.get(raw["type_url"], "") if nonce == "0" else nonce,
    )
    if raw["error"] is not None:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=raw["error"]))
    if raw["node_id"] is not None:
        request.node.id = raw["node_id"]
        for key, value in raw["metadata"].items():
            request.node.metadata.fields[key].string_value = value
    return request


def _delta_stream(requests: list[dict[str, Any]]) -> object:
    from envoy.service.discovery.v3 import discovery_pb2

    from registryd.xds.delta import DeltaConnection, DeltaPlanned
    from registryd.xds.server import XdsServer

    snapshots = _snapshots()
    current = 0
    server = XdsServer(max_unknown_names=5, max_unknown_bytes=200)
    conn = DeltaConnection(peer="fuzz", version_prefix="fuzz")
    nonces: dict[str, str] = {}
    for raw in requests:
        digest = conn.on_request(_delta_request(raw, nonces))
        _check_sizes(conn)
        if digest.replan:
            server._check_subscription(conn, digest)  # _Refused ends the stream
        if raw["advance"]:
            current = min(current + 1, len(snapshots) - 1)
        snapshot = snapshots[current]
        for planned in conn.plan(snapshot):
            assert isinstance(planned, DeltaPlanned)
            response = discovery_pb2.DeltaDiscoveryResponse.FromString(planned.payload)
            assert response.type_url == planned.type_url
            assert response.nonce == planned.nonce
            assert tuple(r.name for r in response.resources) == planned.names
            assert tuple(response.removed_resources) == planned.removed
            nonces[planned.type_url] = planned.nonce
        _check_cache(snapshot, snapshots)
    return conn


def _check_sizes(conn: Any) -> None:
    """What each type's state keeps of its names' sizes (for the limits) is exact."""
    for state in conn.states.values():
        assert state.name_chars == sum(map(len, state.names))
        assert state.longest >= max(map(len, state.names), default=0)


def _check_cache(snapshot: Any, snapshots: list[Any]) -> None:
    """The response cache holds only responses made of names the server made (a removal
    names a resource of an earlier snapshot)."""
    known = {name for s in snapshots for table in s.tables.values() for name in table}
    for key in snapshot.cache._entries:
        if key[0] == "delta":
            named = set(key[3]) | set(key[4])
            assert named <= known, named - known


def _refusals() -> tuple[type[BaseException], ...]:
    from registryd.xds.limits import Refused as _Refused

    return (_Refused,)


TARGETS: tuple[Target, ...] = (
    Target("xds.delta_stream", st.lists(_request, max_size=8), _delta_stream, _refusals()),
)
