"""Which failed Consul queries fail the whole registry, and which only their service;
and how a service's failed query is retried.  Pure: no I/O.

Rule (:func:`registry_wide`):

* Registry-wide (``watch()`` raises :class:`ConsulError`, the supervisor restarts it with
  its backoff and a full relist): any failure of a ``/v1/catalog/services`` query; any
  query that cannot reach the agent or loses its connection (refused, reset, TLS
  failure, connect timeout: :class:`aiohttp.ClientConnectionError`); the agent refusing
  the ACL token (401, 403), which it does for every query alike.
* One service's (:class:`ServiceQueryError`: that service alone is retried, the rest of
  the registry stays synced): a ``/v1/health/service/<name>`` query answered with any
  other HTTP error status (a 500, a 429 for too many connections...), a reply without
  a numeric ``X-Consul-Index``, a body that is not JSON or not a list, or a reply that
  did not complete in time.

A failing service is queried again after :func:`retry_delay`: :data:`RETRY_FIRST`
seconds doubling per failure up to :data:`RETRY_MAX`, each delay scaled by a factor in
``[1 - RETRY_JITTER, 1 + RETRY_JITTER]`` so that services failing together do not
retry together.
"""

from __future__ import annotations

import aiohttp
from consul.exceptions import ACLDisabled, ACLPermissionDenied

from registryd.adapter import RegistryUnavailable

__all__ = [
    "RETRY_FIRST",
    "RETRY_JITTER",
    "RETRY_MAX",
    "ConsulError",
    "ServiceQueryError",
    "registry_wide",
    "retry_delay",
]

RETRY_FIRST = 1.0  # seconds before the first retry of a failed service query
RETRY_MAX = 30.0  # the doubling stops here
RETRY_JITTER = 0.2  # each delay is scaled by a factor in [1 - RETRY_JITTER, 1 + RETRY_JITTER]


class ConsulError(RegistryUnavailable, RuntimeError):
    """A query failed: the agent is unreachable, refused it or answered nonsense."""


class ServiceQueryError(ConsulError):
    """A query of one service's health failed in a way that concerns that service only
    (see :func:`registry_wide`)."""


def registry_wide(error: BaseException, *, catalog: bool) -> bool:
    """Whether ``error``, raised by a catalog query (``catalog``) or a service's health
    query, fails the whole registry rather than only that service (see the module
    docstring)."""
    if catalog:
        return True
    return isinstance(error, aiohttp.ClientConnectionError | ACLDisabled | ACLPermissionDenied)


def retry_delay(failures: int, draw: float) -> float:
    """Seconds to wait before querying a service again after ``failures + 1`` failures
    in a row; ``draw`` in ``[0, 1)`` picks the jitter (0.5 means none)."""
    step = min(RETRY_FIRST * 2 ** min(failures, 32), RETRY_MAX)
    return step * (1 - RETRY_JITTER + 2 * RETRY_JITTER * draw)
