"""The ``serviceentry`` registry: Istio ServiceEntry/WorkloadEntry YAML files in a directory.

:class:`ServiceEntryAdapter` is the adapter factory registered under the entry-point name
``serviceentry``; :mod:`.schema` validates the YAML, :mod:`.convert` holds the pure
conversion to the model and :mod:`.state` the last good content of every file.
"""

from .adapter import ServiceEntryAdapter

__all__ = ["ServiceEntryAdapter"]
