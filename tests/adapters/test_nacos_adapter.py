"""The Nacos adapter against the Nacos emulator.

Polling (``mode: poll``): full state, increments, one failing service, outages,
failover, login and paging, and hostile servers (huge, deep or endless answers, a
service that drips its answer).  Polls are driven by an injected sleep, so "a poll
changed nothing" is checked after that poll has run, not after a wait.

Push (gRPC): the full state by subscription, changes by push (not read by a poll), the
listing's new and vanished services (driven by the same injected sleep), the fallback
to polling a server without gRPC and back, ``mode: grpc`` without it, dropped streams
and restarted servers, tokens, malformed and oversized pushes."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import pytest

from registryd import jsonbound
from registryd.adapter import AdapterContext, Delete, Problems, Replace, Update, Upsert
from registryd.adapters.nacos import NacosAdapter
from registryd.adapters.nacos import adapter as nacos_adapter
from registryd.adapters.nacos.client import (
    NacosError,
    NacosUnavailable,
    QueryError,
    TooManyServices,
)
from registryd.adapters.nacos.link import NoGrpc
from registryd.adapters.nacos.settings import parse_settings
from registryd.model import Health
from tests.adapters.feed import Feed
from tests.support.emulators.nacos import NacosEmulator, Request

T = TypeVar("T")

TIMEOUT = 5.0
ORDERS = "orders.default-group.public.nacos"
POLLING = {"mode": "poll", "reason": "the setting mode is poll"}


class Ticker:
    """A sleep for the adapter that returns only when the test lets one poll run."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.waiting: asyncio.Queue[float] = asyncio.Queue()
        self.go: asyncio.Queue[None] = asyncio.Queue()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.waiting.put_nowait(delay)
        await self.go.get()

    async def idle(self) -> None:
        """Until the adapter waits for its next poll."""
        await asyncio.wait_for(self.waiting.get(), TIMEOUT)

    async def poll(self) -> None:
        """Let one poll run, and return once it is done."""
        self.go.put_nowait(None)
        await self.idle()


@pytest.fixture
async def nacos() -> AsyncIterator[NacosEmulator]:
    async with NacosEmulator() as server:
        yield server


def adapter(server_addr: Any, ticker: Ticker | None = None, **settings: Any) -> NacosAdapter:
    """A polling adapter (``mode: poll`` unless ``settings`` say otherwise)."""
    return NacosAdapter(
        name="nacos-test",
        settings={"server_addr": server_addr, "mode": "poll", **settings},
        context=AdapterContext(),
        sleep=ticker or Ticker(),
        jitter=lambda: 1.0,
    )


def queued(feed: Feed) -> list[Update]:
    """The updates handed out so far (the poll that made them is over)."""
    out = []
    while not feed.queue.empty():
        item = feed.queue.get_nowait()
        assert not isinstance(item, BaseException), item
        out.append(item)
    return out


async def start(feeds: list[Feed], nacos_adapter: NacosAdapter) -> tuple[Feed, Replace, Problems]:
    feed = Feed(nacos_adapter)
    feeds.append(feed)
    return feed, await feed.expect(Replace), await feed.expect(Problems)


