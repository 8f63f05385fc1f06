"""The Consul emulator answers as a real Consul agent (v1.16.3) does: each test runs the
same plain HTTP requests against the emulator and against a real ``consul agent -dev``
(tests/support/consul_agent.py) and asserts what the real agent answers.  Each test
names the behaviour it pins down (most were written where the two differed)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.support.consul_agent import ConsulAgent, consul_with_acls, start_consul
from tests.support.emulators.consul import ConsulEmulator

MANAGEMENT = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
READER = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"  # the emulator's reader token
HANG_GUARD = 60.0  # seconds: stops a hung test, far below the 5-minute waits asked for
TIMEOUT = aiohttp.ClientTimeout(total=HANG_GUARD)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: Any  # JSON when it is JSON, else the text


@dataclass
class Server:
    """One server under test: its base URL, a session, and a name prefix for this test."""

    url: str
    session: aiohttp.ClientSession
    prefix: str
    token: str | None = None  # sent with writes

    async def get(self, path: str, token: str | None = None) -> Answer:
        headers = {"X-Consul-Token": token} if token else {}
        async with self.session.get(self.url + path, headers=headers, timeout=TIMEOUT) as reply:
            text = await reply.text()
            try:
                body: Any = await reply.json(content_type=None)
            except ValueError:
                body = text
            return Answer(reply.status, {k.lower(): v for k, v in reply.headers.items()}, body)

    async def put(self, path: str, payload: Any, token: str | None = None) -> Answer:
        token = token or self.token
        headers = {"X-Consul-Token": token} if token else {}
        async with self.session.put(
            self.url + path, json=payload, headers=headers, timeout=TIMEOUT
        ) as reply:
            return Answer(reply.status, dict(reply.headers), await reply.text())

    async def register(self, payload: dict[str, Any]) -> None:
        answer = await self.put("/v1/catalog/register", payload)
        assert answer.status == 200, answer

    async def index(self, path: str) -> int:
        answer = await self.get(path)
        assert answer.status == 200, answer
        return int(answer.headers["x-consul-index"])

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"


@pytest.fixture(scope="module")
def real_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    workdir = tmp_path_factory.mktemp("consul")
    agent = start_consul(workdir, workdir / "consul.log")
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture(scope="module")
def real_acl_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    with consul_with_acls(tmp_path_factory.mktemp("consul-acl"), MANAGEMENT) as agent:
        yield agent


def _prefix() -> str:
    return f"e{uuid.uuid4().hex[:6]}-"


@pytest.fixture(params=["emulator", "real"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    """A fresh emulator, or the module's real agent (names under a prefix of the test)."""
    async with aiohttp.ClientSession() as session:
        if request.param == "emulator":
            async with ConsulEmulator() as emulator:
                yield Server(emulator.url, session, _prefix())
            return
        agent: ConsulAgent = request.getfixturevalue("real_agent")
        yield Server(f"http://{agent.address}", session, _prefix())


@pytest.fixture(params=["emulator", "real"])
async def acl_server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Server, str]]:
    """A server with ACLs (default deny; writes with the management token) and a token
    that may read the services named ``<prefix>shop-...`` and every node."""
    prefix = _prefix()
    async with aiohttp.ClientSession() as session:
        if request.param == "emulator":
            readers = {READER: (f"{prefix}shop-",)}
            async with ConsulEmulator(acl_token=MANAGEMENT, acl_readers=readers) as emulator:
                yield Server(emulator.url, session, prefix, MANAGEMENT), READER
            return
        agent: ConsulAgent = request.getfixturevalue("real_acl_agent")
        reader = await asyncio.to_thread(agent.create_reader, f"{prefix}read", (f"{prefix}shop-",))
        yield Server(f"http://{agent.address}", session, prefix, MANAGEMENT), reader


