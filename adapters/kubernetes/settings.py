"""Settings of the ``kubernetes`` registry: validation and defaults.  Pure apart from
checking that the kubeconfig file exists (and, without one, that registryd runs in a pod).

Contract: :func:`parse_settings` turns a registry's mapping from registryd.yaml (and the
daemon-wide :class:`~registryd.adapter.AdapterContext`) into a frozen
:class:`KubernetesSettings`, or raises :class:`~registryd.adapter.ConfigError` naming the
registry instance (``registry 'east' (kubernetes): ...``) and the setting at fault.  The
kubeconfig is not read here: its credentials never reach a message or a ``repr``.

======================  ==========================  =====================================
setting                 default                     meaning
======================  ==========================  =====================================
``kubeconfig``          ``--kubeconfig``, else      path of the kubeconfig of the cluster;
                        in-cluster config           read again on every (re)connect
``context``             its ``current-context``     kubeconfig context to use
``cluster_id``          the registry's name         cluster ID on every endpoint (one
                                                    registry instance is one cluster)
``namespaces``          all                         list of namespaces to read
``namespace_selector``  none                        label selector on Namespace objects
                                                    (string, or ``matchLabels`` /
                                                    ``matchExpressions``): only services of
                                                    namespaces it matches
``qps``                 ``--kubernetesApiQPS`` (80) requests a second (token bucket) ...
``burst``               ``--kubernetesApiBurst``    ... and its burst
                        (160)
``domain``              ``--domain``                DNS suffix: ``<svc>.<ns>.svc.<domain>``
                        (``cluster.local``)
======================  ==========================  =====================================

With both ``namespaces`` and ``namespace_selector`` a namespace must be listed *and*
match.  Without any kubeconfig the in-cluster configuration is used (the pod's service
account token and CA, ``KUBERNETES_SERVICE_HOST``/``_PORT``); ``context`` then makes no
sense and is rejected.  Environment variables such as ``KUBECONFIG`` are not read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registryd.adapter import AdapterContext, ConfigError

from .selector import Selector, parse_selector

__all__ = [
    "DEFAULT_BURST",
    "DEFAULT_QPS",
    "SETTINGS",
    "KubernetesSettings",
    "parse_settings",
]

SETTINGS = (
    "kubeconfig",
    "context",
    "cluster_id",
    "namespaces",
    "namespace_selector",
    "qps",
    "burst",
    "domain",
)
DEFAULT_QPS = 80.0
DEFAULT_BURST = 160
MAX_QPS = 100_000.0
IN_CLUSTER_ENV = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_NAMESPACE = re.compile(_DNS_LABEL)
_DOMAIN = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_LABEL_VALUE = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True, kw_only=True)
class KubernetesSettings:
    """One kubernetes registry's validated settings.  ``kubeconfig`` None: in-cluster
    config; ``namespaces`` empty: every namespace."""

    kubeconfig: str | None = None
    context: str | None = None
    cluster_id: str
    namespaces: tuple[str, ...] = ()
    namespace_selector: Selector | None = None
    qps: float = DEFAULT_QPS
    burst: int = DEFAULT_BURST
    domain: str = "cluster.local"

    @property
    def source(self) -> str:
        """Where the connection comes from, for messages (no secrets)."""
        if self.kubeconfig is None:
            return "in-cluster config"
        context = f" (context {self.context})" if self.context else ""
        return f"kubeconfig {self.kubeconfig}{context}"


def parse_settings(
    name: str,
    settings: Mapping[str, Any],
    context: AdapterContext | None = None,
    environ: Mapping[str, str] = os.environ,
) -> KubernetesSettings:
    """Validate the settings of the kubernetes registry ``name`` (see the module
    docstring); ``environ`` is consulted only without a kubeconfig."""
    context = context or AdapterContext()
    where = f"registry {name!r} (kubernetes)"
    unknown = sorted(str(k) for k in set(settings) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"{where}: unknown settings {unknown}; known: {list(SETTINGS)}")
    kubeconfig = _kubeconfig(where, settings, context)
    kube_context = _text(where, settings, "context")
    if kubeconfig is None:
        _check_in_cluster(where, kube_context, environ)
    return KubernetesSettings(
        kubeconfig=kubeconfig,
        context=kube_context,
        cluster_id=_cluster_id(where, settings.get("cluster_id"), name),
        namespaces=_namespaces(where, settings.get("namespaces")),
        namespace_selector=_selector(where, settings.get("namespace_selector")),
        qps=_qps(where, settings.get("qps", context.kubernetes_api_qps)),
        burst=_burst(where, settings.get("burst", context.kubernetes_api_burst)),
        domain=_domain(where, settings.get("domain", context.domain)),
    )


def _text(where: str, settings: Mapping[str, Any], key: str) -> str | None:
    value = settings.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _kubeconfig(where: str, settings: Mapping[str, Any], context: AdapterContext) -> str | None:
    value = settings.get("kubeconfig")
    origin = "'kubeconfig'"
    if value is None:
        value = context.kubeconfig
        origin = "--kubeconfig"
        if value is None:
            return None
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise ConfigError(f"{where}: {origin} must be a file path, got {value!r}")
    path = os.path.expanduser(os.fspath(value))
    if not os.path.isfile(path):
        raise ConfigError(f"{where}: {origin}: no such file: {path}")
    return str(path)


def _check_in_cluster(where: str, kube_context: str | None, environ: Mapping[str, str]) -> None:
    if kube_context is not None:
        raise ConfigError(f"{where}: 'context' needs a kubeconfig ('kubeconfig' or --kubeconfig)")
    missing = [key for key in IN_CLUSTER_ENV if not environ.get(key)]
    if missing:
        raise ConfigError(
            f"{where}: no kubeconfig ('kubeconfig' or --kubeconfig) and not running in a pod "
            f"({' and '.join(missing)} not set), so there is no cluster to read"
        )


def _cluster_id(where: str, value: Any, name: str) -> str:
    origin = "'cluster_id'"
    if value is None:
        value, origin = name, "the registry name (the default cluster_id)"
    if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
        raise ConfigError(
            f"{where}: {origin} must be a label value (up to 63 letters, digits, '-', '_', "
            f"'.'; alphanumeric at both ends), got {value!r}"
        )
    return value


def _namespaces(where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{where}: 'namespaces' must be a non-empty list of namespace names")
    for item in value:
        if not isinstance(item, str) or not _NAMESPACE.fullmatch(item):
            raise ConfigError(f"{where}: 'namespaces': {item!r} is not a namespace name")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: 'namespaces' lists a namespace twice: {list(value)}")
    return tuple(sorted(value))


def _selector(where: str, value: Any) -> Selector | None:
    if value is None:
        return None
    try:
        return parse_selector(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: 'namespace_selector': {exc}") from None


def _qps(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: 'qps' must be a number of requests a second, got {value!r}")
    if not 0 < value <= MAX_QPS:
        raise ConfigError(f"{where}: 'qps' must be > 0 and <= {MAX_QPS:g}, got {value!r}")
    return float(value)


def _burst(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: 'burst' must be a whole number >= 1, got {value!r}")
    return value


def _domain(where: str, value: Any) -> str:
    text = value.strip(".").lower() if isinstance(value, str) else ""
    if not text or len(text) > 253 or not _DOMAIN.fullmatch(text):
        raise ConfigError(
            f"{where}: 'domain' must be a DNS name such as cluster.local, got {value!r}"
        )
    return text
