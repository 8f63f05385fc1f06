"""The Consul adapter against the Consul emulator and a real Consul agent: settings,
blocking queries, increments, failures, ACL tokens and TLS.

The ``agent`` fixture runs a test twice: against the emulator (a fresh one per test) and
against a real ``consul agent -dev`` (see tests/support/consul_agent.py; one per module,
as it takes seconds to start).  On the real agent a test registers its nodes and services
under a random prefix through ``/v1/catalog/register`` and removes them afterwards, and
its adapter reads through a recording proxy (tests/support/recorder.py), so it sees the
adapter's requests as the emulator shows them.  A test that needs a fault only the
emulator can make is marked ``emulator_only`` and says why; a test of what only a real
agent does (its own node and checks, maintenance, ACL policies) is marked ``real_only``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from registryd.adapter import (
    Adapter,
    AdapterContext,
    ConfigError,
    Delete,
    Problems,
    Replace,
    Update,
    Upsert,
)
from registryd.adapters.consul import ConsulAdapter
from registryd.adapters.consul.adapter import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    QUERY_BURST,
    QUERY_RATE,
    ConsulError,
    RateLimiter,
    next_index,
    poll_slots,
    watch_budget,
)
from registryd.adapters.consul.settings import ConsulSettings, format_wait, parse_settings
from registryd.daemon.supervisor import Supervisor
from registryd.model import Health, ShardKey
from registryd.registry.store import RegistryStore
from registryd.testing import AdapterContract
from tests.adapters.feed import Feed as SharedFeed
from tests.support.certs import TlsFiles, make_tls
from tests.support.consul_agent import NODE, ConsulAgent, consul_with_acls, start_consul
from tests.support.emulators.consul import ConsulEmulator
from tests.support.fake_time import FakeTime
from tests.support.recorder import RecordingProxy

HANG_GUARD = 60.0  # seconds: stops a hung test, far below the 5-minute waits asked for
SECRET = "5e3f1c2a-0b1d-4c6e-9f00-7a5b3c2d1e0f"
T = TypeVar("T")


def make(settings: dict[str, Any], name: str = "consul", **timing: Any) -> ConsulAdapter:
    """An adapter; ``timing``: its ``sleep``, ``pace``, ``clock`` or ``jitter``."""
    return ConsulAdapter(name=name, settings=settings, context=AdapterContext(), **timing)


class Paces:
    """The adapter's ``pace`` (rate limit, backoff, poll interval): each wait asked for is
    recorded under the name of the watch task that asked, then really waited, or with
    ``fake`` on that clock (see :class:`tests.support.fake_time.FakeTime`)."""

    def __init__(self, fake: FakeTime | None = None) -> None:
        self.fake = fake
        self.asked: dict[str, list[float]] = defaultdict(list)

    async def sleep(self, delay: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.asked[task.get_name()].append(delay)
        await (self.fake.sleep(delay) if self.fake else asyncio.sleep(delay))

    def of(self, target: str) -> list[float]:
        """The waits of the watch of ``target`` (a path such as /v1/catalog/services)."""
        return self.asked[f"consul:GET {target}"]


def watch_task(target: str) -> asyncio.Task[Any] | None:
    """The running watch task of ``target`` (a path), if any."""
    name = f"consul:GET {target}"
    return next((t for t in asyncio.all_tasks() if t.get_name() == name and not t.done()), None)


emulator_only = pytest.mark.parametrize("agent", ["emulator"], indirect=True)
real_only = pytest.mark.parametrize("agent", ["real"], indirect=True)


class RealAgent:
    """The module's real Consul agent; :meth:`crash` and :meth:`restart` (on the same
    ports, with an empty catalog) for the tests of an agent that goes away."""

    def __init__(self, workdir: Path) -> None:
        self.process: ConsulAgent = start_consul(workdir, workdir / "consul.log")

    @property
    def url(self) -> str:
        return f"http://{self.process.address}"

    def crash(self) -> None:
        self.process.kill()

    def restart(self) -> None:
        self.process = self.process.restart()

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture(scope="module")
def real_consul(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealAgent]:
    """One real Consul agent for the module's tests (skips them without the binary)."""
    real = RealAgent(tmp_path_factory.mktemp("consul"))
    try:
        yield real
    finally:
        real.stop()


Server = ConsulEmulator | RecordingProxy


class Agent:
    """The agent under test: the emulator, or a real one read through a recording proxy.

    ``url`` is what adapters read (the emulator, or the proxy); ``api`` is where the test
    writes (the emulator, or the real agent itself); ``server`` records the requests."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        emulator: ConsulEmulator | None = None,
        proxy: RecordingProxy | None = None,
        api: str = "",
        direct: str = "",
        token: str | None = None,
    ) -> None:
        """``direct``: adapters read the real agent at that URL, unrecorded."""
        server = emulator or proxy
        self._server = server
        self.url = direct or (server.url if server is not None else "")
        self.api = (api or self.url).rstrip("/")
        self.token = token
        self._emulator = emulator
        self.session = session
        self.prefix = "t-" if emulator is not None else f"rdt{uuid.uuid4().hex[:6]}-"
        self.nodes: set[str] = set()

    @property
    def real(self) -> bool:
        return self._emulator is None

    @property
    def server(self) -> Server:
        """What records the adapter's requests: the emulator, or the recording proxy."""
        assert self._server is not None, "this agent's adapters read the real agent unrecorded"
        return self._server

    @property
    def emulator(self) -> ConsulEmulator:
        assert self._emulator is not None, "an emulator-only test must be marked emulator_only"
        return self._emulator

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    def host(self, base: str) -> str:
        return f"{self.name(base)}.service.consul"

    def adapter(self, *, timing: dict[str, Any] | None = None, **settings: Any) -> ConsulAdapter:
        values: dict[str, Any] = {"address": self.url, "wait": "10s"}
        if self.token:
            values["token"] = self.token
        chosen = {k: v for k, v in {**values, **settings}.items() if v is not None}
        return make(chosen, **(timing or {}))  # a setting given as None is left out

    async def register(
        self,
        service: str,
        service_id: str | None = None,
        *,
        node: str = "n1",
        address: str = "10.0.0.1",
        port: int = 8080,
        status: str = "passing",
        meta: dict[str, str] | None = None,
        tags: list[str] | None = None,
        proxy_for: str | None = None,
    ) -> None:
        """Register an instance; with ``proxy_for``, a Connect sidecar proxy of that
        service (``Kind: connect-proxy``)."""
        name, node_name = self.name(service), self.name(node)
        service_id = service_id or name
        self.nodes.add(node_name)
        service_body: dict[str, Any] = {
            "ID": service_id,
            "Service": name,
            "Port": port,
            "Meta": meta or {},
            "Tags": tags or [],
        }
        if proxy_for is not None:
            service_body["Kind"] = "connect-proxy"
            service_body["Proxy"] = {"DestinationServiceName": self.name(proxy_for)}
        payload = {
            "Node": node_name,
            "Address": address,
            "Service": service_body,
            "Check": {
                "CheckID": f"service:{service_id}",
                "Name": "health",
                "ServiceID": service_id,
                "Status": status,
            },
        }
        await self.put("/v1/catalog/register", payload)

    async def set_check(self, service: str, status: str, *, node: str = "n1") -> None:
        """Set the status of the check of ``service`` (registered by :meth:`register`)
        as an agent syncs a check: the check alone, the node and service left as they
        are."""
        service_id = self.name(service)
        check = {"CheckID": f"service:{service_id}", "Name": "health", "ServiceID": service_id}
        payload = {"Node": self.name(node), "SkipNodeUpdate": True, "Check": check}
        await self.put("/v1/catalog/register", {**payload, "Check": {**check, "Status": status}})

    async def deregister(self, node: str = "n1", service_id: str | None = None) -> None:
        payload: dict[str, Any] = {"Node": self.name(node)}
        if service_id is not None:
            payload["ServiceID"] = service_id
        await self.put("/v1/catalog/deregister", payload)

    async def put(self, path: str, payload: dict[str, Any] | None = None) -> None:
        """PUT ``payload`` (JSON) to ``path`` of the agent's API; fails on non-200."""
        headers = {"X-Consul-Token": self.token} if self.token else {}
        timeout = aiohttp.ClientTimeout(total=10)
        async with self.session.put(
            self.api + path, json=payload, headers=headers, timeout=timeout
        ) as response:
            assert response.status == 200, await response.text()

    async def get(self, path: str) -> Any:
        """GET ``path`` of the agent's API: the decoded body (fails on non-200)."""
        headers = {"X-Consul-Token": self.token} if self.token else {}
        timeout = aiohttp.ClientTimeout(total=10)
        async with self.session.get(self.api + path, headers=headers, timeout=timeout) as reply:
            assert reply.status == 200, await reply.text()
            return await reply.json()

    async def cleanup(self) -> None:
        for node in sorted(self.nodes):
            await self.put("/v1/catalog/deregister", {"Node": node})