async def test_a_read_carries_the_agents_headers(server: Server) -> None:
    answer = await server.get("/v1/catalog/services")
    assert answer.status == 200
    assert int(answer.headers["x-consul-index"]) > 0
    assert {
        k: answer.headers.get(k)
        for k in (
            "x-consul-knownleader",
            "x-consul-lastcontact",
            "x-consul-effective-consistency",
            "x-consul-query-backend",
            "x-consul-default-acl-policy",
        )
    } == {
        "x-consul-knownleader": "true",
        "x-consul-lastcontact": "0",
        "x-consul-effective-consistency": "leader",
        "x-consul-query-backend": "blocking-query",
        "x-consul-default-acl-policy": "allow",
    }
    assert "x-consul-results-filtered-by-acls" not in answer.headers
    assert "consul" in answer.body  # the servers' own service


async def test_entries_leave_out_empty_fields_as_consuls_json_does(server: Server) -> None:
    """An instance registered without port, kind, meta or tagged addresses has no
    ``Port``, ``Kind`` or ``TaggedAddresses`` and a null ``Meta``; its node without
    metadata has null ``TaggedAddresses`` and ``Meta``; checks have every field, the
    node's first."""
    web, node = server.name("web"), server.name("n1")
    await server.register(
        {
            "Node": node,
            "Address": "10.0.0.1",
            "Service": {"ID": web, "Service": web},
            "Checks": [
                {"CheckID": f"{web}-svc", "Name": "svc", "ServiceID": web, "Status": "passing"},
                {"CheckID": f"{web}-node", "Name": "node", "Status": "passing"},
            ],
        }
    )
    answer = await server.get(f"/v1/health/service/{web}")
    (entry,) = answer.body
    service = entry["Service"]
    assert not {"Port", "Kind", "TaggedAddresses"} & set(service), service
    assert service["Meta"] is None and service["Tags"] == []
    assert service["Weights"] == {"Passing": 1, "Warning": 1}
    assert (entry["Node"]["TaggedAddresses"], entry["Node"]["Meta"]) == (None, None)
    assert [c["CheckID"] for c in entry["Checks"]] == [f"{web}-node", f"{web}-svc"]
    for check in entry["Checks"]:
        assert {
            "Node",
            "CheckID",
            "Name",
            "Status",
            "Notes",
            "Output",
            "ServiceID",
            "ServiceName",
            "ServiceTags",
            "Type",
            "Interval",
            "Timeout",
            "ExposedPort",
            "Definition",
        } <= set(check), check
    assert entry["Checks"][1]["ServiceTags"] == []


async def test_the_catalog_lists_each_tag_of_a_service_once(server: Server) -> None:
    """The tags of all instances, each once; in no set order (a real agent's varies)."""
    tagged = server.name("tagged")
    for node, tags in (("n1", ["b", "a"]), ("n2", ["c", "a"])):
        await server.register(
            {
                "Node": server.name(node),
                "Address": "10.0.0.1",
                "Service": {"ID": f"{tagged}-{node}", "Service": tagged, "Port": 80, "Tags": tags},
            }
        )
    answer = await server.get("/v1/catalog/services")
    assert sorted(answer.body[tagged]) == ["a", "b", "c"]


async def test_an_unknown_service_answers_the_last_extinction_index(server: Server) -> None:
    """The health index of a service not in the catalog is that of the last write that
    removed a service's last instance; a write that removes none does not move it, though
    it moves the catalog's."""
    gone, other, node = server.name("gone"), server.name("other"), server.name("n1")
    await server.register(
        {"Node": node, "Address": "10.0.0.1", "Service": {"ID": gone, "Service": gone, "Port": 1}}
    )
    answer = await server.put("/v1/catalog/deregister", {"Node": node, "ServiceID": gone})
    assert answer.status == 200
    extinct = await server.index("/v1/catalog/services")  # the deregistration's index
    assert await server.index(f"/v1/health/service/{server.name('never')}") == extinct
    assert await server.index(f"/v1/health/service/{gone}") == extinct
    await server.register(
        {"Node": node, "Address": "10.0.0.1", "Service": {"ID": other, "Service": other, "Port": 1}}
    )
    assert await server.index("/v1/catalog/services") > extinct
    assert await server.index(f"/v1/health/service/{server.name('never')}") == extinct


