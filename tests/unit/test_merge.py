"""Merge rules: priority, combined endpoints, conflicts."""

from __future__ import annotations

import dataclasses

import pytest

from registryd.daemon.plugins import adapter_type
from registryd.model import Endpoint, Port, Resolution, Service, ShardKey
from registryd.registry.merge import merge_hostname, precedence
from tests.unit.factories import ep, svc

K8S = ShardKey("kubernetes", "k")
SE = ShardKey("serviceentry", "se")
CONSUL = ShardKey("consul", "c")
ETCD = ShardKey("etcd", "e")
OTHER = ShardKey("eureka", "x")
NACOS = ShardKey("nacos", "n")
BUILT_IN = {K8S: 400, SE: 300, CONSUL: 200, ETCD: 100, NACOS: 50}  # their types' defaults


def contrib(service: Service, *endpoints: Endpoint) -> tuple[Service, tuple[Endpoint, ...]]:
    return service, endpoints


def test_the_built_in_adapters_declare_their_default_priorities_plugins_get_0() -> None:
    assert {key: adapter_type(key.provider).default_priority for key in BUILT_IN} == BUILT_IN
    assert adapter_type("eureka").default_priority == 0  # not installed: a plugin's default
    assert adapter_type("memory").default_priority == 0  # installed, declares none


def test_precedence_order_by_priority_then_registry_name() -> None:
    priorities = {**BUILT_IN, OTHER: 0, ShardKey("aaa", "z"): 0}
    keys = [OTHER, ETCD, NACOS, CONSUL, SE, K8S, ShardKey("aaa", "z")]
    # two plugin types tie at priority 0: the registry name decides, not the type
    assert sorted(keys, key=lambda k: precedence(k, priorities[k])) == [
        K8S,
        SE,
        CONSUL,
        ETCD,
        NACOS,
        OTHER,
        ShardKey("aaa", "z"),
    ]


def test_precedence_of_an_explicit_priority() -> None:
    assert precedence(OTHER, 500) < precedence(K8S, 400)
    assert precedence(K8S, -1) > precedence(OTHER, 0)
    # same registry name (only outside registryd.yaml, whose names are unique): by type
    assert precedence(ShardKey("b", "n"), 5) > precedence(ShardKey("a", "n"), 5)


@pytest.mark.parametrize(
    ("keys", "winner"),
    [
        ((K8S, SE, CONSUL, ETCD, OTHER), K8S),
        ((SE, CONSUL, ETCD, OTHER), SE),
        ((CONSUL, ETCD, OTHER), CONSUL),
        ((ETCD, NACOS, OTHER), ETCD),
        ((NACOS, OTHER), NACOS),
        ((OTHER,), OTHER),
    ],
)
def test_highest_precedence_shard_wins(keys: tuple[ShardKey, ...], winner: ShardKey) -> None:
    contributions = {k: contrib(svc("a.example", Port(number=80 + i))) for i, k in enumerate(keys)}
    merged = merge_hostname("a.example", dict(reversed(list(contributions.items()))), BUILT_IN)
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


def test_a_plugin_with_higher_priority_outranks_kubernetes() -> None:
    """istiod always puts Kubernetes first (serviceregistry/aggregate/controller.go,
    addRegistry); a configured priority overrides that default."""
    e_k8s, e_plugin = ep(address="10.0.0.1"), ep(address="10.0.0.2")
    merged = merge_hostname(
        "a.example",
        {
            K8S: contrib(svc("a.example"), e_k8s),
            OTHER: contrib(svc("a.example", Port(number=9090)), e_plugin),
        },
        {**BUILT_IN, OTHER: 500},
    )
    assert merged is not None
    assert merged.winner == OTHER
    assert merged.service.ports == (Port(number=9090),)
    assert merged.shards == (OTHER, K8S)
    assert merged.priorities == (500, 400)
    assert merged.priority(K8S) == 400 and merged.priority(SE) is None
    assert merged.endpoints == (e_plugin, e_k8s)
    assert merged.conflict is not None and merged.conflict.losers == (K8S,)


@pytest.mark.parametrize(
    ("priorities", "winner"),
    [
        ({}, "dc-a"),
        ({ShardKey("consul", "dc-b"): 201, ShardKey("consul", "dc-a"): 200}, "dc-b"),
        ({ShardKey("consul", "dc-a"): 199, ShardKey("consul", "dc-b"): 200}, "dc-b"),
        ({ShardKey("consul", "dc-a"): -1}, "dc-b"),  # dc-b not given: 0
    ],
)
def test_priority_orders_two_instances_of_one_type(
    priorities: dict[ShardKey, int], winner: str
) -> None:
    a, b = ShardKey("consul", "dc-a"), ShardKey("consul", "dc-b")
    services = {a: svc("a.example", Port(number=1)), b: svc("a.example", Port(number=2))}
    merged = merge_hostname("a.example", {k: contrib(s) for k, s in services.items()}, priorities)
    assert merged is not None
    assert merged.winner.instance == winner
    assert merged.service == services[merged.winner]


def test_endpoints_combined_from_every_shard() -> None:
    e1, e2 = ep(address="10.0.0.1"), ep(address="10.0.0.2")
    merged = merge_hostname(
        "a.example",
        {SE: contrib(svc(), e1), K8S: contrib(svc(), e2), CONSUL: contrib(svc())},
        BUILT_IN,
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
        BUILT_IN,
    )
    assert merged is not None and merged.conflict is not None
    assert merged.conflict.hostname == "a.example"
    assert merged.conflict.winner == K8S
    assert merged.conflict.losers == (SE, ETCD)  # CONSUL agrees with the winner
    assert set(merged.conflict.fields) == {"resolution", "namespace", "addresses"}


def test_no_conflict_when_attributes_equal() -> None:
    merged = merge_hostname(
        "a.example",
        {K8S: contrib(svc(), ep()), SE: contrib(svc(), ep(address="10.0.0.9"))},
        BUILT_IN,
    )
    assert merged is not None
    assert merged.conflict is None
    assert len(merged.endpoints) == 2


def test_single_shard_has_no_conflict() -> None:
    merged = merge_hostname("a.example", {SE: contrib(svc())})
    assert merged is not None and merged.conflict is None


def test_no_contributions_is_none() -> None:
    assert merge_hostname("a.example", {}) is None
