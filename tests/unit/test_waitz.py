"""``/debug/waitz``'s judgement (pure) and ``registryd wait``'s arguments."""

from __future__ import annotations

import io
from typing import Any

import pytest

from registryd.tools import cli
from registryd.web.waitz import ACKED, NACKED, PENDING, judge, parse_target, selected

ENVOY = "sidecar~10.0.0.1~web-1.shop~shop.svc.cluster.local"
OTHER = "sidecar~10.0.0.2~db-1.shop~shop.svc.cluster.local"


def t(planned: int, sent: int | None, acked: int | None, nacked: int | None = None) -> Any:
    return {"planned": planned, "sent": sent, "acked": acked, "nacked": nacked, "error": "bad"}


def conn(proxy: str, conn_id: str, **types: Any) -> dict[str, Any]:
    return {"proxyID": proxy, "connectionID": conn_id, "types": types}


@pytest.mark.parametrize(
    ("types", "state"),
    [
        ({"cds": t(5, 5, 5), "eds": t(5, 5, 5)}, ACKED),
        ({"cds": t(7, 7, 7)}, ACKED),  # a later version ACKed
        ({"cds": t(5, 3, 3)}, ACKED),  # planned past it, nothing sent: not concerned
        ({"cds": t(4, 4, 4)}, PENDING),  # not planned that version yet
        ({"cds": t(5, 5, 4)}, PENDING),  # sent, not ACKed yet
        ({"cds": t(5, 5, 4, nacked=5)}, NACKED),
        ({"cds": t(6, 6, 6, nacked=5)}, ACKED),  # ACKed a later version since
        ({"cds": t(5, 5, 4, nacked=3)}, PENDING),  # an older NACK is not this change's
        ({}, ACKED),  # subscribes to nothing: nothing to wait for
    ],
)
def test_a_connection_has_a_change_when_every_type_acked_it_or_was_not_concerned(
    types: dict[str, Any], state: str
) -> None:
    verdict = judge(5, 9, [conn(ENVOY, "c1", **types)])
    assert verdict["proxies"][0]["state"] == state
    assert verdict["done"] is (state == ACKED)
    if state == NACKED:
        assert verdict["proxies"][0]["error"] == "bad"


def test_a_type_the_client_has_yet_to_ask_for_is_pending() -> None:
    # clusters ACKed, but their endpoints not asked for yet: Envoy does not have them
    entry = {**conn(ENVOY, "c1", cds=t(5, 5, 5)), "expected": ["eds"]}
    verdict = judge(5, 5, [entry])
    assert verdict["done"] is False
    assert verdict["proxies"][0] == {
        "proxyID": ENVOY,
        "connectionID": "c1",
        "state": PENDING,
        "types": ["eds"],
    }


def test_not_done_before_the_push_or_while_a_worker_does_not_answer() -> None:
    entries = [conn(ENVOY, "c1", cds=t(5, 5, 5))]
    assert judge(6, 5, entries)["done"] is False  # push 6 not made yet
    assert judge(5, 5, entries, unanswered=["worker 2 is silent"])["done"] is False
    assert judge(5, 5, entries)["done"] is True
    assert judge(5, 5, [])["done"] is True  # nothing connected: nothing to wait for
    assert judge(5, 5, [], ["web-1"])["done"] is False  # the named proxy is not connected
    both = judge(5, 5, entries, ["web-1", "db-1"])  # one of two named is not connected
    assert both["done"] is False and both["unmatched"] == ["db-1"]


def test_proxies_are_selected_by_id_pod_or_glob() -> None:
    entries = [conn(ENVOY, "conn-1"), conn(OTHER, "conn-w2-3")]

    def ids(*selectors: str) -> list[str]:
        return [e["connectionID"] for e in selected(entries, selectors)[0]]

    assert ids() == ["conn-1", "conn-w2-3"]
    assert ids(ENVOY) == ["conn-1"]
    assert ids("web-1.shop") == ["conn-1"]
    assert ids("db-1") == ["conn-w2-3"]
    assert ids("conn-w2-*") == ["conn-w2-3"]
    assert ids("sidecar~*~*.shop~*", "web-1") == ["conn-1", "conn-w2-3"]
    assert ids("nobody") == []
    assert selected(entries, ["web-1", "nobody", "x*"])[1] == ["nobody", "x*"]


@pytest.mark.parametrize(
    "text",
    ["", "web.example", "hostname/", "push/", "push/abc", "push/-1", "svc/a", "push/" + "9" * 30],
)
def test_a_bad_target_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_target(text)


def test_targets() -> None:
    assert parse_target("hostname/Web.Example") == ("hostname", "web.example")
    assert parse_target("push/12") == ("push", "12")


@pytest.mark.parametrize(
    "argv",
    [
        ["wait"],  # --for is required
        ["wait", "--for=push/x"],
        ["wait", "--for=push/1", "--timeout=0"],
        ["wait", "--for=push/1", "--timeout=soon"],
        ["wait", "--for=push/1", "--server=http://[::1"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    if argv[-1].startswith("--server"):  # reaches the server loop: bound it
        argv = [*argv, "--timeout=0.2"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("registryd: error:"), err
    assert "Traceback" not in err


def test_an_unreachable_server_is_retried_until_the_timeout_then_named() -> None:
    from registryd.tools import wait

    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    parser = cli._parser()
    args = parser.parse_args(["wait", "--for=push/1", "--server=http://127.0.0.1:1", "--timeout=2"])
    err = io.StringIO()
    assert wait.run(args, io.StringIO(), err, clock=lambda: now[0], sleep=sleep) == 2
    first, detail = err.getvalue().splitlines()
    assert first.startswith("registryd: error: timed out after 2s waiting for push/1")
    assert detail.startswith("  http://127.0.0.1:1: ")
