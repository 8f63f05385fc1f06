"""A failing query of one Consul service fails that service alone: it is retried with
backoff while the rest of the registry stays synced; the catalog failing, the agent
unreachable or the token refused still fail the registry.  Against the Consul emulator,
with the retry backoff's sleep injected (:class:`Gate`), so no test waits on a clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from consul.exceptions import ACLPermissionDenied, ConsulException

from registryd.adapter import AdapterContext, Problems, Upsert
from registryd.adapters.consul.adapter import ConsulAdapter, ConsulError
from registryd.adapters.consul.faults import (
    RETRY_FIRST,
    RETRY_MAX,
    ServiceQueryError,
    registry_wide,
    retry_delay,
)
from registryd.adapters.consul.state import ConsulState
from registryd.daemon.supervisor import Supervisor
from registryd.model import Health, ShardKey
from registryd.registry.store import RegistryStore
from registryd.web.views import configz
from tests.adapters import test_consul_adapter
from tests.adapters.test_consul_adapter import HANG_GUARD, Agent, Feed, addresses, until
from tests.support.emulators.consul import ConsulEmulator

feeds = test_consul_adapter.feeds  # the feeds, narrowed to a test's services


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    """The emulator alone: every test here needs a fault only it can inject (a failing or
    hostile reply of one service, a refused connection while a service retries)."""
    async with aiohttp.ClientSession() as session, ConsulEmulator() as emulator:
        yield Agent(session, emulator=emulator)


CATALOG = "/v1/catalog/services"


class Gate:
    """An injected sleep for the retry backoff: records each delay asked for and
    returns only when the test releases it (one :meth:`release` per sleep)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._tokens: asyncio.Queue[None] = asyncio.Queue()
        self._asked = asyncio.Condition()

    async def sleep(self, delay: float) -> None:
        async with self._asked:
            self.delays.append(delay)
            self._asked.notify_all()
        await self._tokens.get()

    async def asked(self, count: int) -> list[float]:
        """Wait until ``count`` sleeps have been asked for; the delays so far."""
        async with self._asked:
            await asyncio.wait_for(
                self._asked.wait_for(lambda: len(self.delays) >= count), HANG_GUARD
            )
        return list(self.delays)

    def release(self) -> None:
        self._tokens.put_nowait(None)


def adapter(agent: Agent, gate: Gate, **settings: object) -> ConsulAdapter:
    """The emulated agent's adapter with the retry sleep behind ``gate``, no jitter."""
    return ConsulAdapter(
        name="consul",
        settings={"address": agent.emulator.url, "wait": "10s", **settings},
        context=AdapterContext(),
        sleep=gate.sleep,
        jitter=lambda: 0.5,
    )


async def problems_until(feed: Feed, condition: Callable[[Problems], bool]) -> Problems:
    """The first Problems yielded that meets ``condition`` (other updates are skipped)."""
    for _ in range(100):
        update = await feed.next()
        if isinstance(update, Problems) and condition(update):
            return update
    raise AssertionError("no such Problems")


def relists(agent: Agent) -> int:
    """Catalog queries without index: the first listing and every restart's."""
    return sum(1 for r in agent.emulator.requests if r.path == CATALOG and "index" not in r.params)


# -- the rule and the backoff, pure ------------------------------------------------------


