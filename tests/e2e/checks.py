"""Checks shared by the Envoy tests: traffic through a listener, hosts of a cluster,
and that nothing registryd sent was rejected."""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.admin import Admin
from tests.support.procs import Registryd, http_get, poll

__all__ = [
    "API_TYPES",
    "LOCAL",
    "Traffic",
    "answers",
    "assert_accepted",
    "assert_stream_type",
    "use_api",
    "wait_answers",
    "wait_hosts",
]

LOCAL = "127.0.0.1"
API_TYPES = ("GRPC", "DELTA_GRPC")  # Envoy's ADS: state-of-the-world, Delta


def use_api(
    api_type: str, then: Callable[[dict[str, Any]], None] | None = None
) -> Callable[[dict[str, Any]], None]:
    """A bootstrap customization: Envoy's ADS on ``api_type`` (``then`` applied after)."""

    def customize(bootstrap: dict[str, Any]) -> None:
        bootstrap["dynamic_resources"]["ads_config"]["api_type"] = api_type
        if then is not None:
            then(bootstrap)

    return customize


def assert_stream_type(registryd: Registryd, api_type: str) -> None:
    """registryd serves every connected Envoy on the stream type ``api_type`` selects."""
    status, body = http_get(registryd.http_port, "/debug/connections")
    assert status == 200, body
    kinds = {c["type"] for c in json.loads(body)}
    assert kinds == {"delta" if api_type == "DELTA_GRPC" else "sotw"}, body


def answers(port: int, host: str, count: int) -> collections.Counter[str]:
    """Send ``count`` requests through the listener on ``port`` with Host ``host``: who
    answered (``<status> <body>`` for anything but a 200)."""
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(count):
        status, body = http_get(port, "/", host=host)
        seen[body if status == 200 else f"{status} {body[:80]}"] += 1
    return seen


def wait_answers(
    port: int,
    host: str,
    names: set[str],
    *,
    only: bool = False,
    details: Callable[[], str] | None = None,
) -> collections.Counter[str]:
    """Send requests until every one of ``names`` has answered; with ``only``, until
    four requests in a row were answered by ``names`` alone (so Envoy's worker has the
    update too, not just its main thread).  Returns what answered meanwhile."""
    seen: collections.Counter[str] = collections.Counter()

    def check() -> bool:
        if only:
            batch = answers(port, host, 4)
            seen.update(batch)
            return set(batch) <= names and len(set(batch)) == len(names)
        seen.update(answers(port, host, 1))
        return names <= set(seen)

    poll(
        check,
        f"{sorted(names)} to answer for Host {host} on port {port}",
        details=lambda: f"answers so far: {dict(seen)}" + (f"\n{details()}" if details else ""),
    )
    return seen


def wait_hosts(
    admin: Admin,
    cluster: str,
    want: Sequence[tuple[str, int]],
    details: Callable[[], str] | None = None,
) -> None:
    """Until Envoy's ``/clusters`` lists exactly the ``(address, port)`` hosts ``want``
    for ``cluster``."""
    expected = sorted(want)
    poll(
        lambda: admin.hosts(cluster) == expected,
        f"Envoy /clusters to show {expected} for {cluster}",
        details=lambda: f"now: {admin.hosts(cluster)}" + (f"\n{details()}" if details else ""),
    )


def assert_accepted(admin: Admin, registryd: Registryd) -> None:
    """Envoy rejected no update registryd sent (CDS, LDS, EDS, RDS) and has nothing
    stuck warming or failed; registryd logged no NACK."""
    counters = admin.stats("update_rejected")
    assert counters.get("cluster_manager.cds.update_rejected") == 0, counters
    assert counters.get("listener_manager.lds.update_rejected") == 0, counters
    rejected = {name: value for name, value in counters.items() if value}
    assert rejected == {}, f"Envoy rejected updates: {rejected}"
    config = admin.config()
    assert config.listener_errors == {}, config.listener_errors
    assert config.warming_clusters == ()
    assert " rejected " not in registryd.output(), registryd.tail()


@dataclass
class Traffic:
    """Requests sent one after another, on a thread, through the listener on ``port``,
    cycling over ``hosts``, until :meth:`stop` (or ``limit`` requests: the loop is
    bounded).  Every answer is kept: who answered (or the status and error), and when."""

    port: int
    hosts: Sequence[str]
    limit: int = 100_000
    results: list[tuple[float, str, str]] = field(default_factory=list)  # (time, host, answer)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        for number in range(self.limit):
            if self._stop.is_set():
                return
            host = self.hosts[number % len(self.hosts)]
            status, body = http_get(self.port, "/", host=host)
            self.results.append(
                (time.monotonic(), host, body if status == 200 else f"{status} {body[:80]}")
            )

    def stop(self) -> list[tuple[float, str, str]]:
        """Stop sending; every result."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return list(self.results)

    def since(self, start: float) -> list[tuple[float, str, str]]:
        """The results of requests answered at or after ``start`` (monotonic)."""
        return [r for r in list(self.results) if r[0] >= start]
