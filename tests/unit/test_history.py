"""The change history (``/debug/history``): bounded by bytes whatever is pushed, small
entries, filters, outcomes recorded as proxies answer; what the store says changed, how
the push controller records it, and the push tracker's outcomes."""

from __future__ import annotations

import itertools

import pytest

from registryd.adapter import Delete, Replace, Upsert
from registryd.daemon.history import HASHED, NACKS_KEPT, NAMED, ChangeHistory
from registryd.daemon.push import PushController
from registryd.errors import ConfigError
from registryd.model import ShardKey
from registryd.registry.changes import ChangeSummary
from registryd.registry.store import ChangeEvent, RegistryStore
from registryd.tools import cli
from registryd.xds import resources as res
from registryd.xds.stream import ACK, NACK, Connection, Digest, Planned, TypeState
from registryd.xds.tracking import Outcome, PushTracker
from tests.unit.factories import ep, svc

KEY = ShardKey("memory", "mem")
EMPTY = ChangeSummary()


def change(
    registry: str, hostnames: set[str], revision: str = ""
) -> tuple[str, int, str, set[str], ChangeSummary]:
    return (registry, 1, revision, hostnames, EMPTY)


@pytest.mark.parametrize("budget", [64 << 10, 1 << 20])
def test_the_byte_bound_holds_under_a_flood_of_big_changes(budget: int) -> None:
    history = ChangeHistory(budget)
    long = "x" * 10_000  # a registry name or revision no real source has
    names = [f"h{i}-{'y' * 200}.example" for i in range(8000)]
    for version in range(1, 401):
        size = (version * 7919) % 8000  # changes of every size, up to 8000 hostnames
        hosts = set(names[:size])
        history.add(
            version,
            [change(f"memory/{long}{version % 3}", hosts, long), change("k8s/a", {"a.b"})],
            endpoints_only=False,
        )
        assert history.size <= budget
    assert 0 < len(history) < 400 and history.dropped == 400 - len(history)
    assert next(history.entries()).version == 400  # the newest is kept


def test_an_entry_stays_small_however_many_hostnames_changed() -> None:
    history = ChangeHistory()
    hosts = {f"svc-{i}.example" for i in range(100_000)}
    entry = history.add(1, [change("memory/mem", hosts)], endpoints_only=True)
    assert entry.cost < 8 * HASHED + 16_000
    (item,) = history.render()
    (listed,) = item["changes"]
    assert len(listed["hostnames"]) == NAMED and listed["hostnamesTotal"] == 100_000
    assert item["hostnames"] == 100_000


def test_filters_by_hostname_registry_and_limit() -> None:
    history = ChangeHistory()
    history.add(1, [change("memory/a", {"web.example"}, "rev-7")], endpoints_only=True)
    history.add(2, [change("consul/b", {"db.example"})], endpoints_only=False)
    many = {f"s{i}.example" for i in range(HASHED + 5)}
    history.add(3, [change("memory/a", many)], endpoints_only=True)
    assert [e["version"] for e in history.render()] == [3, 2, 1]
    assert [e["version"] for e in history.render(limit=1)] == [3]
    web = history.render(hostname="web.example")
    # push 3 named too many hostnames to tell: it is listed as a possible match
    assert [(e["version"], e["hostnameMatch"]) for e in web] == [(3, "possible"), (1, "yes")]
    assert web[1]["changes"][0]["revision"] == "rev-7"
    assert [e["version"] for e in history.render(hostname="db.example")] == [3, 2]
    assert [e["version"] for e in history.render(registry="consul/b")] == [2]
    assert [e["version"] for e in history.render(registry="b")] == [2]  # instance name
    assert history.render(registry="nosuch") == []
    assert history.last_change("db.example") == 3  # may be: the newest it cannot rule out
    assert history.last_change("s1.example") == 3
    assert history.last_change("web.example") == 3


def test_outcomes_are_recorded_into_the_entry_as_they_come() -> None:
    history = ChangeHistory()
    history.add(5, [change("memory/a", {"web.example"})], endpoints_only=True)
    for i in range(4):
        history.outcome(Outcome(5, "reached", 0.01, f"p{i}"))
    history.outcome(Outcome(5, "acked", 0.02, "p0"))
    history.outcome(Outcome(5, "acked", 0.05, "p1"))
    for i in range(NACKS_KEPT + 2):
        history.outcome(Outcome(5, "nacked", 0.03, f"p{i}", "bad cluster"))
    history.outcome(Outcome(99, "acked", 1.0, "p0"))  # a push not held: ignored
    (item,) = history.render()
    outcome = item["outcome"]
    assert outcome["proxiesReached"] == 4
    assert outcome["proxiesAcked"] == 2
    assert outcome["proxiesNacked"] == NACKS_KEPT + 2
    assert outcome["lastAckMs"] == 50.0
    assert len(outcome["nacks"]) == NACKS_KEPT
    assert outcome["nacks"][0] == {"proxyID": "p0", "error": "bad cluster"}
    entry = next(history.entries())
    size = history.size
    assert size == entry.cost  # outcomes are charged up front: recording them adds nothing


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ChangeHistory(0)


