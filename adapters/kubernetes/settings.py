"""Settings of the ``kubernetes`` registry: validation and defaults.  Pure apart from
checking that the kubeconfig file exists (and, without one, that registryd runs in a pod).

Contract: :func:`parse_settings` turns a registry's mapping from registryd.yaml (and the
daemon-wide :class:`~registryd.adapter.AdapterContext`, for ``domain``) into a frozen
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
``qps``                 ``--kubernetesApiQPS``,     requests a second (token bucket) ...
                        else 80
``burst``               ``--kubernetesApiBurst``,   ... and its burst
                        else 160
``domain``              ``--domain``                DNS suffix: ``<svc>.<ns>.svc.<domain>``
                        (``cluster.local``)
``eds_for_headless``    ``PILOT_ENABLE_EDS_FOR_``   true: headless Services are load-
                        ``HEADLESS_SERVICES``,      balanced over their pods (STATIC, EDS)
                        else false                  instead of passed through (NONE)
``max_response_bytes``  ``16777216`` (16 MiB)       bytes of one list page (500 objects)
                                                    or one watch event; more fails the
                                                    list or watch (at least 1024)
======================  ==========================  =====================================

The istiod-style flags ``--kubeconfig``, ``--kubernetesApiQPS`` and
``--kubernetesApiBurst`` and istiod's ``PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES`` reach
this module as settings: the daemon (:mod:`registryd.daemon.configure`, which parses the
variable as istiod does and rejects a bad value naming it) puts those given under the
settings of every ``kubernetes`` registry, and a registry's own setting wins
(:func:`registryd.daemon.config.with_defaults`).

With both ``namespaces`` and ``namespace_selector`` a namespace must be listed *and*
match.  Without any kubeconfig the in-cluster configuration is used (the pod's service
account token and CA, ``KUBERNETES_SERVICE_HOST``/``_PORT``); ``context`` then makes no
sense and is rejected.  Those two variables, the pod's environment, are the only ones
read here: configuration such as ``KUBECONFIG`` or ``PILOT_*`` is not.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registryd.adapter import AdapterContext, JsonLimits
from registryd.settings import DNS_LABEL, SettingsReader

from .selector import Selector, parse_selector

__all__ = [
    "DEFAULT_BURST",
    "DEFAULT_MAX_RESPONSE_BYTES",
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
    "eds_for_headless",
    "max_response_bytes",
)
DEFAULT_QPS = 80.0
DEFAULT_BURST = 160
DEFAULT_MAX_RESPONSE_BYTES = 16 * 2**20  # a page of 500 Pods takes a few MB
MIN_RESPONSE_BYTES = 1024
MAX_QPS = 100_000.0
IN_CLUSTER_ENV = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
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
    eds_for_headless: bool = False
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    @property
    def limits(self) -> JsonLimits:
        """What one answer (a list page, a watch event) may hold."""
        return JsonLimits(max_bytes=self.max_response_bytes)

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
    docstring); ``environ`` is the pod's environment, where the in-cluster configuration
    is looked for without a kubeconfig."""
    context = context or AdapterContext()
    reader = SettingsReader(name, "kubernetes", settings, SETTINGS)
    kubeconfig = reader.file("kubeconfig")
    kube_context = reader.text("context")
    if kubeconfig is None:
        _check_in_cluster(reader, kube_context, environ)
    return KubernetesSettings(
        kubeconfig=kubeconfig,
        context=kube_context,
        cluster_id=_cluster_id(reader, name),
        namespaces=tuple(sorted(reader.names("namespaces", DNS_LABEL, "namespace name"))),
        namespace_selector=_selector(reader),
        qps=reader.number("qps", DEFAULT_QPS, maximum=MAX_QPS, unit="requests a second"),
        burst=reader.whole("burst", DEFAULT_BURST),
        domain=_domain(reader, context.domain),
        eds_for_headless=reader.flag("eds_for_headless", False),
        max_response_bytes=reader.whole(
            "max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES, minimum=MIN_RESPONSE_BYTES
        ),
    )


def _check_in_cluster(
    reader: SettingsReader, kube_context: str | None, environ: Mapping[str, str]
) -> None:
    if kube_context is not None:
        raise reader.error("'context' needs a kubeconfig ('kubeconfig' or --kubeconfig)")
    missing = [key for key in IN_CLUSTER_ENV if not environ.get(key)]
    if missing:
        raise reader.error(
            f"no kubeconfig ('kubeconfig' or --kubeconfig) and not running in a pod "
            f"({' and '.join(missing)} not set), so there is no cluster to read"
        )


def _cluster_id(reader: SettingsReader, name: str) -> str:
    value = reader.get("cluster_id")
    origin = "'cluster_id'"
    if value is None:
        value, origin = name, "the registry name (the default cluster_id)"
    if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
        raise reader.error(
            f"{origin} must be a label value (up to 63 letters, digits, '-', '_', "
            f"'.'; alphanumeric at both ends), got {value!r}"
        )
    return value


def _selector(reader: SettingsReader) -> Selector | None:
    value = reader.get("namespace_selector")
    if value is None:
        return None
    try:
        return parse_selector(value)
    except ValueError as exc:
        raise reader.error(f"'namespace_selector': {exc}") from None


def _domain(reader: SettingsReader, default: str) -> str:
    value = reader.get("domain", default)
    text = value.strip(".").lower() if isinstance(value, str) else ""
    if not text or len(text) > 253 or not _DOMAIN.fullmatch(text):
        raise reader.error(f"'domain' must be a DNS name such as cluster.local, got {value!r}")
    return text
