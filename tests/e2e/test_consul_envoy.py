"""Consul end to end: a real Consul agent, registryd following it and a real Envoy fed
only by registryd, routing to backends on loopback.  An instance the agent puts into
maintenance stops getting traffic and gets it again when maintenance ends; a
deregistered one stops for good."""

from __future__ import annotations

from tests.e2e.admin import Admin
from tests.e2e.checks import assert_accepted, wait_answers
from tests.e2e.conftest import Stack
from tests.e2e.test_real_servers_smoke import registryd_on
from tests.support.consul_agent import consul_binary, start_consul
from tests.support.procs import listener_port

HOST = "web.service.consul"


def test_envoy_routes_to_a_real_consul_agents_instances(stack: Stack) -> None:
    binary = consul_binary()  # skips (or fails under CI) before anything starts
    agent = start_consul(stack.workdir, stack.workdir / "consul.log", binary=binary)
    stack.track(agent)
    port = listener_port()  # a Consul service has no port of its own: the instances' is
    for name, ip in (("web-a", "127.0.0.11"), ("web-b", "127.0.0.12")):
        stack.http_backend(name, ip, port)
    meta = {"protocol": "http"}
    # web-a on a node of its own (the catalog API), web-b on the agent's node (the agent
    # API, which can put it into maintenance)
    agent.put(
        "/v1/catalog/register",
        {
            "Node": "vm-a",
            "Address": "127.0.0.11",
            "Service": {"ID": "web-a", "Service": "web", "Port": port, "Meta": meta},
            "Check": {"CheckID": "web-a", "Name": "up", "ServiceID": "web-a", "Status": "passing"},
        },
    )
    agent.put(
        "/v1/agent/service/register",
        {"ID": "web-b", "Name": "web", "Address": "127.0.0.12", "Port": port, "Meta": meta},
    )
    registryd = registryd_on(stack, {"name": "dc1", "type": "consul", "address": agent.address})
    envoy = stack.start_envoy(registryd)

    both = {"web-a", "web-b"}
    assert set(wait_answers(port, HOST, both, details=stack.logs)) == both
    assert_accepted(Admin(envoy.admin_port), registryd)

    # maintenance: Consul adds a critical _service_maintenance:web-b check; registryd
    # makes the endpoint DRAINING, which Envoy is not sent
    agent.put("/v1/agent/service/maintenance/web-b?enable=true&reason=upgrade", None)
    wait_answers(port, HOST, {"web-a"}, only=True, details=stack.logs)
    agent.put("/v1/agent/service/maintenance/web-b?enable=false", None)
    wait_answers(port, HOST, both, only=True, details=stack.logs)

    agent.put("/v1/catalog/deregister", {"Node": "vm-a"})
    wait_answers(port, HOST, {"web-b"}, only=True, details=stack.logs)
    assert_accepted(Admin(envoy.admin_port), registryd)
    registryd.check_alive()
    agent.check_alive()
