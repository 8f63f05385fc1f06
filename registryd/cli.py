"""Command line: ``registryd discovery [flags]`` (flag names follow pilot-discovery) and
``registryd version``; ``--version`` works on every command.

Errors in flags, the config file, a registry's settings or a listening address print one
clear line and exit 2; they never show a traceback.  SIGTERM and SIGINT stop the daemon
cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from registryd import __version__, proxystatus, validate
from registryd.adapter import ConfigError
from registryd.config import (
    RegistryConfig,
    Settings,
    auto_limit,
    check_paths,
    cpu_count,
    kubernetes_flag_defaults,
    load_registries,
    load_tls,
    parse_address,
    parse_duration,
    with_defaults,
)
from registryd.logs import check_scopes, parse_levels
from registryd.logs import setup as setup_logging
from registryd.plugins import available
from registryd.xds.listen import drain

__all__ = ["main", "parse_args"]

log = logging.getLogger("registryd")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def _parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool`` spellings, so ``--flag``, ``--flag=true`` and
    ``--flag=false`` work as with istiod's flags."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help text with each flag's default, when it has one (``None``: nothing to show)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS:
            return text
        if "%(default)" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


VERSION = f"registryd {__version__}"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="registryd", description="Service-registry federation daemon (xDS).")
    parser.add_argument("--version", action="version", version=VERSION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("version", help="print the version and exit")
    d = sub.add_parser(
        "discovery", help="run the discovery server", formatter_class=_DefaultsFormatter
    )
    d.error = parser.error  # type: ignore[method-assign]
    d.add_argument(
        "--grpcAddr",
        default=":15010",
        help="plaintext xDS (ADS) address; '' or off: no plaintext xDS (needs TLS)",
    )
    d.add_argument(
        "--secureGRPCAddr",
        default=":15012",
        help="xDS over TLS address (served when --tlsCertFile/--tlsKeyFile are given)",
    )
    d.add_argument("--tlsCertFile", default=None, help="PEM certificate for xDS over TLS")
    d.add_argument("--tlsKeyFile", default=None, help="PEM private key for xDS over TLS")
    d.add_argument(
        "--caCertFile", default=None, help="PEM CA: require client certificates it signed"
    )
    d.add_argument("--httpAddr", default=":8080", help="debug endpoints and /ready")
    d.add_argument("--monitoringAddr", default=":15014", help="metrics (and debug again)")
    d.add_argument("--domain", default="cluster.local", help="DNS domain suffix")
    d.add_argument("--configDir", default=None, help="directory of ServiceEntry YAML")
    d.add_argument("--config", default=None, help="registryd.yaml listing registries")
    d.add_argument(
        "--registries",
        default=None,
        help="comma list of registry types to enable (default: all configured)",
    )
    d.add_argument(
        "--keepaliveMaxServerConnectionAge",
        default="infinite",
        help="send GOAWAY to clients after this age (e.g. 30m)",
    )
    d.add_argument("--log_output_level", default="default:info", help="scope:level,...")
    d.add_argument(
        "--xdsMaxUnknownNames",
        type=int,
        default=10000,
        help="close an xDS stream that subscribes to more resource names of one type "
        "unknown to the server (RESOURCE_EXHAUSTED); 0: no limit",
    )
    d.add_argument(
        "--xdsWorkers",
        type=int,
        default=0,
        help="processes serving xDS, sharing the xDS ports (SO_REUSEPORT) and fed the "
        "built snapshot by the main process; 1: serve in the main process; 0 (default): "
        "one per CPU this process may use (affinity and container CPU quota)",
    )
    d.add_argument(
        "--xdsWorkerHeartbeatTimeout",
        default="5s",
        help="an xDS worker process that does not answer its heartbeat for this long "
        "(stopped, deadlocked) is killed and started again; 0: never",
    )
    d.add_argument(
        "--gcFreeze",
        type=_parse_bool,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="after large snapshot builds, move what they left alive out of the garbage "
        "collector's sight (gc.freeze), so full collections stay short (default true)",
    )
    d.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig of the local cluster: adds a kubernetes registry named --clusterID",
    )
    d.add_argument("--clusterID", default="Kubernetes", help="ID of the local cluster")
    d.add_argument(
        "--kubernetesApiQPS",
        type=float,
        default=None,
        help="Kubernetes client requests/s (default 80; a registry's qps: wins)",
    )
    d.add_argument(
        "--kubernetesApiBurst",
        type=int,
        default=None,
        help="Kubernetes client request burst (default 160; a registry's burst: wins)",
    )
    for flag, text in (
        ("--log_as_json", "write each log line as one JSON object"),
        (
            "--allowRemoteLogLevel",
            "let non-loopback peers change log levels (PUT /debug/logging/{scope})",
        ),
    ):
        d.add_argument(
            flag, type=_parse_bool, nargs="?", const=True, default=False, metavar="BOOL", help=text
        )
    d.add_argument(
        "--debounceAfter",
        default=None,
        help="quiet time before a push (default $PILOT_DEBOUNCE_AFTER, else 100ms)",
    )
    d.add_argument(
        "--debounceMax",
        default=None,
        help="longest a push is delayed (default $PILOT_DEBOUNCE_MAX, else 10s)",
    )
    d.add_argument(
        "--enableEDSDebounce",
        type=_parse_bool,
        nargs="?",
        const=True,
        default=None,
        metavar="BOOL",
        help="debounce endpoint-only changes too (default $PILOT_ENABLE_EDS_DEBOUNCE, else true)",
    )
    d.add_argument(
        "--pushThrottle",
        default=None,
        help="most connections written a push at once (default $PILOT_PUSH_THROTTLE; "
        "unset, 0 or less: 15 + 5 per CPU, at most 100)",
    )
    d.add_argument(
        "--maxRequestsPerSecond",
        default=None,
        help="new xDS streams admitted a second, the rest wait (default "
        "$PILOT_MAX_REQUESTS_PER_SECOND; unset, 0 or less: 15 + 5 per CPU, at most 100)",
    )
    validate.register(sub)
    proxystatus.register(sub)  # proxy-status, proxy-config
    for command in sub.choices.values():
        if "--version" not in command._option_string_actions:
            command.add_argument("--version", action="version", version=VERSION)
    return parser


def _from_env(
    flag: str, value: Any, variable: str, environ: Mapping[str, str], default: str
) -> tuple[str, str]:
    """(where, text) of a setting istiod reads from an environment variable: the flag when
    given, else the variable when set, else the default."""
    if value is not None:
        return flag, str(value)
    if environ.get(variable):
        return variable, environ[variable]
    return flag, default


def _debounce(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[float, float, bool]:
    """--debounceAfter, --debounceMax, --enableEDSDebounce, or istiod's variables."""
    after = parse_duration(
        *_from_env("--debounceAfter", args.debounceAfter, "PILOT_DEBOUNCE_AFTER", environ, "100ms")
    )
    longest = parse_duration(
        *_from_env("--debounceMax", args.debounceMax, "PILOT_DEBOUNCE_MAX", environ, "10s")
    )
    if args.enableEDSDebounce is not None:
        eds = bool(args.enableEDSDebounce)
    else:
        try:
            eds = _parse_bool(environ.get("PILOT_ENABLE_EDS_DEBOUNCE") or "true")
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"PILOT_ENABLE_EDS_DEBOUNCE: {exc}") from None
    after = 0.0 if after is None else after
    longest = 10.0 if longest is None else longest
    if longest < after:
        raise ConfigError(
            f"--debounceMax ({longest:g}s) is shorter than --debounceAfter ({after:g}s): "
            "a push could never wait out the quiet time"
        )
    return after, longest, eds


