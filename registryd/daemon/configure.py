"""The one place the daemon's configuration is read: flags, istiod's ``PILOT_*``
environment variables and registryd.yaml become one :class:`~registryd.daemon.config.Settings`.

Why one module: a setting read where it is used (the builder reading the environment,
the command line reading half the variables) cannot be tested, listed or checked at
start in one go, and a worker process or an embedding would silently get other values.
Here every input is an argument: :func:`make_settings` takes the parsed flags of
``registryd discovery`` and an environment mapping (and reads the ``--config`` file
and ``--configDir`` they name); nothing else in the daemon reads ``os.environ`` for
configuration (a test greps for it).  The one exception is not configuration: the
kubernetes adapter checks the pod's in-cluster variables (``KUBERNETES_SERVICE_HOST``/
``_PORT``) when a registry has no kubeconfig.

Contract: :func:`make_settings` returns a complete, validated :class:`Settings` or raises
:class:`~registryd.adapter.ConfigError` whose message names the flag, variable or file at
fault.  A flag given wins over its variable; an empty variable counts as unset.  The
variables (:data:`VARIABLES`) are those istiod reads for the same settings, with the
same spellings:

=====================================  ==================================================
variable                               setting
=====================================  ==================================================
``PILOT_DEBOUNCE_AFTER``               ``--debounceAfter`` when not given
``PILOT_DEBOUNCE_MAX``                 ``--debounceMax`` when not given
``PILOT_ENABLE_EDS_DEBOUNCE``          ``--enableEDSDebounce`` when not given
``PILOT_PUSH_THROTTLE``                ``--pushThrottle`` when not given
``PILOT_MAX_REQUESTS_PER_SECOND``      ``--maxRequestsPerSecond`` when not given
``PILOT_SEND_UNHEALTHY_ENDPOINTS``,    ``Settings.send_unhealthy_endpoints``: a value
``PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS``  that is not a boolean is ignored with a warning
                                       (:attr:`Settings.ignored`), as the builder did
``PILOT_ENABLE_EDS_FOR_``              the ``eds_for_headless`` setting of every
``HEADLESS_SERVICES``                  ``kubernetes`` registry that does not set its own
=====================================  ==================================================

The boolean variables are parsed as istiod parses them, with Go's ``strconv.ParseBool``
(:func:`go_bool`), except the two unhealthy-endpoint ones (the builder's own parsing).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from registryd.base.logs import check_scopes, parse_levels
from registryd.daemon.config import (
    RegistryConfig,
    Settings,
    auto_limit,
    check_config_dir,
    check_paths,
    cpu_count,
    kubernetes_flag_defaults,
    load_registries,
    load_tls,
    parse_address,
    parse_duration,
    with_defaults,
)
from registryd.daemon.plugins import adapter_types, available
from registryd.errors import ConfigError

__all__ = [
    "EDS_FOR_HEADLESS",
    "VARIABLES",
    "eds_for_headless",
    "go_bool",
    "make_settings",
    "send_unhealthy",
]

EDS_FOR_HEADLESS = "PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES"

VARIABLES = (
    "PILOT_DEBOUNCE_AFTER",
    "PILOT_DEBOUNCE_MAX",
    "PILOT_ENABLE_EDS_DEBOUNCE",
    "PILOT_PUSH_THROTTLE",
    "PILOT_MAX_REQUESTS_PER_SECOND",
    "PILOT_SEND_UNHEALTHY_ENDPOINTS",
    "PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS",
    EDS_FOR_HEADLESS,
)

_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def go_bool(text: str) -> bool | None:
    """Go's ``strconv.ParseBool``: the boolean ``text`` spells, or None if none."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def eds_for_headless(environ: Mapping[str, str] | None = None) -> bool | None:
    """istiod's ``PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES`` (features/xds.go
    ``EnableEDSForHeadless``) in ``environ`` (None: this process's environment): its
    value, None when unset or empty; ConfigError naming it for a value Go's
    ``strconv.ParseBool`` rejects."""
    environ = os.environ if environ is None else environ
    text = environ.get(EDS_FOR_HEADLESS, "")
    if not text:
        return None
    found = go_bool(text)
    if found is None:
        raise ConfigError(
            f"{EDS_FOR_HEADLESS}: expected true or false (1, t, T, TRUE, true, True, 0, f, F, "
            f"FALSE, false, False), got {text!r}"
        )
    return found


def _kubernetes_defaults(
    environ: Mapping[str, str] | None = None,
    *,
    kubeconfig: str | None = None,
    qps: float | None = None,
    burst: int | None = None,
) -> dict[str, dict[str, Any]]:
    """The defaults of every ``kubernetes`` registry's settings, for
    :func:`~registryd.daemon.config.with_defaults`: the flags given
    (:func:`~registryd.daemon.config.kubernetes_flag_defaults`) and
    ``PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES`` (:func:`eds_for_headless`) when set."""
    return kubernetes_flag_defaults(
        kubeconfig=kubeconfig, qps=qps, burst=burst, eds_for_headless=eds_for_headless(environ)
    )


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
        text = environ.get("PILOT_ENABLE_EDS_DEBOUNCE") or "true"
        found = go_bool(text)
        if found is None:
            raise ConfigError(f"PILOT_ENABLE_EDS_DEBOUNCE: expected true or false, got {text!r}")
        eds = found
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
    istiod's automatic value (:func:`registryd.daemon.config.auto_limit`)."""
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


