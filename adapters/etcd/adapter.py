"""The etcd registry: service instances under a key prefix of an etcd v3 cluster, watched.

Key layout and value formats: see :mod:`.parse`; settings: see :mod:`.settings`.

Contract (see :mod:`registryd.adapter`):

* ``watch()`` connects to the first of ``endpoints``, in the order given, that answers
  a linearizable listing of the prefix (one Range request within ``timeout``), then
  yields a :class:`~registryd.adapter.Replace` with the full state and a
  :class:`~registryd.adapter.Problems` with the per-key errors, the decoded values in
  use and the notes (warnings).
* It then watches the prefix from the listing's revision + 1, so no change between the
  two is lost.  Each event (a put, a delete, a lease expiring: etcd deletes the lease's
  keys) converts the service of its key again and yields an ``Upsert`` of that hostname
  (a ``Delete`` when its last instance is gone) if the service or its endpoints changed,
  then a new ``Problems`` when the errors, the values in use or the notes changed.
* A malformed value (or one whose conversion fails in any way) is reported under its
  key and the last good value of that key keeps being used, also across reconnects: a
  restarted ``watch()`` reads everything again and delivers what etcd holds then, with
  the last good value of each key that is still there but broken (and its error).
* Compaction: when the revision the watch needs has been compacted away, the prefix is
  listed again and a fresh ``Replace`` (and ``Problems``) is yielded; the watch goes on
  from the new listing's revision.  The connection is kept.
* Every ``Replace`` carries its listing's revision, every increment the newest
  ``mod_revision`` applied (``revision``: ``/debug/history`` shows it).
* Failure: a refused or closed connection, a request not answered within ``timeout``, a
  failed watch: ``watch()`` raises :class:`EtcdError`; the supervisor keeps the last good
  state served and calls ``watch()`` again with backoff, which connects again (first
  endpoint first) and starts with a ``Replace``.  A closed connection fails the watch
  stream at once.  A watch stream on an etcd that hangs, is cut off or lost its quorum
  may stay silent, so while watching, a linearizable read of one key (the prefix itself)
  is sent every :data:`PROBE_INTERVAL` seconds: such an etcd is detected within
  ``PROBE_INTERVAL + timeout`` seconds (6 s with the default timeout).
* The client (its gRPC channel and watch stream) is closed in ``finally``.

The password is sent only to etcd (Authenticate) and never logged or put in an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import aetcd  # type: ignore[import-untyped]
import grpc
from aetcd import rpc

from registryd.adapter import (
    PROBLEMS_EVERY,
    AdapterContext,
    RegistryUnavailable,
    Update,
    describe_error,
    follow,
)

from .settings import Endpoint, EtcdSettings, format_endpoint, parse_settings
from .state import KeyTable

__all__ = ["PROBE_INTERVAL", "EtcdAdapter", "EtcdError"]

log = logging.getLogger("registryd.etcd")

PROBE_INTERVAL = 1.0  # seconds between liveness probes while the watch is idle
CHANNEL_OPTIONS: Mapping[str, Any] = {
    "grpc.max_receive_message_length": 2**31 - 1,  # a listing of a big prefix; as etcd's Go client
    # Every (re)connect gets a fresh connection: with gRPC's process-wide subchannel pool
    # a new channel would inherit the failed connection's reconnect backoff and keep
    # failing for seconds after etcd is back.
    "grpc.use_local_subchannel_pool": 1,
}


class EtcdError(RegistryUnavailable, RuntimeError):
    """etcd cannot be used right now (unreachable, not answering, watch lost)."""


class _Client(aetcd.Client):
    """aetcd's client on a channel of our own: TLS when ``credentials`` are given, and
    an Authenticate error that says what failed.  Everything else is aetcd's."""

    def __init__(
        self,
        endpoint: Endpoint,
        settings: EtcdSettings,
        credentials: grpc.ChannelCredentials | None,
    ) -> None:
        super().__init__(
            host=endpoint[0],
            port=endpoint[1],
            username=settings.username,
            password=settings.password,
            timeout=settings.timeout,
            options=dict(CHANNEL_OPTIONS),
        )
        self.target = format_endpoint(endpoint)
        self._credentials = credentials
        self._grpc_tasks: set[asyncio.Task[Any]] = set()

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        options = list(self._options.items())
        if self._credentials is None:
            channel = grpc.aio.insecure_channel(self.target, options=options)
        else:
            channel = grpc.aio.secure_channel(self.target, self._credentials, options=options)
        self.channel = channel
        if self._username is not None:
            request = rpc.AuthenticateRequest(name=self._username, password=self._password)
            try:
                reply = await rpc.AuthStub(channel).Authenticate(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                raise aetcd.ClientError(
                    f"authentication as {self._username!r} failed: "
                    f"{exc.code().name}: {exc.details()}"
                ) from None
            self.metadata = (("token", reply.token),)
        self.kvstub = rpc.KVStub(channel)
        self.clusterstub = rpc.ClusterStub(channel)
        self.leasestub = rpc.LeaseStub(channel)
        self.maintenancestub = rpc.MaintenanceStub(channel)
        self._watcher = aetcd.Watcher(
            self._tracked(rpc.WatchStub(channel)), timeout=self._timeout, metadata=self.metadata
        )
        self._connected.set()

    def _tracked(self, stub: Any) -> Any:
        """``stub`` with the gRPC-internal task of each Watch call remembered (see
        :meth:`close`)."""
        method = stub.Watch
        loop = asyncio.get_running_loop()

        def watch(*args: Any, **kwargs: Any) -> Any:
            before = _grpc_status_tasks()
            call = method(*args, **kwargs)
            # gRPC creates the call's status task in the first step of a task it has just
            # scheduled; this callback runs right after that step.
            loop.call_soon(self._adopt, before)
            return call

        stub.Watch = watch
        return stub

    def _adopt(self, before: set[asyncio.Task[Any]]) -> None:
        self._grpc_tasks.update(_grpc_status_tasks() - before)

    async def close(self) -> None:
        """Close the channel, then wait (briefly) until gRPC has finished the status
        tasks of the watch streams: when this returns, nothing of this client runs."""
        try:
            await super().close()
        finally:
            pending = [t for t in self._grpc_tasks if not t.done()]
            self._grpc_tasks.clear()
            if pending:
                await asyncio.wait(pending, timeout=min(self._timeout or 1.0, 1.0))


def _grpc_status_tasks() -> set[asyncio.Task[Any]]:
    """gRPC's own tasks that wait for the status of a streaming call (they end a moment
    after the call is cancelled or the channel closed, when gRPC's core says so)."""
    return {
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "").endswith("_handle_status_once_received")
    }


