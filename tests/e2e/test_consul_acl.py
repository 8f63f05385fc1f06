"""registryd against a real Consul agent with ACLs (default policy deny), reading with a
token whose policy may read some services only: it serves those, follows them, stays
synced without errors, and never shows the token."""

from __future__ import annotations

from tests.e2e.conftest import Stack
from tests.e2e.test_etcd_outage import get_json
from tests.e2e.test_real_servers_smoke import registryd_on, serving
from tests.support.consul_agent import ConsulAgent, consul_binary, start_consul
from tests.support.procs import poll

MANAGEMENT = "4c3b2a19-0817-4f6e-9d5c-4b3a29180706"


def register(agent: ConsulAgent, node: str, address: str, service: str) -> None:
    agent.put(
        "/v1/catalog/register",
        {"Node": node, "Address": address, "Service": {"Service": service, "Port": 8080}},
    )


def test_registryd_serves_what_its_consul_token_may_read(stack: Stack) -> None:
    binary = consul_binary()  # skips (or fails under CI) before anything starts
    log = stack.workdir / "consul.log"
    agent = start_consul(stack.workdir, log, binary=binary, management_token=MANAGEMENT)
    stack.track(agent)
    register(agent, "vm-1", "192.0.2.10", "shop-web")
    register(agent, "vm-2", "192.0.2.11", "billing")
    reader = agent.create_reader("shop-read", ("shop-",))

    registry = {"name": "dc1", "type": "consul", "address": agent.address, "token": reader}
    registryd = registryd_on(stack, registry)
    http = registryd.http_port
    served = serving(stack, registryd, "shop-web.service.consul")
    assert served["registry"] == "consul/dc1", served

    register(agent, "vm-3", "192.0.2.12", "billing-api")  # may not be read: never served
    register(agent, "vm-4", "192.0.2.13", "shop-api")  # read after it: it is served
    serving(stack, registryd, "shop-api.service.consul")
    hostnames = sorted(s["hostname"] for s in get_json(http, "/debug/registryz"))
    assert hostnames == ["shop-api.service.consul", "shop-web.service.consul"]

    def configz() -> dict[str, object]:
        (shard,) = get_json(http, "/debug/configz?registry=dc1")
        return dict(shard)

    poll(lambda: configz()["synced"] is True, "registry dc1 synced", details=stack.logs)
    assert configz()["errors"] == {}, configz()
    output = registryd.output()
    assert "the agent filtered results by ACLs" in output
    assert reader not in output and MANAGEMENT not in output
    registryd.check_alive()
    agent.check_alive()
