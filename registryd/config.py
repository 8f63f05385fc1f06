"""Kept for plugins written against API 1.0, which named
``registryd.config.go_duration``; the function lives in :mod:`registryd.settings`.  The
daemon's configuration is :mod:`registryd.daemon.config`."""

from registryd.settings import go_duration

__all__ = ["go_duration"]
