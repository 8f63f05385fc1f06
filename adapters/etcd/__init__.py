"""The ``etcd`` registry: service instances stored under a key prefix of etcd v3.

:class:`EtcdAdapter` is the adapter factory registered under the entry-point name
``etcd``; the pure key/value-to-model conversion is :mod:`.parse` (which documents the
key layout and value formats), :mod:`.mapping` (instances to services) and :mod:`.state`
(the incremental per-key table); :mod:`.settings` holds the settings.
"""

from .adapter import EtcdAdapter

__all__ = ["EtcdAdapter"]
