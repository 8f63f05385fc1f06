"""How an operator names a connected proxy, in one place: ``registryd proxy-status`` and
``proxy-config`` resolve a name with :func:`select`, and so does the daemon's
``/debug/config_dump?proxyID=``, so a name one accepts the other does too.

A name is a proxy's full id (``sidecar~10.0.0.1~web-1.shop~shop.svc.cluster.local``),
a connection id, or the ``<pod>.<namespace>`` (``web-1.shop``) or bare ``<pod>``
(``web-1``) part of an Istio-style id (four ``~``-separated fields).  Pure, standard
library only.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["pod_part", "select"]


def pod_part(proxy_id: str) -> str:
    """The ``<pod>.<namespace>`` field of an Istio-style proxy id; ``""`` for another."""
    parts = proxy_id.split("~")
    return parts[2] if len(parts) == 4 else ""


def select(name: str, ids: Sequence[tuple[str, str]]) -> list[int]:
    """The indexes in ``ids`` (``(proxy id, connection id)`` pairs) of the connections
    ``name`` names, in order: those whose proxy or connection id is ``name``; if none,
    those whose ``<pod>.<namespace>`` part is; if none, those whose ``<pod>`` part is.
    Several proxy ids among them mean the name is ambiguous (the caller says so)."""
    exact = [i for i, (proxy, conn) in enumerate(ids) if name in (proxy, conn)]
    if exact:
        return exact
    pods = [pod_part(proxy) for proxy, _ in ids]
    by_pod = [i for i, pod in enumerate(pods) if pod == name]
    return by_pod or [i for i, pod in enumerate(pods) if pod and pod.partition(".")[0] == name]
