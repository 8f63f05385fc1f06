"""A real istiod on loopback, a real Envoy on its xDS, real HTTP traffic: istiod reads a
ServiceEntry from its own file config source and Envoy routes requests to the endpoint
it lists.  Proves the runner in tests/support/istiod.py works end to end."""

from __future__ import annotations

from tests.e2e.admin import Admin, ConfigView
from tests.e2e.checks import LOCAL, wait_answers, wait_hosts
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_entries
from tests.support.istiod import fs_source, istiod_binary, sidecar_node, start_istiod
from tests.support.procs import listener_port, poll, start_envoy

HOST = "smoke.example"


def test_envoy_routes_traffic_with_config_from_istiod(stack: Stack) -> None:
    binary = istiod_binary()  # skips (or fails under CI) before anything starts
    backend = stack.http_backend("smoke-backend")
    port = listener_port()
    cluster = f"outbound|{port}||{HOST}"
    config = stack.workdir / "istio-config"
    config.mkdir()
    write_entries(config / "smoke.yaml", service_entry(HOST, port, [(LOCAL, backend.port)]))

    istiod = start_istiod(
        stack.workdir,
        stack.workdir / "istiod.log",
        config_sources=[fs_source(config)],
        binary=binary,
    )
    stack.track(istiod)
    envoy = start_envoy(istiod.grpc_port, stack.workdir, sidecar_node())
    stack.track(envoy)
    admin = Admin(envoy.admin_port)

    # -- istiod's cluster for the ServiceEntry, with its endpoint, and a loopback listener --
    wait_hosts(admin, cluster, [(LOCAL, backend.port)], stack.logs)
    config_view = poll(
        lambda: (c := admin.config()).routes.get(str(port)) and c,
        f"route {port} from istiod in Envoy's config_dump",
        details=stack.logs,
    )
    assert isinstance(config_view, ConfigView)
    listener = config_view.raw_listeners[f"{LOCAL}_{port}"]
    assert listener["address"]["socket_address"] == {"address": LOCAL, "port_value": port}

    # -- real requests through Envoy's listener reach the backend -------------------------
    seen = wait_answers(port, HOST, {"smoke-backend"}, details=stack.logs)
    assert set(seen) == {"smoke-backend"}, seen
    assert HOST in backend.hosts  # Envoy kept the Host header

    # -- Envoy took everything istiod sent, and istiod saw no NACK -------------------------
    rejected = {name: value for name, value in admin.stats("update_rejected").items() if value}
    assert rejected == {}, f"Envoy rejected updates from istiod: {rejected}"
    final = admin.config()
    assert final.listener_errors == {}, final.listener_errors
    assert final.warming_clusters == ()
    assert "ACK ERROR" not in istiod.output(), istiod.tail()
