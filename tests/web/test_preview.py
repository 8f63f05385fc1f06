"""``POST /debug/preview`` in process: who may ask, how much, one at a time, and that the
answer is computed from a copy (the store, the live snapshot and the files stay as they
were).  The end-to-end test with a real daemon and clients is tests/e2e/test_preview.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from registryd.adapter import ConfigError, Replace
from registryd.adapters.serviceentry.preview import place
from registryd.adapters.serviceentry.tree import FileTree
from registryd.build.builder import SnapshotBuilder
from registryd.build.clusters import BuildOptions
from registryd.build.listeners import Conflict
from registryd.build.preview import field_diff
from registryd.model import Port, Service, ShardKey
from registryd.registry.store import RegistryStore
from registryd.web.candidates import CandidateRegistries
from registryd.web.preview import preview_routes
from registryd.xds import resources as res
from registryd.xds.snapshot import CDS, EDS, Snapshot
from registryd.xds.streams import Listing

Client = TestClient[web.Request, web.Application]
KEY = ShardKey("serviceentry", "configDir")
NODE = "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local"


def entry(host: str, port: int, *addresses: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": host.split(".")[0], "namespace": "default"},
        "spec": {
            "hosts": [host],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": port, "name": "http", "protocol": "HTTP"}],
            "endpoints": [{"address": a} for a in addresses],
        },
    }


class Live:
    """The push as the preview reads it: a builder fed from the store."""

    def __init__(self, store: RegistryStore) -> None:
        self.builder = SnapshotBuilder()
        self.builder.build(store.view)

    @property
    def snapshot(self) -> Snapshot:
        return self.builder.snapshot

    @property
    def conflicts(self) -> Mapping[int, tuple[Conflict, ...]]:
        return self.builder.conflicts

    @property
    def build_options(self) -> BuildOptions:
        return self.builder.options


class Streams:
    """One client reading the plain tables; ``gate``, when set, holds the listing."""

    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None
        self.asked = asyncio.Event()

    async def listing(self, view: str, proxy_id: str = "", verbose: bool = False) -> Listing:
        assert view == "tables"
        self.asked.set()
        if self.gate is not None:
            await self.gate.wait()
        tables = {res.CLUSTER_TYPE: [CDS, f"{CDS}@default"], res.ENDPOINT_TYPE: [EDS]}
        return [(0.0, {"proxyID": NODE, "tables": tables})]


def _from_peer(remote: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        return await handler(request.clone(remote=remote))

    return middleware


class Daemon:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.store = RegistryStore()
        tree = FileTree(str(directory))
        tree.apply()
        self.store.apply(KEY, tree.replace())
        self.live = Live(self.store)
        self.streams = Streams()

    async def client(self, *, peer: str | None = None, **options: Any) -> Client:
        app = web.Application(middlewares=[_from_peer(peer)] if peer else [])
        app.router.add_routes(
            preview_routes(
                store=self.store,
                live=self.live,
                streams=self.streams,  # type: ignore[arg-type]
                registries=[(KEY, {"path": str(self.directory)})],
                **options,
            )
        )
        client: Client = TestClient(TestServer(app))
        await client.start_server()
        return client


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    directory = tmp_path / "entries"
    directory.mkdir()
    (directory / "web.yaml").write_text(yaml.safe_dump(entry("web.example", 80, "10.0.0.1")))
    return Daemon(directory)


@pytest.fixture
async def client(daemon: Daemon) -> AsyncIterator[Client]:
    found = await daemon.client()
    yield found
    await found.close()


def request(**files: dict[str, Any]) -> dict[str, Any]:
    return {"files": {f"{n}.yaml": yaml.safe_dump(doc) for n, doc in files.items()}}


async def test_the_answer_is_built_off_to_the_side(daemon: Daemon, client: Client) -> None:
    view, snapshot = daemon.store.view, daemon.live.snapshot
    on_disk = (daemon.directory / "web.yaml").read_text()
    answer = await client.post(
        "/debug/preview", json=request(web=entry("web.example", 80, "10.0.0.2"))
    )
    assert answer.status == 200, await answer.text()
    body = await answer.json()
    (group,) = body["groups"]
    assert group["proxies"] == {"count": 1, "ids": [NODE]}
    assert group["changes"]["eds"]["changed"]["names"] == ["outbound|80||web.example"]
    assert body["files"] == {
        "web.yaml": {"file": str(daemon.directory / "web.yaml"), "replaces": True}
    }
    assert body["liveVersion"] == snapshot.version
    # nothing applied
    assert daemon.store.view is view
    assert daemon.live.snapshot is snapshot
    assert (daemon.directory / "web.yaml").read_text() == on_disk


async def test_a_remote_peer_is_refused(daemon: Daemon) -> None:
    client = await daemon.client(peer="10.1.2.3")
    try:
        answer = await client.post("/debug/preview", json=request(web=entry("a.example", 80)))
        assert answer.status == 403
        assert (await answer.json())["error"] == (
            "previews can be asked only from loopback; peer '10.1.2.3' refused"
        )
    finally:
        await client.close()


async def test_a_remote_peer_is_served_with_the_override(daemon: Daemon) -> None:
    client = await daemon.client(peer="10.1.2.3", allow_remote=True)
    try:
        answer = await client.post("/debug/preview", json=request(web=entry("a.example", 80)))
        assert answer.status == 200, await answer.text()
    finally:
        await client.close()


async def test_a_body_over_the_bound_is_413_declared_or_not(daemon: Daemon) -> None:
    client = await daemon.client(max_body=1000)
    try:
        body = json.dumps({"files": {"a.yaml": "x" * 2000}}).encode()
        declared = await client.post("/debug/preview", data=body)
        assert declared.status == 413
        assert (await declared.json())["error"] == "request body over the limit of 1000 bytes"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read and cut off
            for start in range(0, len(body), 100):
                yield body[start : start + 100]

        streamed = await client.post("/debug/preview", data=chunks())
        assert streamed.status == 413
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "body is not valid JSON"),
        (b"[]", "body is not a preview request"),
        (b'{"files": {}}', "'files' must be a non-empty object"),
        (b'{"files": {"a.yaml": 1}}', "file contents and 'registry' must be strings"),
        (b'{"files": {"../a.yaml": ""}}', "not a file name under the directory"),
        (b'{"files": {"a.txt": ""}}', "the registry reads only *.yaml and *.yml files"),
        (b'{"files": {"a.yaml": ""}, "registry": "other"}', "no serviceentry registry 'other'"),
    ],
)
async def test_a_bad_request_is_400(client: Client, body: bytes, error: str) -> None:
    answer = await client.post("/debug/preview", data=body)
    assert answer.status == 400
    assert error in (await answer.json())["error"]


async def test_one_preview_at_a_time(daemon: Daemon, client: Client) -> None:
    daemon.streams.gate = asyncio.Event()
    body = request(web=entry("web.example", 80, "10.0.0.2"))
    first = asyncio.create_task(client.post("/debug/preview", json=body))
    await daemon.streams.asked.wait()
    second = await client.post("/debug/preview", json=body)
    assert second.status == 429
    assert "already running" in (await second.json())["error"]
    daemon.streams.gate.set()
    assert (await first).status == 200
    third = await client.post("/debug/preview", json=body)  # released after the first
    assert third.status == 200


def test_field_diff_names_paths_and_bounds() -> None:
    old = {"a": {"b": [1, 2]}, "c": "x", "gone": True}
    new = {"a": {"b": [1, 3, 4]}, "c": "x"}
    assert field_diff(old, new) == [
        {"path": "a.b[1]", "old": 2, "new": 3},
        {"path": "a.b[2]", "old": None, "new": 4},
        {"path": "gone", "old": True, "new": None},
    ]
    many = field_diff({"k": list(range(100))}, {"k": list(range(1, 101))})
    assert len(many) == 51 and many[-1] == {"path": "...", "more": 50}


def test_place_by_path_then_by_base_name_else_new() -> None:
    root = "/cfg"
    existing = ["/cfg/a.yaml", "/cfg/sub/b.yaml", "/cfg/x/c.yaml", "/cfg/y/c.yaml"]
    names = ["a.yaml", "elsewhere/b.yaml", "c.yaml", "new.yml", "/cfg/sub/b2.yaml"]
    assert place(names, root, existing) == {
        "a.yaml": "/cfg/a.yaml",
        "elsewhere/b.yaml": "/cfg/sub/b.yaml",  # the only b.yaml
        "c.yaml": "/cfg/c.yaml",  # two c.yaml: neither is meant, a new file
        "new.yml": "/cfg/new.yml",
        "/cfg/sub/b2.yaml": "/cfg/sub/b2.yaml",
    }
    with pytest.raises(ValueError, match=r"both name /cfg/a\.yaml"):
        place(["a.yaml", "/cfg/a.yaml"], root, existing)


class Candidates:
    """A candidate registryd.yaml that removes the directory's shard and adds one with
    ``new.example``; ``gate``, when set, holds the answer."""

    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None
        self.asked: list[dict[str, Any]] = []
        self.called = asyncio.Event()

    async def candidate(
        self, *, path: str, content: bytes, registry: str, timeout: float
    ) -> CandidateRegistries:
        self.asked.append(
            {"path": path, "content": content, "registry": registry, "timeout": timeout}
        )
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if b"invalid" in content:
            raise ConfigError("--config /c/registryd.yaml:1: invalid")
        other = ShardKey("etcd", "other")
        added = Replace(services=(service("new.example"),))
        return CandidateRegistries(
            changes={KEY: None, other: added},
            priorities={other: 100},
            registries={"other": {"type": "etcd", "status": "added", "firstState": True}},
            warnings=("registry slow: no first state within 5s: timed out",),
        )


def service(host: str) -> Service:
    return Service(hostname=host, ports=(Port(number=80, name="http", protocol="HTTP"),))


CONFIG = {"config": {"path": "/c/registryd.yaml", "content": "registries: []"}}


async def test_a_candidate_config_is_previewed_from_a_copy(daemon: Daemon) -> None:
    candidates = Candidates()
    client = await daemon.client(candidates=candidates)
    view, snapshot = daemon.store.view, daemon.live.snapshot
    try:
        answer = await client.post("/debug/preview", json={**CONFIG, "registry": "other"})
        assert answer.status == 200, await answer.text()
        body = await answer.json()
    finally:
        await client.close()
    assert candidates.asked == [
        {"path": "/c/registryd.yaml", "content": b"registries: []", "registry": "other",
         "timeout": 30.0}
    ]  # fmt: skip
    assert body["config"] == "/c/registryd.yaml"
    assert body["registries"] == {"other": {"type": "etcd", "status": "added", "firstState": True}}
    (group,) = body["groups"]
    assert group["changes"]["cds"]["added"]["names"] == ["outbound|80||new.example"]
    assert group["changes"]["cds"]["removed"]["names"] == ["outbound|80||web.example"]
    assert body["warnings"][0] == "registry slow: no first state within 5s: timed out"
    assert (
        "host web.example would lose all endpoints (1 now) (the host would be removed)"
        in (body["warnings"])
    )
    assert daemon.store.view is view and daemon.live.snapshot is snapshot


async def test_a_candidate_config_from_a_remote_peer_is_refused(daemon: Daemon) -> None:
    candidates = Candidates()
    client = await daemon.client(peer="10.1.2.3", candidates=candidates)
    try:
        answer = await client.post("/debug/preview", json=CONFIG)
        assert answer.status == 403
    finally:
        await client.close()
    assert candidates.asked == []


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"config": {"path": "c.yaml", "content": ""}}, "must hold an absolute 'path'"),
        ({"config": {"path": "/c.yaml"}}, "must hold an absolute 'path' and 'content'"),
        ({**CONFIG, "timeout": 121}, "'timeout' may be at most 120 seconds"),
        ({**CONFIG, "timeout": 0}, "'timeout' must be a number of seconds over 0"),
        ({**CONFIG, "files": {}}, "body is not a preview request"),
        ({"config": {"path": "/c.yaml", "content": "invalid"}}, "/c/registryd.yaml:1: invalid"),
    ],
)
async def test_a_bad_config_request_is_400(
    daemon: Daemon, body: dict[str, Any], error: str
) -> None:
    client = await daemon.client(candidates=Candidates())
    try:
        answer = await client.post("/debug/preview", json=body)
        assert answer.status == 400
        assert error in (await answer.json())["error"]
    finally:
        await client.close()


async def test_config_previews_need_candidates(client: Client) -> None:
    answer = await client.post("/debug/preview", json=CONFIG)
    assert answer.status == 400
    assert "previews ServiceEntry files only" in (await answer.json())["error"]


async def test_one_preview_at_a_time_while_candidate_registries_run(daemon: Daemon) -> None:
    candidates = Candidates()
    candidates.gate = asyncio.Event()
    client = await daemon.client(candidates=candidates)
    try:
        first = asyncio.create_task(client.post("/debug/preview", json=CONFIG))
        await candidates.called.wait()
        second = await client.post("/debug/preview", json=request(web=entry("a.example", 80)))
        assert second.status == 429
        candidates.gate.set()
        assert (await first).status == 200
        third = await client.post("/debug/preview", json=CONFIG)
        assert third.status == 200
    finally:
        await client.close()