def _env_flag(environ: Mapping[str, str], name: str, default: bool) -> tuple[bool, str | None]:
    """(value, warning) of a boolean variable read as istiod's builder flags are (any case,
    spaces around ignored); a value that is no boolean gives the default and why."""
    value = environ.get(name, "").strip().lower()
    if value in ("1", "t", "true"):
        return True, None
    if value in ("0", "f", "false"):
        return False, None
    if value:
        return default, f"ignoring {name}={value[:40]!r}: not a boolean (true/false/1/0)"
    return default, None


def send_unhealthy(environ: Mapping[str, str]) -> tuple[bool, tuple[str, ...]]:
    """(whether UNHEALTHY endpoints are sent, warnings): istiod's
    ``PILOT_SEND_UNHEALTHY_ENDPOINTS`` (default false) or else
    ``PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS`` (default true), features/experimental.go."""
    send, warning = _env_flag(environ, "PILOT_SEND_UNHEALTHY_ENDPOINTS", False)
    warnings = (warning,) if warning else ()
    if send:
        return True, warnings
    send, warning = _env_flag(environ, "PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS", True)
    return send, (*warnings, warning) if warning else warnings


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


def _registries(
    args: argparse.Namespace, enabled: set[str], environ: Mapping[str, str]
) -> list[RegistryConfig]:
    """The registry instances: registryd.yaml's, ``--configDir``'s, the local Kubernetes
    cluster's (``--kubeconfig`` or ``--registries``), filtered by ``--registries``, with
    the Kubernetes flags and ``PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES`` as defaults of
    their settings."""
    registries: list[RegistryConfig] = []
    if args.config:
        registries.extend(load_registries(Path(args.config)))
        check_paths(registries)
    if args.configDir:
        path = Path(args.configDir)
        check_config_dir(args.configDir)
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
    defaults = _kubernetes_defaults(
        environ,
        kubeconfig=args.kubeconfig,
        qps=args.kubernetesApiQPS,
        burst=args.kubernetesApiBurst,
    )
    return with_defaults(registries, defaults)


def flag_warnings(args: argparse.Namespace, enabled: set[str]) -> tuple[str, ...]:
    """Flags given that have no effect, each with why: ``--configDir`` when the
    ``--registries`` list (``enabled``, lower case; empty: all) leaves out
    ``serviceentry``, which is what reads it."""
    if args.configDir and enabled and "serviceentry" not in enabled:
        return (
            f"--configDir {args.configDir} is ignored: --registries "
            f"{','.join(sorted(enabled))} leaves out serviceentry, the registry that reads it",
        )
    return ()


def _root_namespace(text: str) -> str:
    """--rootNamespace: a Kubernetes namespace name (a DNS-1123 label)."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", text):
        raise ConfigError(f"--rootNamespace: not a namespace name (a DNS-1123 label): {text!r}")
    return text


def make_settings(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """The :class:`Settings` of ``registryd discovery`` from its parsed flags ``args`` and
    ``environ`` (None: this process's environment); see the module docstring."""
    environ = os.environ if environ is None else environ
    if args.command != "discovery":
        raise ConfigError("missing command: use 'registryd discovery [flags]'")
    levels = parse_levels(args.log_output_level)
    check_scopes(levels, (kind.log_scope for kind in adapter_types()))  # loaded if asked
    enabled = _check_registry_types(args.registries)
    registries = _registries(args, enabled, environ)
    debounce_after, debounce_max, eds_debounce = _debounce(args, environ)
    push_throttle, max_requests = _throttle(args, environ)
    send, ignored = send_unhealthy(environ)
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
        registry_types=frozenset(enabled),
        registry_defaults=_kubernetes_defaults(
            environ,
            kubeconfig=args.kubeconfig,
            qps=args.kubernetesApiQPS,
            burst=args.kubernetesApiBurst,
        ),
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
        history_bytes=_history_bytes(args.historyBytes),
        root_namespace=_root_namespace(args.rootNamespace),
        xds_workers=args.xdsWorkers or cpu_count(),
        xds_worker_heartbeat_timeout=parse_duration(
            "--xdsWorkerHeartbeatTimeout", args.xdsWorkerHeartbeatTimeout
        ),
        gc_freeze=args.gcFreeze,
        push_throttle=push_throttle,
        max_requests_per_second=max_requests,
        send_unhealthy_endpoints=send,
        ignored=ignored,
        flag_warnings=flag_warnings(args, enabled),
    )


def _history_bytes(value: int) -> int:
    """``--historyBytes``: a positive number of bytes."""
    if value <= 0:
        raise ConfigError(f"--historyBytes must be positive, not {value}")
    return value
