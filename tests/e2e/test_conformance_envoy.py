"""Istio's own accepted ServiceEntries and WorkloadEntries (the conformance data, read in
place) through registryd into two real Envoys, one captured sidecar and one with
``INTERCEPTION_MODE: NONE``: every cluster, listener, route and endpoint registryd derives
from them must be accepted (ACKed, nothing rejected, nothing stuck warming)."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from tests.adapters.test_serviceentry_convert import ISTIO, render_benchmark_template
from tests.e2e.admin import Admin
from tests.e2e.checks import assert_accepted, assert_stream_type, use_api
from tests.e2e.conftest import Stack
from tests.e2e.entries import copy_remapped
from tests.e2e.test_envoy_fidelity import capture
from tests.e2e.test_examples import PortMap
from tests.support.procs import Registryd, free_port, http_get, poll

FILES = ("serviceentry-valid.yaml", "workloadentry-valid.yaml", "static-weighted-se.yaml")
CAPTURED = "sidecar~127.0.0.1~captured.default~default.svc.cluster.local"
LOCAL_ID = "sidecar~127.0.0.1~envoy-1.default~default.svc.cluster.local"


def synced(registryd: Registryd, proxy_id: str) -> bool:
    """registryd sent that proxy CDS, EDS, LDS and RDS and it ACKed the latest of each."""
    status, body = http_get(registryd.http_port, f"/debug/syncz?proxyID={proxy_id}")
    rows: list[dict[str, Any]] = json.loads(body) if status == 200 else []
    if len(rows) != 1:
        return False
    types = rows[0]["types"]
    return set(types) == {"cds", "eds", "lds", "rds"} and all(t["acked"] for t in types.values())


def served(registryd: Registryd, proxy_id: str) -> dict[str, set[str]]:
    """Cluster and listener names in registryd's ``/debug/config_dump`` of that proxy."""
    status, body = http_get(registryd.http_port, f"/debug/config_dump?proxyID={proxy_id}")
    assert status == 200, body
    sections = {c["@type"].rsplit(".", 1)[-1]: c for c in json.loads(body)["configs"]}
    clusters = sections["ClustersConfigDump"].get("dynamic_active_clusters", [])
    listeners = sections["ListenersConfigDump"].get("dynamic_listeners", [])
    return {
        "clusters": {c["cluster"]["name"] for c in clusters},
        "listeners": {lis["name"] for lis in listeners},
    }


@pytest.mark.skipif(not ISTIO.is_dir(), reason="Istio conformance data absent")
def test_envoy_accepts_everything_derived_from_istios_valid_objects(
    stack: Stack, api_type: str
) -> None:
    source = stack.workdir / "conformance"
    source.mkdir()
    for name in FILES:
        shutil.copy(ISTIO / name, source / name)
    template = (ISTIO / "serviceentry-workloadentry.yaml").read_text()
    (source / "benchmark.yaml").write_text(render_benchmark_template(template, 3, 9))
    assert len(copy_remapped(source, stack.config_dir, PortMap({}))) == len(FILES) + 1
    registryd = stack.start_registryd()
    local = stack.start_envoy(registryd, use_api(api_type))
    capture_port = free_port()

    def captured(bootstrap: dict[str, Any]) -> None:
        capture(bootstrap, capture_port)
        bootstrap["node"]["id"] = CAPTURED

    sidecar = stack.start_envoy(registryd, use_api(api_type, captured))
    for proxy_id in (LOCAL_ID, CAPTURED):
        poll(lambda p=proxy_id: synced(registryd, p), f"{proxy_id} to ACK every type")  # type: ignore[misc]
    assert_stream_type(registryd, api_type)
    for envoy in (local, sidecar):
        admin = Admin(envoy.admin_port)
        assert_accepted(admin, registryd)
    # what Envoy runs is what registryd sent it
    for envoy, proxy_id in ((local, LOCAL_ID), (sidecar, CAPTURED)):
        sent = served(registryd, proxy_id)
        config = Admin(envoy.admin_port).config()
        assert set(config.clusters) == sent["clusters"]
        assert set(config.listeners) == sent["listeners"]
        assert len(sent["clusters"]) > 6
