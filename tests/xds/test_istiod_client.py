"""registryd read the way istiod's config-source client reads it (registryd.testing's
IstiodClient does what pkg/adsc does): synced once every Pilot type was answered, and a
config stored again only when its version changed."""

from __future__ import annotations

from registryd.model import Endpoint, Port, Service
from registryd.testing import IstiodClient
from registryd.testing.istiod import PILOT_TYPES
from tests.support.harness import Harness

SE = "networking.istio.io/v1/ServiceEntry"
WE = "networking.istio.io/v1/WorkloadEntry"


def web(*addresses: str) -> tuple[list[Service], list[Endpoint]]:
    service = Service(
        hostname="web.example", ports=(Port(number=80, name="http", protocol="HTTP"),)
    )
    endpoints = [
        Endpoint(hostname="web.example", address=a, port=8080, service_port=80) for a in addresses
    ]
    return [service], endpoints


async def test_synced_and_stored_only_on_change(harness: Harness) -> None:
    harness.memory.set(*web("10.0.0.1"))
    await harness.settle()
    async with IstiodClient(harness.target) as istiod:
        await istiod.wait(lambda c: c.synced())
        assert set(istiod.answered) >= set(PILOT_TYPES)
        assert list(istiod.bodies(SE)) == ["default/web.example"]
        assert [w.address for w in istiod.bodies(WE).values()] == ["10.0.0.1"]
        stored = dict(istiod.stored)
        assert stored == {SE: 1, WE: 1}

        # another registry event that changes nothing istiod reads: no re-store
        harness.memory.set(*web("10.0.0.1", "10.0.0.2"))
        await harness.settle()
        await istiod.wait(lambda c: len(c.configs.get(WE, {})) == 2)
        assert istiod.stored[SE] == 1  # the ServiceEntry did not change: not stored again
        assert istiod.stored[WE] == 2  # only the new WorkloadEntry was

        harness.memory.set([], [])
        await harness.settle()
        await istiod.wait(lambda c: not c.configs.get(SE) and not c.configs.get(WE))