def _throttle(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[int, float]:
    """--pushThrottle and --maxRequestsPerSecond, or istiod's variables; 0 or less means
    istiod's automatic value (:func:`registryd.config.auto_limit`)."""
    where, text = _from_env(
        "--pushThrottle", args.pushThrottle, "PILOT_PUSH_THROTTLE", environ, "0"
    )
    try:
        pushes = int(text.strip())
    except ValueError:
        raise ConfigError(f"{where}: expected a whole number, got {text!r}") from None
    where, text = _from_env(
        "--maxRequestsPerSecond",
        args.maxRequestsPerSecond,
        "PILOT_MAX_REQUESTS_PER_SECOND",
        environ,
        "0",
    )
    try:
        rate = float(text.strip())
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate):
        raise ConfigError(f"{where}: expected a number of requests a second, got {text!r}")
    auto = auto_limit(cpu_count())
    return (pushes if pushes > 0 else auto, rate if rate > 0 else float(auto))


def _check_registry_types(text: str | None) -> set[str]:
    """The lower-cased types ``--registries`` lists; ConfigError for one that is not an
    installed adapter type (compared case-insensitively, as istiod's ``Kubernetes``)."""
    enabled = {r.strip().lower() for r in (text or "").split(",") if r.strip()}
    installed = available()
    unknown = sorted(enabled - {kind.lower() for kind in installed})
    if unknown:
        raise ConfigError(
            f"--registries: unknown registry type {', '.join(map(repr, unknown))} "
            f"(installed adapters: {', '.join(installed) or 'none'})"
        )
    return enabled