async def _close(client: _Client, timeout: float) -> None:
    try:
        await asyncio.wait_for(client.close(), timeout)
    except Exception as exc:  # the connection is being dropped either way
        log.debug("closing the etcd client for %s: %s", client.target, describe_error(exc))


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


async def _credentials(settings: EtcdSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials from the files, read now (renewed files count from the next
    connect); None without TLS."""
    if not settings.tls:
        return None
    files = {
        "ca_file": settings.ca_file,
        "cert_file": settings.cert_file,
        "key_file": settings.key_file,
    }
    data: dict[str, bytes | None] = {}
    for name, path in files.items():
        try:
            data[name] = None if path is None else await asyncio.to_thread(_read, path)
        except OSError as exc:
            raise EtcdError(f"cannot read {name} {path}: {exc.strerror or exc}") from exc
    return grpc.ssl_channel_credentials(
        root_certificates=data["ca_file"],
        private_key=data["key_file"],
        certificate_chain=data["cert_file"],
    )


class _Stream:
    """One watch of the prefix and a liveness probe next to it.  :meth:`next` hands out
    the watch events in order and raises the first failure of either."""

    def __init__(self, client: _Client, watch: Any, probe_key: bytes) -> None:
        self._watch = watch
        self.revision = 0  # the newest mod_revision applied (events carry no header)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._tasks = (
            asyncio.create_task(self._read(), name=f"etcd-watch:{client.target}"),
            asyncio.create_task(self._probe(client, probe_key), name=f"etcd-probe:{client.target}"),
        )

    @classmethod
    async def open(cls, client: _Client, prefix: bytes, revision: int, timeout: float) -> _Stream:
        try:
            watch = await client.watch_prefix(prefix, start_revision=revision)
        except aetcd.WatchTimeoutError as exc:
            raise EtcdError(
                f"etcd at {client.target} did not confirm the watch of {prefix.decode()} "
                f"within {timeout:g}s"
            ) from exc
        return cls(client, watch, prefix)

    async def _read(self) -> None:
        try:
            async for event in self._watch:
                self._queue.put_nowait(event)
            self._queue.put_nowait(EtcdError("the etcd watch stream ended"))
        except Exception as exc:  # handed to next(), which raises it
            self._queue.put_nowait(exc)

    async def _probe(self, client: _Client, key: bytes) -> None:
        try:
            while True:
                await asyncio.sleep(PROBE_INTERVAL)
                await client.get(key)
        except Exception as exc:
            error = EtcdError(f"etcd at {client.target} stopped answering: {describe_error(exc)}")
            error.__cause__ = exc
            self._queue.put_nowait(error)

    async def next(self) -> Any:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def close(self, timeout: float) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:  # aetcd already dropped a watch that failed; this ends one that did not
            await asyncio.wait_for(self._watch.cancel(), timeout)
        except Exception as exc:
            log.debug("cancelling the etcd watch: %s", describe_error(exc))


def _items(listing: Any) -> Iterable[tuple[bytes, bytes]]:
    return ((kv.key, kv.value) for kv in listing.kvs)


async def _apply_next(stream: _Stream, table: KeyTable) -> None:
    """Wait for the next watch event and apply it to ``table``."""
    event = await stream.next()
    stream.revision = max(stream.revision, int(getattr(event.kv, "mod_revision", 0) or 0))
    if event.kind == "DELETE":
        table.delete(event.kv.key)
    else:
        table.put(event.kv.key, event.kv.value)


def _revision(stream: _Stream) -> str:
    """The newest ``mod_revision`` applied from ``stream``; ``""`` before any."""
    return f"{stream.revision}" if stream.revision else ""


class EtcdAdapter:
    """Service instances in etcd (see the module docstring)."""

    default_priority = 100  # merge priority when registryd.yaml gives none
    log_scope = "etcd"
    log_description = "etcd registry adapter: list and watch of the service prefix."

    def __init__(self, *, name: str, settings: Mapping[str, Any], context: AdapterContext) -> None:
        self.name = name
        self.settings = parse_settings(name, settings)
        self._prefix = self.settings.prefix.encode()
        # kept across reconnects: a broken key's error and last good value survive them
        self._table = KeyTable(self.settings.options)

    async def _connect(self) -> tuple[_Client, Any]:
        """A client on the first endpoint that answers, and its listing of the prefix."""
        credentials = await _credentials(self.settings)
        failures = []
        for endpoint in self.settings.endpoints:
            client = _Client(endpoint, self.settings, credentials)
            try:
                listing = await client.get_prefix(self._prefix)
            except (TimeoutError, aetcd.ClientError, grpc.aio.AioRpcError) as exc:
                failures.append(f"{client.target}: {describe_error(exc)}")
                await _close(client, self.settings.timeout)
                continue
            except BaseException:
                await _close(client, self.settings.timeout)
                raise
            return client, listing
        raise EtcdError(f"no etcd endpoint answered: {'; '.join(failures)}")

    async def _list(self, client: _Client) -> Any:
        listing = await client.get_prefix(self._prefix)
        log.info(
            "etcd %s: %d keys under %s at revision %d on %s",
            self.name,
            len(listing.kvs),
            self.settings.prefix,
            listing.header.revision,
            client.target,
        )
        return listing

    async def watch(self) -> AsyncIterator[Update]:
        client: _Client | None = None
        try:
            client, listing = await self._connect()
            log.info(
                "etcd %s: connected to %s; %d keys under %s at revision %d",
                self.name,
                client.target,
                len(listing.kvs),
                self.settings.prefix,
                listing.header.revision,
            )
            table = self._table
            while True:
                table.reset(_items(listing))
                yield dataclasses.replace(table.replace(), revision=f"{listing.header.revision}")
                yield (problems := table.problems())
                stream: _Stream | None = None
                try:
                    revision = listing.header.revision + 1
                    stream = await _Stream.open(
                        client, self._prefix, revision, self.settings.timeout
                    )
                    updates = follow(
                        functools.partial(_apply_next, stream, table),
                        table.changes,
                        table.problems,
                        problems,
                        every=PROBLEMS_EVERY,
                        revision=functools.partial(_revision, stream),
                    )
                    async with contextlib.aclosing(updates):
                        async for update in updates:
                            yield update
                except aetcd.RevisionCompactedError as exc:
                    log.warning(
                        "etcd %s: the watch fell behind a compaction (%s); listing %s again",
                        self.name,
                        exc,
                        self.settings.prefix,
                    )
                finally:
                    if stream is not None:
                        await stream.close(self.settings.timeout)
                listing = await self._list(client)
        except (TimeoutError, aetcd.ClientError, grpc.aio.AioRpcError) as exc:
            where = client.target if client is not None else "etcd"
            raise EtcdError(f"etcd at {where}: {describe_error(exc)}") from exc
        finally:
            if client is not None:
                await _close(client, self.settings.timeout)
