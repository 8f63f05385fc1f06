"""A real istiod reads registryd as its config source (``configSources: xds://``) and
serves a real Envoy what registryd exported: a ServiceEntry-file VM and etcd instances,
with changes, an unhealthy instance, deletes and a registryd restart flowing through
istiod to Envoy's traffic.

istiod runs as tests/support/istiod.py runs it (no Kubernetes cluster; config only from
``configSources``); registryd runs as a real process on the same loopback.  The only
istiod setting about registryd is its mesh config's ``configSources``.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from tests.e2e.admin import Admin
from tests.e2e.checks import LOCAL, wait_answers, wait_hosts
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_entries
from tests.e2e.test_etcd_outage import PREFIX, etcd_registry, etcd_txn, instance
from tests.support.etcd_server import EtcdServer
from tests.support.istiod import Istiod, istiod_binary, sidecar_node
from tests.support.procs import (
    Registryd,
    http_get,
    listener_ports,
    poll,
    start_envoy,
)

VM_HOST = "vm.example"
WEB_HOST = "web.etcd.example"
RESTART = 60.0  # seconds: istiod's reconnect backoff grows after each failed attempt


def accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def syncz_of_istiod(registryd: Registryd) -> dict[str, Any] | None:
    """registryd's /debug/syncz entry of the connected istiod, if one is connected."""
    status, body = http_get(registryd.http_port, "/debug/syncz")
    if status != 200:
        return None
    found = [e for e in json.loads(body) if e.get("client") == "istiod (MCP)"]
    return found[0] if found else None


def test_istiod_serves_envoy_what_registryd_exports(stack: Stack) -> None:
    binary = istiod_binary()  # skips (or fails under CI) before anything starts
    vm = stack.http_backend("vm-1")
    web_a = stack.http_backend("etcd-a")
    web_b = stack.http_backend("etcd-b")
    vm_port, web_port = listener_ports(2)
    vm_cluster, web_cluster = f"outbound|{vm_port}||{VM_HOST}", f"outbound|{web_port}||{WEB_HOST}"
    write_entries(stack.config_dir / "vm.yaml", service_entry(VM_HOST, vm_port, [(LOCAL, vm.port)]))
    (stack.workdir / "etcd").mkdir()
    etcd = EtcdServer(stack.workdir / "etcd")
    etcd.on_start.append(stack.track)
    config = etcd_registry(etcd, stack.workdir / "registryd.yaml")

    # -- registryd up, its etcd registry not synced yet (etcd is down) --------------------
    registryd = Registryd(stack.config_dir, stack.workdir / "registryd.log", f"--config={config}")
    stack.track(registryd)
    poll(lambda: accepts(registryd.grpc_port), "registryd's xDS port", details=stack.logs)
    istiod = Istiod(
        binary,
        stack.workdir,
        stack.workdir / "istiod.log",
        config_sources=[f"xds://127.0.0.1:{registryd.grpc_port}"],
    )
    stack.track(istiod)

    # istiod asks, registryd holds the answer while a registry has not delivered its
    # state (an answer without it would delete that registry's config in istiod), and
    # istiod is not ready until every type it asked was answered
    asked = poll(lambda: syncz_of_istiod(registryd), "istiod to connect to registryd")
    assert "networking.istio.io/v1/ServiceEntry" in asked["types"]
    assert not any(t["nonceSent"] for t in asked["types"].values()), asked
    status, _ = poll(
        lambda: (found := http_get(istiod.http_port, "/ready"))[0] and found,
        "istiod's HTTP port",
        details=istiod.tail,
    )
    assert status != 200, "istiod is ready before registryd answered"

    etcd.start()
    etcd_txn(etcd, put={f"{PREFIX}web/a": instance(web_a.port, web_port)})
    istiod.wait_ready()
    synced = poll(
        lambda: (
            (e := syncz_of_istiod(registryd)) and all(t["acked"] for t in e["types"].values()) and e
        ),
        "istiod to ACK every config type",
        details=stack.logs,
    )
    assert len(synced["types"]) == 16  # MeshConfig and the 15 Pilot types

    # -- a real Envoy on istiod: traffic to the file VM and the etcd instance -------------
    envoy = start_envoy(istiod.grpc_port, stack.workdir, sidecar_node())
    stack.track(envoy)
    admin = Admin(envoy.admin_port)
    wait_hosts(admin, vm_cluster, [(LOCAL, vm.port)], stack.logs)
    wait_hosts(admin, web_cluster, [(LOCAL, web_a.port)], stack.logs)
    wait_answers(vm_port, VM_HOST, {"vm-1"}, only=True, details=stack.logs)
    wait_answers(web_port, WEB_HOST, {"etcd-a"}, only=True, details=stack.logs)

    # -- a new etcd instance reaches Envoy through istiod ---------------------------------
    etcd_txn(etcd, put={f"{PREFIX}web/b": instance(web_b.port, web_port)})
    wait_hosts(admin, web_cluster, [(LOCAL, web_a.port), (LOCAL, web_b.port)], stack.logs)
    wait_answers(web_port, WEB_HOST, {"etcd-a", "etcd-b"}, details=stack.logs)

    # -- an unhealthy instance: istiod knows it and sends it no traffic -------------------
    etcd_txn(etcd, put={f"{PREFIX}web/a": instance(web_a.port, web_port, "UNHEALTHY")})
    wait_answers(web_port, WEB_HOST, {"etcd-b"}, only=True, details=stack.logs)

    # -- registryd restarts: istiod keeps what it had, Envoy keeps routing, and the
    # change made while registryd was away arrives once registryd is back --------------
    registryd.stop()
    wait_answers(vm_port, VM_HOST, {"vm-1"}, only=True, details=stack.logs)
    wait_answers(web_port, WEB_HOST, {"etcd-b"}, only=True, details=stack.logs)
    etcd_txn(etcd, put={f"{PREFIX}web/a": instance(web_a.port, web_port)})
    again = Registryd(
        stack.config_dir,
        stack.workdir / "registryd-again.log",
        f"--config={config}",
        f"--grpcAddr=127.0.0.1:{registryd.grpc_port}",  # where istiod reconnects
        name="registryd-again",
    )
    stack.track(again)
    again.wait_ready()
    poll(
        lambda: (
            admin.hosts(web_cluster) == sorted([(LOCAL, web_a.port), (LOCAL, web_b.port)])
            and accepts(web_port)
        ),
        "istiod to resync from the restarted registryd",
        deadline=RESTART,
        details=stack.logs,
    )
    wait_answers(web_port, WEB_HOST, {"etcd-a", "etcd-b"}, details=stack.logs)

    # -- deletes leave Envoy: the etcd service goes, then the VM's file -------------------
    etcd_txn(etcd, put={}, delete=(f"{PREFIX}web/a", f"{PREFIX}web/b"))
    poll(
        lambda: admin.hosts(web_cluster) is None,
        f"{web_cluster} to leave Envoy",
        details=stack.logs,
    )
    (stack.config_dir / "vm.yaml").unlink()
    poll(
        lambda: admin.hosts(vm_cluster) is None, f"{vm_cluster} to leave Envoy", details=stack.logs
    )

    # -- nothing was rejected on the way ----------------------------------------------------
    rejected = {name: value for name, value in admin.stats("update_rejected").items() if value}
    assert rejected == {}, f"Envoy rejected updates from istiod: {rejected}"
    entry = syncz_of_istiod(again)
    assert entry is not None and not any(t["nacked"] for t in entry["types"].values()), entry
    assert "ACK ERROR" not in istiod.output(), istiod.tail()
