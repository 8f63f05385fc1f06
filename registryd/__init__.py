"""registryd: service registries in, xDS out.

The public API for adapter authors is :mod:`registryd.model`, :mod:`registryd.adapter`,
:mod:`registryd.ratelimit` (a token bucket for polite clients), :func:`registryd.config.go_duration`
(Go-style durations in settings) and :mod:`registryd.testing` (the contract suite, an
in-memory registry and an ADS client).
"""

__version__ = "0.1.0"
