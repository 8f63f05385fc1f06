"""``registryd.adapter.follow``: increments at once, problems looked at per batch or, with
``every``, at most once an interval while events keep coming."""

from __future__ import annotations

import asyncio
import contextlib

from registryd.adapter import Delete, Problems, Upsert, follow


class Source:
    """A queue of events, each one hostname deleted; problems count the events seen."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.applied: list[str] = []
        self.looks = 0

    async def apply_one(self) -> None:
        self.applied.append(await self.queue.get())

    def changes(self) -> list[Upsert | Delete]:
        done, self.applied = self.applied, []
        return [Delete(hostname=h) for h in done]

    def problems(self) -> Problems:
        self.looks += 1
        return Problems(warnings=(f"{self.queue.qsize()} queued",))


async def collect(source: Source, count: int, **options: float) -> list[object]:
    """The first ``count`` updates of ``follow`` over ``source``."""
    updates = follow(source.apply_one, source.changes, source.problems, Problems(), **options)
    out: list[object] = []
    async with contextlib.aclosing(updates):
        async for update in updates:
            out.append(update)
            if len(out) == count:
                return out
    raise AssertionError("follow ended")


async def test_by_default_problems_are_looked_at_after_every_event() -> None:
    source = Source()
    for name in ("a", "b", "c"):
        source.queue.put_nowait(name)
    updates = await collect(source, 4)
    assert updates[:2] == [Delete(hostname="a"), Problems(warnings=("2 queued",))]
    assert updates[2:] == [Delete(hostname="b"), Problems(warnings=("1 queued",))]
    assert source.looks == 2


async def test_with_an_interval_a_burst_costs_one_look_then_one_when_it_stops() -> None:
    source = Source()
    names = [f"h{i}" for i in range(100)]
    for name in names:
        source.queue.put_nowait(name)
    # the clock stands still: within the burst no interval is ever up
    updates = await collect(source, 102, every=0.05, clock=lambda: 0.0)
    assert updates[0] == Delete(hostname="h0")
    assert updates[1] == Problems(warnings=("99 queued",))  # the first look: at once
    assert updates[2:101] == [Delete(hostname=n) for n in names[1:]]
    assert updates[101] == Problems(warnings=("0 queued",))  # once the events stopped
    assert source.looks == 2


async def test_an_error_of_the_adapter_ends_follow() -> None:
    async def broken() -> None:
        raise RuntimeError("lost the stream")

    updates = follow(broken, list, Problems, Problems(), every=1.0)
    try:
        await anext(updates)
    except RuntimeError as exc:
        assert str(exc) == "lost the stream"
    else:
        raise AssertionError("no error")
    finally:
        await updates.aclose()


async def test_increments_carry_the_revision_after_their_batch() -> None:
    """``revision`` is asked once a batch is applied and stamped on what it caused; an
    empty one leaves the increments as they are."""
    source = Source()
    revisions = iter(["7", ""])
    for name in ("a", "b"):
        source.queue.put_nowait(name)
    updates = follow(
        source.apply_one,
        source.changes,
        source.problems,
        Problems(),
        every=60.0,
        clock=lambda: 0.0,
        revision=lambda: next(revisions),
    )
    seen = []
    async with contextlib.aclosing(updates):
        async for update in updates:
            if isinstance(update, Delete):
                seen.append(update)
                if len(seen) == 2:
                    break
    assert [(d.hostname, d.revision) for d in seen] == [("a", "7"), ("b", "")]
