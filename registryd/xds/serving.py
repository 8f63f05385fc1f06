"""Serving snapshots to proxies: the one seam between the daemon and whatever serves.

The daemon composes exactly one :class:`Serving` and never asks which it is:

* :class:`LocalServing`: this process serves, with its own :class:`XdsServer`,
  :class:`Throttle`, :class:`PushTracker`, :class:`XdsMetrics` and gRPC server
  (``--xdsWorkers 1``).  An xDS worker process runs one as it is
  (:mod:`registryd.workers.worker`) and adds only its channel to the main process.
* :class:`registryd.workers.pool.WorkerPool`: N worker processes serve, each with its
  own ``LocalServing``; the pool ships them the snapshots and merges their answers.

Contract of a :class:`Serving`, besides the questions of
:class:`registryd.xds.streams.Streams`:

* :meth:`~Serving.start` listens on the xDS ports and returns them (plaintext, TLS; 0:
  that one is off) once clients can connect; :class:`ConfigError` if it cannot listen.
* :meth:`~Serving.announce` says that snapshot ``version`` is a push (its deliveries are
  traced, ``/debug/pushz``); it is called before that snapshot is published.
* :meth:`~Serving.publish` makes a snapshot current; it never blocks.
* :meth:`~Serving.stop` ends every stream at once (clients reconnect).
* :meth:`~Serving.on_outcome` registers a callback told (on the event loop of the
  caller's process) each :class:`~registryd.xds.tracking.Outcome` of an announced push,
  wherever the proxy is served.
* :meth:`~Serving.set_log_level` tells the processes that serve a logger's new level
  (the caller has set it in its own process already: in-process serving does nothing).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import grpc
from prometheus_client import CollectorRegistry

from registryd.base.health import TaskHealth
from registryd.xds.addresses import Address, ServerOptions, TlsFiles
from registryd.xds.listen import bind, grpc_options, stop_serving
from registryd.xds.metrics import XdsMetrics
from registryd.xds.server import XdsServer
from registryd.xds.snapshot import Snapshot
from registryd.xds.streams import LocalStreams, Streams
from registryd.xds.throttle import Throttle
from registryd.xds.tracking import Outcome, PushTracker

__all__ = ["LocalServing", "Serving", "new_version_prefix"]


def new_version_prefix() -> str:
    """The prefix of every version and nonce a daemon serves (its start time), the same
    in every process serving its streams."""
    return time.strftime("%Y%m%dT%H%M%S")


class Serving(Streams, Protocol):
    """Serves snapshots to proxies and answers questions about the streams (see the
    module docstring)."""

    async def start(self) -> tuple[int, int]: ...

    def announce(self, version: int, started: float, published: float) -> None: ...

    def publish(self, snapshot: Snapshot) -> None: ...

    async def stop(self) -> None: ...

    def set_log_level(self, name: str, level: int) -> None: ...

    def on_config_wanted(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the event loop) when a client asks for Istio config
        while the current snapshot has no MCP tables (``Snapshot.mcp``): an istiod
        waits for them."""

    def on_outcome(self, callback: Callable[[Outcome], None]) -> None:
        """Call ``callback`` with each outcome of an announced push at a proxy (see
        :class:`~registryd.xds.tracking.Outcome`); it must not raise."""


class LocalServing(LocalStreams):
    """xDS served by this process: an :class:`XdsServer` (``xds``) with its throttle
    (``push_throttle``, ``max_requests_per_second``: 0 or None, no limit), push tracker
    (``tracker``) and stream metrics (``metrics``), in a gRPC server listening on
    ``grpc_addr`` (None: off) and, given ``tls``, ``secure_grpc_addr``.

    ``registry``: where the stream metrics are registered.  Given (the daemon's own
    registry), its owner reports them and :meth:`metric_families` returns none; None: a
    registry of this serving's own (:attr:`registry`, a worker's), which
    :meth:`metric_families` reports.  ``worker``: the worker's number (connection ids and
    listings say which worker serves them; None: the daemon's own process)."""

    def __init__(
        self,
        *,
        grpc_addr: Address | None,
        secure_grpc_addr: Address | None = None,
        tls: TlsFiles | None = None,
        options: ServerOptions | None = None,
        version_prefix: str | None = None,
        max_unknown_names: int | None = None,
        push_throttle: int | None = None,
        max_requests_per_second: float | None = None,
        health: TaskHealth | None = None,
        registry: CollectorRegistry | None = None,
        worker: int | None = None,
    ) -> None:
        own = registry is None
        self.registry = CollectorRegistry(auto_describe=False) if registry is None else registry
        xds = XdsServer(
            version_prefix=version_prefix,
            root_namespace=(options or ServerOptions()).root_namespace,
            health=health,
            throttle=Throttle.build(push_limit=push_throttle, rate=max_requests_per_second),
            id_prefix="conn-" if worker is None else f"conn-w{worker}-",
        )
        if max_unknown_names is not None:
            xds.max_unknown_names = max_unknown_names
        tracker = PushTracker()
        super().__init__(xds, tracker, self.registry if own else None, worker=worker)
        self.xds = xds
        self.tracker = tracker
        self.metrics = XdsMetrics(self.registry, xds, tracker)
        xds.throttle.observe(self.metrics.throttled)
        xds.observers.extend((tracker, self.metrics))
        self._grpc_addr = grpc_addr
        self._secure_grpc_addr = secure_grpc_addr if tls is not None else None
        self._tls = tls
        self._options = options or ServerOptions()
        self._server: grpc.aio.Server | None = None

    async def start(self) -> tuple[int, int]:
        """Listen; the plaintext and TLS ports (0: that one is off)."""
        self._server = grpc.aio.server(options=grpc_options(self._options))
        self._server.add_generic_rpc_handlers((self.xds.handler(),))
        plain = secure = 0
        if self._grpc_addr is not None:
            plain = bind(self._server, self._grpc_addr)
        if self._tls is not None and self._secure_grpc_addr is not None:
            secure = bind(self._server, self._secure_grpc_addr, self._tls)
        await self._server.start()
        return plain, secure

    def announce(self, version: int, started: float, published: float) -> None:
        self.tracker.begin(version, started, published)

    def publish(self, snapshot: Snapshot) -> None:
        self.xds.publish(snapshot)

    def on_config_wanted(self, callback: Callable[[], None]) -> None:
        self.xds.config_wanted.append(callback)

    def on_outcome(self, callback: Callable[[Outcome], None]) -> None:
        self.tracker.listeners.append(callback)

    async def stop(self) -> None:
        if self._server is not None:
            await stop_serving(self._server, self.xds)
            self._server = None

    def set_log_level(self, name: str, level: int) -> None:
        """Nothing to do: this serving runs in the process whose level was set."""
