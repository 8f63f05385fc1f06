"""Real registry servers instead of emulators: a Consul agent and a kube-apiserver (with
its etcd) built from their Go modules, on loopback.  Each test first proves the server
works through its own API, then runs registryd against it and finds the service on
``/debug/registryz`` and ``/debug/endpointz``.  Proves the runners in
tests/support/consul_agent.py and tests/support/kube_apiserver.py work end to end."""

from __future__ import annotations

from typing import Any

import yaml

from tests.e2e.conftest import Stack
from tests.e2e.test_etcd_outage import get_json
from tests.e2e.test_kubernetes_merge import kube_objects
from tests.support.consul_agent import consul_binary, start_consul
from tests.support.kube_apiserver import READER, kube_apiserver_binary, start_kube_apiserver
from tests.support.procs import Registryd, poll

CONSUL_HOST = "web.service.consul"
KUBE_HOST = "web.shop.svc.cluster.local"
ENDPOINT = "192.0.2.10"  # documentation range: only data here, nothing connects to it
SECOND = "192.0.2.11"  # added once registryd follows the server: seen through its watch


def endpoints(port: int, hostname: str) -> list[dict[str, Any]]:
    """Every endpoint registryd holds for ``hostname`` (``/debug/endpointz``), any shard."""
    view = get_json(port, f"/debug/endpointz?hostname={hostname}")
    return [
        endpoint
        for shards in view.get(hostname, {}).values()
        for shard in shards.values()
        for endpoint in shard["endpoints"]
    ]


def served_endpoints(port: int, hostname: str) -> list[tuple[str, int]]:
    """(address, port) of every endpoint registryd holds for ``hostname``, sorted."""
    return sorted((e["address"], e["port"]) for e in endpoints(port, hostname))


def registryd_on(stack: Stack, registry: dict[str, Any], name: str = "registryd") -> Registryd:
    """A registryd process (log and config named ``name``) with ``registry`` only."""
    config = stack.workdir / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"registries": [registry]}))
    return stack.start_registryd(f"--config={config}", name=name)


def serving(stack: Stack, registryd: Registryd, hostname: str) -> dict[str, Any]:
    """``hostname`` as registryd's ``/debug/registryz`` shows it, once it does."""
    http = registryd.http_port
    poll(
        lambda: hostname in [s["hostname"] for s in get_json(http, "/debug/registryz")],
        f"{hostname} on registryd's /debug/registryz",
        details=stack.logs,
    )
    (served,) = get_json(http, f"/debug/registryz?hostname={hostname}")
    return dict(served)


def test_registryd_serves_a_service_of_a_real_consul_agent(stack: Stack) -> None:
    binary = consul_binary()  # skips (or fails under CI) before anything starts
    agent = start_consul(stack.workdir, stack.workdir / "consul.log", binary=binary)
    stack.track(agent)

    # -- Consul itself: a service registered through the agent reaches the catalog --------
    agent.put(
        "/v1/agent/service/register",
        {
            "ID": "web-1",
            "Name": "web",
            "Address": ENDPOINT,
            "Port": 8080,
            "Tags": ["version|v1"],
            "Meta": {"protocol": "http"},
        },
    )
    entries = poll(
        lambda: agent.get("/v1/health/service/web") or None,
        "web in consul's /v1/health/service/web",
        details=stack.logs,
    )
    (entry,) = entries
    assert (entry["Service"]["Address"], entry["Service"]["Port"]) == (ENDPOINT, 8080)
    assert [check["Status"] for check in entry["Checks"]] == ["passing"]  # the node's serf check

    # -- registryd's consul registry on the agent ------------------------------------------
    registryd = registryd_on(stack, {"name": "dc1", "type": "consul", "address": agent.address})
    http = registryd.http_port
    served = serving(stack, registryd, CONSUL_HOST)
    assert served["registry"] == "consul/dc1", served
    assert [(p["port"], p["protocol"]) for p in served["ports"]] == [(8080, "HTTP")], served
    assert served_endpoints(http, CONSUL_HOST) == [(ENDPOINT, 8080)]
    (endpoint,) = endpoints(http, CONSUL_HOST)
    assert endpoint["labels"].get("version") == "v1", endpoint  # from the tag version|v1
    assert endpoint["health"] == "HEALTHY", endpoint

    # -- a second instance reaches registryd through its blocking query ---------------------
    agent.put(
        "/v1/agent/service/register",
        {"ID": "web-2", "Name": "web", "Address": SECOND, "Port": 8080},
    )
    poll(
        lambda: served_endpoints(http, CONSUL_HOST) == [(ENDPOINT, 8080), (SECOND, 8080)],
        f"the second instance of {CONSUL_HOST} on registryd's /debug/endpointz",
        details=stack.logs,
    )
    registryd.check_alive()
    agent.check_alive()


