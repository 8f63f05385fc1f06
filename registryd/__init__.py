"""registryd: service registries in, xDS out.

The public API for adapter authors (version :data:`registryd.adapter.API_VERSION`) is
exactly this; the built-in adapters use nothing else (a test checks it):

* :mod:`registryd.adapter` — ``Adapter``, ``AdapterFactory``, ``AdapterContext``, the
  updates ``Replace``, ``Upsert``, ``Delete``, ``Problems``, and the helpers
  ``increments``, ``Published``, ``LastGood``, ``follow``, ``off_loop``,
  ``describe_error``, ``RegistryUnavailable`` (an expected failure of ``watch()``), and
  the bounded JSON reader ``JsonLimits``, ``JsonTooLarge``, ``read_capped``,
  ``parse_json``, ``load_json`` (from :mod:`registryd.jsonbound`);
  ``API_VERSION``;
* :mod:`registryd.errors` — ``ConfigError`` (also importable from ``registryd.adapter``);
* :mod:`registryd.model` — the frozen value types (``Service``, ``Port``, ``Endpoint``,
  ``Labels``, ``Locality``…) and their constants;
* :mod:`registryd.settings` — ``SettingsReader`` (and ``DNS_LABEL``);
* :mod:`registryd.ratelimit` — ``TokenBucket``, for polite clients;
* :func:`registryd.config.go_duration` — Go-style durations in settings;
* :mod:`registryd.testing` — the contract suite, an in-memory registry, ADS clients.

Everything else is registryd's own and may change without notice.
"""

__version__ = "0.1.0"

PUBLIC_MODULES = (
    "registryd.adapter",
    "registryd.errors",
    "registryd.model",
    "registryd.settings",
    "registryd.ratelimit",
    "registryd.testing",
)
PUBLIC_NAMES = {"registryd.config": ("go_duration",)}  # single names of other modules
