"""Test tools that are part of the product: an in-memory registry, an ADS client and the
adapter contract suite.  Plugin authors and registryd's own tests use them the same way.
"""

from registryd.testing.ads import AdsClient, DeltaAdsClient, DeltaResponse, Response
from registryd.testing.contract import AdapterContract
from registryd.testing.istiod import IstiodClient
from registryd.testing.memory import MemoryAdapter

__all__ = [
    "AdapterContract",
    "AdsClient",
    "DeltaAdsClient",
    "DeltaResponse",
    "IstiodClient",
    "MemoryAdapter",
    "Response",
]
