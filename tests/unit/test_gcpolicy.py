"""registryd.base.gcpolicy: freezing after large builds, and GC pauses on /metrics."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry, generate_latest

from registryd.base.gcpolicy import FreezePolicy, GcPauses
from tests.support.fake_time import FakeTime


def test_freezes_after_the_first_and_large_builds_at_most_once_an_interval() -> None:
    clock = FakeTime(start=0.0)
    froze: list[float] = []
    policy = FreezePolicy(
        threshold=100,
        interval=60,
        clock=clock,
        freeze=lambda: froze.append(clock.now),
        full_collections=lambda: 0,
    )
    assert policy.after_build(3, full=False)  # the first build, however small
    clock.now = 61
    assert not policy.after_build(99, full=False)  # small: nothing new to keep
    assert policy.after_build(100, full=False)
    clock.now = 90
    assert not policy.after_build(5000, full=True)  # too soon after the last one
    clock.now = 122
    assert policy.after_build(1, full=True)
    assert froze == [0.0, 61, 122] and policy.frozen == 3


def test_a_full_collection_since_the_last_freeze_freezes_after_any_build() -> None:
    clock, full = FakeTime(start=0.0), [0]
    policy = FreezePolicy(
        interval=60, clock=clock, freeze=lambda: None, full_collections=lambda: full[0]
    )
    assert policy.after_build(1, full=False)
    clock.now = 100
    assert not policy.after_build(1, full=False)  # nothing collected in full since
    full[0] = 1  # proxies connected; their state was walked by a full collection
    assert policy.after_build(1, full=False)
    clock.now = 200
    assert not policy.after_build(1, full=False)


def test_every_collection_is_timed_by_generation() -> None:
    registry = CollectorRegistry()
    pauses = GcPauses(registry)
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        pauses.close()
    text = generate_latest(registry).decode()
    assert 'registryd_gc_pause_seconds_count{generation="0"}' in text
    assert 'registryd_gc_pause_seconds_count{generation="2"}' in text
    assert pauses.longest > 0
    gc.collect(1)  # closed: no longer counted
    assert 'generation="1"' not in generate_latest(registry).decode()
