"""Errors of registryd's public API (see :mod:`registryd`)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """Settings or input that can never work; the message says what and where.

    Raised by an adapter factory for bad settings (the daemon stops at start with one
    line, exit 2) and by registryd's own configuration parsing."""