def parse_args(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> Settings:
    """Flags of ``registryd discovery`` → :class:`Settings`; raises :class:`ConfigError` on
    anything wrong.  ``environ`` supplies istiod's ``PILOT_DEBOUNCE_AFTER``,
    ``PILOT_DEBOUNCE_MAX``, ``PILOT_ENABLE_EDS_DEBOUNCE``, ``PILOT_PUSH_THROTTLE`` and
    ``PILOT_MAX_REQUESTS_PER_SECOND`` where their flags are not given."""
    return _settings(_parser().parse_args(list(argv)), environ)


def _settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    if args.command != "discovery":
        raise ConfigError("missing command: use 'registryd discovery [flags]'")
    check_scopes(parse_levels(args.log_output_level), available())
    enabled = _check_registry_types(args.registries)
    registries: list[RegistryConfig] = []
    if args.config:
        registries.extend(load_registries(Path(args.config)))
        check_paths(registries)
    if args.configDir:
        path = Path(args.configDir)
        if not path.is_dir():
            raise ConfigError(f"--configDir {args.configDir}: not a directory")
        if any(r.name == "configDir" for r in registries):
            raise ConfigError(
                f"--config {args.config}: registry name 'configDir' is taken by --configDir; "
                "rename that registry"
            )
        registries.append(
            RegistryConfig(
                name="configDir", type="serviceentry", settings={"path": str(path.resolve())}
            )
        )
    wants_kubernetes = args.kubeconfig is not None or "kubernetes" in enabled
    if wants_kubernetes and not any(r.type == "kubernetes" for r in registries):
        # istiod's local cluster: --kubeconfig, or in-cluster config with --registries
        if any(r.name == args.clusterID for r in registries):
            raise ConfigError(f"--clusterID {args.clusterID}: a registry has that name already")
        registries.append(RegistryConfig(name=args.clusterID, type="kubernetes", settings={}))
    if enabled:
        registries = [r for r in registries if r.type.lower() in enabled]
    if any(v is not None and v <= 0 for v in (args.kubernetesApiQPS, args.kubernetesApiBurst)):
        raise ConfigError("--kubernetesApiQPS and --kubernetesApiBurst must be > 0")
    flags = kubernetes_flag_defaults(
        kubeconfig=args.kubeconfig, qps=args.kubernetesApiQPS, burst=args.kubernetesApiBurst
    )
    registries = with_defaults(registries, flags)
    debounce_after, debounce_max, eds_debounce = _debounce(args, environ)
    push_throttle, max_requests = _throttle(args, environ)
    tls = load_tls(args.tlsCertFile, args.tlsKeyFile, args.caCertFile)
    grpc_off = args.grpcAddr.strip().lower() in ("", "off")
    if grpc_off and tls is None:
        raise ConfigError("--grpcAddr off needs --tlsCertFile and --tlsKeyFile (no xDS at all)")
    if args.xdsMaxUnknownNames < 0:
        raise ConfigError("--xdsMaxUnknownNames must be >= 0 (0: no limit)")
    if args.xdsWorkers < 0:
        raise ConfigError("--xdsWorkers must be >= 0 (0: one per CPU)")
    return Settings(
        grpc_addr=None if grpc_off else parse_address("--grpcAddr", args.grpcAddr),
        secure_grpc_addr=parse_address("--secureGRPCAddr", args.secureGRPCAddr),
        tls=tls,
        http_addr=parse_address("--httpAddr", args.httpAddr),
        monitoring_addr=parse_address("--monitoringAddr", args.monitoringAddr),
        domain=args.domain,
        registries=tuple(registries),
        max_connection_age=parse_duration(
            "--keepaliveMaxServerConnectionAge", args.keepaliveMaxServerConnectionAge
        ),
        debounce_after=debounce_after,
        debounce_max=debounce_max,
        eds_debounce=eds_debounce,
        log_output_level=args.log_output_level,
        log_as_json=args.log_as_json,
        allow_remote_log_level=args.allowRemoteLogLevel,
        max_unknown_names=args.xdsMaxUnknownNames,
        xds_workers=args.xdsWorkers or cpu_count(),
        xds_worker_heartbeat_timeout=parse_duration(
            "--xdsWorkerHeartbeatTimeout", args.xdsWorkerHeartbeatTimeout
        ),
        gc_freeze=args.gcFreeze,
        push_throttle=push_throttle,
        max_requests_per_second=max_requests,
    )


async def _serve(settings: Settings) -> None:
    from registryd.app import App  # heavy imports only once flags are valid

    app = App(settings, strict=True)  # a registry that cannot be built: ConfigError
    app.check_addresses()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
        await stop.wait()
        log.info("shutting down")
    finally:
        await app.stop()
        await drain()


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parser().parse_args(list(argv))
        if args.command == "version":
            print(VERSION)
            return 0
        if hasattr(args, "run"):  # a tool subcommand (see its module's register())
            return int(args.run(args))
        settings = _settings(args, os.environ)
        setup_logging(settings.log_output_level, as_json=settings.log_as_json)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(settings))
    except ConfigError as exc:
        print(f"registryd: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"registryd: error: {exc}", file=sys.stderr)
        return 1
    return 0
