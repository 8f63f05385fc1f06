"""Daemon settings: the :class:`Settings` value, and the parsers of its parts (addresses,
durations, TLS files, the ``registryd.yaml`` registry list).  They are called from one
place, :mod:`registryd.daemon.configure`, which reads flags, environment and files into
:class:`Settings`; the validate tool reuses the registry-list parser.

Parsing is pure and strict: anything wrong raises :class:`registryd.adapter.ConfigError`
with a message that names the flag, file or registry at fault.  That includes whatever a
registryd.yaml may hold or be: it is read only if it is a regular file (a FIFO or a
device given as ``--config`` would block or never end; :func:`read_regular`) of at most
:data:`MAX_CONFIG_BYTES`, and loaded with the YAML limits of ServiceEntry files (nesting,
aliases, expanded size); anything the loader still raises (an integer too long to
convert...) is that file's ConfigError too, never a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import math
import os
import re
import reprlib
import ssl
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registryd.daemon.plugins import adapter_type
from registryd.errors import ConfigError
from registryd.settings import go_duration
from registryd.xds.addresses import Address, TlsFiles

__all__ = [
    "MAX_CONFIG_BYTES",
    "REGISTRY_NAME",
    "REGISTRY_NAME_RULE",
    "RegistryConfig",
    "Settings",
    "Unreadable",
    "auto_limit",
    "check_paths",
    "cpu_count",
    "go_duration",
    "kubernetes_flag_defaults",
    "load_registries",
    "load_tls",
    "parse_address",
    "parse_duration",
    "parse_registries",
    "read_regular",
    "with_defaults",
]


def parse_address(flag: str, text: str) -> Address:
    """``:15010``, ``127.0.0.1:15010`` or ``[::1]:15010``; an empty host means all."""
    match = re.fullmatch(r"(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]*)):(\d+)", text.strip())
    if not match:
        raise ConfigError(f"{flag}: expected [host]:port, got {text!r}")
    host = match.group(1) or match.group(2) or "0.0.0.0"
    port = int(match.group(3))
    if port > 65535:
        raise ConfigError(f"{flag}: port {port} out of range")
    return Address(host, port)


def parse_duration(flag: str, text: str) -> float | None:
    """A duration flag (:func:`go_duration`); any zero duration (``0``, ``0s``) and
    ``infinite`` mean no limit (``None``)."""
    text = text.strip()
    if text in ("", "0", "infinite", "inf"):
        return None
    total = go_duration(text)
    if total is None:
        raise ConfigError(f"{flag}: expected a duration like 30m, 1h or 500ms, got {text!r}")
    return total or None  # "0s" is zero too


def quota_cpus(cpu_max: str | None, cfs_quota: str | None, cfs_period: str | None) -> int | None:
    """CPUs a cgroup's CPU quota allows, rounded up; None without a quota.  ``cpu_max``
    is cgroup v2's ``cpu.max`` (``"200000 100000"``, ``"max 100000"``); ``cfs_quota``
    and ``cfs_period`` are cgroup v1's ``cpu.cfs_quota_us``/``cpu.cfs_period_us``
    (quota -1: none).  Unreadable or malformed values count as no quota."""
    try:
        if cpu_max is not None:
            quota_text, _, period_text = cpu_max.strip().partition(" ")
            if quota_text == "max":
                return None
            quota, period = int(quota_text), int(period_text or "100000")
        elif cfs_quota is not None and cfs_period is not None:
            quota, period = int(cfs_quota), int(cfs_period)
        else:
            return None
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def cpu_count() -> int:
    """CPUs this process may use: its CPU affinity, capped by its container's CPU quota
    (what Go's GOMAXPROCS is with automaxprocs, as istiod runs)."""
    try:
        cpus = len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = quota_cpus(
        _read("/sys/fs/cgroup/cpu.max"),
        _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
        _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
    )
    return min(cpus, quota) if quota is not None else cpus


def auto_limit(cpus: int) -> int:
    """istiod's default for the push throttle and for new xDS requests a second, used
    when the setting is unset, 0 or negative: 15 + 5 per CPU, at most 100 (2 CPUs: 25).
    istiod: pilot/pkg/features/tuning.go PushThrottle and RequestLimit."""
    return min(15 + 5 * max(cpus, 1), 100)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryConfig:
    """One registry instance: its unique name, adapter type, merge priority (higher wins;
    None: the type's default, which its adapter declares, see
    :func:`registryd.daemon.plugins.adapter_type`), whether it is exported to istiod over
    MCP (None: the type's default, every type but ``kubernetes``) and the adapter's
    settings."""

    name: str
    type: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    priority: int | None = None
    export: bool | None = None
    # where it is defined, ``--config FILE:LINE`` (None: made from flags); errors about
    # the registry start with it
    origin: str | None = field(default=None, compare=False)

    def where(self, message: str) -> str:
        """``message`` about this registry, prefixed with its :attr:`origin` if known."""
        return f"{self.origin}: {message}" if self.origin else message


def _is_path_setting(key: object) -> bool:
    return isinstance(key, str) and (key in ("path", "kubeconfig") or key.endswith("_file"))


def _resolved(config: Path, value: str, where: str) -> str:
    """A path setting taken relative to the config file, ``~`` expanded first."""
    try:
        return str((config.parent / Path(value).expanduser()).resolve())
    except (OSError, RuntimeError, ValueError) as exc:  # ~nobody, a NUL byte, a loop
        raise ConfigError(f"{where}: not a usable path ({exc})") from None


# a registry name is a shard's instance name: in ``type/name`` keys, metric labels and
# debug URLs, so no '/', spaces or control characters
REGISTRY_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
REGISTRY_NAME_RULE = (
    "1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
)


MAX_CONFIG_BYTES = 1 << 20  # a registryd.yaml lists registries: a megabyte is plenty


class Unreadable(Exception):
    """A file that is not read: its message is why (``symlink loop``, ``not a regular
    file (a FIFO)``, ``cannot read: Permission denied``), without the file's name."""


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> str | None:
    """Why a file of ``mode`` is not read, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    return f"not a regular file ({kind})"


def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    return f"cannot read: {exc.strerror or exc}"


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the regular file at ``path`` (one over says it is
    too big); :class:`Unreadable` for anything else, decided before opening it when the
    name says what it is, and checked again on what was opened (non-blocking), so that
    nothing here waits for a writer nor reads a device."""
    try:
        problem = _not_regular(os.stat(path).st_mode)
        if problem is not None:
            raise Unreadable(problem)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            problem = _not_regular(os.fstat(fd).st_mode)  # swapped since the stat
            if problem is not None:
                raise Unreadable(problem)
            return handle.read(limit + 1)
    except OSError as exc:
        raise Unreadable(_why(exc)) from None


_AT_LINE = re.compile(r"\bline (\d+), column")  # in the YAML parser's messages


def _at_line(where: str, problem: str) -> str:
    """``where: problem``, with the line of the YAML problem after ``where`` (the last one
    the parser's message names: the problem's own, after its context's)."""
    lines = _AT_LINE.findall(problem)
    return f"{where}:{lines[-1]}: {problem}" if lines else f"{where}: {problem}"


def _config_document(data: bytes | str, where: str) -> Any:
    """The YAML document of registryd.yaml content, or ConfigError saying what is wrong
    with it (see the module docstring)."""
    from registryd.adapters.serviceentry.yamlsafe import (  # the bounded loader
        DocumentProblem,
        FileProblem,
        Limits,
        load_documents,
        shorten,
    )

    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        documents = load_documents(data, Limits(max_bytes=MAX_CONFIG_BYTES, max_documents=1))
    except FileProblem as exc:
        raise ConfigError(_at_line(where, " ".join(str(exc).split()))) from None
    except Exception as exc:  # the loader's own surprises: still this file's error
        problem = " ".join(shorten(str(exc), 200).split())
        raise ConfigError(f"{where}: cannot be loaded ({type(exc).__name__}: {problem})") from None
    document = documents[0] if documents else None
    if isinstance(document, DocumentProblem):
        raise ConfigError(_at_line(where, " ".join(document.message.split())))
    return document


def _root(data: bytes | str) -> Any:
    """registryd.yaml's top-level mapping as composed YAML nodes (lines, nothing
    constructed), or None when it cannot be told.  Only called on content the bounded
    loader accepted (:func:`_config_document`)."""
    import yaml

    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        root = yaml.compose(data, Loader=loader)
    except Exception:  # lines are a help to the reader, never a new error
        return None
    return root if isinstance(root, yaml.MappingNode) else None


def _item_lines(data: bytes | str) -> list[int]:
    """The line (1-based) where each item of registryd.yaml's ``registries`` list starts;
    empty when it cannot be told."""
    import yaml

    root = _root(data)
    for key, value in root.value if root is not None else ():
        if key.value == "registries" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _key_lines(data: bytes | str) -> dict[Any, int]:
    """The line (1-based) of each top-level key of registryd.yaml, where it can be told."""
    root = _root(data)
    return {k.value: k.start_mark.line + 1 for k, _ in root.value} if root is not None else {}


def load_registries(path: Path) -> list[RegistryConfig]:
    """Read the ``registries:`` list of the registryd.yaml at ``path``
    (:func:`parse_registries`); ConfigError also for a file that is not read (see
    :func:`read_regular`)."""
    try:
        data = read_regular(path, MAX_CONFIG_BYTES)
    except Unreadable as exc:
        raise ConfigError(f"--config {path}: {exc}") from None
    return parse_registries(data, path)


def parse_registries(data: bytes | str, path: Path) -> list[RegistryConfig]:
    """The ``registries:`` list of registryd.yaml content read from ``path`` (which
    messages name, with the line of the registry in question).  Relative paths in a registry's
    ``path``, ``kubeconfig`` and ``*_file`` settings (``ca_file``...) are taken relative
    to the file's directory (``~`` is expanded first).  A name must match
    :data:`REGISTRY_NAME`.  ``priority`` (an integer, higher wins the merge) is not an
    adapter setting; without it the registry gets its type's default, which the type's
    adapter declares (so the adapter is loaded; a type that does not load gets 0, and
    building its adapter says why).  ``export`` (true or false: whether istiods reading
    registryd over MCP get its services) is not an adapter setting either; without it
    the type's default holds.  Pure apart from that and from resolving symlinks in
    those paths: whether they exist is :func:`check_paths`'s business.  Anything wrong
    with ``data``, whatever it holds, raises ConfigError."""
    raw, data = data, _config_document(data, f"--config {path}")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping with a 'registries' list")
    unknown = sorted(set(data) - {"registries"}, key=repr)
    if unknown:
        first = unknown[0]
        line = _key_lines(raw).get(first)
        origin = f"--config {path}:{line}" if line else f"--config {path}"
        close = difflib.get_close_matches(str(first), ["registries"], n=1)
        hint = " (did you mean 'registries'?)" if close else ""
        others = f", and {reprlib.repr(unknown[1:])}" if len(unknown) > 1 else ""
        raise ConfigError(
            f"{origin}: unknown top-level key {reprlib.repr(first)}{hint}{others}; "
            "registryd.yaml has only 'registries'"
        )
    items = data.get("registries") or []
    if not isinstance(items, list):
        raise ConfigError(f"--config {path}: 'registries' must be a list")
    result: list[RegistryConfig] = []
    seen: set[str] = set()
    lines = _item_lines(raw)
    for index, item in enumerate(items):
        origin = f"--config {path}:{lines[index]}" if index < len(lines) else f"--config {path}"
        where = f"{origin}: registries[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a mapping with name and type")
        name, kind = item.get("name"), item.get("type")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: 'name' is required")
        if not REGISTRY_NAME.fullmatch(name):
            raise ConfigError(f"{where}: invalid registry name {name!r}: use {REGISTRY_NAME_RULE}")
        if not isinstance(kind, str) or not kind:
            raise ConfigError(f"{where} ({name}): 'type' is required")
        if name in seen:
            raise ConfigError(f"{where}: duplicate registry name {name!r}")
        seen.add(name)
        priority = item.get("priority", adapter_type(kind).default_priority)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise ConfigError(
                f"{where} ({name}): 'priority' must be an integer (higher wins the merge), "
                f"got {reprlib.repr(priority)}"
            )
        export = item.get("export")
        if export is not None and not isinstance(export, bool):
            raise ConfigError(
                f"{where} ({name}): 'export' must be true or false (whether istiod reads "
                f"this registry over MCP), got {reprlib.repr(export)}"
            )
        settings = {
            k: v for k, v in item.items() if k not in ("name", "type", "priority", "export")
        }
        for key, value in settings.items():
            if _is_path_setting(key) and isinstance(value, str) and value:
                settings[key] = _resolved(path, value, f"{where} ({name}): {key!r}")

        result.append(
            RegistryConfig(
                name=name,
                type=kind,
                settings=settings,
                priority=priority,
                export=export,
                origin=origin,
            )
        )
    return result


