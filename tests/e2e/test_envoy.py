"""Envoy end to end: registryd on a ServiceEntry directory, a real Envoy on the example
bootstrap, real HTTP backends, real requests through Envoy's listener.  Every change is
a file edit; nothing is restarted."""

from __future__ import annotations

from tests.e2e.admin import Admin, ConfigView
from tests.e2e.checks import (
    LOCAL,
    answers,
    assert_accepted,
    assert_stream_type,
    use_api,
    wait_answers,
    wait_hosts,
)
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_atomic, write_entries
from tests.support.procs import Envoy, Registryd, holding, listener_port, poll

HOST = "backend.example"
OTHER = "other.example"
BARRIER = "barrier.example"
BROKEN = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nspec: [oops\n"
ANY = {"allow_any": ["*"]}  # istiod's catch-all virtual host, in every route <port>


def assert_running(registryd: Registryd, envoy: Envoy, pids: tuple[int, int]) -> None:
    """Both processes are the ones started at the beginning."""
    registryd.check_alive()
    envoy.check_alive()
    assert (registryd.pid, envoy.pid) == pids, "a process was restarted"


def test_envoy_routes_traffic_and_follows_file_edits(stack: Stack, api_type: str) -> None:
    a = stack.http_backend("backend-a")
    b = stack.http_backend("backend-b")
    port = listener_port()
    cluster = f"outbound|{port}||{HOST}"
    other_cluster = f"outbound|{port}||{OTHER}"
    path = stack.config_dir / "services.yaml"
    write_entries(path, service_entry(HOST, port, [(LOCAL, a.port), (LOCAL, b.port)]))

    registryd = stack.start_registryd()
    envoy = stack.start_envoy(registryd, use_api(api_type))
    pids = (registryd.pid, envoy.pid)
    assert_stream_type(registryd, api_type)
    admin = Admin(envoy.admin_port)

    # -- Envoy got clusters, endpoints, a listener on 127.0.0.1 and its route -------------
    wait_hosts(admin, cluster, [(LOCAL, a.port), (LOCAL, b.port)], stack.logs)
    config = poll(
        lambda: (c := admin.config()).routes.get(str(port)) and c,
        f"route {port} in Envoy's config_dump",
        details=stack.logs,
    )
    assert isinstance(config, ConfigView)
    assert cluster in config.clusters
    listener = config.raw_listeners[f"127.0.0.1_{port}"]
    assert listener["address"]["socket_address"] == {"address": LOCAL, "port_value": port}
    assert admin.route_domains(str(port)) == {f"{HOST}:{port}": [HOST, f"{HOST}."], **ANY}
    assert_accepted(admin, registryd)

    # -- real requests through Envoy reach both backends ----------------------------------
    seen = wait_answers(port, HOST, {"backend-a", "backend-b"}, details=stack.logs)
    assert set(seen) == {"backend-a", "backend-b"}, seen
    assert HOST in a.hosts and HOST in b.hosts  # Envoy kept the Host header

    # -- remove one endpoint: one host left, all traffic goes to it -------------------------
    write_entries(path, service_entry(HOST, port, [(LOCAL, a.port)]))
    wait_hosts(admin, cluster, [(LOCAL, a.port)], stack.logs)
    wait_answers(port, HOST, {"backend-a"}, only=True, details=stack.logs)
    served_by_b = len(b.hosts)
    assert answers(port, HOST, 10) == {"backend-a": 10}
    assert len(b.hosts) == served_by_b

    # -- a second service on the same port: its own virtual host and cluster --------------
    write_entries(
        path,
        service_entry(HOST, port, [(LOCAL, a.port)]),
        service_entry(OTHER, port, [(LOCAL, b.port)]),
    )
    wait_answers(port, OTHER, {"backend-b"}, only=True, details=stack.logs)
    wait_hosts(admin, other_cluster, [(LOCAL, b.port)], stack.logs)
    assert answers(port, OTHER, 5) == {"backend-b": 5}
    assert answers(port, HOST, 5) == {"backend-a": 5}
    assert admin.route_domains(str(port)) == {
        f"{HOST}:{port}": [HOST, f"{HOST}."],
        f"{OTHER}:{port}": [OTHER, f"{OTHER}."],
        **ANY,
    }
    assert_accepted(admin, registryd)
    assert_running(registryd, envoy, pids)

    # -- the second service goes away: its cluster leaves Envoy, the first one stays ------
    write_entries(path, service_entry(HOST, port, [(LOCAL, a.port)]))
    poll(
        lambda: other_cluster not in admin.config().clusters,
        f"{other_cluster} to leave Envoy",
        details=stack.logs,
    )
    assert answers(port, HOST, 5) == {"backend-a": 5}
    assert admin.route_domains(str(port)) == {f"{HOST}:{port}": [HOST, f"{HOST}."], **ANY}
    write_entries(
        path,
        service_entry(HOST, port, [(LOCAL, a.port)]),
        service_entry(OTHER, port, [(LOCAL, b.port)]),
    )
    wait_answers(port, OTHER, {"backend-b"}, only=True, details=stack.logs)

    # -- a broken edit: registryd reports it, Envoy keeps its config and traffic flows ----
    before = admin.config()
    assert {cluster, other_cluster} <= before.clusters.keys()
    write_atomic(path, BROKEN)
    poll(
        lambda: any(
            path.name in line and "last good" in line for line in registryd.output().splitlines()
        ),
        "registryd to report the broken file",
        details=registryd.tail,
    )

    # a barrier: a service in another file, on a port of its own, is pushed after
    # whatever the broken edit could have caused; until Envoy has it, traffic holds
    def serving() -> None:
        assert answers(port, HOST, 2) == {"backend-a": 2}
        assert answers(port, OTHER, 2) == {"backend-b": 2}

    barrier_port = listener_port(taken=[port])
    barrier_cluster = f"outbound|{barrier_port}||{BARRIER}"
    barrier = service_entry(BARRIER, barrier_port, [(LOCAL, b.port)])
    write_entries(stack.config_dir / "barrier.yaml", barrier)
    holding(
        serving,
        lambda: admin.hosts(barrier_cluster) == [(LOCAL, b.port)],
        f"Envoy to get {barrier_cluster}",
        details=stack.logs,
    )
    after = admin.config()
    for old, new in zip(before.identity(), after.identity(), strict=True):
        assert {name: new.get(name) for name in old} == old  # nothing of before changed
    assert admin.hosts(cluster) == [(LOCAL, a.port)]
    assert admin.hosts(other_cluster) == [(LOCAL, b.port)]
    assert_accepted(admin, registryd)
    assert_running(registryd, envoy, pids)
