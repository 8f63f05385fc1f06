"""The ``consul`` registry: services and their health from a Consul agent.

:class:`ConsulAdapter` is the adapter factory registered under the entry-point name
``consul``; :mod:`.settings` validates its settings; :mod:`.parse`, :mod:`.mapping` and
:mod:`.state` hold the pure Consul-to-model mapping (entries to instances, instances to
services, the incremental state); :mod:`.faults` the rule for which failures fail the
registry and which only one service, :mod:`.client` the HTTP client and :mod:`.adapter`
the blocking queries.
"""

from .adapter import ConsulAdapter

__all__ = ["ConsulAdapter"]
