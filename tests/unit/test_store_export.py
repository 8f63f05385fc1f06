"""RegistryStore's exported view: what istiods reading registryd over MCP are served is
the merge of the exported shards alone (``View.exported``), next to the merge of every
shard that Envoys are served (``View.services``)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from registryd.adapter import Delete, Replace, Upsert
from registryd.daemon.plugins import adapter_type
from registryd.model import Labels, Port, Service, ShardKey
from registryd.registry.store import ChangeEvent, RegistryStore
from registryd.registry.types import AdapterType, type_of
from tests.unit.factories import ep, svc

K8S = ShardKey("kubernetes", "k")
CONSUL = ShardKey("consul", "c")
SE = ShardKey("serviceentry", "se")
# the attributes the registry types declare (as their adapters do)
FACTORIES = {
    "kubernetes": SimpleNamespace(default_priority=400, default_export=False),
    "consul": SimpleNamespace(default_priority=200),
    "serviceentry": SimpleNamespace(default_priority=300),
}


def types(kind: str) -> AdapterType:
    return type_of(kind, FACTORIES.get(kind))


def new_store() -> tuple[RegistryStore, list[ChangeEvent]]:
    store = RegistryStore(types)
    events: list[ChangeEvent] = []
    store.subscribe(events.append)
    return store, events


def labelled(service: Service, **labels: str) -> Service:
    return dataclasses.replace(service, labels=Labels(labels))


def both_define_x(store: RegistryStore) -> None:
    """``x.example`` from Kubernetes (port 80, 10.0.0.1) and Consul (port 1234, 10.0.0.2)."""
    store.apply(
        K8S, Upsert(service=svc("x.example", Port(number=80)), endpoints=(ep("x.example"),))
    )
    store.apply(
        CONSUL,
        Upsert(
            service=svc("x.example", Port(number=1234)),
            endpoints=(ep("x.example", "10.0.0.2"),),
        ),
    )


def test_kubernetes_shards_are_not_exported_unless_declared() -> None:
    store, _ = new_store()
    store.apply(K8S, Replace(services=(svc("k.example"),)))
    store.apply(CONSUL, Replace(services=(svc("c.example"),)))
    store.apply(SE, Replace(services=(svc("s.example"),)))
    assert set(store.view.services) == {"k.example", "c.example", "s.example"}
    assert set(store.view.exported) == {"c.example", "s.example"}
    exported = {key: shard.exported for key, shard in store.shards.items()}
    assert exported == {K8S: False, CONSUL: True, SE: True}


def test_the_installed_kubernetes_type_is_not_exported_by_default() -> None:
    store = RegistryStore(adapter_type)  # as the daemon makes it
    store.apply(K8S, Upsert(service=svc("k.example")))
    store.apply(CONSUL, Upsert(service=svc("c.example")))
    assert set(store.view.exported) == {"c.example"}
    assert not store.shards[K8S].exported and store.shards[CONSUL].exported


def test_a_declared_export_overrides_the_types_default() -> None:
    store, events = new_store()
    store.apply(K8S, Replace(services=(svc("k.example"),)))
    store.apply(CONSUL, Replace(services=(svc("c.example"),)))
    del events[:]

    event = store.expect(K8S, export=True)
    assert event is not None and event.hostnames == {"k.example"}
    assert events == [event]
    assert set(store.view.exported) == {"k.example", "c.example"}
    assert store.shards[K8S].export is True

    assert store.expect(K8S) is None  # no export given: the declared one stays
    assert store.expect(K8S, export=True) is None  # the same again: nothing changes
    assert store.shards[K8S].exported

    event = store.expect(CONSUL, export=False)
    assert event is not None and event.hostnames == {"c.example"}
    assert set(store.view.exported) == {"k.example"}
    assert set(store.view.services) == {"k.example", "c.example"}


def test_a_shard_declared_before_it_syncs_is_exported_as_declared() -> None:
    store, _ = new_store()
    assert store.expect(K8S, 400, export=True) is None  # nothing to re-merge yet
    store.apply(K8S, Replace(services=(svc("k.example"),)))
    assert set(store.view.exported) == {"k.example"}


def test_the_exported_merge_is_made_of_exported_shards_alone() -> None:
    store, _ = new_store()
    both_define_x(store)
    full = store.view.services["x.example"]
    assert full.winner == K8S and [p.number for p in full.service.ports] == [80]
    assert {e.address: e.source for e in full.endpoints} == {
        "10.0.0.1": K8S,
        "10.0.0.2": CONSUL,
    }
    exported = store.view.exported["x.example"]
    assert exported.winner == CONSUL and exported.shards == (CONSUL,)
    assert [p.number for p in exported.service.ports] == [1234]
    assert [(e.address, e.source) for e in exported.endpoints] == [("10.0.0.2", CONSUL)]
    assert exported.conflict is None


def test_a_hostname_only_an_unexported_shard_defines_is_not_exported() -> None:
    store, _ = new_store()
    both_define_x(store)
    store.apply(CONSUL, Delete(hostname="x.example"))
    assert "x.example" in store.view.services
    assert "x.example" not in store.view.exported


def test_events_name_hostnames_whose_exported_merge_alone_changed() -> None:
    store, events = new_store()
    both_define_x(store)
    before = store.view
    del events[:]

    # Consul's labels: Kubernetes wins the full merge and labels are no conflict, so
    # only the exported merge changes
    relabelled = labelled(svc("x.example", Port(number=1234)), team="b")
    event = store.apply(
        CONSUL, Upsert(service=relabelled, endpoints=(ep("x.example", "10.0.0.2"),))
    )
    assert event is not None and events == [event]
    assert event.hostnames == {"x.example"}
    assert not event.endpoints_only  # the exported service changed
    assert store.view.services["x.example"] == before.services["x.example"]
    assert store.view.exported["x.example"].service.labels == {"team": "b"}

    # and the other way: the unexported shard's attributes change the full merge alone
    exported = store.view.exported["x.example"]
    moved = svc("x.example", Port(number=81))
    event = store.apply(K8S, Upsert(service=moved, endpoints=(ep("x.example"),)))
    assert event is not None and event.hostnames == {"x.example"} and not event.endpoints_only
    assert store.view.services["x.example"].service == moved
    assert store.view.exported["x.example"] is exported


def test_an_export_declaration_alone_is_a_change_event() -> None:
    store, events = new_store()
    both_define_x(store)
    services = store.view.services
    del events[:]
    event = store.expect(K8S, export=True)
    assert event is not None and events == [event]
    assert event.hostnames == {"x.example"} and not event.endpoints_only
    assert store.view.services == services  # the full merge is as it was
    assert store.view.exported["x.example"] == store.view.services["x.example"]


def test_endpoints_of_an_unexported_shard_change_the_full_merge_only() -> None:
    store, events = new_store()
    both_define_x(store)
    exported = store.view.exported["x.example"]
    del events[:]
    event = store.apply(
        K8S,
        Upsert(
            service=svc("x.example", Port(number=80)),
            endpoints=(ep("x.example"), ep("x.example", "10.0.0.3")),
        ),
    )
    assert event is not None and event.hostnames == {"x.example"} and event.endpoints_only
    assert len(store.view.services["x.example"].endpoints) == 3
    assert store.view.exported["x.example"] is exported


def test_the_exported_view_is_the_full_view_while_every_shard_is_exported() -> None:
    store, _ = new_store()
    store.apply(CONSUL, Replace(services=(svc("c.example"),), endpoints=(ep("c.example"),)))
    store.apply(SE, Replace(services=(svc("c.example", Port(number=9)), svc("s.example"))))
    assert store.view.exported is store.view.services

    store.apply(K8S, Replace(services=(svc("k.example"),)))
    assert store.view.exported is not store.view.services
    assert set(store.view.exported) == {"c.example", "s.example"}

    store.expect(K8S, export=True)
    assert store.view.exported is store.view.services
    store.expect(K8S, export=False)
    assert set(store.view.exported) == {"c.example", "s.example"}
    store.remove_shard(K8S)
    assert store.view.exported is store.view.services


def test_views_taken_earlier_keep_their_exported_merge() -> None:
    store, _ = new_store()
    both_define_x(store)
    old = store.view
    store.expect(K8S, export=True)
    assert old.exported["x.example"].winner == CONSUL
    assert store.view.exported["x.example"].winner == K8S
