"""Hostile values in a real etcd: each is its key's error, the watch goes on, a later good
value is served, and a broken key's error and last good value survive a reconnect."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aetcd
import pytest

from registryd.adapter import Problems, Upsert
from registryd.adapters.etcd import state as key_table
from registryd.adapters.etcd.adapter import EtcdError
from registryd.adapters.etcd.parse import MAX_DEPTH, MAX_VALUE_BYTES
from registryd.adapters.etcd.state import MAX_MESSAGE
from tests.adapters.test_etcd_adapter import (
    PREFIX,
    Feed,
    adapter,
    etcd,  # noqa: F401  (fixture)
    key,
    kv,  # noqa: F401  (fixture)
    rich,
    start,
    state,
    synced,
)
from tests.support.etcd_server import EtcdServer

KEY = f"{PREFIX}pay/1"


async def poisoned(feed: Feed, client: Any, value: bytes) -> str:
    """Put ``value`` at KEY; the error reported for it (the last good value stays)."""
    await client.put(key("pay", "1"), value)
    problems = await feed.expect(Problems)
    assert list(problems.errors) == [KEY]
    assert problems.sources == {KEY: {"address": "10.0.0.1", "port": 8080}}
    return problems.errors[KEY]


async def recovers(feed: Feed, client: Any) -> None:
    await client.put(key("pay", "1"), rich("10.0.0.2", 8080))
    upsert = await feed.expect(Upsert)
    assert [e.address for e in upsert.endpoints] == ["10.0.0.2"]
    assert (await feed.expect(Problems)).errors == {}


@pytest.fixture
async def feed(etcd: EtcdServer, kv: Any, feeds: list[Feed]) -> Feed:  # noqa: F811
    await kv.put(key("pay", "1"), rich("10.0.0.1", 8080))
    started = start(feeds, adapter(etcd))
    replace, _ = await synced(started)
    assert state(replace) == {"pay": [("10.0.0.1", 8080)]}
    return started


async def test_json_nested_5000_deep_is_that_keys_error(feed: Feed, kv: Any) -> None:  # noqa: F811
    error = await poisoned(feed, kv, b"[" * 5000 + b"]" * 5000)
    assert error == f"{KEY}: value nests deeper than {MAX_DEPTH} levels"
    await recovers(feed, kv)


async def test_json_nested_just_past_the_limit(feed: Feed, kv: Any) -> None:  # noqa: F811
    value = b'{"address": ' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1)
    assert "deeper than" in await poisoned(feed, kv, value)
    await recovers(feed, kv)


async def test_duplicate_members_are_that_keys_error(feed: Feed, kv: Any) -> None:  # noqa: F811
    error = await poisoned(feed, kv, b'{"address": "10.0.0.9", "port": 8080, "port": 9090}')
    assert 'duplicate member "port"' in error
    await recovers(feed, kv)


async def test_a_value_over_the_size_limit(feed: Feed, kv: Any) -> None:  # noqa: F811
    value = rich("10.0.0.9", 8080, labels={"x": "y" * MAX_VALUE_BYTES})
    assert f"larger than {MAX_VALUE_BYTES} bytes" in await poisoned(feed, kv, value)
    await recovers(feed, kv)


async def test_error_messages_are_bounded(feed: Feed, kv: Any) -> None:  # noqa: F811
    value = json.dumps({"address": "10.0.0.9", "port": 8080, **{f"f{i}": 1 for i in range(5000)}})
    error = await poisoned(feed, kv, value.encode())
    assert len(error) < MAX_MESSAGE + 100 and error.endswith("more characters]")
    await recovers(feed, kv)


async def test_an_unexpected_exception_is_that_keys_error(
    feed: Feed,
    kv: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = key_table.parse_entry

    def failing(key: bytes, value: bytes, options: Any) -> Any:
        if b"10.0.0.9" in value:
            raise MemoryError()
        return real(key, value, options)

    monkeypatch.setattr(key_table, "parse_entry", failing)
    error = await poisoned(feed, kv, rich("10.0.0.9", 8080))
    assert error == f"{KEY}: cannot be converted (MemoryError)"
    await recovers(feed, kv)


async def test_a_broken_keys_error_and_last_good_value_survive_a_reconnect(
    etcd: EtcdServer,  # noqa: F811
    kv: Any,  # noqa: F811
    feeds: list[Feed],
) -> None:
    await kv.put(key("pay", "1"), rich("10.0.0.1", 8080))
    source = adapter(etcd)
    feed = start(feeds, source)
    await synced(feed)
    error = await poisoned(feed, kv, b"nope")
    await asyncio.to_thread(etcd.stop)
    assert isinstance(await feed.error(), EtcdError)
    await asyncio.to_thread(etcd.start)
    again = start(feeds, source)
    replace, problems = await synced(again)
    assert state(replace) == {"pay": [("10.0.0.1", 8080)]}
    assert problems.errors == {KEY: error}
    assert problems.sources == {KEY: {"address": "10.0.0.1", "port": 8080}}
    async with aetcd.Client("127.0.0.1", etcd.client_port, timeout=5) as client:
        await recovers(again, client)
