"""The ``kubernetes`` registry: Services and EndpointSlices of one Kubernetes cluster.

:class:`KubernetesAdapter` is the adapter factory registered under the entry-point name
``kubernetes``; :mod:`.settings` validates its settings, :mod:`.convert` holds the pure
object-to-model mapping (and documents it), :mod:`.client` the API-server requests and
:mod:`.adapter` the list/watch loop.  One registry instance is one cluster.
"""

from .adapter import KubernetesAdapter

__all__ = ["KubernetesAdapter"]
