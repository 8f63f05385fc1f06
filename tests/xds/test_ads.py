"""The cheap mode of the ADS clients (:mod:`registryd.testing.ads`) that the benchmarks run
by the hundred: ``keep=False`` counts each response and hands it to ``on_response``
without queueing it or holding its resources; ``flush`` waits until the requests were
written.  The clients' default behaviour is what every other xDS test relies on."""

from __future__ import annotations

import asyncio

from registryd.testing import AdsClient, DeltaAdsClient
from registryd.testing.ads import TYPES, DeltaResponse, Response
from tests.xds.test_protocol import eps, svc

CDS, EDS = TYPES["cds"], TYPES["eds"]


async def test_a_client_that_keeps_nothing_counts_acks_and_hands_on(harness) -> None:  # type: ignore[no-untyped-def]
    harness.memory.set([svc("a.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    seen: list[Response] = []
    got_eds = asyncio.Event()

    def on_response(response: Response) -> None:
        seen.append(response)
        if response.type_url == CDS:
            client.subscribe("eds", response.eds_names)
        else:
            got_eds.set()

    async with AdsClient(harness.target, keep=False, on_response=on_response) as client:
        client.subscribe("cds")
        await client.flush()
        await asyncio.wait_for(got_eds.wait(), 5)  # a hang guard only
        assert [r.type_url for r in seen] == [CDS, EDS]
        assert client.received == {CDS: 1, EDS: 1}
        assert client.responses.empty()
        assert client.acked[CDS] == seen[0].message.version_info  # ACKed before handed on
        assert seen[1].names == ["outbound|8080||a.example"]


async def test_a_delta_client_that_keeps_nothing_holds_nothing(harness) -> None:  # type: ignore[no-untyped-def]
    harness.memory.set([svc("a.example")], eps("a.example", "10.0.0.1"))
    await harness.settle()
    seen: list[DeltaResponse] = []
    got = asyncio.Event()

    def on_response(response: DeltaResponse) -> None:
        seen.append(response)
        got.set()

    async with DeltaAdsClient(harness.target, keep=False, on_response=on_response) as client:
        client.subscribe("cds")
        await asyncio.wait_for(got.wait(), 5)  # a hang guard only
        assert "outbound|8080||a.example" in seen[0].names
        assert client.received == {CDS: 1}
        assert client.responses.empty()
        assert client.held == {CDS: {}}  # subscribed, nothing applied


async def test_flush_waits_for_the_queued_requests_and_not_for_an_ended_stream(harness) -> None:  # type: ignore[no-untyped-def]
    async with AdsClient(harness.target) as client:
        client.subscribe("cds")
        await client.flush()
        # the subscription was written; only the ACK of its answer can be queued since
        # (the answer may be read before this line runs)
        assert client._outbox.empty() or client.received[CDS] == 1
        await client.next("cds")
    await client.flush()  # the stream has ended: nothing more to wait for