def with_defaults(
    registries: Iterable[RegistryConfig], defaults: Mapping[str, Mapping[str, Any]]
) -> list[RegistryConfig]:
    """``registries`` with ``defaults[type]`` under the settings of each registry of that
    type: a setting the registry gives (not null) wins over the default."""
    result = []
    for reg in registries:
        extra = defaults.get(reg.type)
        if extra:
            own = {k: v for k, v in reg.settings.items() if v is not None or k not in extra}
            reg = dataclasses.replace(reg, settings={**extra, **own})
        result.append(reg)
    return result


def kubernetes_flag_defaults(
    *,
    kubeconfig: str | None = None,
    qps: float | None = None,
    burst: int | None = None,
    eds_for_headless: bool | None = None,
) -> dict[str, dict[str, Any]]:
    """The istiod-style flags ``--kubeconfig``, ``--kubernetesApiQPS`` and
    ``--kubernetesApiBurst`` (those given) as defaults of every ``kubernetes`` registry's
    ``kubeconfig``, ``qps`` and ``burst`` settings, for :func:`with_defaults`.  istiod
    applies its rate flags to every cluster's client, the local one and the remote ones
    (pilot/pkg/bootstrap/server.go, ``initKubeClient`` and ``initMulticluster``).
    ``eds_for_headless`` (not None) is the default of the setting of that name: the value
    of ``PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES``, which
    :func:`registryd.daemon.configure.eds_for_headless` reads."""
    given: dict[str, Any] = {}
    if kubeconfig:
        given["kubeconfig"] = str(Path(kubeconfig).expanduser().resolve())
    if qps is not None:
        given["qps"] = qps
    if burst is not None:
        given["burst"] = burst
    if eds_for_headless is not None:
        given["eds_for_headless"] = eds_for_headless
    return {"kubernetes": given} if given else {}


