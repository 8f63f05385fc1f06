"""The etcd adapter against a real etcd: settings, full state first, puts and deletes,
lease expiry, malformed values, compaction, outages, endpoints, auth and TLS.

Every wait is bounded by a hang guard, which is not what a test asserts: how soon a
failure shows is asserted through its cause (a refused connection, the probe's deadline).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aetcd
import grpc
import pytest
from aetcd import rpc

from registryd.adapter import (
    Adapter,
    AdapterContext,
    ConfigError,
    Delete,
    Problems,
    Replace,
    Upsert,
)
from registryd.adapters.etcd import EtcdAdapter
from registryd.adapters.etcd import adapter as adapter_module
from registryd.adapters.etcd.adapter import EtcdError
from registryd.adapters.etcd.parse import DEFAULT_PREFIX
from registryd.model import Endpoint, Health, Labels, Port
from registryd.testing import AdapterContract
from tests.adapters.feed import Feed as SharedFeed
from tests.support.etcd_server import EtcdServer, etcd_binary, etcd_server, make_tls
from tests.support.procs import free_port

PREFIX = DEFAULT_PREFIX
HANG_GUARD = 60.0  # seconds: only stops a hung test
SECRET = "s3cret-Pa55"
T = TypeVar("T")


def key(service: str, instance: str) -> bytes:
    return f"{PREFIX}{service}/{instance}".encode()


def rich(address: str = "10.0.0.1", port: int = 8080, **fields: Any) -> bytes:
    return json.dumps({"address": address, "port": port, **fields}).encode()


def naming(addr: str) -> bytes:
    return json.dumps({"Addr": addr, "Metadata": None}).encode()


def adapter(server: EtcdServer | None = None, **settings: Any) -> EtcdAdapter:
    if server is not None:
        settings.setdefault("endpoints", [server.endpoint])
    settings.setdefault("timeout", 1)
    return EtcdAdapter(name="kv", settings=settings, context=AdapterContext())


class Feed(SharedFeed):
    def __init__(self, source: EtcdAdapter) -> None:
        super().__init__(source, HANG_GUARD)

    async def error(self, timeout: float | None = HANG_GUARD) -> BaseException:
        return await super().error(timeout)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    with etcd_server(tmp_path / "etcd") as server:
        yield server


@pytest.fixture
async def kv(etcd: EtcdServer) -> AsyncIterator[Any]:
    """A client of the test's own to write to etcd."""
    client = aetcd.Client("127.0.0.1", etcd.client_port, timeout=5)
    try:
        yield client
    finally:
        await client.close()


def start(feeds: list[Feed], source: EtcdAdapter) -> Feed:
    feed = Feed(source)
    feeds.append(feed)
    return feed


async def synced(feed: Feed, timeout: float = HANG_GUARD) -> tuple[Replace, Problems]:
    replace = await feed.expect(Replace, timeout)
    problems = await feed.expect(Problems)
    return replace, problems


async def nothing_more(kv: Any, feed: Feed) -> None:
    """Nothing more came from what was written so far: a later write's Upsert is the next
    update (etcd hands events out in revision order; see Feed.nothing_before)."""
    await kv.put(key("barrier", "1"), rich("10.9.9.9"))
    await feed.nothing_before(
        lambda u: isinstance(u, Upsert) and u.service.hostname.startswith("barrier")
    )


def endpoint(host: str, address: str, port: int, service_port: int | None = None) -> Endpoint:
    return Endpoint(hostname=host, address=address, port=port, service_port=service_port or port)


def state(replace: Replace) -> dict[str, list[tuple[str, int]]]:
    """hostname -> sorted (address, port) of its endpoints."""
    result: dict[str, list[tuple[str, int]]] = {s.hostname: [] for s in replace.services}
    for e in replace.endpoints:
        result[e.hostname].append((e.address, e.port))
    return {h: sorted(v) for h, v in result.items()}


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and its causes, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(chain) < 20:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def timed_out(error: BaseException) -> bool:
    """Whether a deadline noticed the failure (gRPC's DEADLINE_EXCEEDED or a timeout)."""
    return any(
        isinstance(e, TimeoutError)
        or (isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.DEADLINE_EXCEEDED)
        for e in causes(error)
    )


