"""The README quick start, on free ports: the bundled example ServiceEntries and the
example Envoy bootstrap, with a real HTTP server as the web VM.  Envoy must accept every
resource registryd derives from the examples (HTTP, gRPC and TCP ports, STATIC and DNS
resolution, WorkloadEntries) and route a request for ``web.example`` to the VM."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.admin import Admin
from tests.e2e.checks import LOCAL, assert_accepted, wait_answers, wait_hosts
from tests.e2e.conftest import Stack
from tests.e2e.entries import copy_remapped
from tests.support.procs import listener_port, poll

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "serviceentries"


class PortMap:
    """Example port → free port, the same one every time a number is asked for."""

    def __init__(self, fixed: dict[int, int]) -> None:
        self.ports = dict(fixed)

    def __call__(self, number: int) -> int:
        if number not in self.ports:
            self.ports[number] = listener_port(taken=self.ports.values())
        return self.ports[number]


def test_examples_quick_start(stack: Stack) -> None:
    vm = stack.http_backend("web-vm")
    port = PortMap({18081: vm.port})  # web.example's targetPort is where the VM listens
    assert copy_remapped(EXAMPLES, stack.config_dir, port)
    registryd = stack.start_registryd()
    envoy = stack.start_envoy(registryd)
    admin = Admin(envoy.admin_port)

    web, api_http, api_grpc, cache = port(18080), port(18090), port(18092), port(16379)
    wait_hosts(admin, f"outbound|{web}||web.example", [(LOCAL, vm.port)], stack.logs)
    wait_answers(web, "web.example", {"web-vm"}, only=True, details=stack.logs)
    assert "web.example" in vm.hosts

    workloads = {api_http: (18091, 18094), api_grpc: (18093, 18095)}
    for service_port, targets in workloads.items():
        cluster = f"outbound|{service_port}||api.shop.example"
        wait_hosts(admin, cluster, [(LOCAL, port(t)) for t in targets], stack.logs)
    poll(
        lambda: admin.hosts(f"outbound|{cache}||cache.example"),
        "Envoy to resolve cache.example's DNS endpoint",
        details=stack.logs,
    )

    config = admin.config()
    listeners = {f"127.0.0.1_{p}" for p in (web, api_http, api_grpc, cache)}
    assert listeners <= config.listeners.keys(), config.listeners
    for name in listeners:
        address = config.raw_listeners[name]["address"]["socket_address"]
        assert address["address"] == LOCAL, (name, address)
    cache_filters = config.raw_listeners[f"127.0.0.1_{cache}"]["filter_chains"][0]["filters"]
    assert [f["name"] for f in cache_filters] == ["envoy.filters.network.tcp_proxy"]
    assert {str(web), str(api_http), str(api_grpc)} <= config.routes.keys()
    assert_accepted(admin, registryd)
