"""The ``serviceentry`` registry: Istio ServiceEntry/WorkloadEntry YAML files in a directory.

:class:`ServiceEntryAdapter` is the adapter factory registered under the entry-point name
``serviceentry``; :mod:`.convert` holds the pure YAML-to-model conversion.
"""

from .adapter import ServiceEntryAdapter

__all__ = ["ServiceEntryAdapter"]
