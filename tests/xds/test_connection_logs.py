"""The log lines a proxy operator reads: at info one line when a proxy connects and one
when it disconnects (its id, peer and kind of client); at debug on the ``xds`` scope one
line per request, response, ACK and NACK, with client text clipped and escaped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from registryd.model import Port, Service
from registryd.testing import AdsClient
from tests.support.harness import Harness

pytestmark = pytest.mark.usefixtures("restore_loggers")


class Lines(logging.Handler):
    """Messages logged on ``registryd.xds``; :meth:`wait_for` awaits one containing a
    text (each new record wakes the waiters)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    def matching(self, text: str, level: int | None = None) -> list[str]:
        return [
            r.getMessage()
            for r in self.records
            if text in r.getMessage() and (level is None or r.levelno == level)
        ]

    async def wait_for(self, text: str, timeout: float = 5.0) -> str:
        async def found() -> str:
            while not (hits := self.matching(text)):
                self._changed.clear()
                await self._changed.wait()
            return hits[0]

        return await asyncio.wait_for(found(), timeout)


@pytest.fixture
def lines(harness: Harness) -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("registryd.xds")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def test_connect_and_disconnect_are_info_lines_naming_id_peer_and_client(
    harness: Harness, lines: Lines
) -> None:
    client = AdsClient(harness.target, node_id="sidecar~10.0.0.1~web-1.shop~shop.svc.x")
    client.node.user_agent_name = "envoy"
    client.node.user_agent_build_version.version.major_number = 1
    client.node.user_agent_build_version.version.minor_number = 30
    async with client:
        client.subscribe("cds")
        await client.next("cds")
        connected = await lines.wait_for(" connected (")
    disconnected = await lines.wait_for("disconnected (")
    for line in (connected, disconnected):
        assert line.startswith("proxy sidecar~10.0.0.1~web-1.shop~shop.svc.x "), line
        assert "peer ipv4:127.0.0.1:" in line or "peer ipv6:" in line, line
        assert "envoy 1.30.0, proxy, sotw" in line, line
    assert len(lines.matching(" connected (", logging.INFO)) == 1
    assert len(lines.matching("disconnected (", logging.INFO)) == 1


async def test_proxyless_grpc_client_is_named_as_such(harness: Harness, lines: Lines) -> None:
    client = AdsClient(harness.target, node_id="grpc-client", metadata={"GENERATOR": "grpc"})
    client.node.user_agent_name = "gRPC Python"
    client.node.user_agent_version = "1.60.0"
    async with client:
        client.subscribe("lds", ["web.example:8080"])
        await client.next("lds")
        line = await lines.wait_for(" connected (")
    assert "gRPC Python 1.60.0, proxyless gRPC, sotw" in line, line


async def test_requests_responses_acks_and_nacks_are_debug_lines(
    harness: Harness, lines: Lines
) -> None:
    harness.memory.set([Service(hostname="a.example", ports=(Port(number=80, name="http"),))])
    await harness.settle()  # one CDS version, with the service
    async with AdsClient(harness.target, node_id="p1") as client:
        client.subscribe("cds")
        cds = await client.next("cds")
        await lines.wait_for("p1 ACKed Cluster")
        client.reject["type.googleapis.com/envoy.config.route.v3.RouteConfiguration"] = (
            "bad\nroute " + "x" * 1000
        )
        client.subscribe("rds", ["80"])
        await client.next("rds")
        nack = await lines.wait_for("p1 rejected RouteConfiguration")
    assert lines.matching("p1 requested Cluster: every resource", logging.DEBUG)
    sent = lines.matching(f"sent p1 Cluster version {cds.message.version_info} nonce")
    assert sent and "resources" in sent[0], lines.matching("sent")
    assert lines.matching(f"p1 ACKed Cluster version {cds.message.version_info}", logging.DEBUG)
    assert lines.matching("p1 requested RouteConfiguration: 1 names", logging.DEBUG)
    assert "bad\\nroute " in nack and "more chars)" in nack and "\n" not in nack, nack