async def test_a_blocked_health_query_returns_only_for_its_own_service(server: Server) -> None:
    """Registering another service on the same node leaves a blocked query of ``web`` at
    its index (it answers when its wait is up, unchanged); a change of the node's
    metadata moves it (the node is part of web's entries)."""
    web, api, node = server.name("web"), server.name("api"), server.name("n1")
    await server.register(
        {"Node": node, "Address": "10.0.0.1", "Service": {"ID": web, "Service": web, "Port": 1}}
    )
    index = await server.index(f"/v1/health/service/{web}")
    blocked = asyncio.create_task(server.get(f"/v1/health/service/{web}?index={index}&wait=1s"))
    await server.register(
        {"Node": node, "Address": "10.0.0.1", "Service": {"ID": api, "Service": api, "Port": 2}}
    )
    assert int((await blocked).headers["x-consul-index"]) == index

    blocked = asyncio.create_task(server.get(f"/v1/health/service/{web}?index={index}&wait=30s"))
    await server.register({"Node": node, "Address": "10.0.0.1", "NodeMeta": {"rack": "r2"}})
    assert int((await blocked).headers["x-consul-index"]) > index


async def test_the_indexes_of_checks_and_nodes(server: Server) -> None:
    """``/v1/health/state/<state>`` moves with checks alone, ``/v1/catalog/nodes`` with
    nodes and service instances; ``filter`` picks what they list.  (A real agent may
    write on its own meanwhile, so an index that must not move to a write's index is
    checked only not to be that index.)"""
    web, node = server.name("web"), server.name("n1")
    check = {"CheckID": f"service:{web}", "Name": "health", "ServiceID": web}
    service = {"ID": web, "Service": web, "Port": 1}
    await server.register(
        {
            "Node": node,
            "Address": "10.0.0.1",
            "Service": service,
            "Check": {**check, "Status": "passing"},
        }
    )
    critical = "?filter=Status+%21%3D+%22passing%22"  # Status != "passing"
    nothing = "?filter=Node+%3D%3D+%22%22"  # Node == ""

    async def indexes() -> tuple[int, int, int, int]:
        """The write's (web's health index), the checks', the nodes', the catalog's."""
        return (
            await server.index(f"/v1/health/service/{web}"),
            await server.index(f"/v1/health/state/any{critical}"),
            await server.index(f"/v1/catalog/nodes{nothing}"),
            await server.index("/v1/catalog/services"),
        )

    # a check alone, as an agent syncs it
    payload = {"Node": node, "SkipNodeUpdate": True, "Check": {**check, "Status": "critical"}}
    await server.register(payload)
    written, checks, nodes, catalog = await indexes()
    assert checks == written and written not in (nodes, catalog)
    answer = await server.get(f"/v1/health/state/any{critical}")
    mine = [c for c in answer.body if c["Node"] == node]
    assert [(c["CheckID"], c["Status"], c["ServiceName"]) for c in mine] == [
        (f"service:{web}", "critical", web)
    ]
    assert (await server.get(f"/v1/health/state/critical{nothing}")).body == []

    # a service instance moves
    await server.register(
        {"Node": node, "Address": "10.0.0.1", "Service": {**service, "Address": "10.0.0.9"}}
    )
    written, checks, nodes, catalog = await indexes()
    assert nodes >= written and catalog >= written and checks != written
    assert (await server.get(f"/v1/catalog/nodes{nothing}")).body == []

    # the node's metadata changes
    await server.register({"Node": node, "Address": "10.0.0.1", "NodeMeta": {"rack": "r2"}})
    written, checks, nodes, catalog = await indexes()
    assert nodes >= written and written not in (checks, catalog)


