"""The push tracker behind ``/debug/pushz``: an answer the proxy sends before the server's
writer hears that its write finished still counts for that delivery."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2

from registryd.xds import resources as res
from registryd.xds.stream import ACK, NACK, Connection, Digest, Planned, TypeState
from registryd.xds.tracking import PROXY_KEPT, PushTracker

EDS = res.ENDPOINT_TYPE


def connection(connected: float) -> Connection:
    conn = Connection(peer="ipv4:127.0.0.1:1", version_prefix="v")
    conn.connected_mono = connected
    return conn


def planned(version: int) -> Planned:
    return Planned(EDS, b"x" * 7, f"v-{version}", f"{version}-1", ("outbound|80||a",))


def answer(kind: str, version: int, error: str = "") -> tuple[Digest, str]:
    state = TypeState(EDS, nack_version=f"v-{version}", last_nack=error)
    return Digest(replan=False, kind=kind, state=state), f"v-{version}"


def test_an_ack_read_before_the_write_is_reported_finished_is_kept() -> None:
    # the reader task may run before the writer task resumes from its write: the
    # proxy's ACK of push 2 then arrives before sent() for it
    tracker = PushTracker()
    tracker.begin(2, started=10.0, published=10.1)
    conn = connection(connected=5.0)
    tracker.answered(conn, *answer(ACK, 2), at=10.3)
    tracker.sent(conn, planned(2), 2, started=10.2, finished=10.4)
    (delivery,) = tracker.get(2).deliveries.values()  # type: ignore[union-attr]
    assert (delivery.sent_at, delivery.acked_at, delivery.nacked_at) == (10.4, 10.3, None)


def test_an_early_nack_keeps_its_error_and_an_ack_after_sent_still_counts() -> None:
    tracker = PushTracker()
    tracker.begin(3, started=20.0, published=20.1)
    early, late = connection(connected=1.0), connection(connected=2.0)
    tracker.answered(early, *answer(NACK, 3, "bad cluster"), at=20.2)
    tracker.sent(early, planned(3), 3, started=20.1, finished=20.3)
    tracker.sent(late, planned(3), 3, started=20.1, finished=20.3)
    tracker.answered(late, *answer(ACK, 3), at=20.5)
    trace = tracker.get(3)
    assert trace is not None
    nacked = trace.deliveries[(early.id, EDS)]
    assert (nacked.nacked_at, nacked.error, nacked.acked_at) == (20.2, "bad cluster", None)
    assert trace.deliveries[(late.id, EDS)].acked_at == 20.5
    assert trace.early == {}


def test_answers_of_proxies_that_connected_after_the_change_are_not_held() -> None:
    # such a proxy gets the state as its initial response, not as this push
    tracker = PushTracker()
    tracker.begin(4, started=30.0, published=30.1)
    newcomer = connection(connected=30.05)
    tracker.answered(newcomer, *answer(ACK, 4), at=30.2)
    tracker.sent(newcomer, planned(4), 4, started=30.1, finished=30.3)
    trace = tracker.get(4)
    assert trace is not None and trace.deliveries == {} and trace.early == {}


def test_a_delivery_keeps_little_of_a_huge_node_id() -> None:
    # deliveries outlive their connection (the last pushes are kept): a client's 1 MB
    # node id must not stay with them
    tracker = PushTracker()
    tracker.begin(2, started=10.0, published=10.1)
    conn = connection(connected=5.0)
    conn.node = base_pb2.Node(id="n" * 2**20)
    tracker.sent(conn, planned(2), 2, started=10.2, finished=10.4)
    (delivery,) = tracker.get(2).deliveries.values()  # type: ignore[union-attr]
    assert delivery.proxy.startswith("n" * PROXY_KEPT)
    assert len(delivery.proxy) < PROXY_KEPT + 40