async def test_first_update_is_the_full_state_of_the_configured_groups_and_namespace(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    nacos.register("orders", "10.0.0.1", 8080, metadata={"protocol": "http"})
    nacos.register("pay_svc", "10.0.0.2", 9000, group="PAY")
    nacos.register("hidden", "10.0.0.3", 80, group="OTHER")
    nacos.register("elsewhere", "10.0.0.4", 80, namespace="dev")
    _, replace, problems = await start(
        feeds, adapter(nacos.address, groups=["DEFAULT_GROUP", "PAY"])
    )
    hosts = sorted(s.hostname for s in replace.services)
    assert hosts == [ORDERS, "pay-svc.pay.public.nacos"]
    orders = next(s for s in replace.services if s.hostname == ORDERS)
    assert [(p.number, p.protocol) for p in orders.ports] == [(8080, "HTTP")]
    assert sorted((e.hostname, e.address) for e in replace.endpoints) == [
        (ORDERS, "10.0.0.1"),
        ("pay-svc.pay.public.nacos", "10.0.0.2"),
    ]
    assert problems == Problems(status=POLLING)


async def test_changes_arrive_as_increments_and_an_unchanged_poll_yields_nothing(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    ticker = Ticker()
    nacos.register("orders", "10.0.0.1", 8080)
    feed, _, _ = await start(feeds, adapter(nacos.address, ticker))
    await ticker.idle()
    await ticker.poll()
    assert queued(feed) == []

    nacos.register("orders", "10.0.0.1", 8080, healthy=False)
    nacos.register("stock", "10.0.0.9", 7000)
    await ticker.poll()
    orders, stock = queued(feed)
    assert isinstance(orders, Upsert) and orders.service.hostname == ORDERS
    assert [e.health for e in orders.endpoints] == [Health.UNHEALTHY]
    assert (
        isinstance(stock, Upsert) and stock.service.hostname == "stock.default-group.public.nacos"
    )

    nacos.remove_service("stock")
    await ticker.poll()
    assert queued(feed) == [Delete(hostname="stock.default-group.public.nacos")]


async def test_changes_are_seen_when_the_server_sends_no_checksum(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    ticker = Ticker()
    nacos.empty_checksum = True
    nacos.register("orders", "10.0.0.1", 8080, weight=1.0)
    feed, _, _ = await start(feeds, adapter(nacos.address, ticker, weight_scale=10))
    await ticker.idle()
    nacos.register("orders", "10.0.0.1", 8080, weight=3.5)
    await ticker.poll()
    (update,) = queued(feed)
    assert isinstance(update, Upsert) and [e.weight for e in update.endpoints] == [35]


async def test_one_failing_service_keeps_its_last_good_endpoints_and_stops_no_other(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    ticker = Ticker()
    nacos.register("orders", "10.0.0.1", 8080)
    nacos.register("stock", "10.0.0.2", 7000)
    feed, _, _ = await start(feeds, adapter(nacos.address, ticker))
    await ticker.idle()

    nacos.fail_service("orders", 500)
    nacos.register("orders", "10.0.0.5", 8080)  # not seen while failing
    nacos.register("stock", "10.0.0.3", 7000)
    await ticker.poll()
    stock, problems = queued(feed)
    assert isinstance(stock, Upsert) and len(stock.endpoints) == 2
    assert isinstance(problems, Problems)
    assert list(problems.errors) == ["DEFAULT_GROUP@@orders"]
    assert "HTTP 500" in problems.errors["DEFAULT_GROUP@@orders"]

    nacos.fail_service("orders", None)
    await ticker.poll()
    orders, cleared = queued(feed)
    assert isinstance(orders, Upsert) and len(orders.endpoints) == 2
    assert cleared == Problems(status=POLLING)


async def test_any_exception_converting_one_service_is_that_services_error(
    nacos: NacosEmulator, feeds: list[Feed], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = nacos_adapter.convert_service

    def convert(document: Any, *, host: str, **options: Any) -> Any:
        if host == ORDERS:
            raise RecursionError("maximum recursion depth exceeded")
        return real(document, host=host, **options)

    monkeypatch.setattr(nacos_adapter, "convert_service", convert)
    nacos.register("orders", "10.0.0.1", 8080)
    nacos.register("stock", "10.0.0.2", 7000)
    _, replace, problems = await start(feeds, adapter(nacos.address))
    assert [s.hostname for s in replace.services] == ["stock.default-group.public.nacos"]
    assert problems.errors == {
        "DEFAULT_GROUP@@orders": "RecursionError: maximum recursion depth exceeded"
    }


async def test_json_nested_too_deep_or_a_body_too_large_is_that_services_error(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    for i in range(40):  # about 9 KB of instance list
        nacos.register("big", f"10.0.1.{i}", 8080, metadata={"protocol": "http"})
    nacos.register("stock", "10.0.0.2", 7000)
    nacos.register("deep", "10.0.0.3", 7000)
    nacos.fail_service("deep", 200, body="[" * 100 + "]" * 100)  # under the other limits
    _, replace, problems = await start(feeds, adapter(nacos.address, max_response_bytes=4096))
    assert [s.hostname for s in replace.services] == ["stock.default-group.public.nacos"]
    assert problems.errors["DEFAULT_GROUP@@big"] == (
        "/nacos/v1/ns/instance/list: the answer is larger than 4096 bytes (max_response_bytes)"
    )
    assert problems.errors["DEFAULT_GROUP@@deep"] == (
        "/nacos/v1/ns/instance/list: the answer is nested deeper than 64 levels"
    )


async def test_a_service_failing_from_the_start_does_not_hold_back_the_full_state(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    nacos.register("orders", "10.0.0.1", 8080)
    nacos.register("stock", "10.0.0.2", 7000)
    nacos.fail_service("stock", 200)  # a body that is not JSON
    _, replace, problems = await start(feeds, adapter(nacos.address))
    assert [s.hostname for s in replace.services] == [ORDERS]
    assert "not JSON" in problems.errors["DEFAULT_GROUP@@stock"]


async def test_an_unreachable_server_makes_watch_raise(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    ticker = Ticker()
    nacos.register("orders", "10.0.0.1", 8080)
    feed, _, _ = await start(feeds, adapter(nacos.address, ticker))
    await ticker.idle()
    await nacos.stop()
    ticker.go.put_nowait(None)
    error = await feed.error()
    assert isinstance(error, NacosUnavailable)
    assert nacos.address in str(error)


async def test_servers_are_tried_in_order(nacos: NacosEmulator, feeds: list[Feed]) -> None:
    async with NacosEmulator() as gone:
        dead = gone.address
    nacos.register("orders", "10.0.0.1", 8080)
    _, replace, _ = await start(feeds, adapter([dead, nacos.address]))
    assert [s.hostname for s in replace.services] == [ORDERS]


async def test_each_full_state_is_logged_under_the_nacos_scope(
    nacos: NacosEmulator, feeds: list[Feed], restore_loggers: None
) -> None:
    lines: list[logging.LogRecord] = []

    class Kept(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record)

    scope = logging.getLogger("registryd.nacos")  # restore_loggers puts it back
    scope.setLevel(logging.INFO)
    scope.addHandler(Kept())
    async with NacosEmulator() as gone:
        dead = gone.address
    nacos.register("orders", "10.0.0.1", 8080)
    nacos.register("orders", "10.0.0.2", 8080)
    await start(feeds, adapter([dead, nacos.address]))
    assert [(r.levelno, r.getMessage()) for r in lines] == [
        (
            logging.INFO,
            f"nacos nacos-test: 1 services, 2 endpoints from http://{nacos.address} (poll)",
        )
    ]
    assert NacosAdapter.log_scope == "nacos" and NacosAdapter.default_priority == 50


async def test_services_are_read_page_by_page(nacos: NacosEmulator, feeds: list[Feed]) -> None:
    for i in range(5):
        nacos.register(f"svc{i}", f"10.0.0.{i + 1}", 80)
    _, replace, _ = await start(feeds, adapter(nacos.address, page_size=2))
    assert len(replace.services) == 5
    pages = [r.params["pageNo"] for r in nacos.requests if r.path.endswith("/service/list")]
    assert pages == ["1", "2", "3"]


async def test_the_poll_interval_is_scaled_by_the_jitter(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    ticker = Ticker()
    nacos_adapter = NacosAdapter(
        name="n",
        settings={"server_addr": nacos.address, "poll_interval": 3, "mode": "poll"},
        context=AdapterContext(),
        sleep=ticker,
        jitter=lambda: 0.9,
    )
    await start(feeds, nacos_adapter)
    await ticker.idle()
    assert ticker.delays == [pytest.approx(2.7)]


async def test_login_token_on_every_call_and_a_new_login_when_it_is_refused(
    feeds: list[Feed],
) -> None:
    ticker = Ticker()
    async with NacosEmulator(auth=("nacos", "s3cret")) as nacos:
        nacos.register("orders", "10.0.0.1", 8080)
        feed, replace, _ = await start(
            feeds, adapter(nacos.address, ticker, username="nacos", password="s3cret")
        )
        assert [s.hostname for s in replace.services] == [ORDERS]
        await ticker.idle()
        nacos.expire_tokens()
        nacos.register("orders", "10.0.0.2", 8080)
        await ticker.poll()
        (update,) = queued(feed)
        assert isinstance(update, Upsert) and len(update.endpoints) == 2
        logins = [r for r in nacos.requests if r.path == "/nacos/v1/auth/login"]
        assert len(logins) == 2
        reads = [r for r in nacos.requests if r.path.startswith("/nacos/v1/ns/")]
        assert all("accessToken" in r.params for r in reads)


async def test_a_refused_login_raises_without_the_password(feeds: list[Feed]) -> None:
    async with NacosEmulator(auth=("nacos", "s3cret")) as nacos:
        bad = adapter(nacos.address, username="nacos", password="wrong-pw")
        feed = Feed(bad)
        feeds.append(feed)
        error = await feed.error()
        assert isinstance(error, NacosError) and "login as 'nacos' refused" in str(error)
        assert "wrong-pw" not in str(error) and "wrong-pw" not in repr(bad)


async def test_a_service_that_recovers_unchanged_clears_its_error(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    ticker = Ticker()
    nacos.register("orders", "10.0.0.1", 8080)
    feed, _, _ = await start(feeds, adapter(nacos.address, ticker))
    await ticker.idle()
    nacos.fail_service("orders", 404)
    await ticker.poll()
    (failed,) = queued(feed)
    assert isinstance(failed, Problems) and "HTTP 404" in failed.errors["DEFAULT_GROUP@@orders"]
    nacos.fail_service("orders", None)
    await ticker.poll()
    assert queued(feed) == [Problems(status=POLLING)]


# -- hostile servers: every answer bounded, a slow service is that service's problem --


async def test_a_body_of_millions_of_empty_objects_is_refused_before_it_is_parsed(
    nacos: NacosEmulator, feeds: list[Feed], monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[int] = []
    real = jsonbound.json.loads
    monkeypatch.setattr(
        jsonbound.json, "loads", lambda text: parsed.append(len(text)) or real(text)
    )
    nacos.register("orders", "10.0.0.1", 8080)
    nacos.register("empty", "10.0.0.2", 8080)
    body = "[" + "{}," * 300_000 + "{}]"  # 900 KB: under the byte limit, 300,002 items
    nacos.fail_service("empty", 200, body=body)
    _, replace, problems = await start(feeds, adapter(nacos.address, max_response_bytes=2**20))
    assert [s.hostname for s in replace.services] == [ORDERS]
    assert problems.errors == {
        "DEFAULT_GROUP@@empty": "/nacos/v1/ns/instance/list: the answer holds more than 65536 "
        "objects and arrays (300002) (max_response_bytes)"
    }
    assert len(body) not in parsed  # refused before json.loads saw it


async def test_large_answers_are_parsed_off_the_event_loop(
    nacos: NacosEmulator, feeds: list[Feed], monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[tuple[bool, bool]] = []  # (large, on the main thread) per parse
    real = jsonbound.parse_json

    def parse(body: Any, limits: Any) -> Any:
        on_main = threading.current_thread() is threading.main_thread()
        threads.append((len(body) > jsonbound.INLINE_BYTES, on_main))
        return real(body, limits)

    monkeypatch.setattr(jsonbound, "parse_json", parse)
    for i in range(600):  # about 150 KB of instance list
        nacos.register("big", f"10.0.{i // 200}.{i % 200}", 8080)
    _, replace, _ = await start(feeds, adapter(nacos.address))
    assert len(replace.endpoints) == 600
    assert (True, False) in threads  # the instance list
    assert (True, True) not in threads and (False, True) in threads  # small: on the loop


async def test_an_endless_service_list_is_the_registrys_error_naming_max_services(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    nacos.endless_list = True
    feed = Feed(adapter(nacos.address, max_services=50, page_size=10))
    feeds.append(feed)
    error = await feed.error()
    assert isinstance(error, TooManyServices) and isinstance(error, NacosError)
    assert str(error) == (
        "/nacos/v1/ns/service/list: the groups list 60 services (up to group "
        "'DEFAULT_GROUP'), more than max_services (50); listing stopped"
    )
    pages = [r.params["pageNo"] for r in nacos.requests if r.path.endswith("/service/list")]
    assert pages == ["1", "2", "3", "4", "5"]  # paging stopped at the limit
    assert not any(r.path.endswith("/instance/list") for r in nacos.requests)


async def test_max_services_counts_the_services_of_every_group(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    nacos.register("orders", "10.0.0.1", 8080)
    nacos.register("stock", "10.0.0.2", 8080)
    nacos.register("pay", "10.0.0.3", 8080, group="PAY")
    groups = ["DEFAULT_GROUP", "PAY"]
    _, replace, _ = await start(feeds, adapter(nacos.address, groups=groups, max_services=3))
    assert len(replace.services) == 3
    feed = Feed(adapter(nacos.address, groups=groups, max_services=2))
    feeds.append(feed)
    error = await feed.error()
    assert isinstance(error, TooManyServices) and "list 3 services (up to group 'PAY')" in str(
        error
    )


@pytest.mark.parametrize(
    ("interval", "settings", "error"),
    [
        (0.02, {"request_timeout": 0.3}, "no whole answer within 0.3s (request_timeout)"),
        (30.0, {"timeout": 0.2}, "the answer broke off: timed out"),
    ],
    ids=["dripping", "stalled"],
)
async def test_a_slow_service_keeps_its_endpoints_and_holds_back_no_other_change(
    nacos: NacosEmulator,
    feeds: list[Feed],
    interval: float,
    settings: dict[str, float],
    error: str,
) -> None:
    ticker = Ticker()
    nacos.register("orders", "10.0.0.1", 8080)
    nacos.register("slow", "10.0.0.2", 8080)
    feed, replace, _ = await start(feeds, adapter(nacos.address, ticker, **settings))
    assert len(replace.services) == 2
    await ticker.idle()

    nacos.drip_service("slow", interval)
    nacos.register("slow", "10.0.0.3", 8080)  # not seen while it drips
    nacos.register("orders", "10.0.0.4", 8080)
    await ticker.poll()
    orders, problems = queued(feed)  # no Delete of slow: it keeps its endpoints
    assert isinstance(orders, Upsert) and orders.service.hostname == ORDERS
    assert len(orders.endpoints) == 2
    assert problems == Problems(
        errors={"DEFAULT_GROUP@@slow": f"/nacos/v1/ns/instance/list: {error}"}, status=POLLING
    )

    nacos.drip_service("slow", None)
    await ticker.poll()
    slow, cleared = queued(feed)
    assert isinstance(slow, Upsert) and len(slow.endpoints) == 2
    assert cleared == Problems(status=POLLING)


async def test_a_slow_service_list_is_the_registrys_error(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    nacos.register("orders", "10.0.0.1", 8080)
    nacos.silent_list = True
    feed = Feed(adapter(nacos.address, request_timeout=0.2))
    feeds.append(feed)
    error = await feed.error()
    assert isinstance(error, QueryError)
    assert str(error) == "/nacos/v1/ns/service/list: no whole answer within 0.2s (request_timeout)"


# -- push: Nacos 2.x/3.x's gRPC protocol ----------------------------------------------


def pusher(nacos: NacosEmulator, ticker: Ticker | None = None, **settings: Any) -> NacosAdapter:
    """A pushed-to adapter (``mode: grpc`` unless ``settings`` say otherwise); the
    ``ticker`` lets each listing run."""
    return adapter(nacos.address, ticker, **{"mode": "grpc", **settings})


def pushing(nacos: NacosEmulator) -> dict[str, str]:
    return {"mode": f"push (gRPC {nacos.grpc_address})"}


def http_reads(nacos: NacosEmulator) -> list[Request]:
    return [r for r in nacos.requests if r.path == "/nacos/v1/ns/instance/list"]


def grpc_calls(nacos: NacosEmulator, kind: str) -> list[Request]:
    return [r for r in nacos.requests if r.method == "GRPC" and r.path == kind]


async def next_of(feed: Feed, kind: type[T], hostname: str | None = None) -> T:
    """The next update of ``kind`` (and ``hostname``), skipping Problems."""
    for _ in range(100):
        update = await feed.next()
        if isinstance(update, kind) and (
            hostname is None
            or getattr(update, "hostname", None) == hostname
            or getattr(getattr(update, "service", None), "hostname", None) == hostname
        ):
            return update
        assert isinstance(update, Problems | Upsert), update
    raise AssertionError(f"no {kind.__name__} in 100 updates")


async def test_push_mode_syncs_by_subscription_and_says_so(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    nacos.register("orders", "10.0.0.1", 8080, metadata={"protocol": "http"})
    nacos.register("pay_svc", "10.0.0.2", 9000, group="PAY")
    nacos.register("hidden", "10.0.0.3", 80, group="OTHER")
    _, replace, problems = await start(
        feeds,
        adapter(nacos.address, groups=["DEFAULT_GROUP", "PAY"], mode="auto"),
    )
    assert sorted(s.hostname for s in replace.services) == [ORDERS, "pay-svc.pay.public.nacos"]
    assert sorted(e.address for e in replace.endpoints) == ["10.0.0.1", "10.0.0.2"]
    assert problems == Problems(status=pushing(nacos))
    assert http_reads(nacos) == []
    subscribed = grpc_calls(nacos, "SubscribeServiceRequest")
    assert sorted((r.params["groupName"], r.params["serviceName"]) for r in subscribed) == [
        ("DEFAULT_GROUP", "orders"),
        ("PAY", "pay_svc"),
    ]
    assert nacos.subscribers("orders") == 1 and nacos.subscribers("hidden") == 0


async def test_a_change_arrives_by_push_and_is_acknowledged(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    nacos.register("orders", "10.0.0.1", 8080)
    nacos.register("stock", "10.0.0.2", 7000)
    feed, _, _ = await start(feeds, pusher(nacos))

    nacos.register("orders", "10.0.0.5", 8080, healthy=False)
    update = await next_of(feed, Upsert, ORDERS)
    assert [(e.address, e.health) for e in update.endpoints] == [
        ("10.0.0.1", Health.HEALTHY),
        ("10.0.0.5", Health.UNHEALTHY),
    ]
    nacos.deregister("orders", "10.0.0.1", 8080)
    update = await next_of(feed, Upsert, ORDERS)
    assert [e.address for e in update.endpoints] == ["10.0.0.5"]
    assert http_reads(nacos) == []  # not read by an instance-list poll
    pushed = {a["requestId"] for a in nacos.acks}
    assert len(pushed) >= 2 and all(a["resultCode"] == 200 for a in nacos.acks)
    assert len(grpc_calls(nacos, "NotifySubscriberResponse")) == len(nacos.acks)


async def test_new_and_vanished_services_come_with_the_listing(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    ticker = Ticker()
    nacos.register("orders", "10.0.0.1", 8080)
    feed, _, _ = await start(feeds, pusher(nacos, ticker, list_interval=7))
    await ticker.idle()
    assert ticker.delays == [7.0]

    nacos.register("stock", "10.0.0.2", 7000)
    await ticker.poll()  # one listing: subscribes to stock
    stock = await next_of(feed, Upsert, "stock.default-group.public.nacos")
    assert [e.address for e in stock.endpoints] == ["10.0.0.2"]
    assert nacos.subscribers("stock") == 1

    nacos.remove_service("stock")
    await ticker.poll()  # the next listing no longer names it: unsubscribed, deleted
    await next_of(feed, Delete, "stock.default-group.public.nacos")
    assert nacos.subscribers("stock") == 0
    assert http_reads(nacos) == []


async def test_auto_falls_back_to_polling_a_server_without_grpc(
    feeds: list[Feed], restore_loggers: None
) -> None:
    lines: list[logging.LogRecord] = []

    class Kept(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record)

    logging.getLogger("registryd.nacos").addHandler(Kept())
    async with NacosEmulator(grpc=False) as nacos:  # a Nacos 1.x
        nacos.register("orders", "10.0.0.1", 8080)
        fallback = adapter(nacos.address, mode="auto")
        _, replace, problems = await start(feeds, fallback)
        assert [s.hostname for s in replace.services] == [ORDERS]
        assert problems.status["mode"] == "poll"
        assert problems.status["reason"].startswith("no gRPC (no Nacos gRPC server answered")
        assert nacos.grpc_address in problems.status["reason"]
        assert len(http_reads(nacos)) == 1
        await start(feeds, fallback)  # a restart tries gRPC again, warns no more
    warnings = [r for r in lines if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "polling the Open API" in warnings[0].getMessage()


async def test_mode_grpc_without_grpc_is_the_registrys_error(feeds: list[Feed]) -> None:
    async with NacosEmulator(grpc=False) as nacos:
        feed = Feed(pusher(nacos))
        feeds.append(feed)
        error = await feed.error()
        assert isinstance(error, NoGrpc) and isinstance(error, NacosError)
        assert nacos.grpc_address in str(error)
        assert http_reads(nacos) == []


async def test_auto_mode_switches_to_push_once_grpc_answers(feeds: list[Feed]) -> None:
    ticker = Ticker()
    now = [0.0]
    async with NacosEmulator(grpc=False) as nacos:
        nacos.register("orders", "10.0.0.1", 8080)
        switching = NacosAdapter(
            name="nacos-test",
            settings={"server_addr": nacos.address},
            context=AdapterContext(),
            sleep=ticker,
            jitter=lambda: 1.0,
            clock=lambda: now[0],
        )
        feed, _, problems = await start(feeds, switching)
        assert problems.status["mode"] == "poll"
        await ticker.idle()
        await nacos.stop()
        nacos.grpc = True  # upgraded to 2.x
        await nacos.start()
        nacos.register("orders", "10.0.0.2", 8080)
        now[0] = nacos_adapter.GRPC_RETRY
        ticker.go.put_nowait(None)
        replace = await feed.expect(Replace)
        assert sorted(e.address for e in replace.endpoints) == ["10.0.0.1", "10.0.0.2"]
        assert (await feed.expect(Problems)).status == pushing(nacos)


async def test_a_dropped_stream_or_restarted_server_is_a_restart_that_subscribes_again(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    nacos.register("orders", "10.0.0.1", 8080)
    nacos.register("stock", "10.0.0.2", 7000)
    following = pusher(nacos)
    feed, _, _ = await start(feeds, following)
    nacos.drop_streams()
    error = await feed.error()  # closed, or broke under an acknowledgement being sent
    assert isinstance(error, NacosUnavailable) and "the stream" in str(error)

    feed, replace, _ = await start(feeds, following)  # as the supervisor restarts it
    assert len(replace.services) == 2
    await nacos.stop()
    error = await feed.error()
    assert isinstance(error, NacosUnavailable) and "the stream broke" in str(error)

    await nacos.start()  # a new server: no connection, no subscription
    nacos.register("orders", "10.0.0.3", 8080)
    feed, replace, problems = await start(feeds, following)
    assert sorted(e.address for e in replace.endpoints) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert problems == Problems(status=pushing(nacos))
    assert nacos.subscribers("orders") == nacos.subscribers("stock") == 1
    nacos.register("stock", "10.0.0.4", 7000)
    stock = await next_of(feed, Upsert, "stock.default-group.public.nacos")
    assert [e.address for e in stock.endpoints] == ["10.0.0.2", "10.0.0.4"]


async def test_push_sends_the_token_and_renews_a_refused_one(feeds: list[Feed]) -> None:
    ticker = Ticker()
    async with NacosEmulator(auth=("nacos", "s3cret")) as nacos:
        nacos.register("orders", "10.0.0.1", 8080)
        feed, replace, _ = await start(
            feeds, pusher(nacos, ticker, username="nacos", password="s3cret")
        )
        assert [s.hostname for s in replace.services] == [ORDERS]
        await ticker.idle()
        nacos.expire_tokens()
        nacos.register("stock", "10.0.0.2", 7000)
        await ticker.poll()  # the listing is refused once (403), logs in again
        await next_of(feed, Upsert, "stock.default-group.public.nacos")
        logins = [r for r in nacos.requests if r.path == "/nacos/v1/auth/login"]
        assert len(logins) == 2
        naming = [
            r for r in nacos.requests if r.path in ("SubscribeServiceRequest", "ServiceListRequest")
        ]
        assert naming and all(r.params.get("accessToken") for r in naming)


async def test_push_with_a_refused_login_raises_without_the_password(feeds: list[Feed]) -> None:
    async with NacosEmulator(auth=("nacos", "s3cret")) as nacos:
        feed = Feed(pusher(nacos, username="nacos", password="wrong-pw"))
        feeds.append(feed)
        error = await feed.error()
        assert isinstance(error, NacosError) and "login as 'nacos' refused" in str(error)
        assert "wrong-pw" not in str(error)


async def test_a_malformed_push_is_that_services_error_and_the_rest_keeps_working(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    nacos.register("orders", "10.0.0.1", 8080)
    nacos.register("stock", "10.0.0.2", 7000)
    feed, _, _ = await start(feeds, pusher(nacos))

    info = {"name": "orders", "groupName": "DEFAULT_GROUP", "hosts": "nope", "lastRefTime": 1}
    nacos.push_raw(json.dumps({"requestId": "x1", "serviceInfo": info}))
    problems = await feed.expect(Problems)
    assert problems.errors == {
        "DEFAULT_GROUP@@orders": "the answer must be an object with a 'hosts' list"
    }
    nacos.push_raw("not json at all")
    problems = await feed.expect(Problems)
    (warning,) = problems.warnings
    assert warning.startswith(f"gRPC stream of {nacos.grpc_address}: dropped a message:")

    nacos.register("stock", "10.0.0.3", 7000)  # the rest keeps working
    await next_of(feed, Upsert, "stock.default-group.public.nacos")
    nacos.register("orders", "10.0.0.4", 8080)  # and orders recovers with its next push
    orders = await next_of(feed, Upsert, ORDERS)
    assert [e.address for e in orders.endpoints] == ["10.0.0.1", "10.0.0.4"]
    assert {"requestId": "x1", "resultCode": 200, "errorCode": 0} in nacos.acks


async def restarted(feeds: list[Feed], following: NacosAdapter) -> tuple[Feed, Replace, Problems]:
    """The first run of ``watch()`` that delivers its full state (the supervisor's
    restarts, without the backoff); at most three runs."""
    for _ in range(3):
        feed = Feed(following)
        feeds.append(feed)
        first = await feed.queue.get()
        if isinstance(first, Replace):
            return feed, first, await feed.expect(Problems)
        assert isinstance(first, NacosUnavailable), first
    raise AssertionError("no full state in three runs")


async def test_an_oversized_service_is_its_own_error_and_keeps_its_last_endpoints(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    ticker = Ticker()
    for i in range(40):  # about 9 KB of instance list
        nacos.register("big", f"10.0.1.{i}", 8080)
    nacos.register("stock", "10.0.0.2", 7000)
    nacos.register("grow", "10.0.0.3", 7000)
    following = pusher(nacos, ticker, max_response_bytes=4096)
    # the server pushes big to its new subscriber: over the limit, that breaks the
    # stream of the first run; the subscription's answer names the culprit
    feed, replace, problems = await restarted(feeds, following)
    assert sorted(s.hostname for s in replace.services) == [
        "grow.default-group.public.nacos",
        "stock.default-group.public.nacos",
    ]
    too_large = "the answer is larger than 4096 bytes (max_response_bytes)"
    (request, error) = problems.errors["DEFAULT_GROUP@@big"].split(": ", 1)
    assert list(problems.errors) == ["DEFAULT_GROUP@@big"] and error == too_large
    assert request in ("SubscribeServiceRequest", "ServiceQueryRequest")  # run 1 or 2
    assert nacos.subscribers("big") == 0  # queried at each listing, not subscribed to

    for i in range(40):  # a push over the limit breaks the stream: a restart
        nacos.register("grow", f"10.0.2.{i}", 7000)
    error = await feed.error()
    assert isinstance(error, NacosUnavailable) and "max_response_bytes" in str(error)
    # the next run finds grow by its subscription's answer, but the push the server
    # sends its new subscriber may break that run too, after its full state
    for attempt in range(3):
        feed, replace, problems = await restarted(feeds, following)
        grown = [e.address for e in replace.endpoints if e.hostname.startswith("grow.")]
        assert "10.0.0.3" in grown and len(grown) < 41  # the last push that fitted
        nacos.register("stock", f"10.0.3.{attempt}", 7000)
        try:
            await next_of(feed, Upsert, "stock.default-group.public.nacos")
        except NacosUnavailable:
            continue
        break
    else:
        raise AssertionError("no run stayed up")
    assert sorted(problems.errors) == ["DEFAULT_GROUP@@big", "DEFAULT_GROUP@@grow"]
    assert nacos.subscribers("grow") == 0

    nacos.remove_service("big")  # big shrinks to one instance: subscribed again
    nacos.register("big", "10.0.1.1", 8080)
    await ticker.idle()
    await ticker.poll()
    big = await next_of(feed, Upsert, "big.default-group.public.nacos")
    assert [e.address for e in big.endpoints] == ["10.0.1.1"]
    assert nacos.subscribers("big") == 1


async def test_a_failing_subscription_is_that_services_error(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    ticker = Ticker()
    nacos.register("orders", "10.0.0.1", 8080)
    nacos.register("stock", "10.0.0.2", 7000)
    nacos.fail_service("orders", 500, body="boom")
    feed, replace, problems = await start(feeds, pusher(nacos, ticker))
    assert [s.hostname for s in replace.services] == ["stock.default-group.public.nacos"]
    assert problems.errors == {"DEFAULT_GROUP@@orders": "SubscribeServiceRequest: error 500: boom"}
    await ticker.idle()
    nacos.fail_service("orders", None)
    await ticker.poll()  # subscribed again at the next listing
    orders = await next_of(feed, Upsert, ORDERS)
    assert [e.address for e in orders.endpoints] == ["10.0.0.1"]
    assert (await feed.expect(Problems)).errors == {}


async def test_the_grpc_port_setting(feeds: list[Feed]) -> None:
    async with NacosEmulator(grpc_port=0) as nacos:  # any free port, not HTTP + 1000
        nacos.register("orders", "10.0.0.1", 8080)
        assert nacos.grpc_address != f"127.0.0.1:{nacos.port + 1000}"
        _, replace, problems = await start(feeds, pusher(nacos, grpc_port=nacos.grpc_port))
        assert [s.hostname for s in replace.services] == [ORDERS]
        assert problems.status == pushing(nacos)


def test_the_shard_kept_per_key_is_the_snapshot_of_the_records() -> None:
    """Shard (push: one change at a time) and snapshot (poll: all at once) agree, hostname
    collisions, errors and notes included, after every change of a random sequence."""
    rng = random.Random(7)
    settings = parse_settings("n", {"server_addr": "a:1"})
    names = [("DEFAULT_GROUP", "a_b"), ("DEFAULT_GROUP", "a-b"), ("G", "x"), ("G", "y")]
    records: dict[tuple[str, str], nacos_adapter.Record] = {}
    shard = nacos_adapter.Shard()
    for _ in range(300):
        key = rng.choice(names)
        choice = rng.random()
        if choice < 0.2:
            records.pop(key, None)
            shard.set(key, None)
            continue
        old = records.get(key, nacos_adapter.Record())
        if choice < 0.4:
            new = nacos_adapter.Record(old.converted, old.signature, "broken")
        else:
            port = rng.choice([80, 81])
            protocol = rng.choice(["http", "dubbo"])
            hosts = [{"ip": "10.0.0.1", "port": port, "metadata": {"protocol": protocol}}]
            new = nacos_adapter.read_record(settings, key, {"hosts": hosts}, old)
        records[key] = new
        shard.set(key, new)
        whole = nacos_adapter.snapshot(records, {"mode": "m"})
        assert {h: (c.service, c.endpoints) for h, c in shard.winners.items()} == {
            h: (whole.services[h], whole.endpoints[h]) for h in whole.services
        }
        assert shard.problems({"mode": "m"}) == whole.problems


async def test_the_servers_own_requests_on_the_stream_are_answered(
    nacos: NacosEmulator, feeds: list[Feed]
) -> None:
    nacos.register("orders", "10.0.0.1", 8080)
    feed, _, _ = await start(feeds, pusher(nacos))
    detect = json.dumps({"requestId": "cd-1", "module": "internal"})
    nacos.push_raw(detect, "ClientDetectionRequest")
    for _ in range(500):  # until the server has read the answer (a hang guard)
        if grpc_calls(nacos, "ClientDetectionResponse"):
            break
        await asyncio.sleep(0.01)
    assert {"requestId": "cd-1", "resultCode": 200, "errorCode": 0} in nacos.acks
    nacos.push_raw(json.dumps({"requestId": "rs-1", "module": "internal"}), "ConnectResetRequest")
    error = await feed.error()  # answered, then the run ends to reconnect
    assert isinstance(error, NacosUnavailable) and "asked to reconnect" in str(error)


def test_a_task_groups_failure_is_its_first_error_as_it_is() -> None:
    first_error = nacos_adapter.first_error
    down = nacos_adapter.NacosUnavailable("127.0.0.1:9848: Connection is unregistered.")
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [down, ValueError()])])
    assert first_error(nested) is down
    assert first_error(ExceptionGroup("", [down])) is down
