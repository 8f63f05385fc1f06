"""``registryd proxy-status`` and ``proxy-config`` against servers that answer badly on
purpose: slow, malformed, oversized or wrongly shaped.  Each command runs as its own
process, as an operator runs it, and must end with exit 2 and one line on stderr (no
traceback), within its ``--timeout`` for the slow ones; the hang guard is far longer, so
a test fails on a hang rather than on a slow machine.  Nothing here asserts elapsed time.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

HANG_GUARD = 60.0  # seconds a command may run before the test calls it hung
PROXY = "sidecar~127.0.0.1~web-1.shop~shop.svc.cluster.local"
SYNCZ = [
    {
        "proxyID": PROXY,
        "connectionID": f"{PROXY}-1",
        "type": "sotw",
        "types": {"cds": {"nonceSent": "n1", "versionSent": "v-1", "acked": True}},
    }
]
CLUSTERS = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"

Write = Callable[[socket.socket, threading.Event], None]


def head(status: str = "200 OK", *headers: str) -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *headers]) + "\r\n\r\n").encode()


def fixed(body: bytes, status: str = "200 OK") -> Write:
    def write(conn: socket.socket, _: threading.Event) -> None:
        conn.sendall(head(status, f"Content-Length: {len(body)}") + body)

    return write


def raw(data: bytes) -> Write:
    def write(conn: socket.socket, _: threading.Event) -> None:
        conn.sendall(data)

    return write


def drip(prefix: bytes, byte: bytes = b"x") -> Write:
    """``prefix``, then ``byte`` every tenth of a second until the client leaves."""

    def write(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(prefix)
        while not stop.wait(0.1):
            conn.sendall(byte)

    return write


def stream(prefix: bytes, piece: bytes, most: int = 3 << 30) -> Write:
    """``prefix``, then ``piece`` again and again (up to ``most`` bytes) until the client
    leaves: a huge answer that is never held in memory here."""

    def write(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(prefix)
        sent = 0
        while sent < most and not stop.is_set():
            conn.sendall(piece)
            sent += len(piece)

    return write


def json_answer(value: Any) -> Write:
    return fixed(json.dumps(value).encode())


class HostileServer:
    """A raw HTTP server on 127.0.0.1: each path is answered by its writer, which gets
    the socket once the request head was read (``/debug/config_dump`` matches any
    query)."""

    def __init__(self, answers: dict[str, Write]) -> None:
        self.answers = answers
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(4096)
                if not data:
                    return
                request += data
            path = request.split(b" ")[1].decode().partition("?")[0]
            try:
                self.answers[path](conn, self.stop)
            except OSError:  # the client left, as it should
                pass

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@contextlib.contextmanager
def serve(answers: dict[str, Write]) -> Iterator[HostileServer]:
    server = HostileServer(answers)
    try:
        yield server
    finally:
        server.close()


def registryd(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "registryd", *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )


def assert_one_line(done: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    detail = f"exit {done.returncode}\nstdout: {done.stdout!r}\nstderr: {done.stderr[-3000:]!r}"
    assert done.returncode == code, detail
    assert "Traceback" not in done.stderr, detail
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("registryd: error: "), detail
    assert text in done.stderr, detail
    assert done.stdout == "", detail


DEEP = b"[" * 100_000 + b"]" * 100_000
SYNCZ_ANSWERS: dict[str, tuple[Write, str]] = {
    "drip-body": (drip(head("200 OK", "Content-Length: 100000")), "no complete answer within"),
    "drip-headers": (drip(b"HTTP/1.1 200 OK\r\n", b"X"), "no complete answer within"),
    "drip-chunks": (
        drip(head("200 OK", "Transfer-Encoding: chunked"), b"1\r\n[\r\n"),
        "no complete answer within",
    ),
    "deep-json": (fixed(DEEP), "nested deeper than"),
    "json-a-little-too-deep": (fixed(b"[" * 200 + b"]" * 200), "nested deeper than 128"),
    "not-json": (fixed(b"<html>hello</html>"), "not JSON"),
    "huge-integer": (fixed(b"[" + b"9" * 5000 + b"]"), "not JSON"),
    "an-object": (json_answer({"proxyID": PROXY}), "expected a JSON list of connection objects"),
    "numbers": (json_answer([1, 2]), "expected a JSON list of connection objects"),
    "types-a-list": (json_answer([{"proxyID": PROXY, "types": []}]), "unexpected JSON"),
    "type-a-string": (json_answer([{"types": {"cds": "SYNCED"}}]), "unexpected JSON"),
    "huge-version": (
        json_answer([{"types": {"cds": {"nonceSent": "1", "versionSent": "v-" + "9" * 5000}}}]),
        "unexpected JSON",
    ),
    "garbage-status-line": (raw(b"\x00\xff\x1b[2J garbage\r\n\r\n"), "not an HTTP answer"),
    "status-not-a-number": (raw(b"HTTP/1.1 OK\r\n\r\n"), "not an HTTP answer"),
    "no-answer": (raw(b""), "ended in its status line"),
    "answer-500": (fixed(b"[]", "500 Internal Server Error"), "answered 500"),
    "huge-header": (raw(head("200 OK", "X-Big: " + "a" * (1 << 20))), "longer than"),
    "many-headers": (
        raw(head("200 OK", *(f"X-{i}: {i}" for i in range(10_000)))),
        "more than 100 header lines",
    ),
    "malformed-header": (raw(head("200 OK", "no colon here")), "malformed header line"),
    "bad-content-length": (raw(head("200 OK", "Content-Length: -1")), "malformed Content-Length"),
    "two-lengths": (
        raw(head("200 OK", "Content-Length: 2", "Content-Length: 3") + b"[]"),
        "malformed Content-Length",
    ),
    "body-cut-short": (raw(head("200 OK", "Content-Length: 100") + b"[]"), "ended before"),
    "bad-chunk-size": (
        raw(head("200 OK", "Transfer-Encoding: chunked") + b"zz\r\n[]\r\n0\r\n\r\n"),
        "malformed chunk size line",
    ),
    "chunk-longer-than-said": (
        raw(head("200 OK", "Transfer-Encoding: chunked") + b"1\r\n[]\r\n0\r\n\r\n"),
        "longer than its size line",
    ),
    "chunks-cut-short": (
        raw(head("200 OK", "Transfer-Encoding: chunked") + b"2\r\n["),
        "ended before",
    ),
    "huge-chunk": (
        raw(head("200 OK", "Transfer-Encoding: chunked") + b"FFFFFFFFFFFF\r\n"),
        "over the limit of 67108864 bytes",
    ),
    "gzip": (raw(head("200 OK", "Transfer-Encoding: gzip")), "unsupported Transfer-Encoding"),
    "declares-2-GiB": (
        stream(head("200 OK", f"Content-Length: {2 << 30}"), b" " * (1 << 16)),
        "answer of 2147483648 bytes is over the limit of 67108864 bytes",
    ),
    "streams-past-the-limit": (
        stream(head("200 OK", "Connection: close"), b" " * (1 << 16)),
        "over the limit of 67108864 bytes",
    ),
    "chunks-past-the-limit": (
        stream(
            head("200 OK", "Transfer-Encoding: chunked"), b"10000\r\n" + b" " * (1 << 16) + b"\r\n"
        ),
        "over the limit of 67108864 bytes",
    ),
}


@pytest.mark.parametrize("name", sorted(SYNCZ_ANSWERS))
def test_proxy_status_ends_with_one_line_and_exit_2(name: str) -> None:
    write, text = SYNCZ_ANSWERS[name]
    with serve({"/debug/syncz": write}) as server:
        done = registryd("proxy-status", "--server", server.url, "--timeout", "1")
        assert_one_line(done, 2, text)
        assert done.stderr.startswith(f"registryd: error: {server.url}/debug/syncz: ")


def test_the_answer_limit_is_a_flag() -> None:
    with serve({"/debug/syncz": fixed(b"[]" + b" " * (2 << 20))}) as server:
        small = registryd("proxy-status", "--server", server.url, "--max-answer-mib", "1")
        assert_one_line(small, 2, "over the limit of 1048576 bytes")
        done = registryd("proxy-status", "--server", server.url, "--max-answer-mib", "3")
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout.startswith("NAME ")


def test_a_bad_instance_does_not_hide_the_good_ones_rows() -> None:
    with (
        serve({"/debug/syncz": json_answer(SYNCZ)}) as good,
        serve({"/debug/syncz": fixed(DEEP)}) as bad,
    ):
        done = registryd("proxy-status", "--server", f"{good.url},{bad.url}")
        assert done.returncode == 2
        assert PROXY in done.stdout
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith(f"registryd: error: {bad.url}/debug/syncz: ")


def dump(*entries: Any) -> dict[str, Any]:
    return {"configs": [{"@type": CLUSTERS, "dynamic_active_clusters": list(entries)}]}


DUMP_ANSWERS: dict[str, tuple[Write, str]] = {
    "drip": (drip(head("200 OK", "Content-Length: 100000"), b" "), "no complete answer within"),
    "a-list": (json_answer([]), "expected a JSON object"),
    "configs-a-string": (json_answer({"configs": "all of them"}), "unexpected JSON"),
    "cluster-a-list": (json_answer(dump({"cluster": []})), "unexpected JSON"),
    "section-type-a-number": (json_answer({"configs": [{"@type": 7}, 1]}), "unexpected JSON"),
    "deep": (fixed(DEEP), "nested deeper than"),
    "answer-503": (fixed(b"{}", "503 Service Unavailable"), "answered 503"),
    "oversized": (
        stream(head("200 OK", "Connection: close"), b" " * (1 << 16)),
        "over the limit of 67108864 bytes",
    ),
}
COMMANDS = {
    "proxy-config": ("proxy-config", "clusters", PROXY),
    "proxy-config-json": ("proxy-config", "clusters", PROXY, "-o", "json"),
    "proxy-status-of-one": ("proxy-status", PROXY),
    "proxy-status-of-one-json": ("proxy-status", PROXY, "-o", "json"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("name", sorted(DUMP_ANSWERS))
def test_a_bad_config_dump_ends_with_one_line_and_exit_2(name: str, command: str) -> None:
    write, text = DUMP_ANSWERS[name]
    with serve({"/debug/syncz": json_answer(SYNCZ), "/debug/config_dump": write}) as server:
        done = registryd(*COMMANDS[command], "--server", server.url, "--timeout", "1")
        assert_one_line(done, 2, text)
        assert done.stderr.startswith(f"registryd: error: {server.url}/debug/config_dump?")


def test_a_good_config_dump_still_prints() -> None:
    cluster = {"name": "outbound|80||web.shop.svc.cluster.local", "type": "EDS"}
    answers = {
        "/debug/syncz": json_answer(SYNCZ),
        "/debug/config_dump": json_answer(dump({"cluster": cluster})),
    }
    with serve(answers) as server:
        done = registryd("proxy-config", "clusters", "web-1.shop", "--server", server.url)
        assert (done.returncode, done.stderr) == (0, "")
        assert "web.shop.svc.cluster.local   80" in done.stdout


@pytest.mark.parametrize(
    "flags", [["--timeout", "0"], ["--timeout", "nan"], ["--max-answer-mib", "0"]]
)
def test_bad_limits_are_usage_errors(flags: list[str]) -> None:
    done = registryd("proxy-status", *flags)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("registryd: error: ") and done.stderr.count("\n") == 1


@contextlib.contextmanager
def refusing_url() -> Iterator[str]:
    """The URL of a port that is bound but not listening: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("server", ["bogus:xx", "ftp://127.0.0.1/", "refused"])
def test_a_malformed_or_unreachable_server_is_one_line_and_exit_2(
    command: str, server: str
) -> None:
    with refusing_url() as refused:
        target = refused if server == "refused" else server
        done = registryd(*COMMANDS[command], "--server", target, "--timeout", "5")
    assert_one_line(done, 2, "registryd: error: ")
