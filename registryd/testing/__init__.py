"""Test doubles that are part of the product: an in-memory registry and an ADS client.

Plugin authors and registryd's own tests use them the same way.
"""

from registryd.testing.ads import AdsClient, Response
from registryd.testing.memory import MemoryAdapter

__all__ = ["AdsClient", "MemoryAdapter", "Response"]