def test_registryd_serves_a_service_of_a_real_kube_apiserver(stack: Stack) -> None:
    binary = kube_apiserver_binary()  # skips (or fails under CI) before anything starts
    server = start_kube_apiserver(stack.workdir, binary=binary)
    try:
        assert server.proc is not None and server.etcd.proc is not None
        stack.track(server.etcd.proc)
        stack.track(server.proc)  # stopped first (last tracked), then etcd

        # -- the API server itself: create, list back, RBAC for a second user -------------
        for obj in kube_objects(80, ENDPOINT, 8080):
            server.create(obj)
        services = server.items("/api/v1/namespaces/shop/services")
        assert [s["metadata"]["name"] for s in services] == ["web"]
        assert services[0]["spec"]["clusterIP"] == "10.96.0.10"
        slices = server.items("/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices")
        assert [s["endpoints"][0]["addresses"] for s in slices] == [[ENDPOINT]]
        status, _ = server.request("GET", "/api/v1/services", user=READER)
        assert status == 403  # a user without roles
        read = ["get", "list", "watch"]
        server.grant(
            [
                {"apiGroups": [""], "resources": ["services"], "verbs": read},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
            ]
        )
        status, answer = server.request("GET", "/api/v1/services", user=READER)
        assert status == 200, answer
        assert "web" in [s["metadata"]["name"] for s in answer["items"]]
        status, _ = server.request("GET", "/api/v1/nodes", user=READER)
        assert status == 403

        # -- registryd's kubernetes registry on the API server ----------------------------
        kubeconfig = str(server.kubeconfig)
        registry = {"name": "real", "type": "kubernetes", "kubeconfig": kubeconfig}
        registryd = registryd_on(stack, registry)
        http = registryd.http_port
        served = serving(stack, registryd, KUBE_HOST)
        assert served["registry"] == "kubernetes/real", served
        assert [p["port"] for p in served["ports"]] == [80], served
        assert served_endpoints(http, KUBE_HOST) == [(ENDPOINT, 8080)]

        # -- a second EndpointSlice reaches registryd through its watch -------------------
        second = kube_objects(80, ENDPOINT, 8080)[2]
        second["metadata"]["name"] = "web-def"
        second["endpoints"][0]["addresses"] = [SECOND]
        server.create(second)
        poll(
            lambda: served_endpoints(http, KUBE_HOST) == [(ENDPOINT, 8080), (SECOND, 8080)],
            f"the second endpoint of {KUBE_HOST} on registryd's /debug/endpointz",
            details=stack.logs,
        )
        registryd.check_alive()

        # -- the same with credentials that may read Services and EndpointSlices only: ----
        # synced all the same, with the 403s for Nodes and Pods shown on /debug/configz
        kubeconfig = str(server.write_kubeconfig(user=READER))
        registry = {"name": "reader", "type": "kubernetes", "kubeconfig": kubeconfig}
        reader = registryd_on(stack, registry, name="registryd-reader")
        poll(
            lambda: (
                served_endpoints(reader.http_port, KUBE_HOST) == [(ENDPOINT, 8080), (SECOND, 8080)]
            ),
            f"{KUBE_HOST}'s endpoint on the reader registryd's /debug/endpointz",
            details=stack.logs,
        )
        (configz,) = get_json(reader.http_port, "/debug/configz?registry=reader")
        assert configz["synced"] is True, configz
        errors = configz["errors"]
        assert sorted(errors) == ["Node", "Pod"], errors
        assert all("HTTP 403" in errors[kind] for kind in errors), errors
        server.check_alive()
    finally:
        server.stop()