@pytest.fixture(params=["emulator", "real"])
async def agent(request: pytest.FixtureRequest) -> AsyncIterator[Agent]:
    """The emulator (fresh), or the module's real agent behind a recording proxy."""
    async with aiohttp.ClientSession() as session:
        if request.param == "emulator":
            async with ConsulEmulator() as emulator:
                yield Agent(session, emulator=emulator)
            return
        real: RealAgent = request.getfixturevalue("real_consul")
        async with RecordingProxy(real.url) as proxy:
            agent = Agent(session, proxy=proxy, api=real.url)
            try:
                yield agent
            finally:
                await agent.cleanup()


class Feed(SharedFeed):
    """The shared feed, narrowed to this test's services (hostnames with ``prefix``)."""

    def __init__(self, adapter: ConsulAdapter, prefix: str = "") -> None:
        self.prefix = prefix
        self.problems: Problems | None = None
        super().__init__(adapter, HANG_GUARD)

    def _mine(self, hostname: str) -> bool:
        return hostname.startswith(self.prefix)

    def seen(self, update: Update) -> Update:
        if isinstance(update, Problems):
            self.problems = update
        return update

    async def replace(self, timeout: float = HANG_GUARD) -> Replace:
        """The first update, which must be a Replace; only our services are kept."""
        update = await self.next(timeout)
        assert isinstance(update, Replace), update
        return Replace(
            services=tuple(s for s in update.services if self._mine(s.hostname)),
            endpoints=tuple(e for e in update.endpoints if self._mine(e.hostname)),
            revision=update.revision,
        )

    async def change(self, timeout: float = HANG_GUARD) -> Upsert | Delete:
        """The next Upsert/Delete of ours (Problems are recorded and skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            update = await self.next(max(deadline - time.monotonic(), 0.001))
            if isinstance(update, Upsert) and self._mine(update.service.hostname):
                return update
            if isinstance(update, Delete) and self._mine(update.hostname):
                return update
            assert not isinstance(update, Replace), "a second Replace without a restart"

    async def expect(self, kind: type[T], timeout: float | None = HANG_GUARD) -> T:
        update = await self.change(timeout or HANG_GUARD)
        assert isinstance(update, kind), update
        return update


@pytest.fixture
def feeds(feeds: list[SharedFeed]) -> Callable[..., Feed]:
    """The shared ``feeds`` (see conftest.py) as a factory: ``feeds(adapter, prefix)``."""

    def start(adapter: ConsulAdapter, prefix: str = "") -> Feed:
        feed = Feed(adapter, prefix)
        feeds.append(feed)
        return feed

    return start


def addresses(update: Upsert | Replace) -> list[str]:
    return sorted(e.address for e in update.endpoints)


# -- settings -----------------------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = parse_settings("c", {})
    assert settings == ConsulSettings()
    assert settings.base_url == "http://127.0.0.1:8500"
    assert settings.wait == 300.0 and format_wait(settings.wait) == "300s"
    assert (settings.hostname, settings.namespace) == ("{service}.service.consul", "default")
    assert settings.verify and settings.warning_is_healthy and not settings.stale
    assert settings.kinds == frozenset({""})  # typical services only
    assert (settings.max_watches, settings.poll_interval) == (None, 1.0)  # None: auto
    assert settings.max_response_bytes == 16 * 2**20


def test_settings_kinds() -> None:
    kinds = parse_settings("c", {"kinds": ["typical", "connect-proxy", "api-gateway"]}).kinds
    assert kinds == frozenset({"", "connect-proxy", "api-gateway"})
    assert parse_settings("c", {"kinds": ["mesh-gateway"]}).kinds == frozenset({"mesh-gateway"})


@pytest.mark.parametrize(
    ("address", "scheme", "url"),
    [
        ("consul.local:8600", None, "http://consul.local:8600"),
        ("consul.local", None, "http://consul.local:8500"),
        ("https://consul.local", None, "https://consul.local:8501"),
        ("http://10.0.0.1:8500/", None, "http://10.0.0.1:8500"),
        ("[::1]:8500", "https", "https://[::1]:8500"),
        ("::1", None, "http://[::1]:8500"),
    ],
)
def test_settings_addresses(address: str, scheme: str | None, url: str) -> None:
    settings = {"address": address} | ({"scheme": scheme} if scheme else {})
    assert parse_settings("c", settings).base_url == url


def test_settings_wait_and_datacenters() -> None:
    settings = parse_settings("c", {"wait": "1m30s", "datacenters": ["dc1", "dc2"]})
    assert settings.wait == 90.0 and settings.datacenters == ("dc1", "dc2")
    assert parse_settings("c", {"wait": 2.5}).wait == 2.5
    assert format_wait(2.5) == "2500ms"
    assert parse_settings("c", {"datacenter": "eu-1"}).datacenters == ("eu-1",)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"adress": "x"}, "unknown settings ['adress']"),
        ({"address": ""}, "'address'"),
        ({"address": "ftp://x:1"}, "scheme must be http or https"),
        ({"address": "http://x:1/v1"}, "scheme://host[:port]"),
        ({"address": "x:99999"}, "out of range"),
        ({"address": "a b:80"}, "'address'"),
        ({"address": "http://x", "scheme": "https"}, "contradicts"),
        ({"scheme": "tcp"}, "'scheme' must be http or https"),
        ({"datacenter": "dc1", "datacenters": ["dc2"]}, "not both"),
        ({"datacenters": []}, "non-empty list"),
        ({"datacenters": ["dc1", "dc1"]}, "twice"),
        ({"datacenter": "dc 1"}, "'datacenter': 'dc 1' is not a datacenter name"),
        ({"wait": "5 minutes"}, "'wait' must be a duration"),
        ({"wait": "11m"}, "between 100ms and 10m"),
        ({"wait": 0}, "between 100ms and 10m"),
        ({"wait": True}, "'wait' must be a duration"),
        ({"hostname": "{name}.consul"}, "only {service} and {datacenter}"),
        ({"hostname": "{service!r}.consul"}, "only {service} and {datacenter}"),
        ({"hostname": "static.consul"}, "must contain {service}"),
        ({"hostname": "{service}.{datacenter}.consul"}, "set 'datacenter'"),
        ({"hostname": "{service}..consul"}, "does not give a DNS name"),
        ({"hostname": "{service}.{datacenter}", "datacenter": "eu_1"}, "not give a DNS name"),
        ({"hostname": "{service"}, "'hostname'"),
        ({"namespace": "Prod"}, "'namespace'"),
        ({"verify": "no"}, "'verify' must be true or false"),
        ({"stale": 1}, "'stale' must be true or false"),
        ({"warning_is_healthy": 1}, "'warning_is_healthy' must be true or false"),
        ({"ca_file": "/ca.pem"}, "need scheme https"),
        ({"scheme": "https", "key_file": "/k.pem"}, "'key_file' needs 'cert_file'"),
        ({"scheme": "https", "cert_file": 3}, "'cert_file' must be a file path"),
        ({"address": "http://user:pw@x:1"}, "must not carry credentials"),
        ({"kinds": []}, "'kinds' must be a non-empty list"),
        ({"kinds": "typical"}, "'kinds' must be a non-empty list"),
        ({"kinds": ["Connect Proxy"]}, "'Connect Proxy' is not a kind name"),
        ({"kinds": ["typical", "typical"]}, "lists a kind name twice"),
        ({"max_watches": 1}, "'max_watches' must leave room for service watches"),
        ({"max_watches": 6, "datacenters": ["a", "b"]}, "beside the 6 watches of the catalog"),
        ({"max_watches": 0}, "'max_watches' must be a whole number >= 1"),
        ({"max_response_bytes": 100}, "'max_response_bytes' must be a whole number >= 1024"),
        ({"poll_interval": 0}, "'poll_interval' must be > 0"),
    ],
)
def test_settings_errors_name_the_registry(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"registry 'reg' \(consul\): ") as caught:
        make(settings, name="reg")
    assert message in str(caught.value)
    assert "pw" not in str(caught.value)


@pytest.mark.parametrize("token", [12345, f"{SECRET} ", f"{SECRET}\n", ["x"]])
def test_bad_token_is_not_shown(token: Any) -> None:
    with pytest.raises(ConfigError, match="'token' must be a string") as caught:
        make({"token": token})
    assert SECRET not in str(caught.value) and "12345" not in str(caught.value)


def test_token_is_not_in_repr() -> None:
    adapter = make({"token": SECRET, "address": "https://consul:8501"})
    assert adapter.settings.token == SECRET
    for text in (repr(adapter), str(adapter), repr(adapter.settings), str(vars(adapter))):
        assert SECRET not in text
    assert "https://consul:8501" in repr(adapter)


# -- blocking-query rules, pure -----------------------------------------------------------


@pytest.mark.parametrize(
    ("last", "returned", "expected"),
    [
        (None, 0, 1),  # an index below 1 is sent as 1
        (None, 7, 7),
        (7, 7, 7),  # the wait ran out: same index again
        (7, 9, 9),
        (9, 3, 0),  # backwards: start over with a query that does not block
        (0, 0, 1),
        (1, 0, 0),
    ],
)
def test_next_index(last: int | None, returned: int, expected: int) -> None:
    assert next_index(last, returned) == expected


def test_rate_limiter_takes_a_token_per_query() -> None:
    """The token bucket itself is tested in tests/unit/test_ratelimit.py."""
    clock = FakeTime()
    limiter = RateLimiter(clock=clock)
    assert (limiter.rate, limiter.burst) == (QUERY_RATE, QUERY_BURST) == (1.0, 2)
    assert [limiter.delay(), limiter.delay()] == [0.0, 0.0]  # the burst
    assert limiter.delay() == pytest.approx(1.0)
    limiter.record(early=True, moved=False)  # backoff 1 s
    assert limiter.delay() == pytest.approx(2.0)  # the token's wait is longer
    limiter.record(early=True, moved=False)
    limiter.record(early=True, moved=False)  # backoff 4 s
    assert limiter.delay() == 4.0  # longer than the token's wait (3 s)


def test_rate_limiter_backs_off_while_the_server_does_not_block() -> None:
    clock = FakeTime()
    limiter = RateLimiter(rate=1000.0, burst=2, clock=clock)
    delays = []
    for _ in range(7):
        limiter.record(early=True, moved=False)
        clock.now += 100
        delays.append(limiter.delay())
    assert delays == [BACKOFF_MIN, 2.0, 4.0, 8.0, BACKOFF_MAX, BACKOFF_MAX, BACKOFF_MAX]
    limiter.record(early=True, moved=True)  # the index moved: no more backoff
    clock.now += 100
    assert limiter.delay() == 0.0
    limiter.record(early=False, moved=False)  # the wait ran out: normal
    assert limiter.delay() == 0.0


# -- against an agent ---------------------------------------------------------------------


async def test_full_state_first(agent: Agent, feeds: Callable[..., Feed]) -> None:
    await agent.register("web", "web-1", meta={"protocol": "http"}, tags=["version|v1"])
    await agent.register("web", "web-2", node="n2", address="10.0.0.2", status="critical")
    await agent.register("db", port=5432, node="n3", address="10.0.0.3")
    feed = feeds(agent.adapter(), agent.prefix)
    replace = await feed.replace()
    assert [s.hostname for s in replace.services] == [agent.host("db"), agent.host("web")]
    web = next(s for s in replace.services if s.hostname == agent.host("web"))
    assert [(p.number, p.protocol, p.name) for p in web.ports] == [(8080, "HTTP", "http-8080")]
    endpoints = {e.address: e for e in replace.endpoints}
    assert sorted(endpoints) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert endpoints["10.0.0.1"].health is Health.HEALTHY
    assert endpoints["10.0.0.1"].labels["version"] == "v1"
    assert endpoints["10.0.0.2"].health is Health.UNHEALTHY
    assert endpoints["10.0.0.3"].port == 5432
    problems = await feed.next()
    assert isinstance(problems, Problems)
    assert {k: v for k, v in problems.errors.items() if k.startswith(agent.prefix)} == {}
    assert len(problems.sources[agent.name("web")]) == 2


async def test_the_servers_consul_service_is_listed_by_the_agent_but_not_served(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    async with agent.session.get(agent.url + "/v1/catalog/services") as response:
        assert "consul" in await response.json()  # as every Consul cluster lists it
    await agent.register("web")
    feed = feeds(agent.adapter())  # every hostname, not only this test's
    replace = await feed.replace()
    hosts = [s.hostname for s in replace.services]
    assert agent.host("web") in hosts
    assert "consul.service.consul" not in hosts
    problems = await feed.next()
    assert isinstance(problems, Problems)
    assert not any(key.startswith("consul") for key in [*problems.errors, *problems.sources])
    await agent.register("api", node="n2", address="10.0.0.2")  # others still sync
    change = await feed.change()
    assert isinstance(change, Upsert) and change.service.hostname == agent.host("api")
    paths = {r.path for r in agent.server.requests}  # no query asks about the servers' service
    assert "/v1/health/service/consul" not in paths


async def test_connect_sidecar_proxies_are_left_out_unless_asked_for(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    await agent.register("web", "web-1")
    await agent.register("web-sidecar-proxy", "web-1-sidecar", port=21000, proxy_for="web")
    feed = feeds(agent.adapter(), agent.prefix)
    replace = await feed.replace()
    assert [s.hostname for s in replace.services] == [agent.host("web")]
    assert {(e.address, e.port) for e in replace.endpoints} == {("10.0.0.1", 8080)}
    problems = await feed.next()
    assert isinstance(problems, Problems)
    # left out without an error, but its entries are on the debug port
    assert not any(agent.name("web-sidecar-proxy") in key for key in problems.errors)
    (proxy,) = problems.sources[agent.name("web-sidecar-proxy")]
    assert proxy["Service"]["Kind"] == "connect-proxy"

    both = feeds(agent.adapter(kinds=["typical", "connect-proxy"]), agent.prefix)
    replace = await both.replace()
    hosts = [s.hostname for s in replace.services]
    assert hosts == sorted([agent.host("web"), agent.host("web-sidecar-proxy")])


async def test_register_deregister_and_health_changes(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    await agent.register("web", "web-1")
    feed = feeds(agent.adapter(), agent.prefix)
    replace = await feed.replace()
    assert addresses(replace) == ["10.0.0.1"]

    await agent.register("web", "web-2", node="n2", address="10.0.0.2")
    upsert = await feed.expect(Upsert)
    assert addresses(upsert) == ["10.0.0.1", "10.0.0.2"]
    # each update carries the X-Consul-Index it was read at
    assert int(upsert.revision) > int(replace.revision) > 0

    await agent.register("web", "web-2", node="n2", address="10.0.0.2", status="critical")
    update = await feed.expect(Upsert)
    assert {e.address: e.health for e in update.endpoints} == {
        "10.0.0.1": Health.HEALTHY,
        "10.0.0.2": Health.UNHEALTHY,
    }

    await agent.register("api", port=9000)  # a new service: a new watch
    update = await feed.expect(Upsert)
    assert update.service.hostname == agent.host("api")

    await agent.deregister("n2", "web-2")
    assert addresses(await feed.expect(Upsert)) == ["10.0.0.1"]

    await agent.deregister("n1")  # the node and everything on it
    deleted = {(await feed.expect(Delete)).hostname, (await feed.expect(Delete)).hostname}
    assert deleted == {agent.host("web"), agent.host("api")}


async def test_a_long_wait_returns_on_change(agent: Agent, feeds: Callable[..., Feed]) -> None:
    await agent.register("web", "web-1")
    feed = feeds(agent.adapter(wait="5m"), agent.prefix)
    await feed.replace()
    await blocking(agent, "web")
    await agent.register("web", "web-2", node="n2", address="10.0.0.2")
    # the blocked query answers the change: well before its 5 minutes are up
    upsert = await feed.expect(Upsert, timeout=HANG_GUARD)
    assert addresses(upsert) == ["10.0.0.1", "10.0.0.2"]


async def test_stopped_service_watch_sends_no_more_queries(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    emulator = agent.server
    await agent.register("web")
    await agent.register("db", node="n2")
    feed = feeds(agent.adapter(), agent.prefix)
    await feed.replace()
    path = f"/v1/health/service/{agent.name('db')}"
    watch = watch_task(path)
    assert watch is not None
    await agent.deregister("n2")
    assert (await feed.expect(Delete)).hostname == agent.host("db")
    # the watch's task is over (cancelled): no query of db can be sent after this...
    await asyncio.wait_for(asyncio.gather(watch, return_exceptions=True), HANG_GUARD)
    assert watch.cancelled()
    before = emulator.count(path)
    # ...and handling a later change (the catalog's too) starts no new one
    await agent.register("web", "web-2", node="n3", address="10.0.0.3")
    await agent.register("api", node="n3", address="10.0.0.3")
    assert (await feed.expect(Upsert)).service.hostname == agent.host("web")
    assert (await feed.expect(Upsert)).service.hostname == agent.host("api")
    assert watch_task(path) is None
    assert emulator.count(path) == before


async def test_queries_use_index_wait_stale_and_datacenter(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    await agent.register("web")
    feed = feeds(agent.adapter(wait="7s", stale=True, datacenter="dc1"), agent.prefix)
    await feed.replace()
    await blocking(agent, "web")  # each path's second query is the blocking one
    for path in ("/v1/catalog/services", f"/v1/health/service/{agent.name('web')}"):
        first, second = [r for r in agent.server.requests if r.path == path][:2]
        assert "index" not in first.params  # the first query does not block
        assert second.params["index"] == first_index(agent, path)
        assert second.params["wait"] == "7s"
        assert all(r.params.get("stale") == "1" for r in (first, second))
        assert all(r.params.get("dc") == "dc1" for r in (first, second))


async def test_services_beyond_max_watches_are_read_on_a_change(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    """Services beyond ``max_watches`` are read again when the catalog, a node or a
    check changes, not on a timer: a check of a watched service leaves them alone, one
    of a polled service reads that service alone, a registration reads them all."""
    emulator = agent.server  # records the adapter's requests
    for i, base in enumerate(("a", "b", "c", "d")):
        await agent.register(base, address=f"10.0.0.{i + 1}")
    # the catalog, its two signals and two services are watched; c and d are polled
    feed = feeds(agent.adapter(max_watches=5, poll_interval=0.3), agent.prefix)
    replace = await feed.replace()
    assert len(replace.services) == 4
    problems = await feed.next()
    assert isinstance(problems, Problems)
    (warning,) = problems.warnings
    assert warning.startswith(
        "2 of 4 services are not watched but read again when the catalog, a node or a check "
        "changes (at most every 0.3s)"
    )
    assert problems.status == {
        "mode": "blocking queries: 2 of 4 services watched",
        "max_watches": "5",
        "polled": "2 services, read again on a change (at most every 0.3s)",
    }

    def queries(base: str) -> list[dict[str, str]]:
        path = f"/v1/health/service/{agent.name(base)}"
        return [dict(r.params) for r in emulator.requests if r.path == path]

    # a check of watched a turns critical, as an agent syncs it: a is read (blocking),
    # c and d are not; then a check of polled c: c alone is read, at once.  (A real
    # agent also writes to its catalog on its own, its node and its consul service, and
    # each such write reads c and d again: what was not read is checked on the emulator.)
    reads = {base: len(queries(base)) for base in "cd"}
    await agent.set_check("a", "critical")
    change = await feed.change()
    assert isinstance(change, Upsert) and change.service.hostname == agent.host("a")
    assert agent.real or {base: len(queries(base)) for base in "cd"} == reads

    await agent.set_check("c", "critical")
    change = await feed.change()
    assert isinstance(change, Upsert) and change.service.hostname == agent.host("c")
    assert [e.health for e in change.endpoints] == [Health.UNHEALTHY]
    assert agent.real or len(queries("d")) == reads["d"]

    await agent.register("d", "d-2", node="n2", address="10.0.0.9")  # a registration
    change = await feed.change()
    assert isinstance(change, Upsert) and change.service.hostname == agent.host("d")
    assert sorted(e.address for e in change.endpoints) == ["10.0.0.4", "10.0.0.9"]
    assert not any("index" in q for q in queries("d"))  # never a blocking query
    assert any("index" in q for q in queries("a"))  # a blocking watch

    await agent.deregister(service_id=agent.name("a"))  # a watch freed: c is watched now
    assert await feed.change() == Delete(hostname=agent.host("a"))
    deadline = time.monotonic() + HANG_GUARD
    while not any("index" in q for q in queries("c")):
        assert time.monotonic() < deadline, "c never became a blocking watch"
        await asyncio.sleep(0.05)
    while feed.problems is None or feed.problems.warnings != (
        "1 of 3 services are not watched but read again when the catalog, a node or a check "
        "changes (at most every 0.3s): all 5 blocking queries of 'max_watches' are in use "
        "(raise the agent's limits.http_max_conns_per_client, and 'max_watches' if set, to "
        "watch every service)",
    ):
        assert time.monotonic() < deadline, f"warnings now {feed.problems}"
        with contextlib.suppress(TimeoutError):
            await feed.next(0.1)


@emulator_only
async def test_a_large_catalog_stays_within_the_agents_connection_limit(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    """Emulator only: needs the agent's per-client connection limit scaled down with the
    catalog (a real agent's is set at start, 200 by default)."""
    emulator = agent.emulator
    for i in range(16):
        await agent.register(f"s{i:02d}", address=f"10.0.1.{i + 1}")
    emulator.max_conns_per_client = 14  # the agent's limit, scaled down with the catalog

    # one blocking query per service would need 19 connections; 8 watches + 4 polls fit
    asked: list[tuple[str, float]] = []

    async def pace(delay: float) -> None:  # a sweep's wait is recorded, not waited
        task = asyncio.current_task()
        assert task is not None
        asked.append((task.get_name(), delay))
        await asyncio.sleep(0 if task.get_name().startswith("consul:sweep") else delay)

    timing = {"pace": pace, "jitter": lambda: 0.5}
    feed = feeds(agent.adapter(max_watches=8, poll_interval=30, timing=timing), agent.prefix)
    assert len((await feed.replace()).services) == 16
    # the catalog and its two signals, s00 to s04 are watched; s05 to s15 are polled
    polled = [f"/v1/health/service/{agent.name(f's{i:02d}')}" for i in range(5, 16)]
    assert all(emulator.count(path) == 1 for path in polled)
    await agent.register("s15", "s15-b", node="n2", address="10.0.1.99")  # a polled one
    change = await feed.change()
    assert isinstance(change, Upsert) and len(change.endpoints) == 2
    await until(lambda: all(emulator.count(path) == 2 for path in polled), HANG_GUARD)
    assert [name for name, _ in asked if name.startswith("consul:sweep")] == []  # at once

    # the next change within poll_interval: its sweep waits for the rest of the interval
    await agent.register("s14", "s14-b", node="n3", address="10.0.1.98")
    change = await feed.change()
    assert isinstance(change, Upsert) and len(change.endpoints) == 2
    sweeps = [(n, w) for n, w in asked if n.startswith("consul:sweep")]
    assert sweeps and all(n == "consul:sweep local" and 25 < w <= 30 for n, w in sweeps)
    assert emulator.refused == 0
    await feed.close()

    # watching every service: the queries beyond the agent's limit are refused (429),
    # which fails those services alone; the others are served
    every = feeds(agent.adapter(max_watches=100), agent.prefix)
    served = {s.hostname for s in (await every.replace()).services}
    problems = await every.next()
    assert isinstance(problems, Problems)
    refused = {key for key, error in problems.errors.items() if key.startswith(agent.prefix)}
    assert refused and len(served) + len(refused) == 16
    assert not {agent.host(key) for key in refused} & served
    for key in refused:
        assert "429 Your IP is issuing too many concurrent connections" in problems.errors[key]


async def test_max_watches_auto_follows_the_agents_connection_limit(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    """By default the adapter reads the agent's per-client connection limit and holds
    3/4 of it less 16 for polls: 134 of a real agent's default 200."""
    await agent.register("a")
    feed = feeds(agent.adapter(), agent.prefix)
    await feed.replace()
    problems = await feed.next()
    assert isinstance(problems, Problems) and not problems.warnings
    assert problems.status["max_watches"] == (
        "134 (auto: the agent allows 200 connections per client)"
    )
    assert problems.status["mode"].startswith("blocking queries: ")
    assert "polled" not in problems.status


@emulator_only
async def test_max_watches_auto_stays_within_a_lower_limit(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    """Emulator only: a real agent's limit is set at its start (200 by default); here
    it is scaled down with the catalog."""
    emulator = agent.emulator
    for i in range(16):
        await agent.register(f"s{i:02d}", address=f"10.0.1.{i + 1}")
    emulator.max_conns_per_client = 14  # auto: 6: the catalog, its 2 signals, 3 services
    feed = feeds(agent.adapter(poll_interval=0.2), agent.prefix)
    assert len((await feed.replace()).services) == 16
    problems = await feed.next()
    assert isinstance(problems, Problems)
    assert problems.status["max_watches"] == "6 (auto: the agent allows 14 connections per client)"
    assert problems.status["polled"] == "13 services, read again on a change (at most every 0.2s)"
    await agent.register("s15", "s15-b", node="n2", address="10.0.1.99")  # a polled one
    change = await feed.change()
    assert isinstance(change, Upsert) and len(change.endpoints) == 2
    assert emulator.refused == 0


@pytest.mark.parametrize(
    ("agent_limit", "open_files", "catalogs", "budget"),
    [
        (200, 1 << 20, 1, 134),  # Consul's default limit: 3/4, less 16 for polls
        (20_000, 1 << 20, 1, 14_984),
        (0, 20_000, 1, 14_792),  # no agent limit: 3/4 of the open files beyond 256
        (20_000, 1024, 1, 560),  # the open files are the tighter limit
        (2, 1 << 20, 1, 2),  # always the catalog and one service
        (200, 100, 3, 4),
    ],
)
def test_watch_budget(agent_limit: int, open_files: int, catalogs: int, budget: int) -> None:
    assert watch_budget(agent_limit, open_files, catalogs) == budget


@pytest.mark.parametrize(
    ("agent_limit", "open_files", "slots"),
    [
        (200, 1 << 20, 16),  # Consul's default: 1/8 of 150, at most 16
        (64, 1 << 20, 6),  # 1/8 of 48
        (14, 1 << 20, 4),  # never fewer than 4
        (0, 1 << 20, 16),  # no agent limit: the open files
        (200, 300, 4),  # few open files beyond the reserve
    ],
)
def test_poll_slots_are_an_eighth_of_the_connections_between_4_and_16(
    agent_limit: int, open_files: int, slots: int
) -> None:
    assert poll_slots(agent_limit, open_files) == slots


def first_index(agent: Agent, path: str) -> str:
    """The ``X-Consul-Index`` of the first answer to a query of ``path``."""
    if agent.real:
        assert isinstance(agent.server, RecordingProxy)
        return str(agent.server.replies_of(path)[0].index)
    dc = agent.emulator.datacenters["dc1"]
    if path == "/v1/catalog/services":
        return str(dc.catalog_index)
    return str(dc.health_index(path.rsplit("/", 1)[1]))


@emulator_only
async def test_index_going_backwards_starts_over(agent: Agent, feeds: Callable[..., Feed]) -> None:
    """Emulator only: needs the index to go backwards (a snapshot restore), which a test cannot
    make a real agent do."""
    emulator = agent.emulator
    for i in range(5):  # push the indexes up
        await agent.register("web", f"web-{i}", node=f"n{i}", address=f"10.0.0.{i + 1}")
    feed = feeds(agent.adapter(wait="30s"), agent.prefix)
    await feed.replace()
    await blocking(agent, "web")
    reset_at = time.monotonic()
    emulator.reset_index(1)  # a snapshot restore: blocked queries return with index 1
    path = f"/v1/health/service/{agent.name('web')}"

    def after() -> list[dict[str, str]]:
        return [dict(r.params) for r in emulator.requests if r.path == path and r.at >= reset_at]

    await until(lambda: len(after()) >= 2)
    assert "index" not in after()[0]  # started over from 0...
    assert after()[1]["index"] == "1"  # ...and blocks on the new index
    await agent.deregister("n0")
    update = await feed.expect(Upsert)
    assert addresses(update) == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]


@emulator_only
async def test_index_zero_is_sent_as_one(agent: Agent, feeds: Callable[..., Feed]) -> None:
    """Emulator only: needs replies with ``X-Consul-Index: 0``, which a real agent never sends
    for these endpoints."""
    emulator = agent.emulator
    emulator.zero_index = True
    await agent.register("web")
    feed = feeds(agent.adapter(wait="30s"), agent.prefix)
    await feed.replace()
    await agent.register("web", "web-2", node="n2", address="10.0.0.2")
    assert addresses(await feed.expect(Upsert)) == ["10.0.0.1", "10.0.0.2"]
    for path in ("/v1/catalog/services", f"/v1/health/service/{agent.name('web')}"):
        sent = [r.params.get("index") for r in emulator.requests if r.path == path]
        assert sent[0] is None and len(sent) >= 2
        assert set(sent[1:]) == {"1"}, sent  # never 0 (no index): that would spin


@emulator_only
async def test_queries_returning_at_once_are_rate_limited(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    """Emulator only: needs blocking queries that return at once unchanged (a server that does
    not block)."""
    emulator = agent.emulator
    for name in ("a", "b", "c"):
        await agent.register(name)
    fake = FakeTime(hold=True)  # the clock moves only when the test moves it
    paces = Paces(fake)
    timing = {"pace": paces.sleep, "clock": fake}
    feed = feeds(agent.adapter(wait="30s", timing=timing), agent.prefix)
    await feed.replace()
    paths = ["/v1/catalog/services", "/v1/health/state/any", "/v1/catalog/nodes"]
    paths += [f"/v1/health/service/{agent.name(n)}" for n in "abc"]
    await until(lambda: emulator.inflight == len(paths), HANG_GUARD)  # all blocking
    assert fake.sleeps == []  # the burst of 2: the listing and the first blocking query
    emulator.immediate = True  # every blocking query answers at once, unchanged
    emulator._notify()
    # Each answer came back early with the same index: the next query waits for its
    # token (1/s) or the backoff (1 s doubling up to 15 s), whichever is longer.
    waits = [1.0, 2.0, 4.0, 8.0, BACKOFF_MAX, BACKOFF_MAX]
    for step in range(1, len(waits) + 1):
        await until(lambda: fake.sleeping == len(paths), HANG_GUARD)
        assert all(paces.of(path) == waits[:step] for path in paths), dict(paces.asked)
        assert all(emulator.count(path) == 1 + step for path in paths)  # no query between
        fake.advance_to_next()
    await until(lambda: fake.sleeping == len(paths), HANG_GUARD)
    emulator.immediate = False
    await agent.register("a", "a-2", node="n2", address="10.0.0.2")
    fake.advance_to_next()
    assert addresses(await feed.expect(Upsert)) == ["10.0.0.1", "10.0.0.2"]  # still follows


async def test_acl_token_is_sent_and_never_shown(
    feeds: Callable[..., Feed], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with ConsulEmulator(acl_token=SECRET) as emulator:
        emulator.register(
            {"Node": "n1", "Address": "10.0.0.1", "Service": {"Service": "web", "Port": 80}}
        )
        adapter = make({"address": emulator.address, "token": SECRET, "wait": "10s"})
        feed = feeds(adapter)
        assert addresses(await feed.replace()) == ["10.0.0.1"]
        await until(lambda: any("index" in r.params for r in emulator.requests))  # blocking
        assert emulator.requests and {r.token for r in emulator.requests} == {SECRET}
        assert not any("token" in r.params for r in emulator.requests)  # header only
        emulator.fail(500, "rpc error making call: something broke")
        error = await feed.error()
        assert "500" in str(error)

        emulator.fail(None)
        wrong = feeds(make({"address": emulator.address, "token": "not-the-token"}))
        denied = await wrong.error()
        assert "ACLPermissionDenied: ACL not found" in str(denied)

        assert "filtered results by ACLs" not in caplog.text  # the token reads everything
        anonymous = feeds(make({"address": emulator.address}))
        assert (await anonymous.replace()).services == ()
        assert "no token is set and the agent's default ACL policy is deny" in caplog.text
        assert "filtered results by ACLs" not in caplog.text  # not said to the anonymous token
    for text in (caplog.text, str(error), repr(error), str(denied), repr(adapter)):
        assert SECRET not in text
    chain: BaseException | None = error
    while chain is not None:
        assert SECRET not in str(chain)
        chain = chain.__cause__


@emulator_only
async def test_agent_down_raises_within_seconds(agent: Agent, feeds: Callable[..., Feed]) -> None:
    """Emulator only: stops the agent with queries held open; against the real agent the
    contract's break_registry does the same."""
    emulator = agent.emulator
    await agent.register("web")
    feed = feeds(agent.adapter(wait="5m"), agent.prefix)
    await feed.replace()
    await blocking(agent, "web")
    await emulator.stop()
    # the cut connection fails the blocked queries: not the end of their 5-minute wait
    error = await feed.error(timeout=HANG_GUARD)
    assert isinstance(error, ConsulError)
    assert feed.task.done()


async def test_agent_unreachable_at_start_raises(feeds: Callable[..., Feed]) -> None:
    emulator = ConsulEmulator()
    await emulator.start()
    address = emulator.address
    await emulator.stop()
    error = await feeds(make({"address": address})).error(timeout=HANG_GUARD)
    assert isinstance(error, ConsulError) and "Cannot connect" in str(error)  # refused


@emulator_only
async def test_server_error_raises(agent: Agent, feeds: Callable[..., Feed]) -> None:
    """Emulator only: needs the agent to answer reads with a 500."""
    emulator = agent.emulator
    await agent.register("web")
    feed = feeds(agent.adapter(wait="5m"), agent.prefix)
    await feed.replace()
    emulator.fail(500)
    error = await feed.error()  # the blocked query answers the failure: no 5-minute wait
    assert "500" in str(error) and "emulated failure" in str(error)


@emulator_only
async def test_agent_back_with_changed_state(agent: Agent, feeds: Callable[..., Feed]) -> None:
    """Emulator only: changes the catalog while the agent is down."""
    emulator = agent.emulator
    await agent.register("web")
    await agent.register("db", node="n2", address="10.0.0.2")
    adapter = agent.adapter(wait="5m")
    first = feeds(adapter, agent.prefix)
    await first.replace()
    await emulator.stop()
    await first.error()
    emulator.deregister({"Node": agent.name("n2")})
    emulator.register(
        {
            "Node": agent.name("n3"),
            "Address": "10.0.0.3",
            "Service": {"Service": agent.name("api"), "Port": 9000},
        }
    )
    await emulator.start()
    second = feeds(adapter, agent.prefix)
    replace = await second.replace()
    assert [s.hostname for s in replace.services] == [agent.host("api"), agent.host("web")]
    assert addresses(replace) == ["10.0.0.1", "10.0.0.3"]


@emulator_only
async def test_supervisor_restarts_and_serves_the_new_state(agent: Agent) -> None:
    """Emulator only: changes the catalog while the agent is down."""
    emulator = agent.emulator
    await agent.register("web")
    store = RegistryStore()
    supervisor = Supervisor(store, backoff=(0.05,))
    key = ShardKey("consul", "consul")
    supervisor.start(key, agent.adapter(wait="5m"))
    try:
        await until(lambda: store.shards[key].synced)
        assert agent.host("web") in store.view.services
        await emulator.stop()
        await until(lambda: not store.shards[key].synced)
        assert agent.host("web") in store.view.services  # the last good state stays
        emulator.deregister({"Node": agent.name("n1")})
        emulator.register(
            {
                "Node": agent.name("n2"),
                "Address": "10.0.0.2",
                "Service": {"Service": agent.name("db"), "Port": 5432},
            }
        )
        await emulator.start()
        await until(lambda: store.shards[key].synced)
        assert sorted(h for h in store.view.services if h.startswith(agent.prefix)) == [
            agent.host("db")
        ]
        assert supervisor.restarts[key] >= 1
    finally:
        await supervisor.stop()


async def blocking(agent: Agent, service: str) -> None:
    """Until the catalog and ``service``'s health are blocking queries (as the emulator or
    the recording proxy saw them)."""
    server = agent.server
    paths = ("/v1/catalog/services", f"/v1/health/service/{agent.name(service)}")

    def blocked(path: str) -> bool:
        return any(r.path == path and "index" in r.params for r in server.requests)

    await until(lambda: all(blocked(path) for path in paths), HANG_GUARD)


async def until(condition: Callable[[], bool], timeout: float = HANG_GUARD) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_malformed_entries_are_problems(agent: Agent, feeds: Callable[..., Feed]) -> None:
    """An instance registered with port 0 comes back without a ``Port`` field (Consul's
    ``omitempty``): skipped as one without a port, until it is registered with one."""
    await agent.register("web", "web-1")
    await agent.register("web", "web-0", node="n2", address="10.0.0.2", port=0)
    feed = feeds(agent.adapter(), agent.prefix)
    assert addresses(await feed.replace()) == ["10.0.0.1"]
    problems = await feed.next()
    assert isinstance(problems, Problems)
    key = f"{agent.name('web')}/web-0"
    assert problems.errors[key] == (
        f"{key} on node {agent.name('n2')}: no Service.Port: the instance has no port; "
        "entry skipped"
    )
    await agent.register("web", "web-0", node="n2", address="10.0.0.2", port=8080)
    assert addresses(await feed.expect(Upsert)) == ["10.0.0.1", "10.0.0.2"]
    problems = await feed.next()
    assert isinstance(problems, Problems) and key not in problems.errors


async def test_several_datacenters(feeds: Callable[..., Feed]) -> None:
    async with ConsulEmulator(datacenters=("dc1", "dc2")) as emulator:
        for dc, address in (("dc1", "10.0.0.1"), ("dc2", "10.1.0.1")):
            emulator.register(
                {
                    "Datacenter": dc,
                    "Node": "n1",
                    "Address": address,
                    "Service": {"Service": "web", "Port": 80},
                }
            )
        feed = feeds(
            make(
                {
                    "address": emulator.address,
                    "datacenters": ["dc1", "dc2"],
                    "hostname": "{service}.service.{datacenter}.consul",
                }
            )
        )
        replace = await feed.replace()
        assert [(e.hostname, e.address, e.locality.region) for e in replace.endpoints] == [
            ("web.service.dc1.consul", "10.0.0.1", "dc1"),
            ("web.service.dc2.consul", "10.1.0.1", "dc2"),
        ]
        problems = await feed.next()
        assert isinstance(problems, Problems) and list(problems.sources) == ["dc1/web", "dc2/web"]
        emulator.deregister({"Datacenter": "dc2", "Node": "n1"})
        assert await feed.expect(Delete) == Delete(hostname="web.service.dc2.consul")


async def test_cancelling_closes_every_query(agent: Agent, feeds: Callable[..., Feed]) -> None:
    emulator = agent.server
    for name in ("a", "b", "c"):
        await agent.register(name)
    feed = feeds(agent.adapter(wait="5m"), agent.prefix)
    await feed.replace()
    await until(lambda: emulator.inflight == 6)  # the catalog, its signals, three services
    await feed.close()
    await until(lambda: emulator.inflight == 0)


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path / "pki")


async def test_tls_with_client_certificate(pki: TlsFiles, feeds: Callable[..., Feed]) -> None:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    server.load_cert_chain(pki.server_cert, pki.server_key)
    server.verify_mode = ssl.CERT_REQUIRED  # mutual TLS, as with verify_incoming
    async with ConsulEmulator(ssl_context=server) as emulator:
        emulator.register(
            {"Node": "n1", "Address": "10.0.0.1", "Service": {"Service": "web", "Port": 80}}
        )
        tls = {
            "address": emulator.url,
            "ca_file": str(pki.ca),
            "cert_file": str(pki.client_cert),
            "key_file": str(pki.client_key),
        }
        assert addresses(await feeds(make(tls)).replace()) == ["10.0.0.1"]

        unverified = {**tls, "ca_file": None, "verify": False}  # the client cert still goes
        assert addresses(await feeds(make(unverified)).replace()) == ["10.0.0.1"]

        no_client_cert = {"address": emulator.url, "ca_file": str(pki.ca)}
        assert isinstance(await feeds(make(no_client_cert)).error(), ConsulError)

        unknown_ca = {**tls, "ca_file": str(pki.client_cert)}
        error = await feeds(make(unknown_ca)).error()
        assert "CERTIFICATE_VERIFY_FAILED" in str(error)

        missing = {**tls, "ca_file": str(pki.ca.parent / "nope.pem")}
        error = await feeds(make(missing)).error()
        assert "TLS setup" in str(error)


# -- the shared adapter contract -----------------------------------------------------------


class TestConsulAdapterContract(AdapterContract):
    """registryd's adapter contract, against the emulator and against the real agent (the
    ``server`` fixture runs every test on each; the real agent is the module's, crashed
    and restarted on the same ports by break_registry/heal_registry)."""

    factory = ConsulAdapter
    timeout = 10.0

    @pytest.fixture(autouse=True, params=["emulator", "real"])
    def server(self, request: pytest.FixtureRequest) -> None:
        self.real: RealAgent | None = None
        if request.param == "real":
            self.real = request.getfixturevalue("real_consul")
            self.timeout = 30.0  # a restarted agent elects itself first

    async def setup_registry(self) -> None:
        self.session = aiohttp.ClientSession()
        if self.real is not None:
            self.agent = Agent(self.session, proxy=None, api=self.real.url, direct=self.real.url)
        else:
            self.emulator = ConsulEmulator()
            await self.emulator.start()
            self.agent = Agent(self.session, emulator=self.emulator)

    async def teardown_registry(self) -> None:
        try:
            if self.real is not None:
                if not self.real.process.alive():  # a failed test left it crashed
                    await asyncio.to_thread(self.real.restart)
                await self.agent.cleanup()
            else:
                await self.emulator.stop()
        finally:
            await self.session.close()

    async def create(self) -> Adapter:
        return self.agent.adapter()

    async def add_service(self, name: str) -> str:
        await self.agent.register(name, node=f"{name}-node")
        return self.agent.host(name)

    async def remove_service(self, name: str) -> None:
        await self.agent.deregister(f"{name}-node")

    async def break_registry(self) -> None:
        if self.real is not None:
            self.real.crash()
        else:
            await self.emulator.stop()

    async def heal_registry(self) -> None:
        if self.real is not None:
            await asyncio.to_thread(self.real.restart)
        else:
            await self.emulator.start()

    def bad_settings(self) -> list[dict[str, Any]]:
        return [{"address": "x:0"}, {"wait": "1h"}, {"token": 1}, {"hostname": "{x}"}]


# -- what only a real agent does -----------------------------------------------------------


def health_of(update: Upsert | Replace, address: str) -> Health:
    (endpoint,) = [e for e in update.endpoints if e.address == address]
    return endpoint.health


async def passing_addresses(agent: Agent, service: str) -> list[str]:
    """The addresses Consul's own ``?passing`` filter keeps for ``service``."""
    entries = await agent.get(f"/v1/health/service/{agent.name(service)}?passing")
    return sorted(e["Service"]["Address"] or e["Node"]["Address"] for e in entries)


async def check_ids(agent: Agent, service: str) -> list[list[str]]:
    """The check ids of each entry of ``service``, as the agent answers them."""
    entries = await agent.get(f"/v1/health/service/{agent.name(service)}")
    return [[c["CheckID"] for c in e["Checks"]] for e in entries]


@real_only
async def test_the_agents_own_service_is_not_served_and_its_node_checks_count(
    agent: Agent, feeds: Callable[..., Feed], real_consul: RealAgent
) -> None:
    """The agent's own node carries the ``consul`` service and the ``serfHealth`` node
    check; an instance registered on that node through the agent API has both its own
    and the node's checks, and its health follows a node check as Consul's health
    endpoint does (``?passing`` leaves it out while the node check is critical)."""
    (own,) = await agent.get("/v1/health/service/consul")
    assert own["Node"]["Node"] == NODE
    assert [(c["CheckID"], c["Status"]) for c in own["Checks"]] == [("serfHealth", "passing")]
    web, check = agent.name("web"), agent.name("node-check")
    await agent.put(
        "/v1/agent/service/register",
        {"ID": web, "Name": web, "Address": "127.0.0.21", "Port": 8080},
    )
    await agent.put(
        "/v1/agent/check/register",
        {"ID": check, "Name": "node check", "TTL": "10m", "Status": "critical"},
    )
    try:
        await until_async(lambda: check_ids(agent, "web"), [[check, "serfHealth"]])  # synced
        assert await passing_addresses(agent, "web") == []  # the node check is critical
        feed = feeds(agent.adapter())  # every hostname: the agent's own service too
        replace = await feed.replace()
        assert [s.hostname for s in replace.services] == [agent.host("web")]
        assert "consul.service.consul" not in {s.hostname for s in replace.services}
        assert health_of(replace, "127.0.0.21") is Health.UNHEALTHY
        problems = await feed.next()
        assert isinstance(problems, Problems)
        (entry,) = problems.sources[web]
        assert [(c["CheckID"], c["ServiceID"]) for c in entry["Checks"]] == [
            (check, ""),
            ("serfHealth", ""),
        ]

        await agent.put(f"/v1/agent/check/pass/{check}")
        update = await feed.expect(Upsert)
        assert health_of(update, "127.0.0.21") is Health.HEALTHY
        assert await passing_addresses(agent, "web") == ["127.0.0.21"]
    finally:
        await agent.put(f"/v1/agent/check/deregister/{check}")
        await agent.put(f"/v1/agent/service/deregister/{web}")


@real_only
async def test_a_service_deregistered_and_registered_again(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    """Through the agent API: the hostname goes with the service and comes back with it
    (a new watch of the same name after the old one was stopped)."""
    web = agent.name("web")
    registration = {"ID": web, "Name": web, "Address": "127.0.0.22", "Port": 8080}
    await agent.register("db")  # stays: the registry is not empty meanwhile
    await agent.put("/v1/agent/service/register", registration)
    try:
        feed = feeds(agent.adapter(), agent.prefix)
        await until_async(lambda: passing_addresses(agent, "web"), ["127.0.0.22"])
        replace = await feed.replace()
        assert [s.hostname for s in replace.services] == [agent.host("db"), agent.host("web")]
        await agent.put(f"/v1/agent/service/deregister/{web}")
        assert await feed.expect(Delete) == Delete(hostname=agent.host("web"))
        await agent.put("/v1/agent/service/register", {**registration, "Port": 9090})
        update = await feed.expect(Upsert)
        assert update.service.hostname == agent.host("web")
        assert [(e.address, e.port) for e in update.endpoints] == [("127.0.0.22", 9090)]
    finally:
        await agent.put(f"/v1/agent/service/deregister/{web}")


@real_only
async def test_maintenance_drains_the_instance(
    agent: Agent, feeds: Callable[..., Feed], real_consul: RealAgent
) -> None:
    """Service maintenance (``_service_maintenance:<id>``, critical) and node maintenance
    (``_node_maintenance``) make the instance DRAINING, as the adapter maps Consul's
    ``maintenance`` status (registryd then sends Envoy no DRAINING endpoint); ending
    maintenance makes it HEALTHY again.  Node maintenance drains every instance of the
    agent's node, and only those."""
    web = agent.name("web")
    await agent.register("web", "web-vm", address="10.0.0.1")  # on a node of its own
    await agent.put(
        "/v1/agent/service/register",
        {"ID": web, "Name": web, "Address": "127.0.0.23", "Port": 8080},
    )
    try:
        feed = feeds(agent.adapter(), agent.prefix)
        await until_async(lambda: passing_addresses(agent, "web"), ["10.0.0.1", "127.0.0.23"])
        replace = await feed.replace()
        assert {e.address: e.health for e in replace.endpoints} == {
            "10.0.0.1": Health.HEALTHY,
            "127.0.0.23": Health.HEALTHY,
        }

        await agent.put(f"/v1/agent/service/maintenance/{web}?enable=true&reason=upgrade")
        update = await feed.expect(Upsert)
        assert health_of(update, "127.0.0.23") is Health.DRAINING
        assert health_of(update, "10.0.0.1") is Health.HEALTHY
        await agent.put(f"/v1/agent/service/maintenance/{web}?enable=false")
        assert health_of(await feed.expect(Upsert), "127.0.0.23") is Health.HEALTHY

        await agent.put("/v1/agent/maintenance?enable=true&reason=patching")
        try:
            update = await feed.expect(Upsert)
            assert health_of(update, "127.0.0.23") is Health.DRAINING
            assert health_of(update, "10.0.0.1") is Health.HEALTHY  # another node
        finally:
            await agent.put("/v1/agent/maintenance?enable=false")
        assert health_of(await feed.expect(Upsert), "127.0.0.23") is Health.HEALTHY
    finally:
        await agent.put(f"/v1/agent/service/deregister/{web}")


@real_only
async def test_a_blocking_query_woken_by_an_unrelated_change(
    agent: Agent, feeds: Callable[..., Feed]
) -> None:
    """A change to a node's metadata wakes the blocking query of every service on that
    node with a new index, though their endpoints are the same: no update for the
    service comes of it, and its next query blocks on the new index (it is not lost)."""
    proxy = agent.server
    assert isinstance(proxy, RecordingProxy)
    await agent.register("web")
    feed = feeds(agent.adapter(wait="5m"), agent.prefix)
    await feed.replace()
    await blocking(agent, "web")
    path = f"/v1/health/service/{agent.name('web')}"
    before = max(r.index or 0 for r in proxy.replies_of(path))

    await agent.put(  # the node again, with metadata: nothing of web's endpoints changes
        "/v1/catalog/register",
        {"Node": agent.name("n1"), "Address": "10.0.0.1", "NodeMeta": {"rack": "r2"}},
    )

    def woken() -> int | None:
        moved = [r.index for r in proxy.replies_of(path) if r.index and r.index > before]
        return moved[0] if moved else None

    await until(lambda: woken() is not None)
    index = woken()
    await until(
        lambda: any(r.path == path and r.params.get("index") == str(index) for r in proxy.requests)
    )

    await agent.register("marker", node="n2", address="10.0.0.2")  # the barrier
    update = await feed.nothing_before(
        lambda u: isinstance(u, Upsert) and u.service.hostname == agent.host("marker"),
        problems=True,
    )
    assert isinstance(update, Upsert)


async def until_async(read: Callable[[], Any], expected: Any, timeout: float = HANG_GUARD) -> None:
    """Until ``await read()`` equals ``expected`` (the agent's anti-entropy has synced)."""
    deadline = time.monotonic() + timeout
    while (now := await read()) != expected:
        assert time.monotonic() < deadline, f"still {now!r}, not {expected!r}"
        await asyncio.sleep(0.05)


MANAGEMENT = "0f9e8d7c-6b5a-4938-8271-605f4e3d2c1b"  # the ACL agents' management token


@pytest.fixture(scope="module")
def real_acl_consul(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    """A real agent with ACLs (default policy deny) for the module's ACL tests."""
    with consul_with_acls(tmp_path_factory.mktemp("consul-acl"), MANAGEMENT) as agent:
        yield agent


@pytest.fixture(params=["emulator", "real"])
async def acl_agent(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Agent, str]]:
    """An agent with ACLs (default deny), written to with the management token, and a
    token that may read only its services named ``<prefix>shop-...`` (and every node)."""
    async with aiohttp.ClientSession() as session:
        if request.param == "emulator":
            reader = "7d6c5b4a-3928-4716-a5f4-e3d2c1b0a998"
            readers = {reader: ("t-shop-",)}
            async with ConsulEmulator(acl_token=MANAGEMENT, acl_readers=readers) as emulator:
                yield Agent(session, emulator=emulator, token=MANAGEMENT), reader
            return
        process: ConsulAgent = request.getfixturevalue("real_acl_consul")
        url = f"http://{process.address}"
        async with RecordingProxy(url) as proxy:
            agent = Agent(session, proxy=proxy, api=url, token=MANAGEMENT)
            reader = await asyncio.to_thread(
                process.create_reader, agent.name("reader"), (agent.name("shop-"),)
            )
            try:
                yield agent, reader
            finally:
                await agent.cleanup()


async def test_a_token_that_may_read_some_services(
    acl_agent: tuple[Agent, str], feeds: Callable[..., Feed], caplog: pytest.LogCaptureFixture
) -> None:
    """A token with ``service:read`` on some services (and ``node:read``) is served those
    services and follows them; the others (the agent's own ``consul`` service too) are
    left out without failing the registry, and the agent's filtered-results header is
    logged.  Without a token, under the deny default, nothing is served and the
    adapter says why; a token the agent does not know fails the registry."""
    agent, reader = acl_agent
    await agent.register("shop-web")
    await agent.register("shop-db", node="n2", address="10.0.0.2")
    await agent.register("secret-api", node="n3", address="10.0.0.3")
    feed = feeds(agent.adapter(token=reader), agent.prefix)
    replace = await feed.replace()
    assert [s.hostname for s in replace.services] == [agent.host("shop-db"), agent.host("shop-web")]
    problems = await feed.next()
    assert isinstance(problems, Problems) and problems.errors == {}
    # the token may not read the agent (agent:read): max_watches auto takes the default
    assert problems.status["max_watches"].startswith(
        "134 (auto: the agent's connection limit is not readable from /v1/agent/self"
    )
    assert "taken as Consul's default 200" in problems.status["max_watches"]
    assert "the agent filtered results by ACLs" in caplog.text
    assert reader not in caplog.text and MANAGEMENT not in caplog.text

    await agent.register("secret-new", node="n4", address="10.0.0.4")  # shows nothing
    await agent.register("shop-api", node="n5", address="10.0.0.5")  # the barrier
    update = await feed.nothing_before(
        lambda u: isinstance(u, Upsert) and u.service.hostname == agent.host("shop-api"),
        problems=True,
    )
    assert isinstance(update, Upsert) and addresses(update) == ["10.0.0.5"]

    anonymous = feeds(agent.adapter(token=None), agent.prefix)
    assert (await anonymous.replace()).services == ()
    assert "no token is set and the agent's default ACL policy is deny" in caplog.text

    unknown = feeds(agent.adapter(token="5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"))
    assert "ACL not found" in str(await unknown.error())