def test_retry_delay_doubles_from_one_second_up_to_thirty() -> None:
    delays = [retry_delay(n, 0.5) for n in range(8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert (RETRY_FIRST, RETRY_MAX) == (1.0, 30.0)
    assert retry_delay(10_000, 0.5) == 30.0  # no overflow after a long outage


@pytest.mark.parametrize(("failures", "step"), [(0, 1.0), (3, 8.0), (9, 30.0)])
def test_retry_delay_jitter_is_twenty_percent_either_way(failures: int, step: float) -> None:
    assert retry_delay(failures, 0.0) == pytest.approx(step * 0.8)
    assert retry_delay(failures, 0.999999) == pytest.approx(step * 1.2, rel=1e-5)


@pytest.mark.parametrize(
    "error",
    [
        ConsulException("500 rpc error"),
        ConsulException("429 Your IP is issuing too many concurrent connections"),
        ConsulError("X-Consul-Index None is not a number"),
        ValueError("/v1/health/service: expected a list of entries, got dict"),
        TimeoutError(),
    ],
)
def test_one_services_http_error_bad_reply_or_timeout_is_that_services(
    error: BaseException,
) -> None:
    assert not registry_wide(error, catalog=False)
    assert registry_wide(error, catalog=True)  # the catalog failing is always the registry's


@pytest.mark.parametrize(
    "error",
    [
        aiohttp.ClientConnectionError("Cannot connect to host"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ConnectionTimeoutError(),
        ACLPermissionDenied("ACL not found"),
    ],
)
def test_an_unreachable_agent_or_a_refused_token_is_the_registrys(error: BaseException) -> None:
    assert registry_wide(error, catalog=False)


def test_state_keeps_a_failing_services_entries_and_reports_it() -> None:
    state = ConsulState()
    state.catalog("", ["web", "db"])
    entry = {
        "Node": {"Node": "n1", "Address": "10.0.0.1"},
        "Service": {"ID": "web-1", "Service": "web", "Port": 80},
        "Checks": [],
    }
    state.health("", "web", [entry])
    state.replace()
    state.failed("", "web", "GET /v1/health/service/web: 500 boom")
    state.failed("", "db", "GET /v1/health/service/db: 500 boom")
    assert state.changes() == []  # web keeps its endpoints
    assert state.problems().errors == {
        "db": "db: GET /v1/health/service/db: 500 boom; serving no endpoints yet",
        "web": "web: GET /v1/health/service/web: 500 boom; serving its last good endpoints",
    }
    assert state.failing("", "web") and state.failing("", "db")
    state.health("", "web", [entry])  # the same entries again: the error clears
    state.catalog("", ["web"])  # db gone: so is its error
    assert state.problems().errors == {}
    assert not state.failing("", "web") and not state.failing("", "db")
    state.failed("", "gone", "late")  # a late failure of a service no longer listed
    assert state.problems().errors == {}


# -- against the emulator ----------------------------------------------------------------


async def test_one_failing_service_is_retried_alone_and_recovers(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    emulator = agent.emulator
    gate = Gate()
    await agent.register("a")
    await agent.register("b", node="n2", address="10.0.0.2")
    feed = feeds(adapter(agent, gate), agent.prefix)
    assert addresses(await feed.replace()) == ["10.0.0.1", "10.0.0.2"]
    b = agent.name("b")

    emulator.fail_service(b)  # until told otherwise; its blocked query answers at once
    problems = await problems_until(feed, lambda p: b in p.errors)
    assert "500 rpc error: emulated failure" in problems.errors[b]
    assert problems.errors[b].endswith("; serving its last good endpoints")
    assert len(problems.sources[b]) == 1  # its last good entries stay on the debug port

    await agent.register("a", status="critical")  # the others are still followed
    update = await feed.expect(Upsert)
    assert update.service.hostname == agent.host("a")
    assert [e.health for e in update.endpoints] == [Health.UNHEALTHY]

    for count in (2, 3):  # each retry fails again, and waits longer
        gate.release()
        await gate.asked(count)
    assert gate.delays == [1.0, 2.0, 4.0]
    assert emulator.service_failures[b] == 3

    await agent.register("b", "b-2", node="n3", address="10.0.0.3")
    emulator.fail_service(b, None)
    gate.release()  # the retry succeeds: the current state at once, the error gone
    update = await feed.expect(Upsert)
    assert update.service.hostname == agent.host("b")
    assert addresses(update) == ["10.0.0.2", "10.0.0.3"]
    await problems_until(feed, lambda p: b not in p.errors)

    await agent.register("b", "b-4", node="n4", address="10.0.0.4")  # blocking again
    assert addresses(await feed.expect(Upsert)) == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert relists(agent) == 1  # the catalog was listed once: no restart
    assert gate.delays == [1.0, 2.0, 4.0]  # and no retry after the recovery
    blocking = [("index" in r.params) for r in emulator.requests if r.path.endswith(f"/{b}")]
    # listed, blocked until it failed, two failed retries and one that succeeded (retries
    # answer at once: no index), then blocking again
    assert blocking[:6] == [False, True, False, False, False, True]


async def test_a_service_failing_n_times_recovers_with_backoff_starting_over(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    emulator = agent.emulator
    gate = Gate()
    await agent.register("a")
    feed = feeds(adapter(agent, gate), agent.prefix)
    await feed.replace()
    a = agent.name("a")
    emulator.fail_service(a, 503, body="No cluster leader", times=2)
    await problems_until(feed, lambda p: "503 No cluster leader" in p.errors.get(a, ""))
    gate.release()
    await gate.asked(2)
    gate.release()  # the third query succeeds
    await problems_until(feed, lambda p: a not in p.errors)
    emulator.fail_service(a, times=1)  # a new failure: the backoff starts over at 1 s
    await problems_until(feed, lambda p: a in p.errors)
    assert await gate.asked(3) == [1.0, 2.0, 1.0]
    gate.release()
    await problems_until(feed, lambda p: a not in p.errors)
    assert relists(agent) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "Failed to decode JSON"),
        ('{"Node": {}}', "expected a list of entries, got dict"),
    ],
)
async def test_a_malformed_reply_for_one_service_is_that_services_error(
    agent: Agent, feeds: Callable[..., Feed], body: str, message: str
) -> None:
    gate = Gate()
    await agent.register("a")
    await agent.register("b", node="n2", address="10.0.0.2")
    b = agent.name("b")
    agent.emulator.fail_service(b, 200, body=body)  # failing from the start
    feed = feeds(adapter(agent, gate), agent.prefix)
    replace = await feed.replace()  # b does not hold back the others
    assert [s.hostname for s in replace.services] == [agent.host("a")]
    problems = await feed.next()
    assert isinstance(problems, Problems)
    assert message in problems.errors[b]
    assert problems.errors[b].endswith("; serving no endpoints yet")
    agent.emulator.fail_service(b, None)
    gate.release()
    update = await feed.expect(Upsert)
    assert update.service.hostname == agent.host("b")


async def test_a_failing_polled_service_follows_the_same_rule(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    emulator = agent.emulator
    gate = Gate()
    for i, base in enumerate(("a", "b", "c")):
        await agent.register(base, node=f"n{i}", address=f"10.0.0.{i + 1}")
    # the catalog, its two signals and a are watched; b and c are polled
    feed = feeds(adapter(agent, gate, max_watches=4, poll_interval=0.2), agent.prefix)
    await feed.replace()
    c = agent.name("c")
    emulator.fail_service(c)
    # a registration reads the polled services again: c fails, b goes on
    await agent.register("b", "b-2", node="n9", address="10.0.0.9")
    assert addresses(await feed.expect(Upsert)) == ["10.0.0.2", "10.0.0.9"]
    problems = await problems_until(feed, lambda p: c in p.errors)
    assert "500 rpc error: emulated failure" in problems.errors[c]
    assert problems.warnings[0].startswith("2 of 3 services are not watched")

    gate.release()
    assert await gate.asked(2) == [1.0, 2.0]  # retried with the backoff, failing again
    emulator.fail_service(c, None)
    await agent.register("c", "c-2", node="n8", address="10.0.0.8")
    gate.release()
    update = await feed.expect(Upsert)
    assert update.service.hostname == agent.host("c")
    assert addresses(update) == ["10.0.0.3", "10.0.0.8"]
    await problems_until(feed, lambda p: c not in p.errors)
    paths = {r.path for r in emulator.requests if r.path.endswith(c) and "index" in r.params}
    assert not paths  # still polled, never watched
    assert relists(agent) == 1


async def test_the_registry_stays_synced_and_configz_shows_the_services_error(
    agent: Agent,
) -> None:
    emulator = agent.emulator
    gate = Gate()
    await agent.register("a")
    await agent.register("b", node="n2", address="10.0.0.2")
    store = RegistryStore()
    supervisor = Supervisor(store, backoff=(0.05,))
    key = ShardKey("consul", "consul")
    supervisor.start(key, adapter(agent, gate))
    b = agent.name("b")

    def shown() -> dict[str, str]:
        (registry,) = configz(store, [(key, {})], supervisor.restarts)
        errors: dict[str, str] = registry["errors"]
        return errors

    try:
        await until(lambda: store.shards[key].synced)
        emulator.fail_service(b)
        await until(lambda: b in shown())
        assert "emulated failure" in shown()[b]
        assert store.shards[key].synced and supervisor.restarts.get(key, 0) == 0
        assert [e.address for e in store.view.services[agent.host("b")].endpoints] == ["10.0.0.2"]
        emulator.fail_service(b, None)
        gate.release()
        await until(lambda: b not in shown())
        assert store.shards[key].synced and supervisor.restarts.get(key, 0) == 0
        assert relists(agent) == 1
    finally:
        await supervisor.stop()


async def test_the_catalog_failing_still_fails_the_registry(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    gate = Gate()
    await agent.register("a")
    feed = feeds(adapter(agent, gate), agent.prefix)
    await feed.replace()
    agent.emulator.fail(500)  # every read, the catalog's included
    error = await feed.error()
    assert isinstance(error, ConsulError) and "500" in str(error)


async def test_the_agent_going_away_while_a_service_retries_fails_the_registry(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    emulator = agent.emulator
    gate = Gate()
    await agent.register("a")
    feed = feeds(adapter(agent, gate), agent.prefix)
    await feed.replace()
    emulator.fail_service(agent.name("a"))
    await gate.asked(1)
    await emulator.stop()
    gate.release()  # whichever query notices first, the registry fails
    error = await feed.error()
    assert isinstance(error, ConsulError) and not isinstance(error, ServiceQueryError)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[" + "{}," * 3000 + "{}]", "the answer is larger than 8192 bytes (max_response_bytes)"),
        (
            "[" + "{}," * 1000 + "{}]",
            "the answer holds more than 512 objects and arrays (1002) (max_response_bytes)",
        ),
        ("[" * 100 + "]" * 100, "the answer is nested deeper than 64 levels"),
    ],
    ids=["bytes", "items", "depth"],
)
async def test_a_reply_over_the_limits_is_that_services_error_naming_the_limit(
    agent: Agent, feeds: Callable[..., Feed], body: str, message: str
) -> None:
    await agent.register("a")
    await agent.register("b", node="n2", address="10.0.0.2")
    b = agent.name("b")
    agent.emulator.fail_service(b, 200, body=body)
    feed = feeds(adapter(agent, Gate(), max_response_bytes=8192), agent.prefix)
    replace = await feed.replace()
    assert [s.hostname for s in replace.services] == [agent.host("a")]
    problems = await feed.next()
    assert isinstance(problems, Problems)
    assert problems.errors[b] == (
        f"{b}: GET /v1/health/service/{b}: ConsulError: {message}; serving no endpoints yet"
    )