def path_problem(place: str | os.PathLike[str]) -> str | None:
    """Why the file or directory at ``place`` cannot be read, as one short phrase without
    the name (``no such file or directory``, ``cannot read: Permission denied``, ``not a
    regular file (a FIFO)``), or None when it can: a directory is listed and a regular
    file opened (non-blocking) and closed; anything else is refused without opening.
    The one check of ``--configDir`` and of registry ``path`` settings, at start and in
    ``registryd validate``."""
    try:
        mode = os.stat(place).st_mode
        if stat.S_ISDIR(mode):
            with os.scandir(place):
                return None
        problem = _not_regular(mode)
        if problem is not None:
            return problem
        os.close(os.open(place, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC))
        return None
    except FileNotFoundError:
        return "no such file or directory"
    except OSError as exc:
        return _why(exc)


def check_config_dir(value: str) -> None:
    """ConfigError (one line, naming the flag) unless ``--configDir value`` is a directory
    that can be listed."""
    if os.path.exists(value) and not os.path.isdir(value):
        problem: str | None = "not a directory"
    else:
        problem = path_problem(value)
    if problem is not None:
        raise ConfigError(f"--configDir {value}: {problem}")


def check_paths(registries: Iterable[RegistryConfig]) -> None:
    """ConfigError for the first registry whose ``path`` setting (a string) cannot be read
    (:func:`path_problem`: missing, not readable, a FIFO...): the daemon checks this at
    start, where an adapter would only fail (and be retried) once it runs."""
    for reg in registries:
        place = reg.settings.get("path")
        if isinstance(place, str) and place:
            problem = path_problem(place)
            if problem is not None:
                message = f"registry {reg.name!r} ({reg.type}): 'path': {problem}: {place}"
                raise ConfigError(reg.where(message))