async def test_a_blocking_read_of_an_unknown_service(server: Server) -> None:
    """A read of a service not in the catalog whose index has passed the one asked for
    (another service's last instance went away) answers at once; one that blocks returns
    when the service is registered, and a read of a service that goes away returns (each
    well before its 5-minute wait: the hang guard fails the test otherwise)."""
    ghost, other, node = server.name("ghost"), server.name("other"), server.name("n1")
    other_instance = {"ID": other, "Service": other, "Port": 1}
    await server.register({"Node": node, "Address": "10.0.0.1", "Service": other_instance})
    before = await server.index(f"/v1/health/service/{ghost}")
    await server.put("/v1/catalog/deregister", {"Node": node, "ServiceID": other})
    answer = await guarded(server.get(f"/v1/health/service/{ghost}?index={before}&wait=5m"))
    moved = int(answer.headers["x-consul-index"])
    assert answer.body == [] and moved > before

    ghost_instance = {"ID": ghost, "Service": ghost, "Port": 1}
    blocked = asyncio.create_task(server.get(f"/v1/health/service/{ghost}?index={moved}&wait=5m"))
    await server.register({"Node": node, "Address": "10.0.0.1", "Service": ghost_instance})
    answer = await guarded(blocked)
    assert [e["Service"]["ID"] for e in answer.body] == [ghost]
    registered = int(answer.headers["x-consul-index"])
    assert registered > moved

    path = f"/v1/health/service/{ghost}?index={registered}&wait=5m"
    blocked = asyncio.create_task(server.get(path))
    await server.put("/v1/catalog/deregister", {"Node": node, "ServiceID": ghost})
    answer = await guarded(blocked)
    assert answer.body == [] and int(answer.headers["x-consul-index"]) > registered


async def guarded(read: Awaitable[Answer]) -> Answer:
    """``read`` within a hang guard far below the 5-minute waits the tests ask for."""
    return await asyncio.wait_for(read, HANG_GUARD)


@pytest.mark.parametrize(
    ("query", "status", "text"),
    [
        ("?index=abc", 400, "Invalid index"),
        ("?index=1&wait=soon", 400, "Invalid wait time"),
        ("?dc=nowhere", 500, "No path to datacenter"),
        (
            "?stale&consistent",
            400,
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ),
    ],
)
async def test_bad_reads_answer_consuls_errors(
    server: Server, query: str, status: int, text: str
) -> None:
    answer = await server.get(f"/v1/health/service/{server.name('web')}{query}")
    assert (answer.status, str(answer.body).strip()) == (status, text)


async def test_acls_the_anonymous_token_is_not_told_of_filtering(
    acl_server: tuple[Server, str],
) -> None:
    """Under ``default_policy = deny``: a read without a token is answered empty with no
    filtered header (Consul tells only a token); a token that may read some services is
    told when others were left out; an unknown token answers 403 ``ACL not found``; a
    write without a token answers Consul's ``Permission denied`` text."""
    server, reader = acl_server
    shop, secret = server.name("shop-web"), server.name("secret")
    for name in (shop, secret):
        await server.register(
            {
                "Node": server.name("n1"),
                "Address": "10.0.0.1",
                "Service": {"ID": name, "Service": name, "Port": 80},
            }
        )
    anonymous = await server.get("/v1/catalog/services")
    assert (anonymous.status, anonymous.body) == (200, {})
    assert "x-consul-results-filtered-by-acls" not in anonymous.headers
    assert anonymous.headers["x-consul-default-acl-policy"] == "deny"
    assert (await server.get(f"/v1/health/service/{shop}")).body == []

    limited = await server.get("/v1/catalog/services", token=reader)
    assert limited.body == {shop: []}
    assert limited.headers["x-consul-results-filtered-by-acls"] == "true"
    (entry,) = (await server.get(f"/v1/health/service/{shop}", token=reader)).body
    assert entry["Service"]["ID"] == shop
    hidden = await server.get(f"/v1/health/service/{secret}", token=reader)
    assert hidden.body == [] and hidden.headers["x-consul-results-filtered-by-acls"] == "true"

    unknown = await server.get("/v1/catalog/services", token=str(uuid.uuid4()))
    assert (unknown.status, unknown.body) == (403, "ACL not found")

    payload = {"Node": server.name("n1"), "Address": "10.0.0.1", "Service": {"Service": "x"}}
    async with server.session.put(
        server.url + "/v1/catalog/register", json=payload, timeout=TIMEOUT
    ) as reply:
        assert reply.status == 403
        assert await reply.text() == (
            "Permission denied: anonymous token lacks permission 'service:write' on \"x\". "
            "The anonymous token is used implicitly when a request does not specify a token."
        )
