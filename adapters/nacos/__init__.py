"""The ``nacos`` registry: services and instances from a Nacos server (1.x to 3.x).

Written only against registryd's public adapter API, as a plugin would be.
:class:`NacosAdapter` is the factory registered under the entry-point name ``nacos``;
:mod:`.settings` validates its settings, :mod:`.convert` holds the pure Nacos-to-model
mapping, :mod:`.client` speaks the v1 Open API and :mod:`.adapter` polls it.
"""

from .adapter import NacosAdapter

__all__ = ["NacosAdapter"]