def load_tls(cert_file: str | None, key_file: str | None, ca_file: str | None) -> TlsFiles | None:
    """Read ``--tlsCertFile``/``--tlsKeyFile``/``--caCertFile``; None when no certificate
    is given (secure xDS off)."""
    if not cert_file and not key_file:
        if ca_file:
            raise ConfigError("--caCertFile needs --tlsCertFile and --tlsKeyFile")
        return None
    if not cert_file or not key_file:
        raise ConfigError("--tlsCertFile and --tlsKeyFile go together")

    def read(flag: str, name: str) -> bytes:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{flag} {name}: cannot read: {exc.strerror or exc}") from None
        if b"-----BEGIN" not in data:
            raise ConfigError(f"{flag} {name}: not a PEM file")
        return data

    files = TlsFiles(
        cert=read("--tlsCertFile", cert_file),
        key=read("--tlsKeyFile", key_file),
        client_ca=read("--caCertFile", ca_file) if ca_file else None,
    )
    check_key_pair(cert_file, key_file)
    return files


class _Encrypted(Exception):
    pass


def check_key_pair(cert_file: str, key_file: str) -> None:
    """ConfigError unless ``key_file`` is the unencrypted private key of the certificate
    in ``cert_file`` (gRPC would only say it cannot listen)."""

    def no_password() -> str:
        raise _Encrypted

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file, password=no_password)
    except _Encrypted:
        raise ConfigError(
            f"--tlsKeyFile {key_file}: the key is encrypted; give an unencrypted PEM key"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"--tlsKeyFile {key_file} is not the private key of --tlsCertFile {cert_file}"
            ) from None
        raise ConfigError(
            f"--tlsCertFile {cert_file} / --tlsKeyFile {key_file}: not a usable certificate "
            f"and key ({exc.reason or exc})"
        ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the daemon runs with, made from flags, environment and registryd.yaml by
    :func:`registryd.daemon.configure.make_settings` (or given whole by an embedding or a test);
    the defaults are the command line's, istiod's.  The daemon's parts take their
    configuration from here, never from the environment."""

    grpc_addr: Address | None = Address("0.0.0.0", 15010)  # None: plaintext xDS off
    secure_grpc_addr: Address = Address("0.0.0.0", 15012)
    tls: TlsFiles | None = None  # xDS over TLS on secure_grpc_addr when set
    http_addr: Address = Address("0.0.0.0", 8080)
    monitoring_addr: Address = Address("0.0.0.0", 15014)
    domain: str = "cluster.local"
    registries: tuple[RegistryConfig, ...] = ()
    # defaults of each registry type's settings from flags (with_defaults): what a
    # candidate registryd.yaml gets too (/debug/preview)
    registry_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    registry_types: frozenset[str] = frozenset()  # --registries, lower case (empty: all)
    max_connection_age: float | None = None
    max_connection_age_grace: float = 10.0
    debounce_after: float = 0.1
    debounce_max: float = 10.0
    eds_debounce: bool = True  # False: endpoint-only changes are pushed without debounce
    log_output_level: str = "default:info"
    log_as_json: bool = False
    allow_remote_log_level: bool = False
    max_unknown_names: int = 10000  # per type per stream; 0: no limit
    history_bytes: int = 4 << 20  # the change history's budget (/debug/history)
    root_namespace: str = "istio-system"  # client certificates that may read MCP config
    xds_workers: int = 1  # processes serving xDS; 1: this process (the CLI: one per CPU)
    xds_worker_heartbeat_timeout: float | None = 5.0  # silent this long: killed; None: never
    gc_freeze: bool = True  # registryd.base.gcpolicy.FreezePolicy in every process
    # concurrent pushes, and new xDS streams a second (burst 1); istiod's defaults
    push_throttle: int = field(default_factory=lambda: auto_limit(cpu_count()))
    max_requests_per_second: float = field(default_factory=lambda: float(auto_limit(cpu_count())))
    # UNHEALTHY endpoints sent, marked so (registryd.build.clusters.BuildOptions.send_unhealthy)
    send_unhealthy_endpoints: bool = True
    ignored: tuple[str, ...] = ()  # settings ignored, and why: App logs them (scope push)
    flag_warnings: tuple[str, ...] = ()  # flags that have no effect, and why: App logs them
