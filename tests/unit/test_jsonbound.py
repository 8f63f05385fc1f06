"""The bounded JSON reader: every limit refuses what is over it, naming it, and refuses
before parsing whatever can be refused before parsing."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from registryd import jsonbound
from registryd.adapter import JsonLimits, JsonTooLarge, load_json, parse_json, read_capped

SMALL = JsonLimits(max_bytes=1024, max_depth=4)  # 64 objects and arrays


def test_an_answer_within_the_limits_is_its_json_value() -> None:
    body = {"hosts": [{"ip": "10.0.0.1", "metadata": {"zone": "a"}}]}
    assert parse_json(json.dumps(body).encode(), SMALL) == body
    assert parse_json(json.dumps(body), SMALL) == body
    assert parse_json(b'{"a": "\xff"}', SMALL) == {"a": "\ufffd"}  # not UTF-8: replaced
    assert SMALL.items == 64 and JsonLimits().items == 2**20


@pytest.mark.parametrize(
    ("body", "limit", "message"),
    [
        (b"[" + b"1," * 600 + b"1]", "max_bytes", "the answer is larger than 1024 bytes"),
        (
            b"[" + b"{}," * 64 + b"{}]",
            "max_items",
            "the answer holds more than 64 objects and arrays (66)",
        ),
        (b'{"a": "' + b"[" * 65 + b'"}', "max_items", "more than 64 objects and arrays (66)"),
        (b"[[[[[1]]]]]", "max_depth", "the answer is nested deeper than 4 levels"),
        (b'{"a":{"b":[{"c":[]}]}}', "max_depth", "the answer is nested deeper than 4 levels"),
    ],
    ids=["bytes", "items", "brackets-in-strings-count", "depth", "mixed-depth"],
)
def test_an_answer_over_a_limit_is_refused_naming_it(body: bytes, limit: str, message: str) -> None:
    with pytest.raises(JsonTooLarge) as caught:
        parse_json(body, SMALL)
    assert caught.value.limit == limit
    assert message in str(caught.value)


def test_nesting_at_the_limit_is_accepted() -> None:
    assert parse_json(b"[[[[1]]]]", SMALL) == [[[[1]]]]
    assert parse_json(b'{"a":{"b":[{"c":1}]}}', SMALL) == {"a": {"b": [{"c": 1}]}}


def test_nesting_too_deep_for_the_parser_is_over_the_depth_limit() -> None:
    limits = JsonLimits(max_bytes=10**6, max_items=10**6)
    with pytest.raises(JsonTooLarge) as caught:
        parse_json(b"[" * 100_000 + b"]" * 100_000, limits)
    assert caught.value.limit == "max_depth"


def test_millions_of_empty_objects_are_refused_before_they_are_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed: list[Any] = []
    monkeypatch.setattr(jsonbound.json, "loads", parsed.append)
    body = b"[" + b"{}," * 2_000_000 + b"{}]"  # 6 MB: under the default byte limit
    with pytest.raises(JsonTooLarge, match=r"more than 1048576 objects and arrays \(2000002\)"):
        parse_json(body, JsonLimits())
    assert parsed == []


def test_what_is_not_json_is_a_value_error_but_no_limit() -> None:
    for body in (b"{", b"nope", b"[1,]", b""):
        with pytest.raises(ValueError) as caught:
            parse_json(body, SMALL)
        assert not isinstance(caught.value, JsonTooLarge)


async def test_read_capped_stops_reading_past_the_limit() -> None:
    read = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal read
        for _ in itertools.count():
            read += 1
            yield b"x" * 100

    with pytest.raises(JsonTooLarge, match="larger than 1024 bytes") as caught:
        await read_capped(endless(), 1024)
    assert caught.value.limit == "max_bytes" and read == 11

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"a":'
        yield b"1}"

    assert await read_capped(chunks(), 7) == b'{"a":1}'


async def test_load_json_parses_large_answers_in_a_thread_and_small_ones_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[bool] = []
    real = jsonbound.parse_json

    def parse(body: Any, limits: JsonLimits) -> Any:
        threads.append(threading.current_thread() is threading.main_thread())
        return real(body, limits)

    monkeypatch.setattr(jsonbound, "parse_json", parse)
    large = json.dumps(["x" * 100] * 1000).encode()  # about 100 KB
    assert len(large) > jsonbound.INLINE_BYTES
    assert await load_json(large, JsonLimits()) == ["x" * 100] * 1000
    assert await load_json(b"[1]", JsonLimits()) == [1]
    assert threads == [False, True]
    with pytest.raises(JsonTooLarge):  # refused on the loop: no thread for it
        await load_json(b"[" + b"{}," * 100_000 + b"{}]", JsonLimits(max_bytes=2**20))
    assert threads == [False, True]
