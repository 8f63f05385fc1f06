"""Wiring: builds the daemon from settings, starts it in order, stops it in reverse.

With ``strict`` (the daemon's command line) a registry that cannot be built (its plugin
does not load, or its adapter rejects its settings) is a :class:`ConfigError` raised by
the constructor, and :meth:`App.check_addresses` says which listening address cannot be
bound, before anything starts: only failures to *reach* a registry are retried.
Without ``strict`` (an embedding, tests) such a registry is retried with backoff like
any other failure.

The monitoring address serves the same HTTP handlers as the HTTP address, as istiod's
does.  xDS is served through one :class:`registryd.xds.serving.Serving`, chosen once from
``settings.xds_workers`` (:meth:`App.serving_for`): in this process
(:class:`~registryd.xds.serving.LocalServing`) or by worker processes
(:class:`~registryd.workers.pool.WorkerPool`); nothing else in the app depends on which.
Start order: store → push controller → xDS serving → HTTP → registries (so a proxy that
connects early is served the empty state, then the first full push).  Stop order is the
reverse.  xDS streams never end by themselves, so stopping does not wait for them: they
are cancelled at once (proxies reconnect, to another replica if there is one).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from registryd.adapter import Adapter, AdapterContext, ConfigError
from registryd.base.gcpolicy import FreezePolicy, GcPauses
from registryd.base.health import TaskHealth
from registryd.base.logs import logger_name
from registryd.build.clusters import BuildOptions
from registryd.daemon.config import Settings
from registryd.daemon.configpreview import ConfigPreview
from registryd.daemon.history import ChangeHistory, HistoryMetrics
from registryd.daemon.metrics import Metrics
from registryd.daemon.plugins import adapter_type, create_adapter, require
from registryd.daemon.push import PushController
from registryd.daemon.supervisor import Supervisor, restarting
from registryd.model import ShardKey
from registryd.registry.store import RegistryStore
from registryd.web.logging_api import is_loopback_peer
from registryd.web.server import DebugSources, make_app
from registryd.workers.channel import WorkerConfig
from registryd.workers.pool import WorkerPool, share
from registryd.xds.addresses import Address, ServerOptions
from registryd.xds.serving import LocalServing, Serving, new_version_prefix
from registryd.xds.tracking import PushRecord

__all__ = ["App"]

log = logging.getLogger("registryd")


def _loopback(host: str) -> bool:
    return host.lower() == "localhost" or is_loopback_peer(host)


def exposure_warnings(settings: Settings) -> list[str]:
    """Why the listening addresses may expose more than the operator meant: plaintext
    xDS or the debug endpoints on a non-loopback address (istiod's defaults, kept)."""
    out = []
    grpc_addr = settings.grpc_addr
    if grpc_addr is not None and not _loopback(grpc_addr.host):
        out.append(
            f"plaintext xDS listens on {grpc_addr} (not loopback): any client that reaches it "
            "gets every service and endpoint (as Envoy resources, and as Istio config over "
            "MCP), unauthenticated; use --grpcAddr off with TLS, or a loopback address"
        )
    for flag, addr in (
        ("--httpAddr", settings.http_addr),
        ("--monitoringAddr", settings.monitoring_addr),
    ):
        if not _loopback(addr.host):
            out.append(
                f"debug endpoints listen on {addr} ({flag}, not loopback): they show "
                "connected proxies and registry state to anyone who reaches them"
            )
    return out


def _bind_problem(addr: Address) -> str | None:
    """Why ``addr`` cannot be bound for listening now, or None if it can."""
    try:
        infos = socket.getaddrinfo(
            addr.host, addr.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return f"cannot resolve {addr.host!r} ({exc.strerror})"
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
            probe.listen(1)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return "not an address of this host (cannot assign requested address)"
            return (exc.strerror or str(exc)).lower()
    return None


@dataclass
class App:
    settings: Settings
    store: RegistryStore = field(default_factory=lambda: RegistryStore(adapter_type))
    health: TaskHealth = field(default_factory=TaskHealth)
    grpc_port: int = 0
    secure_grpc_port: int = 0  # 0: xDS over TLS is off (no certificate given)
    http_port: int = 0
    _adapters: list[tuple[ShardKey, Adapter | Callable[[], Adapter]]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _http: web.AppRunner | None = None
    _ready_once: bool = False
    strict: bool = False  # see the module docstring

    def __post_init__(self) -> None:
        context = AdapterContext(domain=self.settings.domain)
        for reg in self.settings.registries:
            key = ShardKey(reg.type, reg.name)
            require(reg)  # an unknown type is a config error: fatal
            self.store.expect(key, reg.priority, reg.export)
            create = functools.partial(create_adapter, reg, context)
            try:
                self._adapters.append((key, create()))
            except Exception as exc:  # retried by the supervisor; the daemon runs on
                if self.strict:
                    raise
                log.error("%s; retrying with backoff", exc)
                self._adapters.append((key, create))
        for scope in self.log_scopes():  # listed on /debug/logging before its first line
            logging.getLogger(logger_name(scope))
        self.supervisor = Supervisor(self.store, health=self.health)
        self.metrics = Metrics(
            self.store,
            lambda: dict(self.supervisor.restarts),
            lambda: dict(self.health.failures),
        )
        self.serving: Serving = self.serving_for(new_version_prefix())
        self.history = ChangeHistory(self.settings.history_bytes)
        self.metrics.registry.register(HistoryMetrics(self.history))
        self.push = PushController(
            self.store,
            self.serving.publish,
            debounce_after=self.settings.debounce_after,
            debounce_max=self.settings.debounce_max,
            eds_debounce=self.settings.eds_debounce,
            health=self.health,
            gc_policy=FreezePolicy() if self.settings.gc_freeze else None,
            build_options=BuildOptions(send_unhealthy=self.settings.send_unhealthy_endpoints),
            history=self.history,
        )
        for ignored in self.settings.ignored:  # where the builder used to say it
            logging.getLogger("registryd.push").warning("%s", ignored)
        for warning in self.settings.flag_warnings:
            log.warning("%s", warning)
        self.gc_pauses = GcPauses(self.metrics.registry)
        self.store.subscribe(self.metrics.registry_changed)
        self.push.listeners.append(self._announce)
        self.serving.on_config_wanted(self.push.want_mcp)
        self.serving.on_outcome(self.history.outcome)
        self.push.listeners.append(self.metrics.pushed)

    def serving_for(self, version_prefix: str) -> Serving:
        """What serves xDS (the one place that depends on ``--xdsWorkers``): worker
        processes, or this process with its stream metrics in the daemon's registry."""
        settings = self.settings
        if settings.xds_workers > 1:
            return WorkerPool(
                settings.xds_workers,
                self._worker_template(version_prefix),
                health=self.health,
                heartbeat_timeout=settings.xds_worker_heartbeat_timeout,
            )
        return LocalServing(
            grpc_addr=settings.grpc_addr,
            secure_grpc_addr=settings.secure_grpc_addr,
            tls=settings.tls,
            options=self._server_options(),
            version_prefix=version_prefix,
            max_unknown_names=settings.max_unknown_names,
            push_throttle=settings.push_throttle,
            max_requests_per_second=settings.max_requests_per_second,
            health=self.health,
            registry=self.metrics.registry,
        )

    def _announce(self, record: PushRecord) -> None:
        """Tell the serving that the push's snapshot, published next, is a push (it
        traces its deliveries)."""
        self.serving.announce(record.version, record.started, time.monotonic())

    def _server_options(self, reuse_port: bool = False) -> ServerOptions:
        return ServerOptions(
            max_connection_age=self.settings.max_connection_age,
            max_connection_age_grace=self.settings.max_connection_age_grace,
            reuse_port=reuse_port,
            root_namespace=self.settings.root_namespace,
        )

    def _worker_template(self, version_prefix: str) -> WorkerConfig:
        """What every xDS worker is started with: the daemon's limits split between
        the workers, its listening addresses, its version prefix (so versions and nonces
        mean the same on every worker)."""
        settings, workers = self.settings, self.settings.xds_workers
        return WorkerConfig(
            index=0,
            grpc_addr=settings.grpc_addr,
            secure_grpc_addr=settings.secure_grpc_addr if settings.tls is not None else None,
            tls=settings.tls,
            options=self._server_options(reuse_port=True),
            version_prefix=version_prefix,
            max_unknown_names=settings.max_unknown_names,
            push_throttle=int(share(settings.push_throttle, workers)),
            max_requests_per_second=share(settings.max_requests_per_second, workers),
            log_levels={},
            log_as_json=settings.log_as_json,
            gc_freeze=settings.gc_freeze,
        )

    def log_scopes(self) -> dict[str, str]:
        """The log scope of each configured registry's type, with its description, as
        the type's adapter declares them."""
        shards = (self.store.shards.get(key) for key, _ in self._adapters)
        kinds = (shard.kind for shard in shards if shard is not None)
        return {kind.log_scope: kind.log_description for kind in kinds if kind is not None}

    def not_ready(self) -> list[str]:
        """Why the daemon is not ready: before every registry synced and the state was
        pushed (once both happened, never again), and while an xDS worker does not
        answer (it is handed new connections but serves none, until it is replaced)."""
        hung = self.serving.unresponsive()
        if self._ready_once:
            return hung
        reasons = [f"registry {k} has not synced" for k in self.store.not_synced()]
        if not reasons and self.push.snapshot.version == 0 and self.store.view.version > 0:
            reasons.append("first push pending")
        if not reasons:
            self._ready_once = True
        return reasons + hung

    def addresses(self) -> list[tuple[str, Address]]:
        """(flag, address) of every address :meth:`start` listens on."""
        out = []
        if self.settings.grpc_addr is not None:
            out.append(("--grpcAddr", self.settings.grpc_addr))
        if self.settings.tls is not None:
            out.append(("--secureGRPCAddr", self.settings.secure_grpc_addr))
        out.append(("--httpAddr", self.settings.http_addr))
        out.append(("--monitoringAddr", self.settings.monitoring_addr))
        return out

    def check_addresses(self) -> None:
        """:class:`ConfigError` naming the flag of the first address that cannot be bound
        (in use, not an address of this host, a name that does not resolve).  Bound and
        released at once, as the servers bind (``SO_REUSEADDR``), so gRPC's core never
        gets to log its own complaint about a port it cannot add."""
        seen: set[tuple[str, int]] = set()
        for flag, addr in self.addresses():
            key = (addr.host, addr.port)
            if addr.port and key in seen:
                raise ConfigError(f"{flag} {addr}: that address is given to another flag too")
            seen.add(key)
            problem = _bind_problem(addr)
            if problem is not None:
                raise ConfigError(f"{flag} {addr}: cannot listen: {problem}")

    async def start(self) -> None:
        push = asyncio.create_task(restarting("push", self.push.run, self.health), name="push")
        self.health.watch(push)
        self._tasks.append(push)
        self.grpc_port, self.secure_grpc_port = await self.serving.start()
        settings = {reg.name: reg.settings for reg in self.settings.registries}
        sources = DebugSources(
            store=self.store,
            push=self.push,
            streams=self.serving,
            supervisor=self.supervisor,
            metrics=self.metrics,
            registries=[(key, settings.get(key.instance, {})) for key, _ in self._adapters],
            readiness=self.not_ready,
            health=self.health,
            allow_remote_log_level=self.settings.allow_remote_log_level,
            log_level_changed=self.serving.set_log_level,
            log_scopes=self.log_scopes(),
            live=self.push,
            candidates=ConfigPreview(
                running=self.settings.registries,
                defaults=self.settings.registry_defaults,
                types=self.settings.registry_types,
                context=AdapterContext(domain=self.settings.domain),
            ),
            history=self.history,
        )
        runner = web.AppRunner(make_app(sources), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.http_addr.host, self.settings.http_addr.port)
        await site.start()
        monitoring = web.TCPSite(
            runner, self.settings.monitoring_addr.host, self.settings.monitoring_addr.port
        )
        await monitoring.start()
        self._http = runner
        sockets = getattr(site._server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else 0
        for key, adapter in self._adapters:
            self.supervisor.start(key, adapter)
        self._log_started()

    def _log_started(self) -> None:
        secure = self.settings.tls
        grpc_addr = self.settings.grpc_addr
        log.info(
            "registryd serving xDS on %s, xDS over TLS %s, HTTP on %s, registries: %s",
            "off (--grpcAddr off)" if grpc_addr is None else f"{grpc_addr.host}:{self.grpc_port}",
            "off (no --tlsCertFile)"
            if secure is None
            else f"on {self.settings.secure_grpc_addr.host}:{self.secure_grpc_port}"
            + (" (mutual TLS)" if secure.client_ca else ""),
            f"{self.settings.http_addr.host}:{self.http_port}",
            ", ".join(str(k) for k, _ in self._adapters) or "none",
        )
        for warning in exposure_warnings(self.settings):
            log.warning("%s", warning)

    async def stop(self) -> None:
        await self.supervisor.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.cleanup()
        await self.serving.stop()
        self.gc_pauses.close()
        log.info("registryd stopped")
