"""Shipping snapshots to xDS workers: what a worker rebuilds equals what was built."""

from __future__ import annotations

import pickle

import pytest

from registryd.adapter import Delete, Upsert
from registryd.build.builder import SnapshotBuilder
from registryd.model import Port
from registryd.registry.store import RegistryStore
from registryd.workers.ship import receive, ship
from registryd.xds.snapshot import EDS, EMPTY, HISTORY, Snapshot
from tests.unit.factories import MEM, ep, svc


class Source:
    """The main process' side: a store and a builder producing snapshots."""

    def __init__(self) -> None:
        self.store = RegistryStore()
        self.builder = SnapshotBuilder()

    def apply(self, update: Upsert | Delete) -> Snapshot:
        event = self.store.apply(MEM, update)
        assert event is not None
        return self.builder.build(self.store.view, event.hostnames, event.endpoints_only)


def same(a: Snapshot, b: Snapshot) -> None:
    """Same version, tables, resources (names, versions, wire bytes) and history."""
    assert a.version == b.version
    assert {t: dict(rs) for t, rs in a.tables.items() if rs} == {
        t: dict(rs) for t, rs in b.tables.items() if rs
    }
    assert a.history == b.history


def over_the_wire(shipment: object) -> object:
    return pickle.loads(pickle.dumps(shipment))


def test_a_worker_that_follows_every_version_holds_what_was_built() -> None:
    source = Source()
    worker = EMPTY
    for i in range(5):
        built = source.apply(Upsert(service=svc(f"s{i}.example"), endpoints=(ep(f"s{i}.example"),)))
        shipment = ship(built, worker.version)
        assert shipment.base == worker.version  # a change, not the whole snapshot
        worker = receive(worker, over_the_wire(shipment))  # type: ignore[arg-type]
        same(worker, built)
    built = source.apply(Delete(hostname="s2.example"))
    worker = receive(worker, ship(built, worker.version))
    same(worker, built)
    assert not any("s2.example" in name for name in worker.tables[EDS])


def test_a_change_carries_only_the_resources_that_changed() -> None:
    source = Source()
    for i in range(20):
        source.apply(Upsert(service=svc(f"s{i}.example"), endpoints=(ep(f"s{i}.example"),)))
    have = source.builder.snapshot
    built = source.apply(
        Upsert(service=svc("s3.example"), endpoints=(ep("s3.example", "10.0.0.9"),))
    )
    shipment = ship(built, have.version)
    assert shipment.tables == {
        EDS: {"outbound|8080||s3.example": shipment.tables[EDS]["outbound|8080||s3.example"]}
    }
    same(receive(have, shipment), built)


def test_a_worker_behind_by_several_versions_gets_their_changes_in_one() -> None:
    source = Source()
    worker = receive(EMPTY, ship(source.apply(Upsert(service=svc("a.example"))), 0))
    for address in ("10.0.0.2", "10.0.0.3", "10.0.0.4"):
        source.apply(Upsert(service=svc("a.example"), endpoints=(ep("a.example", address),)))
    source.apply(Upsert(service=svc("b.example", Port(number=9090, name="http", protocol="HTTP"))))
    built = source.builder.snapshot
    worker = receive(worker, ship(built, worker.version))
    same(worker, built)
    # what changed since the worker's old version is still known on the worker
    assert worker.changed_since(EDS, 1) == built.changed_since(EDS, 1)


def test_a_worker_beyond_the_history_is_sent_everything() -> None:
    source = Source()
    worker = receive(EMPTY, ship(source.apply(Upsert(service=svc("a.example"))), 0))
    for i in range(HISTORY + 2):
        endpoint = ep("a.example", f"10.1.0.{i}")
        built = source.apply(Upsert(service=svc("a.example"), endpoints=(endpoint,)))
    shipment = ship(built, worker.version)
    assert shipment.base == 0
    same(receive(worker, shipment), built)


def test_a_change_from_a_version_the_worker_does_not_have_is_refused() -> None:
    source = Source()
    first = source.apply(Upsert(service=svc("a.example")))
    second = source.apply(Upsert(service=svc("b.example")))
    with pytest.raises(ValueError, match="change from 1"):
        receive(EMPTY, ship(second, first.version))


def test_a_worker_learns_whether_the_mcp_tables_are_built() -> None:
    source = Source()
    plain = source.apply(Upsert(service=svc("a.example"), endpoints=(ep("a.example"),)))
    assert not receive(EMPTY, ship(plain, 0)).mcp
    source.builder.want_mcp()
    built = source.apply(Upsert(service=svc("b.example")))
    assert built.mcp
    for have in (0, plain.version):  # whole, and as a change
        worker = receive(plain if have else EMPTY, ship(built, have))
        assert worker.mcp
        same(worker, built)
