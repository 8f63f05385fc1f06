"""What a client's made-up names leave behind in the protocol logic: responses that name
them are built for their stream only, never cached in the snapshot; nothing remembers
them once the stream's state is gone."""

from __future__ import annotations

import gc

from envoy.service.discovery.v3 import discovery_pb2

from registryd.xds import resources as res
from registryd.xds.delta import DeltaConnection
from registryd.xds.interning import Differences as _Differences
from registryd.xds.stream import Connection
from tests.unit.test_delta import A, B, two_services

CDS_T, EDS_T = res.CLUSTER_TYPE, res.ENDPOINT_TYPE


def sotw(type_url: str, names: list[str]) -> discovery_pb2.DiscoveryRequest:
    return discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names)


def delta(type_url: str, names: list[str]) -> discovery_pb2.DeltaDiscoveryRequest:
    return discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=names)


def test_sotw_responses_of_known_names_are_shared_and_of_unknown_ones_not() -> None:
    _, snap = two_services()
    known, made_up = (
        Connection(peer="p", version_prefix="v"),
        Connection(peer="p", version_prefix="v"),
    )
    known.on_request(sotw(EDS_T, [A, B]))
    made_up.on_request(sotw(EDS_T, [A, "made-up"]))
    (shared,) = known.plan(snap)
    size = snap.cache.size
    assert size > 0
    (own,) = made_up.plan(snap)
    assert own.names == ("made-up", A)  # answered, with an empty resource
    assert snap.cache.size == size  # and not kept
    again = Connection(peer="p", version_prefix="v")
    again.on_request(sotw(EDS_T, [A, B]))
    assert again.plan(snap)[0].payload is shared.payload


def test_sotw_named_clusters_that_do_not_exist_are_not_cached() -> None:
    _, snap = two_services()
    conn = Connection(peer="p", version_prefix="v")
    conn.on_request(sotw(CDS_T, [A, "made-up"]))
    (planned,) = conn.plan(snap)
    assert planned.names == (A,)
    assert snap.cache.size == 0


def test_delta_responses_naming_unknown_names_are_not_cached() -> None:
    _, snap = two_services()
    for type_url in (EDS_T, CDS_T):  # an empty resource; a removal
        conn = DeltaConnection(peer="p", version_prefix="v")
        conn.on_request(delta(type_url, ["made-up"]))
        (planned,) = conn.plan(snap)
        assert "made-up" in planned.names + planned.removed  # type: ignore[attr-defined]
    assert snap.cache.size == 0
    conn = DeltaConnection(peer="p", version_prefix="v")
    conn.on_request(delta(EDS_T, [A]))
    conn.plan(snap)
    assert snap.cache.size > 0


def test_a_delta_removal_of_a_real_resource_is_still_shared() -> None:
    reg, _ = two_services()
    first = reg.builder.build(reg.store.view)
    conns = [DeltaConnection(peer="p", version_prefix="v") for _ in range(2)]
    for conn in conns:
        conn.on_request(delta(CDS_T, ["*"]))
        conn.plan(first)
    gone = reg.delete("b.example")
    payloads = [conn.plan(gone)[0] for conn in conns]
    assert all(p.removed == (B,) for p in payloads)  # type: ignore[attr-defined]
    assert payloads[0].payload is payloads[1].payload


def test_differences_forget_sets_nobody_holds() -> None:
    differences = _Differences(kept=8)
    new, old = frozenset({"a", "b", "c"}), frozenset({"a"})
    assert differences(new, old) == {"b", "c"}
    assert differences(new, old) is differences(new, old)  # remembered
    del new
    gc.collect()
    assert len(differences) == 0


def test_a_delta_state_keeps_the_size_of_its_names_as_they_change() -> None:
    conn = DeltaConnection(peer="p", version_prefix="v")
    conn.on_request(delta(EDS_T, ["aa", "bbb", "*"]))
    state = conn.states[EDS_T]
    assert (state.name_chars, state.longest) == (5, 3)  # type: ignore[attr-defined]
    change = discovery_pb2.DeltaDiscoveryRequest(
        type_url=EDS_T,
        resource_names_subscribe=["aa", "cccc", "ddddd"],  # one already there
        resource_names_unsubscribe=["bbb", "ddddd", "never"],  # one never there
    )
    conn.on_request(change)
    assert state.names == {"aa", "cccc"}
    assert (state.name_chars, state.longest) == (6, 4)  # type: ignore[attr-defined]
