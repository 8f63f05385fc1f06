"""registryd.adapter.Published: the one diff from what an adapter handed out to now."""

from __future__ import annotations

from dataclasses import dataclass

from registryd.adapter import Delete, Published, Upsert
from registryd.model import Endpoint, Service
from tests.unit.factories import ep, svc


@dataclass(frozen=True)
class Built:
    service: Service
    endpoints: tuple[Endpoint, ...] = ()


def test_replace_hands_out_everything_by_hostname_then_changes_compare_with_it() -> None:
    published: Published[tuple[str, str]] = Published()
    current = {("ns", "b"): Built(svc("b.example")), ("ns", "a"): Built(svc("a.example"), (ep(),))}
    replace = published.replace(current)
    assert [s.hostname for s in replace.services] == ["a.example", "b.example"]
    assert len(replace.endpoints) == 1
    # nothing changed for a touched key: nothing to send
    assert published.changes(current, [("ns", "a")]) == []
    current = {
        ("ns", "a"): Built(svc("a.example")),  # endpoints gone
        ("ns", "c"): Built(svc("c.example")),  # new
    }  # b removed
    changes = published.changes(current, [("ns", "c"), ("ns", "b"), ("ns", "a")])
    assert [type(c) for c in changes] == [Upsert, Upsert, Delete]
    assert [c.service.hostname for c in changes[:2] if isinstance(c, Upsert)] == [
        "a.example",
        "c.example",
    ]
    assert changes[2] == Delete(hostname="b.example")
    # what was handed out is remembered: the same change is not sent twice
    assert published.changes(current, [("ns", "a"), ("ns", "b"), ("ns", "c")]) == []
