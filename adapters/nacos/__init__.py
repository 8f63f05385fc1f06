"""The ``nacos`` registry: services and instances from a Nacos server (1.x to 3.x).

Written only against registryd's public adapter API, as a plugin would be.
:class:`NacosAdapter` is the factory registered under the entry-point name ``nacos``;
:mod:`.settings` validates its settings, :mod:`.convert` holds the pure Nacos-to-model
mapping, :mod:`.client` speaks the v1 Open API (polls, logins), :mod:`.wire` and
:mod:`.link` the gRPC protocol of Nacos 2.x/3.x (pushes), and :mod:`.adapter` follows
the registry by push or by polling.
"""

from .adapter import NacosAdapter

__all__ = ["NacosAdapter"]
