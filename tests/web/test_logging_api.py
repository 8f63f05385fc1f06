"""``/debug/logging``: list, read and change scope levels over HTTP (loopback only)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from registryd.web.logging_api import is_loopback_peer, logging_routes

Client = TestClient[web.Request, web.Application]


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, logger: str) -> list[str]:
        return [r.getMessage() for r in self.records if r.name == logger]


pytestmark = pytest.mark.usefixtures("restore_loggers")


@pytest.fixture
def capture() -> Capture:
    """Records reaching ``registryd`` (children propagate to it); ``default`` at info."""
    handler = Capture()
    root = logging.getLogger("registryd")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.INFO)
    return handler


async def _client(app: web.Application) -> Client:
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    app = web.Application()
    app.router.add_routes(logging_routes())
    client = await _client(app)
    yield client
    await client.close()


def _from_peer(remote: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A middleware making every request look as if it came from ``remote``."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        return await handler(request.clone(remote=remote))

    return middleware


async def _remote_client(allow_remote: bool) -> Client:
    app = web.Application(middlewares=[_from_peer("10.1.2.3")])
    app.router.add_routes(logging_routes(allow_remote=allow_remote))
    return await _client(app)


async def test_list_scopes(client: Client) -> None:
    logging.getLogger("registryd").setLevel(logging.INFO)
    logging.getLogger("registryd.xds").setLevel(logging.DEBUG)
    logging.getLogger("registryd.xds.server").setLevel(logging.NOTSET)
    logging.getLogger("registryd.push").setLevel(logging.NOTSET)
    resp = await client.get("/debug/logging")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body: list[dict[str, Any]] = await resp.json()
    assert body[0]["name"] == "default"
    by_name = {s["name"]: s for s in body}
    assert {"default", "xds", "xds.server", "push", "web"} <= set(by_name)
    for scope in body:
        assert set(scope) == {"name", "description", "output_level"}
        assert isinstance(scope["description"], str) and scope["description"]
    assert by_name["default"]["output_level"] == "info"
    assert by_name["xds"]["output_level"] == "debug"
    assert by_name["xds.server"]["output_level"] == "debug"  # inherits from xds
    assert by_name["push"]["output_level"] == "info"  # inherits from default


async def test_get_one_scope(client: Client) -> None:
    logging.getLogger("registryd.push").setLevel(logging.WARNING)
    resp = await client.get("/debug/logging/push")
    assert resp.status == 200
    body = await resp.json()
    assert body["name"] == "push"
    assert body["output_level"] == "warn"
    assert set(body) == {"name", "description", "output_level"}


async def test_get_unknown_scope_is_404(client: Client) -> None:
    resp = await client.get("/debug/logging/no_such_scope")
    assert resp.status == 404
    assert resp.content_type == "application/json"
    assert "no_such_scope" in (await resp.json())["error"]


async def test_put_changes_level_and_logs_who(client: Client, capture: Capture) -> None:
    logger = logging.getLogger("registryd.xds")
    logger.setLevel(logging.INFO)
    logger.debug("before")
    resp = await client.put("/debug/logging/xds", json={"output_level": "debug"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["name"] == "xds"
    assert body["output_level"] == "debug"
    assert logger.level == logging.DEBUG
    logger.debug("after")
    assert capture.messages("registryd.xds") == ["after"]
    (audit,) = capture.messages("registryd.web")
    assert "xds" in audit and "from info to debug" in audit and "127.0.0.1" in audit
    resp = await client.get("/debug/logging/xds")
    assert (await resp.json())["output_level"] == "debug"


async def test_put_accepts_a_get_result_sent_back(client: Client) -> None:
    logging.getLogger("registryd.push").setLevel(logging.INFO)
    scope = await (await client.get("/debug/logging/push")).json()
    scope["output_level"] = "error"
    resp = await client.put("/debug/logging/push", json=scope)
    assert resp.status == 200, await resp.text()
    assert logging.getLogger("registryd.push").level == logging.ERROR


async def test_put_none_silences_scope_and_still_logs_the_change(
    client: Client, capture: Capture
) -> None:
    web_logger = logging.getLogger("registryd.web")
    web_logger.setLevel(logging.NOTSET)
    resp = await client.put("/debug/logging/default", json={"output_level": "none"})
    assert resp.status == 200
    assert (await resp.json())["output_level"] == "none"
    logging.getLogger("registryd").critical("hidden")
    assert capture.messages("registryd") == []
    assert len(capture.messages("registryd.web")) == 1  # logged before it went quiet


async def test_put_bad_level_is_400(client: Client) -> None:
    logger = logging.getLogger("registryd.xds")
    logger.setLevel(logging.INFO)
    resp = await client.put("/debug/logging/xds", json={"output_level": "loud"})
    assert resp.status == 400
    assert resp.content_type == "application/json"
    error = (await resp.json())["error"]
    assert "'loud'" in error and "debug" in error
    assert logger.level == logging.INFO


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"output_level": 3}',
        b'{"outputLevel": "debug"}',
        b'{"name": "push", "output_level": "debug"}',
        b"\xff\xfe",
        b'{"output_level": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # nested deep
        b'{"output_level": "' + b"x" * 70_000 + b'"}',  # too large
    ],
    ids=lambda data: repr(data[:24]),
)
async def test_put_bad_body_is_400(client: Client, data: bytes) -> None:
    logger = logging.getLogger("registryd.xds")
    logger.setLevel(logging.INFO)
    resp = await client.put("/debug/logging/xds", data=data)
    assert resp.status == 400
    assert (await resp.json())["error"]
    assert logger.level == logging.INFO


async def test_put_unknown_scope_is_404_and_creates_nothing(client: Client) -> None:
    resp = await client.put("/debug/logging/never_made", json={"output_level": "debug"})
    assert resp.status == 404
    assert "never_made" in (await resp.json())["error"]
    assert "registryd.never_made" not in logging.Logger.manager.loggerDict


async def test_put_from_remote_peer_is_403() -> None:
    logger = logging.getLogger("registryd.xds")
    logger.setLevel(logging.INFO)
    client = await _remote_client(allow_remote=False)
    try:
        resp = await client.put("/debug/logging/xds", json={"output_level": "debug"})
        assert resp.status == 403
        assert "10.1.2.3" in (await resp.json())["error"]
        assert logger.level == logging.INFO
        resp = await client.get("/debug/logging/xds")  # reading stays open
        assert resp.status == 200
    finally:
        await client.close()


async def test_put_from_remote_peer_allowed_when_configured() -> None:
    logger = logging.getLogger("registryd.xds")
    logger.setLevel(logging.INFO)
    client = await _remote_client(allow_remote=True)
    try:
        resp = await client.put("/debug/logging/xds", json={"output_level": "warn"})
        assert resp.status == 200
        assert logger.level == logging.WARNING
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("remote", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("10.1.2.3", False),
        ("192.168.0.1", False),
        ("::ffff:10.1.2.3", False),
        ("2001:db8::1", False),
        ("0.0.0.0", False),
        ("localhost", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback_peer(remote: str | None, allowed: bool) -> None:
    assert is_loopback_peer(remote) is allowed
