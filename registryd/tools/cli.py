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
import resource
import signal
import sys
from collections.abc import Mapping, Sequence

from registryd import __version__
from registryd.adapter import ConfigError
from registryd.base.logs import setup as setup_logging
from registryd.daemon.config import Settings
from registryd.daemon.configure import go_bool, make_settings
from registryd.tools import proxystatus, validate, wait
from registryd.xds.listen import drain

__all__ = ["main", "parse_args"]

log = logging.getLogger("registryd")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def _parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool`` spellings, so ``--flag``, ``--flag=true`` and
    ``--flag=false`` work as with istiod's flags."""
    found = go_bool(text)
    if found is not None:
        return found
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
        "--rootNamespace",
        default="istio-system",
        help="a client certificate (mutual TLS) may read Istio config over MCP only if its "
        "SPIFFE identity is in this namespace, as istiod's meshConfig.rootNamespace",
    )
    d.add_argument(
        "--xdsMaxUnknownNames",
        type=int,
        default=10000,
        help="close an xDS stream that subscribes to more resource names of one type "
        "unknown to the server (RESOURCE_EXHAUSTED); 0: no limit",
    )
    d.add_argument(
        "--historyBytes",
        type=int,
        default=4 << 20,
        help="bytes the change history (/debug/history) may hold; the oldest pushes are "
        "dropped past it (default 4 MiB)",
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
            "let non-loopback peers change log levels (PUT /debug/logging/{scope}) "
            "and ask previews (POST /debug/preview)",
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
    wait.register(sub)
    for command in sub.choices.values():
        if "--version" not in command._option_string_actions:
            command.add_argument("--version", action="version", version=VERSION)
    return parser


def parse_args(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Flags of ``registryd discovery`` → :class:`Settings`; raises :class:`ConfigError` on
    anything wrong.  ``environ`` (None: this process's environment) supplies istiod's
    ``PILOT_*`` variables where their flags are not given
    (:func:`registryd.daemon.configure.make_settings`)."""
    return make_settings(_parser().parse_args(list(argv)), environ)


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit, as Go programs
    (istiod, Consul) do at start: every blocking query and xDS stream holds a socket.
    Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:  # a hard limit the kernel caps lower
            log.debug("open files: keeping the limit %d (%s)", soft, exc)
            return soft
        soft = hard
    return soft


async def _serve(settings: Settings) -> None:
    from registryd.daemon.app import App  # heavy imports only once flags are valid

    raise_open_files_limit()

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
        settings = make_settings(args)
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