def leftover_tasks() -> list[str]:
    return sorted(
        t.get_name()
        for t in asyncio.all_tasks()
        if t.get_name().startswith(("etcd-watch:", "etcd-probe:")) and not t.done()
    )


async def watching() -> None:
    """Until the adapter's watch stream is open (its reader and probe tasks run)."""
    for _ in range(int(HANG_GUARD / 0.01)):
        if len(leftover_tasks()) == 2:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the watch did not start: {leftover_tasks()}")


# -- settings ---------------------------------------------------------------------------


def test_defaults() -> None:
    settings = adapter().settings
    assert settings.endpoints == (("127.0.0.1", 2379),)
    assert settings.prefix == "/registryd/services/"
    assert settings.options.namespace == "default"
    assert settings.options.hostname_suffix == ""
    assert settings.username is None and not settings.tls


def test_settings_are_read() -> None:
    settings = adapter(
        endpoints=["etcd-0.example:2379", "[::1]:2380", "10.0.0.9:23790"],
        prefix="/services/",
        username="registryd",
        password=SECRET,
        timeout=2.5,
        namespace="payments",
        hostname_suffix=".svc.example",
    ).settings
    assert settings.endpoints == (("etcd-0.example", 2379), ("::1", 2380), ("10.0.0.9", 23790))
    assert settings.prefix == "/services/"
    assert (settings.username, settings.password, settings.timeout) == ("registryd", SECRET, 2.5)
    assert settings.options.hostname("Web") == "web.svc.example"
    assert settings.options.namespace == "payments"
    assert SECRET not in repr(settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"endpoint": ["x:1"]}, "unknown settings ['endpoint']"),
        ({"endpoints": "127.0.0.1:2379"}, "'endpoints' must be a non-empty list"),
        ({"endpoints": []}, "'endpoints' must be a non-empty list"),
        ({"endpoints": ["127.0.0.1"]}, "is not host:port"),
        ({"endpoints": ["http://127.0.0.1:2379"]}, "without a scheme"),
        ({"endpoints": ["127.0.0.1:99999"]}, "port out of range"),
        ({"endpoints": ["[nope]:2379"]}, "not an IPv6 address"),
        ({"endpoints": [2379]}, "host:port strings"),
        ({"prefix": "/registry/services"}, "ending with '/'"),
        ({"prefix": "/"}, "ending with '/'"),
        ({"prefix": 7}, "'prefix'"),
        ({"username": "u"}, "'username' and 'password' go together"),
        ({"password": SECRET}, "'username' and 'password' go together"),
        ({"username": "u", "password": 12345}, "'password' must be a non-empty string"),
        ({"username": "", "password": SECRET}, "'username' must be a non-empty string"),
        ({"cert_file": __file__}, "'cert_file' and 'key_file' go together"),
        ({"ca_file": "/nonexistent/ca.pem"}, "no such file: /nonexistent/ca.pem"),
        ({"timeout": 0}, "'timeout' must be > 0"),
        ({"timeout": "5s"}, "'timeout' must be a number"),
        ({"timeout": True}, "'timeout' must be a number"),
        ({"namespace": "Pay_ments"}, "'namespace' must be a DNS label"),
        ({"hostname_suffix": "bad..suffix"}, "'hostname_suffix' must be a DNS name"),
        ({"hostname_suffix": 3}, "'hostname_suffix'"),
    ],
)
def test_bad_settings_are_config_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        EtcdAdapter(name="kv", settings=settings, context=AdapterContext())
    text = str(caught.value)
    assert message in text
    assert "registry 'kv' (etcd)" in text
    assert SECRET not in text and "12345" not in text


