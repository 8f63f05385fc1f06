"""``POST /debug/preview``: what candidate ServiceEntry/WorkloadEntry files (or a
candidate registryd.yaml) would change for every connected client, with nothing applied.

Request: a JSON object ``{"files": {name: content}, "registry": name}``; ``registry``
(the instance name of a ``serviceentry`` registry) may be left out when there is one.
Each candidate takes the place of the file of the same path in that registry's
directory, or of the only file of the same base name, or is a new file
(:func:`registryd.adapters.serviceentry.preview.place`); the other files stay as they
are on disk.  Or a candidate registryd.yaml, ``{"config": {"path": path, "content":
text}, "registry": name, "timeout": seconds}`` (``path``: absolute, on this machine;
``registry``: only that section; ``timeout``: for each candidate registry's first
state, default :data:`~registryd.web.candidates.DEFAULT_TIMEOUT`, at most
:data:`~registryd.web.candidates.MAX_TIMEOUT`), turned into candidate shards by the
daemon's :class:`~registryd.web.candidates.RegistryCandidates`.

Answer (200): ``registry``, ``files`` (per candidate: the ``file`` it takes the place of
and whether it ``replaces`` one), ``errors`` (per candidate, the registry's text for
what cannot be used; :mod:`registryd.tools.validate` exits 1 on them), ``fileWarnings``
(unknown fields), ``liveVersion`` (the snapshot compared with), ``groups`` and
``warnings`` (:mod:`registryd.build.preview`) and ``seconds`` (time to answer).  For a
registryd.yaml: ``config`` (its path), ``registries`` (per registry section: ``type``,
``status``, what ``changed``, whether a candidate adapter gave its ``firstState``),
``liveVersion``, ``groups``, ``groupsLeftOut``, ``warnings`` (the registries' first,
then the build's) and ``seconds``.

Errors are ``{"error": "<one line>"}``: 403 unless the peer is loopback (or the log-level
override, ``allow_remote``, is set: the same rule as :mod:`registryd.web.logging_api`),
413 for a body over ``max_body`` bytes (refused before it is read when its
``Content-Length`` says so), 400 for a body that is not such an object or a name that
cannot be a file of the directory or an invalid registryd.yaml (the text ``registryd
validate`` gives), 429 while another preview runs (one at a time), 503
when the registry's directory cannot be read.

Nothing is applied: the store is copied (:meth:`RegistryStore.copy`), the files are read
and converted by a registry of the preview's own, and the candidate snapshot is built by
a builder of its own, in a thread (:func:`registryd.offloop.off_loop`) so that the loop
keeps serving xDS and HTTP meanwhile.  For a registryd.yaml, the candidate registries'
adapters run first, on the loop, off to the side of the live ones
(:mod:`registryd.daemon.configpreview`); the lock is held meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from registryd.adapters.serviceentry.preview import candidate_state
from registryd.build.clusters import BuildOptions
from registryd.build.listeners import Conflict
from registryd.build.preview import Client, preview
from registryd.jsonbound import JsonLimits, JsonTooLarge, load_json
from registryd.model import ShardKey
from registryd.offloop import off_loop
from registryd.registry.store import RegistryStore, StoreCopy
from registryd.web.candidates import (
    DEFAULT_TIMEOUT,
    MAX_TIMEOUT,
    CandidateRegistries,
    RegistryCandidates,
)
from registryd.web.logging_api import is_loopback_peer
from registryd.xds.snapshot import Snapshot
from registryd.xds.streams import Streams

__all__ = ["MAX_BODY", "LiveBuild", "preview_routes"]

log = logging.getLogger("registryd.web")

MAX_BODY = 32 << 20  # bytes of one request: a thousand large files fit
_PROVIDER = "serviceentry"


class LiveBuild(Protocol):
    """What the preview reads of the daemon's push: the snapshot served now, the
    listener conflicts its builder found, and the options it builds with."""

    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def conflicts(self) -> Mapping[int, tuple[Conflict, ...]]: ...

    @property
    def build_options(self) -> BuildOptions: ...


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request, max_body: int) -> bytes:
    too_large = _Refused(413, f"request body over the limit of {max_body} bytes")
    if request.content_length is not None and request.content_length > max_body:
        raise too_large
    body = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > max_body:
            raise too_large
    return bytes(body)


@dataclass(frozen=True, slots=True, kw_only=True)
class _ConfigRequest:
    path: str
    content: bytes
    registry: str
    timeout: float


_EXAMPLE = (
    'expected {"files": {"<name>.yaml": "<content>"}, "registry": "<name>"} or '
    '{"config": {"path": "<path>", "content": "<registryd.yaml>"}, "registry": "<name>", '
    '"timeout": <seconds>}'
)


def _config(value: dict[str, Any]) -> _ConfigRequest:
    """The candidate registryd.yaml of a request."""
    if not set(value) <= {"config", "registry", "timeout"}:
        raise _Refused(400, f"body is not a preview request: {_EXAMPLE}")
    config, registry = value["config"], value.get("registry", "")
    timeout = value.get("timeout", DEFAULT_TIMEOUT)
    if (
        not isinstance(config, dict)
        or set(config) != {"path", "content"}
        or not all(isinstance(v, str) for v in config.values())
        or not os.path.isabs(config["path"])
        or not isinstance(registry, str)
    ):
        raise _Refused(400, f"'config' must hold an absolute 'path' and 'content': {_EXAMPLE}")
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout:
        raise _Refused(400, f"'timeout' must be a number of seconds over 0, got {timeout!r:.40}")
    if timeout > MAX_TIMEOUT:
        raise _Refused(400, f"'timeout' may be at most {MAX_TIMEOUT:g} seconds")
    content = config["content"].encode("utf-8", "surrogatepass")
    return _ConfigRequest(
        path=config["path"], content=content, registry=registry, timeout=float(timeout)
    )


def _files(value: Any) -> tuple[dict[str, bytes], str]:
    """The candidate files (name -> content) and the registry named by a request."""
    example = _EXAMPLE
    if not isinstance(value, dict) or not set(value) <= {"files", "registry"}:
        raise _Refused(400, f"body is not a preview request: {example}")
    files, registry = value.get("files"), value.get("registry", "")
    if not isinstance(files, dict) or not files:
        raise _Refused(400, f"'files' must be a non-empty object: {example}")
    if not all(isinstance(c, str) for c in files.values()) or not isinstance(registry, str):
        raise _Refused(400, f"file contents and 'registry' must be strings: {example}")
    return {n: c.encode("utf-8", "surrogatepass") for n, c in files.items()}, registry


def _registry(
    registries: Sequence[tuple[ShardKey, Mapping[str, Any]]], name: str
) -> tuple[ShardKey, Mapping[str, Any]]:
    found = [(k, s) for k, s in registries if k.provider == _PROVIDER]
    names = ", ".join(k.instance for k, _ in found) or "none"
    if name:
        found = [(k, s) for k, s in found if k.instance == name]
        if not found:
            raise _Refused(400, f"no serviceentry registry {name!r} (there are: {names})")
    if not found:
        raise _Refused(400, "no serviceentry registry is configured (--configDir)")
    if len(found) > 1:
        raise _Refused(400, f"several serviceentry registries ({names}): name one")
    return found[0]


def _clients(listing: list[tuple[float, dict[str, Any]]]) -> list[Client]:
    return [
        Client(proxy_id=item["proxyID"], tables={t: tuple(n) for t, n in item["tables"].items()})
        for _, item in listing
    ]


def _run(
    copy: StoreCopy,
    key: ShardKey,
    settings: Mapping[str, Any],
    files: dict[str, bytes],
    live: Snapshot,
    conflicts: Mapping[int, tuple[Conflict, ...]],
    options: BuildOptions,
    clients: list[Client],
) -> dict[str, Any]:
    """The answer's body (blocking: file I/O, parsing and a full build)."""
    root = os.fspath(settings["path"])
    outside = settings.get("follow_symlinks_outside") is True
    candidate = candidate_state(root, files, follow_outside=outside)
    view = copy.with_shard(key, candidate.update)
    before = copy.shards.get(key, ({}, {}))[0]
    hostnames = {*before, *(s.hostname for s in candidate.update.services)}
    found = preview(
        live_view=copy.view,
        candidate_view=view,
        hostnames=hostnames,
        live=live,
        live_conflicts=conflicts,
        options=options,
        clients=clients,
    )
    return {
        "registry": str(key),
        "files": {
            name: {"file": path, "replaces": name in candidate.replaced}
            for name, path in candidate.placed.items()
        },
        "errors": dict(candidate.errors),
        "fileWarnings": list(candidate.warnings),
        "liveVersion": live.version,
        **found,
    }


