"""Merge rules: precedence, combined endpoints, conflicts."""

from __future__ import annotations

import dataclasses

import pytest

from registryd.model import Endpoint, Port, Resolution, Service, ShardKey
from registryd.registry.merge import merge_hostname, precedence
from tests.unit.factories import ep, svc

K8S = ShardKey("kubernetes", "k")
SE = ShardKey("serviceentry", "se")
CONSUL = ShardKey("consul", "c")
ETCD = ShardKey("etcd", "e")
OTHER = ShardKey("eureka", "x")


def contrib(service: Service, *endpoints: Endpoint) -> tuple[Service, tuple[Endpoint, ...]]:
    return service, endpoints


def test_precedence_order() -> None:
    keys = [OTHER, ETCD, CONSUL, SE, K8S, ShardKey("aaa", "z")]
    assert sorted(keys, key=precedence) == [K8S, SE, CONSUL, ETCD, ShardKey("aaa", "z"), OTHER]


@pytest.mark.parametrize(
    ("keys", "winner"),
    [
        ((K8S, SE, CONSUL, ETCD, OTHER), K8S),
        ((SE, CONSUL, ETCD, OTHER), SE),
        ((CONSUL, ETCD, OTHER), CONSUL),
        ((ETCD, OTHER), ETCD),
        ((OTHER,), OTHER),
    ],
)
def test_highest_precedence_shard_wins(keys: tuple[ShardKey, ...], winner: ShardKey) -> None:
    contributions = {k: contrib(svc("a.example", Port(number=80 + i))) for i, k in enumerate(keys)}
    merged = merge_hostname("a.example", dict(reversed(list(contributions.items()))))
    assert merged is not None
    assert merged.winner == winner
    assert merged.service == contributions[winner][0]
    assert merged.shards[0] == winner


def test_instance_name_breaks_ties_within_a_provider() -> None:
    b, a = ShardKey("consul", "dc-b"), ShardKey("consul", "dc-a")
    merged = merge_hostname(
        "a.example",
        {b: contrib(svc("a.example", Port(number=81))), a: contrib(svc("a.example"))},
    )
    assert merged is not None
    assert merged.winner == a
    assert merged.shards == (a, b)


def test_endpoints_combined_from_every_shard() -> None:
    e1, e2 = ep(address="10.0.0.1"), ep(address="10.0.0.2")
    merged = merge_hostname(
        "a.example", {SE: contrib(svc(), e1), K8S: contrib(svc(), e2), CONSUL: contrib(svc())}
    )
    assert merged is not None
    assert merged.endpoints == (e2, e1)  # winner's first
    assert merged.shards == (K8S, SE, CONSUL)


def test_conflict_lists_losers_and_differing_fields() -> None:
    base = svc()
    merged = merge_hostname(
        "a.example",
        {
            K8S: contrib(base),
            SE: contrib(dataclasses.replace(base, resolution=Resolution.DNS)),
            CONSUL: contrib(base),
            ETCD: contrib(dataclasses.replace(base, namespace="other", addresses=("1.2.3.4",))),
        },
    )
    assert merged is not None and merged.conflict is not None
    assert merged.conflict.hostname == "a.example"
    assert merged.conflict.winner == K8S
    assert merged.conflict.losers == (SE, ETCD)  # CONSUL agrees with the winner
    assert set(merged.conflict.fields) == {"resolution", "namespace", "addresses"}


def test_no_conflict_when_attributes_equal() -> None:
    merged = merge_hostname(
        "a.example", {K8S: contrib(svc(), ep()), SE: contrib(svc(), ep(address="10.0.0.9"))}
    )
    assert merged is not None
    assert merged.conflict is None
    assert len(merged.endpoints) == 2


def test_single_shard_has_no_conflict() -> None:
    merged = merge_hostname("a.example", {SE: contrib(svc())})
    assert merged is not None and merged.conflict is None


def test_no_contributions_is_none() -> None:
    assert merge_hostname("a.example", {}) is None
