"""The ``kubernetes`` registry: Services and EndpointSlices of one Kubernetes cluster.

:class:`KubernetesAdapter` is the adapter factory registered under the entry-point name
``kubernetes``; :mod:`.settings` validates its settings; :mod:`.parse` (into :mod:`.objects`),
:mod:`.mapping` (which documents the rules) and :mod:`.state` hold the pure
object-to-model mapping; :mod:`.client` the API-server requests and :mod:`.adapter` the
list/watch loop.  One registry instance is one cluster.
"""

from .adapter import KubernetesAdapter

__all__ = ["KubernetesAdapter"]
