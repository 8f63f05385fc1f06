"""The ``consul`` registry: services and their health from a Consul agent.

:class:`ConsulAdapter` is the adapter factory registered under the entry-point name
``consul``; :mod:`.settings` validates its settings, :mod:`.convert` holds the pure
Consul-to-model mapping, :mod:`.faults` the rule for which failures fail the registry
and which only one service, :mod:`.client` the HTTP client and :mod:`.adapter` the
blocking queries.
"""

from .adapter import ConsulAdapter

__all__ = ["ConsulAdapter"]