def test_the_budget_is_a_flag() -> None:
    assert cli.parse_args(["discovery"], {}).history_bytes == 4 << 20
    assert cli.parse_args(["discovery", "--historyBytes=65536"], {}).history_bytes == 65536
    with pytest.raises(ConfigError, match="--historyBytes"):
        cli.parse_args(["discovery", "--historyBytes=0"], {})


# -- what the store says changed ------------------------------------------------------


def test_the_store_summarizes_each_change() -> None:
    store = RegistryStore()
    events: list[ChangeEvent] = []
    store.subscribe(events.append)
    store.apply(KEY, Replace(services=(svc("a.example"),), endpoints=(ep("a.example"),)))
    store.apply(
        KEY,
        Upsert(
            service=svc("a.example"),
            endpoints=(ep("a.example", "10.0.0.1", weight=3), ep("a.example", "10.0.0.2")),
            revision="42",
        ),
    )
    store.apply(KEY, Delete(hostname="a.example", revision="43"))
    first, second, third = (e.summary for e in events)
    assert (first.services_added, first.endpoints_added, first.added) == (1, 1, ("a.example",))
    assert (second.endpoints_added, second.endpoints_changed, second.services_added) == (1, 1, 0)
    assert events[1].revision == "42"
    removed = (third.services_removed, third.endpoints_removed, third.removed)
    assert removed == (1, 2, ("a.example",))


async def test_a_push_records_each_registrys_changes_in_the_history() -> None:
    store = RegistryStore()
    history = ChangeHistory()
    published: list[object] = []
    push = PushController(store, published.append, history=history)
    other = ShardKey("consul", "dc1")
    store.apply(KEY, Replace(services=(svc("a.example"),), endpoints=(ep("a.example"),)))
    store.apply(other, Replace(services=(svc("b.example"),), revision="index-9"))
    store.apply(KEY, Upsert(service=svc("a.example"), endpoints=(), revision="r2"))
    snapshot = push.push_now()
    (item,) = history.render()
    assert item["version"] == snapshot.version and item["kind"] == "full"
    by_registry = {c["registry"]: c for c in item["changes"]}
    mem, dc1 = by_registry["memory/mem"], by_registry["consul/dc1"]
    assert (mem["events"], mem["revision"], mem["hostnames"]) == (2, "r2", ["a.example"])
    assert mem["services"]["added"] == 1
    assert mem["endpoints"] == {"added": 1, "removed": 1, "changed": 0}
    assert (dc1["revision"], dc1["hostnames"]) == ("index-9", ["b.example"])


# -- the push tracker's outcomes --------------------------------------------------------


def _conn(connected: float) -> Connection:
    conn = Connection(peer="ipv4:127.0.0.1:1", version_prefix="v")
    conn.connected_mono = connected
    return conn


def _planned(type_url: str, version: int) -> Planned:
    return Planned(type_url, b"x", f"v-{version}", f"{version}-1", ("n",))


def _answer(type_url: str, kind: str, version: int, error: str = "") -> tuple[Digest, str]:
    state = TypeState(type_url, nack_version=f"v-{version}", last_nack=error)
    return Digest(replan=False, kind=kind, state=state), f"v-{version}"


def test_the_tracker_tells_reached_once_and_acked_once_every_type_is_acked() -> None:
    tracker = PushTracker()
    told: list[Outcome] = []
    tracker.listeners.append(told.append)
    tracker.begin(2, started=10.0, published=10.1)
    good, bad = _conn(1.0), _conn(2.0)
    ticks = itertools.count(11)
    for conn in (good, bad):
        for t in (res.CLUSTER_TYPE, res.ENDPOINT_TYPE):
            tracker.sent(conn, _planned(t, 2), 2, started=10.1, finished=next(ticks))
    tracker.answered(good, *_answer(res.CLUSTER_TYPE, ACK, 2), at=20.0)
    assert [o.kind for o in told] == ["reached", "reached"]  # one type still unacked
    tracker.answered(good, *_answer(res.ENDPOINT_TYPE, ACK, 2), at=21.0)
    tracker.answered(bad, *_answer(res.CLUSTER_TYPE, NACK, 2, "no"), at=22.0)
    tracker.answered(bad, *_answer(res.ENDPOINT_TYPE, NACK, 2, "no"), at=23.0)
    assert [(o.kind, o.seconds, o.error) for o in told[2:]] == [
        ("acked", 11.0, ""),
        ("nacked", 12.0, "no"),  # once per proxy
    ]
