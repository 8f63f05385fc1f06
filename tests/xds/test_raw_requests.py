"""Connection.on_raw digests a serialized request exactly as on_request digests the
decoded one, whatever the requests: the fast path for ACKs that repeat their
subscription is an optimisation, never a different answer."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registryd.xds import resources as res
from registryd.xds.stream import Connection, Interner

TYPES = [res.CLUSTER_TYPE, res.ENDPOINT_TYPE, res.LISTENER_TYPE, res.ROUTE_TYPE, "other"]
NAMES = ["a", "b", "outbound|80||a.example", "*", ""]

requests = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(TYPES),
            "names": st.lists(st.sampled_from(NAMES), max_size=4),
            "nonce": st.sampled_from(["", "last", "stale"]),
            "version": st.sampled_from(["", "v1", "x" * 200]),
            "error": st.none() | st.sampled_from(["bad", ""]),
            "node": st.booleans(),
        }
    ),
    min_size=1,
    max_size=12,
)


def build(raw: dict[str, Any], nonces: dict[str, str]) -> discovery_pb2.DiscoveryRequest:
    nonce = {"": "", "stale": "0-0"}.get(raw["nonce"], nonces.get(raw["type"], ""))
    request = discovery_pb2.DiscoveryRequest(
        type_url=raw["type"],
        resource_names=raw["names"],
        response_nonce=nonce,
        version_info=raw["version"],
    )
    if raw["error"] is not None:
        request.error_detail.CopyFrom(status_pb2.Status(code=13, message=raw["error"]))
    if raw["node"]:
        request.node.CopyFrom(base_pb2.Node(id="sidecar~1.2.3.4~a.shop~shop.svc.cluster.local"))
    return request


def state_of(conn: Connection) -> dict[str, tuple[Any, ...]]:
    return {
        t: (s.wildcard, s.names, s.requested, s.acks, s.nacks, s.expired_nonces, s.last_nack)
        for t, s in conn.states.items()
    }


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(requests)
def test_on_raw_digests_like_on_request(sequence: list[dict[str, Any]]) -> None:
    interner = Interner()
    decoded = Connection(peer="a", version_prefix="p", interner=interner)
    raw = Connection(peer="b", version_prefix="p", interner=interner)
    nonces: dict[str, str] = {}
    for step in sequence:
        request = build(step, nonces)
        expected = decoded.on_request(request)
        got, seen = raw.on_raw(request.SerializeToString())
        assert (got.replan, got.kind) == (expected.replan, expected.kind)
        assert seen.type_url == request.type_url
        assert seen.version_info == request.version_info
        assert seen.response_nonce == request.response_nonce
        assert state_of(raw) == state_of(decoded)
        for conn in (decoded, raw):  # a response was "sent" for this type: its nonce
            state = conn.states.get(step["type"])
            if state is not None:
                state.nonce = f"n-{len(nonces)}"
        nonces[step["type"]] = f"n-{len(nonces)}"


def test_an_ack_repeating_its_subscription_skips_decoding_the_names() -> None:
    conn = Connection(peer="a", version_prefix="p")
    names = [f"outbound|80||h{i}.example" for i in range(1000)]
    first = discovery_pb2.DiscoveryRequest(type_url=res.ENDPOINT_TYPE, resource_names=names)
    digest, _ = conn.on_raw(first.SerializeToString())
    assert digest.replan and digest.kind == "request"
    conn.states[res.ENDPOINT_TYPE].nonce = "n1"
    ack = discovery_pb2.DiscoveryRequest(
        type_url=res.ENDPOINT_TYPE, resource_names=names, response_nonce="n1", version_info="v1"
    )
    digest, seen = conn.on_raw(ack.SerializeToString())
    assert (digest.replan, digest.kind) == (False, "ack")
    assert list(seen.resource_names) == []  # the names were recognised, not decoded
    assert conn.states[res.ENDPOINT_TYPE].acked_version == "v1"
    # one name more is a subscription change, decoded and digested in full
    conn.states[res.ENDPOINT_TYPE].nonce = "n2"
    grown = discovery_pb2.DiscoveryRequest(
        type_url=res.ENDPOINT_TYPE, resource_names=[*names, "new"], response_nonce="n2"
    )
    digest, seen = conn.on_raw(grown.SerializeToString())
    assert digest.replan and len(seen.resource_names) == 1001
    assert conn.states[res.ENDPOINT_TYPE].forced == {"new"}


def test_names_after_the_type_url_are_still_names() -> None:
    # fields out of number order (legal protobuf): the trailing names must not be lost
    conn = Connection(peer="a", version_prefix="p")
    conn.on_raw(
        discovery_pb2.DiscoveryRequest(
            type_url=res.ENDPOINT_TYPE, resource_names=["a"]
        ).SerializeToString()
    )
    conn.states[res.ENDPOINT_TYPE].nonce = "n1"
    body = discovery_pb2.DiscoveryRequest(
        type_url=res.ENDPOINT_TYPE, resource_names=["a"], response_nonce="n1"
    ).SerializeToString()
    body += discovery_pb2.DiscoveryRequest(resource_names=["b"]).SerializeToString()
    digest, _ = conn.on_raw(body)
    assert digest.replan and conn.states[res.ENDPOINT_TYPE].names == {"a", "b"}


def test_a_subscription_another_stream_made_is_recognised_from_its_bytes() -> None:
    interner = Interner()
    first, second = (Connection(peer=p, version_prefix="v", interner=interner) for p in "ab")
    names = [f"outbound|80||h{i}.example" for i in range(500)]
    request = discovery_pb2.DiscoveryRequest(
        type_url=res.ENDPOINT_TYPE, resource_names=names, version_info="v1"
    )
    first.on_raw(request.SerializeToString())
    key = first.states[res.ENDPOINT_TYPE].names_key
    assert interner.known(request.SerializeToString(), 4, request) is not None  # after "v1"
    second.on_raw(request.SerializeToString())
    state = second.states[res.ENDPOINT_TYPE]
    assert state.names_key is key and state.names is first.states[res.ENDPOINT_TYPE].names
    # the same bytes with an error detail after them are still that subscription
    request.error_detail.message = "nope"
    assert interner.known(request.SerializeToString(), 4, request) is not None
    # but not a tail that holds more names
    body = (
        request.SerializeToString()
        + discovery_pb2.DiscoveryRequest(resource_names=["x"]).SerializeToString()
    )
    assert interner.known(body, 4, discovery_pb2.DiscoveryRequest.FromString(body)) is None
