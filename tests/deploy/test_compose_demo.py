"""The compose demo's registryd settings: the daemon accepts the command the compose file
runs, and the log-level example of compose/README.md works from the host — where the
request reaches registryd from the Docker network's gateway, not from loopback."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from registryd.tools import cli
from registryd.web.logging_api import logging_routes

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
GATEWAY = "172.28.0.1"  # the demo network's gateway: the peer of a request from the host


def registryd_service() -> dict[str, object]:
    service: dict[str, object] = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())[
        "services"
    ]["registryd"]
    return service


def test_the_demo_command_is_accepted_and_lets_the_host_change_log_levels() -> None:
    command = registryd_service()["command"]
    assert isinstance(command, list)
    args = [
        a.replace("/etc/registryd/registryd.yaml", str(COMPOSE / "registryd.yaml")) for a in command
    ]
    settings = cli.parse_args(args)
    assert [(r.name, r.type) for r in settings.registries] == [
        ("consul", "consul"),
        ("vms", "serviceentry"),
    ]
    assert settings.allow_remote_log_level
    assert str(settings.http_addr) == "0.0.0.0:8080"  # reachable through the published port


def test_the_demo_publishes_registryd_on_the_hosts_loopback_only() -> None:
    ports = registryd_service()["ports"]
    assert isinstance(ports, list)
    assert ports == [f"127.0.0.1:{p}:{p}" for p in (15010, 8080, 15014)]


def test_readme_shows_the_log_level_change_from_the_host() -> None:
    text = (COMPOSE / "README.md").read_text()
    assert 'curl -s -X PUT -d \'{"output_level":"debug"}\' localhost:8080/debug/logging/xds' in (
        text
    )
    assert "--allowRemoteLogLevel" in text


def from_peer(remote: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware: every request arrives from ``remote``, as through Docker's proxy."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        return await handler(request.clone(remote=remote))

    return middleware


async def put_level(allow_remote: bool, headers: dict[str, str]) -> int:
    """The status of the README's PUT, sent from the gateway."""
    app = web.Application(middlewares=[from_peer(GATEWAY)])
    app.router.add_routes(logging_routes(allow_remote=allow_remote))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.put(
            "/debug/logging/xds", data=b'{"output_level":"info"}', headers=headers
        )
        return response.status


async def test_from_the_gateway_a_change_needs_the_flag_and_headers_do_not_help() -> None:
    forged = {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1", "Forwarded": "for=::1"}
    logger = logging.getLogger("registryd.xds")
    level = logger.level
    try:
        assert await put_level(False, {}) == 403
        assert await put_level(False, forged) == 403  # the TCP peer decides, not a header
        assert await put_level(True, {}) == 200
    finally:
        logger.setLevel(level)
