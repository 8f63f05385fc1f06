"""registryd: service registries in, xDS out.

The public API for adapter authors is :mod:`registryd.model` and :mod:`registryd.adapter`.
"""

__version__ = "0.1.0"
