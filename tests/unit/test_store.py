"""RegistryStore: shards, merged view, change events."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registryd.adapter import Delete, Problems, Replace, Upsert
from registryd.daemon.plugins import adapter_type
from registryd.model import Port, ShardKey
from registryd.registry.store import (
    MAX_ERRORS,
    MAX_MESSAGE,
    MAX_SOURCE,
    MAX_STATUS,
    MAX_WARNINGS,
    ChangeEvent,
    RegistryStore,
    bounded,
)
from tests.unit.factories import ep, svc

A = ShardKey("serviceentry", "a")
B = ShardKey("consul", "b")


@pytest.fixture
def store() -> RegistryStore:
    return RegistryStore(adapter_type)  # as the daemon makes it: installed types' defaults


def events_of(store: RegistryStore) -> list[ChangeEvent]:
    seen: list[ChangeEvent] = []
    store.subscribe(seen.append)
    return seen


def test_replace_replaces_the_shard_whole(store: RegistryStore) -> None:
    store.apply(A, Replace(services=(svc("x.example"), svc("y.example"))))
    event = store.apply(A, Replace(services=(svc("y.example"), svc("z.example"))))
    assert event is not None
    assert event.hostnames == {"x.example", "z.example"}  # y unchanged
    assert event.shard == A
    assert set(store.view.hostnames) == {"y.example", "z.example"}
    assert set(store.shards[A].services) == {"y.example", "z.example"}


def test_replace_reports_vanished_hostnames_and_endpoints(store: RegistryStore) -> None:
    store.apply(A, Replace(services=(svc("x.example"),), endpoints=(ep("x.example"),)))
    event = store.apply(A, Replace())
    assert event is not None
    assert event.hostnames == {"x.example"}
    assert not event.endpoints_only
    assert "x.example" not in store.view.services
    assert store.shards[A].endpoints == {}


def test_upsert_and_delete_change_one_hostname(store: RegistryStore) -> None:
    store.apply(A, Replace(services=(svc("x.example"), svc("y.example"))))
    event = store.apply(A, Upsert(service=svc("x.example"), endpoints=(ep("x.example"),)))
    assert event is not None and event.hostnames == {"x.example"}
    assert len(store.view.services["x.example"].endpoints) == 1
    event = store.apply(A, Delete(hostname="y.example"))
    assert event is not None and event.hostnames == {"y.example"}
    assert set(store.view.hostnames) == {"x.example"}


def test_delete_of_unknown_hostname_is_no_event(store: RegistryStore) -> None:
    seen = events_of(store)
    assert store.apply(A, Delete(hostname="nope.example")) is None
    assert seen == []


def test_endpoints_are_stamped_with_their_shard(store: RegistryStore) -> None:
    store.apply(A, Replace(services=(svc("x.example"),), endpoints=(ep("x.example"),)))
    store.apply(B, Upsert(service=svc("x.example"), endpoints=(ep("x.example", "10.0.0.2"),)))
    sources = {e.address: e.source for e in store.view.services["x.example"].endpoints}
    assert sources == {"10.0.0.1": A, "10.0.0.2": B}


def test_endpoints_only_when_no_service_changed(store: RegistryStore) -> None:
    store.apply(A, Replace(services=(svc("x.example"),), endpoints=(ep("x.example"),)))
    event = store.apply(
        A, Upsert(service=svc("x.example"), endpoints=(ep("x.example", "10.0.0.2"),))
    )
    assert event is not None and event.endpoints_only


def test_not_endpoints_only_when_a_service_changed(store: RegistryStore) -> None:
    store.apply(A, Replace(services=(svc("x.example"), svc("y.example"))))
    changed = svc("y.example", Port(number=9090))
    event = store.apply(
        A,
        Replace(services=(svc("x.example"), changed), endpoints=(ep("x.example"),)),
    )
    assert event is not None
    assert event.hostnames == {"x.example", "y.example"}
    assert not event.endpoints_only


def test_new_service_is_not_endpoints_only(store: RegistryStore) -> None:
    event = store.apply(A, Upsert(service=svc("x.example")))
    assert event is not None and not event.endpoints_only


def test_no_event_when_nothing_changed(store: RegistryStore) -> None:
    state = Replace(services=(svc("x.example"),), endpoints=(ep("x.example"),))
    store.apply(A, state)
    version = store.view.version
    seen = events_of(store)
    assert store.apply(A, state) is None
    assert store.apply(A, Upsert(service=svc("x.example"), endpoints=(ep("x.example"),))) is None
    assert seen == []
    assert store.view.version == version


def test_view_version_increments_per_change_and_old_view_is_unchanged(
    store: RegistryStore,
) -> None:
    store.apply(A, Upsert(service=svc("x.example")))
    old = store.view
    store.apply(A, Upsert(service=svc("y.example")))
    assert store.view.version == old.version + 1
    assert set(old.hostnames) == {"x.example"}
    with pytest.raises(TypeError):
        old.services["z"] = old.services["x.example"]  # type: ignore[index]


def test_lower_priority_shard_does_not_change_service(store: RegistryStore) -> None:
    store.apply(A, Upsert(service=svc("x.example")))
    other = svc("x.example", Port(number=1234))
    event = store.apply(B, Upsert(service=other, endpoints=(ep("x.example"),)))
    assert event is not None and event.endpoints_only  # consul loses to serviceentry
    merged = store.view.services["x.example"]
    assert merged.service == svc("x.example")
    assert merged.conflict is not None and merged.conflict.losers == (B,)


def test_declared_priority_is_used_by_the_merge(store: RegistryStore) -> None:
    store.expect(B, 301)  # consul above serviceentry's default 300
    store.apply(A, Upsert(service=svc("x.example")))
    store.apply(B, Upsert(service=svc("x.example", Port(number=1234))))
    merged = store.view.services["x.example"]
    assert merged.winner == B and merged.priorities == (301, 300)
    assert store.shards[B].effective_priority == 301
    assert store.shards[A].priority is None and store.shards[A].effective_priority == 300


def test_changing_a_priority_remerges_the_shard(store: RegistryStore) -> None:
    store.apply(A, Upsert(service=svc("x.example")))
    store.apply(B, Upsert(service=svc("x.example", Port(number=1234))))
    assert store.view.services["x.example"].winner == A
    store.expect(B)  # no priority: the default stays, nothing changes
    assert store.expect(B, 200) is None  # consul's default: no change either
    seen = events_of(store)
    event = store.expect(B, 400)
    assert event is not None and event.hostnames == {"x.example"} and not event.endpoints_only
    assert seen == [event]
    assert store.view.services["x.example"].winner == B
    store.expect(B)  # a later declaration without a priority keeps the declared one
    assert store.shards[B].priority == 400


def test_mark_failed_keeps_state_and_flips_synced(store: RegistryStore) -> None:
    store.apply(A, Replace(services=(svc("x.example"),)))
    assert store.shards[A].synced
    seen = events_of(store)
    store.mark_failed(A, "boom")
    shard = store.shards[A]
    assert not shard.synced and shard.ever_synced
    assert shard.last_error == "boom"
    assert "x.example" in store.view.services
    assert seen == []
    store.apply(A, Replace(services=(svc("x.example"),)))
    assert store.shards[A].synced and store.shards[A].last_error is None


def test_not_synced_lists_expected_shards_until_first_replace(store: RegistryStore) -> None:
    store.expect(A)
    store.expect(B)
    assert store.not_synced() == sorted([A, B])
    store.apply(A, Upsert(service=svc("x.example")))  # an increment is not a sync
    assert store.not_synced() == sorted([A, B])
    store.apply(A, Replace())
    assert store.not_synced() == [B]
    store.mark_failed(A, "down")  # once synced, a failure does not un-sync readiness
    assert store.not_synced() == [B]


def test_unexpected_shard_is_not_waited_for(store: RegistryStore) -> None:
    store.apply(A, Upsert(service=svc("x.example")))
    assert store.not_synced() == []


def test_problems_are_stored_without_an_event(store: RegistryStore) -> None:
    seen = events_of(store)
    errors = {"a.yaml": "line 3: bad"}
    assert store.apply(A, Problems(errors=errors, sources={"a.yaml": {"k": 1}})) is None
    assert store.shards[A].problems == errors
    assert store.shards[A].sources == {"a.yaml": {"k": 1}}
    assert seen == []
    store.apply(A, Problems())
    assert store.shards[A].problems == {}


def test_problems_are_logged_when_they_change(
    store: RegistryStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="registryd")
    broken = Problems(errors={"a.yaml": "a.yaml: line 3: bad"}, warnings=("host x twice",))
    store.apply(A, broken)
    assert store.shards[A].warnings == ("host x twice",)
    logged = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert logged == [
        ("registryd.serviceentry", logging.WARNING, "registry serviceentry/a: a.yaml: line 3: bad"),
        ("registryd.serviceentry", logging.WARNING, "registry serviceentry/a: host x twice"),
    ]
    caplog.clear()
    store.apply(A, broken)  # the same again (e.g. after a restart) is not news
    assert caplog.records == []
    store.apply(A, Problems(warnings=("host x twice", "host y twice")))
    logged = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert logged == [
        (logging.INFO, "registry serviceentry/a: a.yaml is fine again"),
        (logging.WARNING, "registry serviceentry/a: host y twice"),
    ]
    assert store.shards[A].problems == {}


def test_an_error_of_a_removed_source_is_logged_as_removed_not_fixed(
    store: RegistryStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="registryd")
    store.apply(A, Problems(errors={"a.yaml": "a.yaml: bad", "b.yaml": "b.yaml: bad"}))
    caplog.clear()
    store.apply(A, Problems(removed=("a.yaml",)))
    assert sorted(r.getMessage() for r in caplog.records) == [
        "registry serviceentry/a: a.yaml was removed (its error with it)",
        "registry serviceentry/a: b.yaml is fine again",
    ]


def test_listener_exception_does_not_break_apply(store: RegistryStore) -> None:
    def broken(event: ChangeEvent) -> None:
        raise RuntimeError("listener bug")

    store.subscribe(broken)
    seen = events_of(store)
    event = store.apply(A, Upsert(service=svc("x.example")))
    assert event is not None
    assert seen == [event]
    assert "x.example" in store.view.services


def test_upsert_with_endpoints_of_another_hostname_raises(store: RegistryStore) -> None:
    with pytest.raises(ValueError, match=r"y\.example"):
        store.apply(A, Upsert(service=svc("x.example"), endpoints=(ep("y.example"),)))
    assert "x.example" not in store.view.services


def test_remove_shard_drops_its_hostnames(store: RegistryStore) -> None:
    store.expect(A)
    store.apply(A, Replace(services=(svc("x.example"),)))
    event = store.remove_shard(A)
    assert event is not None and event.hostnames == {"x.example"}
    assert list(store.view.hostnames) == []
    assert store.not_synced() == []
    assert store.remove_shard(A) is None


def test_source_stamp_replaces_foreign_source(store: RegistryStore) -> None:
    foreign = dataclasses.replace(ep("x.example"), source=B)
    store.apply(A, Upsert(service=svc("x.example"), endpoints=(foreign,)))
    assert store.view.services["x.example"].endpoints[0].source == A


def test_a_view_taken_before_updates_keeps_its_content(store: RegistryStore) -> None:
    store.apply(A, Replace(services=(svc("x.example"), svc("y.example"))))
    store.apply(B, Upsert(service=svc("x.example"), endpoints=(ep("x.example"),)))
    before = store.view
    frozen = dict(before.services)
    store.apply(A, Upsert(service=svc("x.example"), endpoints=(ep("x.example", "10.0.0.9"),)))
    store.apply(A, Delete(hostname="y.example"))
    store.apply(A, Upsert(service=svc("z.example")))
    store.remove_shard(B)
    store.apply(A, Replace(services=(svc("w.example"),)))
    assert set(store.view.hostnames) == {"w.example"}
    assert dict(before.services) == frozen
    assert [e.address for e in before.services["x.example"].endpoints] == ["10.0.0.1"]


HOSTS = st.sampled_from(["a.example", "b.example", "c.example", "d.example"])
UPDATES = st.one_of(
    st.builds(
        lambda h, n: Upsert(service=svc(h), endpoints=(ep(h, f"10.0.0.{n}"),)),
        HOSTS,
        st.integers(1, 3),
    ),
    st.builds(lambda h: Delete(hostname=h), HOSTS),
    st.builds(lambda hs: Replace(services=tuple(svc(h) for h in hs)), st.frozensets(HOSTS)),
)


@given(st.lists(st.tuples(st.sampled_from([A, B]), UPDATES), max_size=12))
def test_every_view_stays_what_it_was_when_taken(steps: list[tuple[ShardKey, Any]]) -> None:
    store = RegistryStore()
    taken = [(store.view, dict(store.view.services))]
    for key, update in steps:
        store.apply(key, update)
        taken.append((store.view, dict(store.view.services)))
    for view, content in taken:
        assert dict(view.services) == content
        assert len(view.services) == len(content) and set(view.hostnames) == set(content)


def test_what_an_adapter_reports_is_bounded(
    store: RegistryStore, caplog: pytest.LogCaptureFixture
) -> None:
    # a plugin may report anything: the store keeps and logs a bounded part of it
    caplog.set_level(logging.INFO, logger="registryd")
    errors = {f"key-{i:05}": "e" * 10**6 for i in range(MAX_ERRORS + 500)}
    errors["k" * 10**5] = "x"
    warnings = tuple(f"w{i}" for i in range(MAX_WARNINGS + 7))
    store.apply(A, Problems(errors=errors, warnings=warnings))
    shard = store.shards[A]
    assert len(shard.problems) == MAX_ERRORS
    assert min(shard.problems) == "key-00000" and max(shard.problems) == "key-00999"
    assert all(len(m) < MAX_MESSAGE + 40 for m in shard.problems.values())
    assert shard.problems["key-00000"].endswith(f"...({10**6 - MAX_MESSAGE} more chars)")
    assert shard.warnings[:MAX_WARNINGS] == warnings[:MAX_WARNINGS]
    assert shard.warnings[MAX_WARNINGS:] == (
        "7 more warnings not shown",
        f"501 more errors not shown (of {MAX_ERRORS + 501})",
    )
    assert len(caplog.records) == MAX_ERRORS + MAX_WARNINGS + 2
    assert max(len(r.getMessage()) for r in caplog.records) < MAX_MESSAGE + 100


def test_status_is_bounded_and_replaced_by_each_problems(store: RegistryStore) -> None:
    status = {f"k{i:02}": "v" * (MAX_MESSAGE + 5) for i in range(MAX_STATUS + 3)}
    status["s" * (MAX_SOURCE + 1)] = "x"
    store.apply(A, Problems(status=status))
    kept = store.shards[A].status
    assert len(kept) == MAX_STATUS and min(kept) == "k00"
    assert kept["k00"] == "v" * MAX_MESSAGE + "...(5 more chars)"
    store.apply(A, Problems(status={"mode": "push"}))
    assert store.shards[A].status == {"mode": "push"}
    store.apply(A, Problems())
    assert store.shards[A].status == {}


def test_problems_within_the_bounds_are_kept_as_they_are() -> None:
    problems = Problems(errors={"a.yaml": "line 1:\n  bad"}, warnings=("w",), removed=("b",))
    assert bounded(problems) is problems
    long_name = Problems(errors={"s" * (MAX_SOURCE + 1): "bad"})
    assert list(bounded(long_name).errors) == ["s" * MAX_SOURCE + "...(1 more chars)"]


def test_a_copy_merges_a_replaced_shard_as_the_store_would_without_touching_it(
    store: RegistryStore,
) -> None:
    store.apply(A, Replace(services=(svc("x.example"), svc("y.example"))))
    store.apply(B, Replace(services=(svc("x.example"),), endpoints=(ep("x.example", "10.9.9.9"),)))
    copy = store.copy()
    view = store.view
    update = Replace(services=(svc("x.example"), svc("z.example")), endpoints=(ep("x.example"),))
    candidate = copy.with_shard(A, update)
    assert store.view is view and set(store.shards[A].services) == {"x.example", "y.example"}
    # what the store itself makes of the same update
    store.apply(A, update)
    assert dict(candidate.services) == dict(store.view.services)
    assert dict(candidate.exported) == dict(store.view.exported)
    assert candidate.version == view.version  # a candidate, not a new version
    assert {e.source for e in candidate.services["x.example"].endpoints} == {A, B}


def test_a_copy_adds_removes_and_reprioritises_shards_as_the_store_would(
    store: RegistryStore,
) -> None:
    c = ShardKey("etcd", "c")
    store.apply(A, Replace(services=(svc("x.example"), svc("y.example"))))
    store.apply(B, Replace(services=(svc("x.example"),), endpoints=(ep("x.example", "10.7.7.7"),)))
    copy = store.copy()
    view = store.view
    added = Replace(services=(svc("z.example"),), endpoints=(ep("z.example", "10.1.1.1"),))
    candidate, touched = copy.with_shards(
        {A: None, c: added},
        priorities={B: copy.priorities[B] + 100, c: 5},
        exported={c: False},
    )
    assert store.view is view and set(store.shards) == {A, B}
    assert touched == {"x.example", "y.example", "z.example"}
    # what the store itself makes of the same changes
    store.remove_shard(A)
    store.expect(B, priority=copy.priorities[B] + 100)
    store.expect(c, priority=5, export=False)
    store.apply(c, added)
    assert dict(candidate.services) == dict(store.view.services)
    assert dict(candidate.exported) == dict(store.view.exported)
    assert "z.example" not in candidate.exported and "y.example" not in candidate.services
    assert candidate.version == view.version


def test_a_copy_needs_the_priority_of_a_shard_it_adds(store: RegistryStore) -> None:
    with pytest.raises(KeyError, match="etcd/c"):
        store.copy().with_shards({ShardKey("etcd", "c"): Replace()})