async def test_unreadable_tls_file_fails_the_watch(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not yet")
    source = adapter(ca_file=str(ca))
    ca.unlink()  # e.g. a secret rotated away after the registry was configured
    updates = source.watch()
    with pytest.raises(EtcdError, match=f"cannot read ca_file {ca}"):
        await asyncio.wait_for(anext(updates), HANG_GUARD)


# -- against a real etcd ------------------------------------------------------------------


async def test_full_state_first(etcd: EtcdServer, kv: Any, feeds: list[Feed]) -> None:
    await kv.put(key("web", "a"), rich("10.0.0.1", 8080, servicePort=80, protocol="HTTP"))
    await kv.put(key("web", "b"), rich("10.0.0.2", 8080, servicePort=80, protocol="HTTP"))
    await kv.put(key("Greeter", "10.0.0.3:50051"), naming("10.0.0.3:50051"))
    await kv.put(key("broken", "x"), b"{not json")
    await kv.put(f"{PREFIX}stray".encode(), rich())
    await kv.put(b"/elsewhere/web/c", rich("10.9.9.9"))  # outside the prefix: not read
    feed = start(feeds, adapter(etcd, hostname_suffix="svc.example"))

    replace, problems = await synced(feed)
    assert [s.hostname for s in replace.services] == ["greeter.svc.example", "web.svc.example"]
    greeter, web = replace.services
    assert greeter.ports == (Port(number=50051, name="grpc-50051", protocol="GRPC"),)
    assert web.ports == (Port(number=80, name="http-80", protocol="HTTP"),)
    assert state(replace) == {
        "greeter.svc.example": [("10.0.0.3", 50051)],
        "web.svc.example": [("10.0.0.1", 8080), ("10.0.0.2", 8080)],
    }
    assert sorted(problems.errors) == [f"{PREFIX}broken/x", f"{PREFIX}stray"]
    assert "not valid JSON" in problems.errors[f"{PREFIX}broken/x"]
    assert "does not match" in problems.errors[f"{PREFIX}stray"]
    assert problems.sources[f"{PREFIX}Greeter/10.0.0.3:50051"] == {
        "Addr": "10.0.0.3:50051",
        "Metadata": None,
    }
    assert set(problems.sources) == {
        f"{PREFIX}web/a",
        f"{PREFIX}web/b",
        f"{PREFIX}Greeter/10.0.0.3:50051",
    }
    await nothing_more(kv, feed)


async def test_empty_prefix_is_an_empty_state(etcd: EtcdServer, feeds: list[Feed]) -> None:
    feed = start(feeds, adapter(etcd))
    replace, problems = await synced(feed)
    assert replace == Replace()
    assert problems == Problems()


async def test_puts_and_deletes_become_upserts_and_deletes(
    etcd: EtcdServer, kv: Any, feeds: list[Feed]
) -> None:
    feed = start(feeds, adapter(etcd, namespace="shop"))
    replace, _ = await synced(feed)

    await kv.put(key("cart", "1"), rich("10.0.0.1", 9000, servicePort=80, portName="http"))
    upsert = await feed.expect(Upsert)
    # each update carries etcd's revision: the listing's, then each change's
    assert int(upsert.revision) > int(replace.revision) > 0
    assert upsert.service.hostname == "cart" and upsert.service.namespace == "shop"
    assert upsert.service.ports == (Port(number=80, name="http", protocol="HTTP"),)
    assert upsert.endpoints == (endpoint("cart", "10.0.0.1", 9000, 80),)
    assert (await feed.expect(Problems)).errors == {}

    await kv.put(key("cart", "2"), rich("10.0.0.2", 9000, servicePort=80, portName="http"))
    upsert = await feed.expect(Upsert)
    assert [e.address for e in upsert.endpoints] == ["10.0.0.1", "10.0.0.2"]
    await feed.expect(Problems)

    # the same value written again changes nothing
    await kv.put(key("cart", "2"), rich("10.0.0.2", 9000, servicePort=80, portName="http"))

    await kv.put(key("cart", "2"), rich("10.0.0.2", 9000, servicePort=80, health="DRAINING"))
    upsert = await feed.nothing_before(lambda u: isinstance(u, Upsert))  # this one's
    assert [e.health for e in upsert.endpoints] == [Health.HEALTHY, Health.DRAINING]
    await feed.expect(Problems)

    revision = int(upsert.revision)
    await kv.delete(key("cart", "1"))
    upsert = await feed.expect(Upsert)
    assert [e.address for e in upsert.endpoints] == ["10.0.0.2"]
    assert int(upsert.revision) > revision
    await feed.expect(Problems)

    await kv.delete(key("cart", "2"))
    assert await feed.expect(Delete) == Delete(hostname="cart")
    problems = await feed.expect(Problems)
    assert problems.sources == {}
    await nothing_more(kv, feed)


async def test_lease_expiry_removes_the_instance(
    etcd: EtcdServer, kv: Any, feeds: list[Feed]
) -> None:
    await kv.put(key("api", "static"), rich("10.0.0.1", 8080))
    feed = start(feeds, adapter(etcd))
    await synced(feed)

    lease = await kv.lease(1)
    await kv.put(key("api", "leased"), rich("10.0.0.2", 8080), lease=lease)
    upsert = await feed.expect(Upsert)
    assert [e.address for e in upsert.endpoints] == ["10.0.0.1", "10.0.0.2"]
    await feed.expect(Problems)

    upsert = await feed.expect(Upsert, timeout=HANG_GUARD)  # when etcd expires the lease
    assert [e.address for e in upsert.endpoints] == ["10.0.0.1"]
    assert list((await feed.expect(Problems)).sources) == [f"{PREFIX}api/static"]
    assert await kv.get(key("api", "leased")) is None

    lease = await kv.lease(1)
    await kv.put(key("solo", "1"), rich("10.0.0.3", 8080), lease=lease)
    assert (await feed.expect(Upsert)).service.hostname == "solo"
    await feed.expect(Problems)
    assert await feed.expect(Delete, timeout=HANG_GUARD) == Delete(hostname="solo")


async def test_malformed_value_is_reported_and_the_last_good_kept(
    etcd: EtcdServer, kv: Any, feeds: list[Feed]
) -> None:
    good = rich("10.0.0.1", 8080, labels={"version": "v1"})
    await kv.put(key("pay", "1"), good)
    feed = start(feeds, adapter(etcd))
    replace, _ = await synced(feed)
    assert state(replace) == {"pay": [("10.0.0.1", 8080)]}

    for bad, reason in [
        (b"[1, 2", "not valid JSON"),
        (rich("10.0.0.1", 0), "port: must be an integer 1-65535"),
        (rich("not-an-ip", 8080), "address: must be an IP address"),
        (rich("10.0.0.1", 8080, health="SICK"), "health: must be one of"),
        (json.dumps({"port": 8080}).encode(), "address: required"),
    ]:
        await kv.put(key("pay", "1"), bad)
        problems = await feed.expect(Problems)  # no Upsert: the last good value stays
        assert list(problems.errors) == [f"{PREFIX}pay/1"]
        assert reason in problems.errors[f"{PREFIX}pay/1"]
        assert problems.errors[f"{PREFIX}pay/1"].startswith(f"{PREFIX}pay/1: ")
        assert problems.sources == {f"{PREFIX}pay/1": json.loads(good)}

    # a second instance still changes the service; the broken key keeps its last good
    await kv.put(key("pay", "2"), rich("10.0.0.2", 8080))
    upsert = await feed.expect(Upsert)
    assert [e.address for e in upsert.endpoints] == ["10.0.0.1", "10.0.0.2"]
    assert upsert.endpoints[0].labels == Labels({"version": "v1"})
    assert list((await feed.expect(Problems)).errors) == [f"{PREFIX}pay/1"]

    # fixed: the new value is used and the error is gone
    await kv.put(key("pay", "1"), rich("10.0.0.9", 8080))
    upsert = await feed.expect(Upsert)
    assert [e.address for e in upsert.endpoints] == ["10.0.0.2", "10.0.0.9"]
    assert (await feed.expect(Problems)).errors == {}

    # a key that never had a good value contributes nothing; deleting it clears its error
    await kv.put(key("new", "1"), b"")
    problems = await feed.expect(Problems)
    assert "value is empty" in problems.errors[f"{PREFIX}new/1"]
    await kv.delete(key("new", "1"))
    assert (await feed.expect(Problems)).errors == {}
    await nothing_more(kv, feed)


async def test_compaction_relists_and_replaces(
    etcd: EtcdServer,
    kv: Any,
    feeds: list[Feed],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first listing is followed by writes and a compaction before the watch starts,
    so the watch asks for a compacted revision: the adapter lists again and yields a
    fresh Replace with the writes, on the same connection."""
    caplog.set_level(logging.INFO, logger="registryd.etcd")
    await kv.put(key("web", "a"), rich("10.0.0.1", 8080))
    original = adapter_module._Client.get_prefix
    listings = 0

    async def list_then_compact(client: Any, prefix: bytes) -> Any:
        nonlocal listings
        listing = await original(client, prefix)
        listings += 1
        if listings == 1:
            await kv.put(key("web", "b"), rich("10.0.0.2", 8080))
            await kv.delete(key("web", "a"))
            put = await kv.put(key("web", "c"), rich("10.0.0.3", 8080))
            await kv.compact(put.header.revision, physical=True)
        return listing

    monkeypatch.setattr(adapter_module._Client, "get_prefix", list_then_compact)
    feed = start(feeds, adapter(etcd))
    first, _ = await synced(feed)
    assert state(first) == {"web": [("10.0.0.1", 8080)]}
    second, problems = await synced(feed)
    assert state(second) == {"web": [("10.0.0.2", 8080), ("10.0.0.3", 8080)]}
    assert problems.errors == {}
    assert listings == 2
    assert "fell behind a compaction" in caplog.text

    # and it keeps watching from the new listing
    await kv.put(key("web", "d"), rich("10.0.0.4", 8080))
    upsert = await feed.expect(Upsert)
    assert [e.address for e in upsert.endpoints] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]


async def test_stopped_etcd_fails_the_watch_quickly(
    etcd: EtcdServer, kv: Any, feeds: list[Feed]
) -> None:
    await kv.put(key("web", "a"), rich())
    await kv.close()
    feed = start(feeds, adapter(etcd))
    await synced(feed)

    await asyncio.to_thread(etcd.stop)
    error = await feed.error()
    assert isinstance(error, EtcdError), repr(error)
    # the closed connection fails the stream at once: no request timed out to notice it
    # (gRPC reports it as UNAVAILABLE, or as its "Internal error from Core" when a call
    # starts on the channel as the connection goes)
    assert not timed_out(error), repr(error)
    assert etcd.endpoint in str(error)
    await asyncio.wait_for(feed.task, HANG_GUARD)  # watch() ended with the error
    assert leftover_tasks() == []


async def test_hung_etcd_is_detected_by_the_probe(
    etcd: EtcdServer, kv: Any, feeds: list[Feed]
) -> None:
    await kv.put(key("web", "a"), rich())
    await kv.close()
    feed = start(feeds, adapter(etcd, timeout=1))
    await synced(feed)
    await watching()

    etcd.pause()  # the TCP connection stays open; nothing answers
    try:
        error = await feed.error()
    finally:
        etcd.resume()
    assert isinstance(error, EtcdError), repr(error)
    assert "stopped answering" in str(error)
    # the probe's read ran into the adapter's timeout (1 s here): a silent watch stream
    # is noticed PROBE_INTERVAL + timeout after etcd hangs
    assert timed_out(error), repr(error)
    assert leftover_tasks() == []


async def test_restarted_etcd_with_new_state_gives_exactly_that_state(
    etcd: EtcdServer, feeds: list[Feed]
) -> None:
    async with aetcd.Client("127.0.0.1", etcd.client_port, timeout=5) as kv:
        await kv.put(key("web", "a"), rich("10.0.0.1", 8080))
        await kv.put(key("old", "1"), rich("10.0.0.5", 8080))
        await kv.put(key("broken", "1"), b"nope")
    source = adapter(etcd)
    feed = start(feeds, source)
    first, problems = await synced(feed)
    assert set(state(first)) == {"web", "old"} and list(problems.errors) == [f"{PREFIX}broken/1"]

    await asyncio.to_thread(etcd.stop)
    assert isinstance(await feed.error(), EtcdError)
    for _ in range(3):  # while etcd is down, watch() fails at once
        failed = start(feeds, source)
        assert "no etcd endpoint answered" in str(await failed.error())

    await asyncio.to_thread(etcd.start)
    async with aetcd.Client("127.0.0.1", etcd.client_port, timeout=5) as kv:
        await kv.delete(key("web", "a"))
        await kv.delete(key("old", "1"))
        await kv.delete(key("broken", "1"))
        await kv.put(key("web", "b"), rich("10.0.0.2", 8080))
        await kv.put(key("new", "1"), naming("10.0.0.7:50051"))
    again = start(feeds, source)  # at once: no backoff left over from the failed attempts
    replace, problems = await synced(again)
    assert state(replace) == {"new": [("10.0.0.7", 50051)], "web": [("10.0.0.2", 8080)]}
    assert problems.errors == {}
    assert set(problems.sources) == {f"{PREFIX}web/b", f"{PREFIX}new/1"}
    async with aetcd.Client("127.0.0.1", etcd.client_port, timeout=5) as kv:
        await nothing_more(kv, again)


async def reconnect_failed(channel: grpc.aio.Channel) -> None:
    """Until ``channel`` has tried to connect again and failed: its reconnect backoff runs."""
    async with asyncio.timeout(HANG_GUARD):
        state = channel.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            await channel.wait_for_state_change(state)
            state = channel.get_state(try_to_connect=True)


async def test_a_new_watch_connects_at_once_when_etcd_is_back(
    etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No reconnect backoff of the lost connection carries over to the next watch(): each
    client has a connection of its own (CHANNEL_OPTIONS).  Here gRPC's reconnect backoff
    is ten minutes and the lost channel has failed to reconnect (as when the consumer is
    busy), so a new watch that inherited that backoff would fail or hang."""
    backoff = {f"grpc.{kind}_reconnect_backoff_ms": 600_000 for kind in ("initial", "min", "max")}
    monkeypatch.setattr(adapter_module, "CHANNEL_OPTIONS", adapter_module.CHANNEL_OPTIONS | backoff)
    channels: list[grpc.aio.Channel] = []
    connect = adapter_module._Client.connect

    async def recording(client: Any) -> None:
        await connect(client)
        if client.channel not in channels:
            channels.append(client.channel)

    monkeypatch.setattr(adapter_module._Client, "connect", recording)
    source = adapter(etcd)
    updates = source.watch()
    try:
        assert isinstance(await asyncio.wait_for(anext(updates), HANG_GUARD), Replace)
        assert isinstance(await asyncio.wait_for(anext(updates), HANG_GUARD), Problems)
        await asyncio.to_thread(etcd.stop)
        (lost,) = channels
        await reconnect_failed(lost)
        with pytest.raises(EtcdError):
            await asyncio.wait_for(anext(updates), HANG_GUARD)
    finally:
        await asyncio.wait_for(updates.aclose(), HANG_GUARD)
    await asyncio.to_thread(etcd.start)
    again = source.watch()
    try:
        assert await asyncio.wait_for(anext(again), HANG_GUARD) == Replace()
        assert len(channels) == 2
    finally:
        await asyncio.wait_for(again.aclose(), HANG_GUARD)


async def test_endpoints_are_tried_in_order(
    etcd: EtcdServer, feeds: list[Feed], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="registryd.etcd")
    dead = f"127.0.0.1:{free_port()}"
    feed = start(feeds, adapter(endpoints=[dead, etcd.endpoint]))
    await synced(feed)
    assert f"connected to {etcd.endpoint}" in caplog.text

    other = f"127.0.0.1:{free_port()}"
    failed = start(feeds, adapter(endpoints=[dead, other]))
    error = await failed.error()
    assert isinstance(error, EtcdError)
    message = str(error)
    assert message.startswith("no etcd endpoint answered")
    assert message.count("Connection refused") == 2  # each refused at once: no timeout
    assert message.index(dead) < message.index(other)


async def test_cancel_closes_everything(etcd: EtcdServer, feeds: list[Feed]) -> None:
    feed = start(feeds, adapter(etcd))
    await synced(feed)
    await watching()  # the watch reader and the probe
    await feed.close()
    assert feed.task.cancelled()
    assert leftover_tasks() == []


async def _enable_auth(etcd: EtcdServer) -> None:
    async with aetcd.Client("127.0.0.1", etcd.client_port, timeout=5) as kv:
        await kv.put(key("web", "a"), rich())
        auth = rpc.AuthStub(kv.channel)
        await auth.UserAdd(rpc.AuthUserAddRequest(name="root", password=SECRET), timeout=5)
        await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"), timeout=5)
        await auth.AuthEnable(rpc.AuthEnableRequest(), timeout=5)


async def test_username_and_password(
    etcd: EtcdServer, feeds: list[Feed], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await _enable_auth(etcd)

    feed = start(feeds, adapter(etcd, username="root", password=SECRET))
    replace, _ = await synced(feed)
    assert state(replace) == {"web": [("10.0.0.1", 8080)]}
    async with aetcd.Client(
        "127.0.0.1", etcd.client_port, username="root", password=SECRET, timeout=5
    ) as kv:
        await kv.put(key("web", "b"), rich("10.0.0.2"))
    assert len((await feed.expect(Upsert)).endpoints) == 2

    wrong = "wr0ng-Pa55"
    error = await start(feeds, adapter(etcd, username="root", password=wrong)).error()
    assert "authentication as 'root' failed" in str(error)
    anonymous = await start(feeds, adapter(etcd)).error()
    assert isinstance(anonymous, EtcdError)
    for text in (str(error), repr(error), str(anonymous), caplog.text):
        assert SECRET not in text and wrong not in text


async def test_tls_with_a_client_certificate(tmp_path: Path, feeds: list[Feed]) -> None:
    tls = make_tls(tmp_path / "tls")
    with etcd_server(tmp_path / "etcd", tls=tls) as server:
        files = {"ca_file": str(tls.ca), "cert_file": str(tls.client_cert)}
        files["key_file"] = str(tls.client_key)
        feed = start(feeds, adapter(server, **files))
        replace, _ = await synced(feed)
        assert replace == Replace()

        # the server asks for a client certificate: without one, no connection
        error = await start(feeds, adapter(server, ca_file=str(tls.ca))).error()
        assert isinstance(error, EtcdError)
        # plaintext against a TLS port fails too, and says where
        plain = await start(feeds, adapter(server)).error()
        assert server.endpoint in str(plain)
        await feeds[0].close()


# -- the adapter contract suite -----------------------------------------------------------


class TestEtcdAdapterContract(AdapterContract):
    """registryd's adapter contract suite, each test on a fresh etcd."""

    factory = EtcdAdapter

    async def setup_registry(self) -> None:
        etcd_binary()  # skip (or fail under CI) before anything starts
        self.workdir = Path(tempfile.mkdtemp(prefix="etcd-contract-"))
        self.server = EtcdServer(self.workdir)
        await asyncio.to_thread(self.server.start)
        self.kv = aetcd.Client("127.0.0.1", self.server.client_port, timeout=5)

    async def teardown_registry(self) -> None:
        await self.kv.close()
        await asyncio.to_thread(self.server.stop)
        await asyncio.to_thread(shutil.rmtree, self.workdir, True)

    async def create(self) -> Adapter:
        return adapter(self.server)

    async def add_service(self, name: str) -> str:
        await self.kv.put(key(name, "i-1"), rich("10.0.0.1", 8080))
        return name

    async def remove_service(self, name: str) -> None:
        await self.kv.delete(key(name, "i-1"))

    async def break_registry(self) -> None:
        await self.kv.close()
        await asyncio.to_thread(self.server.stop)

    async def heal_registry(self) -> None:
        await asyncio.to_thread(self.server.start)

    def bad_settings(self) -> list[dict[str, object]]:
        return [
            {"endpoints": "127.0.0.1:2379"},
            {"prefix": "no-slash"},
            {"username": "u"},
            {"timeout": -1},
            {"bogus": 1},
        ]
