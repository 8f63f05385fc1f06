"""The ``etcd`` registry: service instances stored under a key prefix of etcd v3.

:class:`EtcdAdapter` is the adapter factory registered under the entry-point name
``etcd``; :mod:`.convert` holds the pure key/value-to-model conversion (and documents
the key layout and value formats), :mod:`.settings` the settings.
"""

from .adapter import EtcdAdapter

__all__ = ["EtcdAdapter"]