def _run_config(
    copy: StoreCopy,
    path: str,
    found: CandidateRegistries,
    live: Snapshot,
    conflicts: Mapping[int, tuple[Conflict, ...]],
    options: BuildOptions,
    clients: list[Client],
) -> dict[str, Any]:
    """The answer's body for a candidate registryd.yaml whose registries would change
    the shards as ``found`` says (blocking: a full build)."""
    view, hostnames = copy.with_shards(
        found.changes, priorities=found.priorities, exported=found.exported
    )
    result = preview(
        live_view=copy.view,
        candidate_view=view,
        hostnames=hostnames,
        live=live,
        live_conflicts=conflicts,
        options=options,
        clients=clients,
    )
    result["warnings"] = [*found.warnings, *result["warnings"]]
    return {
        "config": path,
        "registries": dict(found.registries),
        "liveVersion": live.version,
        **result,
    }


def preview_routes(
    *,
    store: RegistryStore,
    live: LiveBuild,
    streams: Streams,
    registries: Sequence[tuple[ShardKey, Mapping[str, Any]]],
    candidates: RegistryCandidates | None = None,
    allow_remote: bool = False,
    max_body: int = MAX_BODY,
) -> list[web.RouteDef]:
    """The ``/debug/preview`` route (see the module docstring); ``candidates``: what
    turns a candidate registryd.yaml into shards (None: such previews are refused)."""
    running = False

    def release(work: asyncio.Future[Any]) -> None:
        nonlocal running
        running = False
        if not work.cancelled():
            work.exception()  # retrieved: a cancelled request's failure is nobody's

    async def files_work(value: Any) -> tuple[asyncio.Future[dict[str, Any]], str]:
        files, name = _files(value)
        key, settings = _registry(registries, name)
        clients = _clients(await streams.listing("tables"))
        copy, snapshot = store.copy(), live.snapshot
        conflicts, options = dict(live.conflicts), live.build_options
        args = (copy, key, settings, files, snapshot, conflicts, options, clients)
        what = f"registry {key}"
        return asyncio.ensure_future(off_loop(_run, *args)), what

    async def config_work(value: dict[str, Any]) -> tuple[asyncio.Future[dict[str, Any]], str]:
        request = _config(value)
        if candidates is None:
            raise _Refused(400, "this daemon previews ServiceEntry files only")
        try:
            found = await candidates.candidate(
                path=request.path,
                content=request.content,
                registry=request.registry,
                timeout=request.timeout,
            )
        except ValueError as exc:
            raise _Refused(400, str(exc)) from None
        clients = _clients(await streams.listing("tables"))
        copy, snapshot = store.copy(), live.snapshot
        conflicts, options = dict(live.conflicts), live.build_options
        args = (copy, request.path, found, snapshot, conflicts, options, clients)
        what = f"registryd.yaml {request.path}"
        return asyncio.ensure_future(off_loop(_run_config, *args)), what

    async def run(request: web.Request) -> web.Response:
        nonlocal running
        peer = request.remote
        if not allow_remote and not is_loopback_peer(peer):
            return _error(403, f"previews can be asked only from loopback; peer {peer!r} refused")
        if running:
            return _error(429, "a preview is already running; try again when it is done")
        running = True
        started = time.monotonic()
        work: asyncio.Future[dict[str, Any]] | None = None
        try:
            body = await _body(request, max_body)
            try:
                value = await load_json(body, JsonLimits(max_bytes=max_body))
            except JsonTooLarge as exc:
                raise _Refused(413, str(exc)) from None
            except ValueError:
                raise _Refused(400, "body is not valid JSON") from None
            is_config = isinstance(value, dict) and "config" in value
            work, what = await (config_work(value) if is_config else files_work(value))
            work.add_done_callback(release)  # not before: a cancelled request's build runs on
            try:
                answer = await asyncio.shield(work)
            except ValueError as exc:
                raise _Refused(400, str(exc)) from None
            except OSError as exc:
                raise _Refused(503, f"{what}: {exc}") from None
        except _Refused as exc:
            return _error(exc.status, str(exc))
        finally:
            if work is None:
                running = False
        answer["seconds"] = round(time.monotonic() - started, 6)
        log.info(
            "preview for %s by %s: %d groups, %d warnings in %.3fs",
            what,
            peer,
            len(answer["groups"]),
            len(answer["warnings"]),
            answer["seconds"],
        )
        return web.json_response(answer)

    return [web.post("/debug/preview", run)]
