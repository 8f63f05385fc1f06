"""Runtime log levels over HTTP, modelled on istiod's ControlZ ``scopej`` API.

Routes (all bodies JSON; a scope object is ``{"name", "description", "output_level"}``
with ``output_level`` one of debug, info, warn, error, none):

* ``GET /debug/logging`` → list of scope objects: ``default`` first, then every logger
  already created under ``registryd.`` (``registryd.xds.server`` is scope ``xds.server``).
* ``GET /debug/logging/{scope}`` → one scope object; 404 for an unknown scope.
* ``PUT /debug/logging/{scope}`` with body ``{"output_level": "debug"}`` → sets the level
  and returns the updated scope object.  The body may also carry ``name`` and
  ``description`` (so a GET result can be edited and sent back); ``name`` must then
  match the URL and both are otherwise ignored.  403 unless the peer is loopback (or
  ``allow_remote``), 404 for an unknown scope, 400 for a bad body or level.  Each change
  logs one info line naming the scope, old and new level and the peer.

Errors are ``{"error": "<one line>"}``.  Reading levels is open to anyone who can reach
the debug port; only changes are restricted.  The peer is ``request.remote`` (the TCP
peer unless a middleware rewrites it); a missing or non-IP peer (unix socket) counts as
remote.  Level and scope logic lives in :mod:`registryd.base.logs`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType

from aiohttp import web

from registryd.base import logs

__all__ = ["is_loopback_peer", "logging_routes"]

log = logging.getLogger("registryd.web")

_ALLOWED_KEYS = frozenset({"name", "description", "output_level"})


def is_loopback_peer(remote: str | None) -> bool:
    """True for 127.0.0.0/8, ``::1`` and IPv4-mapped loopback (``::ffff:127.0.0.1``);
    False for anything else, including ``None`` and strings that are not IP addresses."""
    if not remote:
        return False
    host = remote.strip().removeprefix("[").removesuffix("]").split("%", 1)[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _requested_level(raw: bytes, scope: str) -> str:
    """The ``output_level`` of a PUT body; ``ValueError`` with a one-line reason."""
    example = 'expected a JSON object like {"output_level": "debug"}'
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValueError(f"body is not valid JSON: {example}") from None
    if not isinstance(body, dict):
        raise ValueError(f"body is not a JSON object: {example}")
    unknown = sorted(set(body) - _ALLOWED_KEYS)
    if unknown:
        raise ValueError(f"unknown keys {logs.clip(unknown, 200)}: {example}")
    if "name" in body and body["name"] != scope:
        raise ValueError(
            f"body names scope {logs.clip(body['name'], 64)} but the URL names {scope!r}"
        )
    level = body.get("output_level")
    if not isinstance(level, str):
        raise ValueError(f"'output_level' (a string) is required: {example}")
    logs.level_value(level)  # raises ValueError naming the valid levels
    return level


def logging_routes(
    allow_remote: bool = False,
    changed: Callable[[str, int], None] | None = None,
    described: Mapping[str, str] = MappingProxyType({}),
) -> list[web.RouteDef]:
    """The ``/debug/logging`` routes; ``allow_remote=True`` lets any peer change levels.
    ``changed`` is told each change (logger name, level): the xDS worker processes
    follow the main process' levels.  ``described`` gives the descriptions of the
    adapters' scopes (:func:`registryd.base.logs.list_scopes`)."""

    async def list_scopes(_: web.Request) -> web.Response:
        return web.json_response(logs.list_scopes(described))

    async def get_scope(request: web.Request) -> web.Response:
        scope = request.match_info["scope"]
        try:
            return web.json_response(logs.get_scope(scope, described))
        except logs.UnknownScopeError as exc:
            return _error(404, str(exc))

    async def put_scope(request: web.Request) -> web.Response:
        peer = request.remote
        if not allow_remote and not is_loopback_peer(peer):
            return _error(
                403, f"log levels can be changed only from loopback; peer {peer!r} refused"
            )
        scope = request.match_info["scope"]
        try:
            old = logs.get_scope(scope)["output_level"]
        except logs.UnknownScopeError as exc:
            return _error(404, str(exc))
        try:
            level = _requested_level(await request.read(), scope)
        except ValueError as exc:
            return _error(400, str(exc))
        except web.HTTPRequestEntityTooLarge:
            return _error(400, "body too large: expected a small JSON object")
        # Log while the line can show: before a change that may silence this logger,
        # otherwise after a change that may enable it.
        message = "log scope %s output_level changed from %s to %s by %s"
        new = logs.level_name(logs.level_value(level))
        logged = log.isEnabledFor(logging.INFO)
        if logged:
            log.info(message, scope, old, new, peer)
        info = logs.set_scope_level(scope, level, described)  # loggers are never removed
        if changed is not None:
            changed(logs.logger_name(scope), logs.level_value(level))
        if not logged:
            log.info(message, scope, old, new, peer)
        return web.json_response(info)

    return [
        web.get("/debug/logging", list_scopes),
        web.get("/debug/logging/{scope}", get_scope),
        web.put("/debug/logging/{scope}", put_scope),
    ]
