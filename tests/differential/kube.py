"""istiod and registryd reading the same Kubernetes cluster (one real kube-apiserver),
one state at a time, and what each serves the same nodes.

:class:`KubePair` starts a kube-apiserver with the cluster's Nodes
(:data:`~tests.differential.kube_states.CLUSTER_NODES`, there before either reader
starts, so both know every node's locality from their first list), then istiod
(``--registries=Kubernetes`` on that API server, its Istio config from a directory of
ServiceEntry files) and registryd (a ``kubernetes`` registry, cluster ID ``Kubernetes``
as istiod's, on the same API server), both skipping the namespaces
:data:`DISCOVERY_SELECTOR` leaves out.  :meth:`KubePair.serve` turns the cluster from
the previous state into one :class:`~tests.differential.kube_states.KubeState` as
controllers would (deleting what only the previous state had, updating in place what
both have, creating the rest), then creates a *sync marker*: a Pod, a Service on port 1
and its EndpointSlice, unique per state and created after the state's Pods, Services and
EndpointSlices.  Each reader watches each kind in order, and neither serves an endpoint
whose Pod it has not seen: whoever serves the marker's endpoint has read the whole
cluster state.  The state's ServiceEntries and WorkloadEntries go to the config
directory both read, with a marker ServiceEntry of their own (the file harness's) in a
file written after them.  Then it collects CDS/EDS/LDS/RDS from both for each node of
:data:`KUBE_NODES`.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.differential.collect import Node, Served, collect
from tests.differential.kube_states import (
    CLUSTER_NODES,
    KubeState,
    endpoint,
    endpoint_slice,
    pod,
    port,
    service,
    slice_port,
)
from tests.differential.normalize import MARKER_PORT
from tests.differential.servers import NODES, marker_entry
from tests.differential.servers import grpc_names as entry_names
from tests.support.istiod import Istiod, fs_source, istiod_binary, start_istiod
from tests.support.kube_apiserver import (
    KubeApiServer,
    collection,
    kube_apiserver_binary,
    start_kube_apiserver,
)
from tests.support.procs import Registryd, start_registryd

__all__ = ["CLUSTER_ID", "DOMAIN", "KUBE_NODES", "KubePair", "grpc_names", "marker_objects"]

CLUSTER_ID = "Kubernetes"  # istiod's default cluster ID, given to registryd's registry
DOMAIN = "cluster.local"
SYNC_TIMEOUT = 30.0  # seconds: a hang guard for a server to serve the marker's endpoint
MARKER_NAMESPACE = "default"
# the file harness's nodes (in `default`), and a sidecar and a proxyless gRPC client of
# another namespace: what Services are exported to, and short names, from elsewhere
_OTHER = "team-b"
_OTHER_ID = f"sidecar~10.1.0.2~app-2.{_OTHER}~{_OTHER}.svc.cluster.local"
KUBE_NODES = (
    *NODES,
    Node("sidecar", _OTHER_ID, {**NODES[0].metadata, "NAMESPACE": _OTHER}),
    Node("grpc", _OTHER_ID, {**NODES[0].metadata, "NAMESPACE": _OTHER, "GENERATOR": "grpc"}),
)
# both readers skip the namespaces labelled so: istiod's mesh config
# `discoverySelectors`, registryd's `namespace_selector`
DISCOVERY_SELECTOR = {
    "matchExpressions": [{"key": "discovery.registryd.test/hidden", "operator": "DoesNotExist"}]
}


def _path(obj: dict[str, Any]) -> str:
    """The API path of ``obj``."""
    return f"{collection(obj)}/{obj['metadata']['name']}"


def grpc_names(state: KubeState, namespace: str = "") -> list[str]:
    """``host:port`` for every port of every Service of ``state``: what a proxyless gRPC
    client would dial; from ``namespace``, its own Services' short names too (``name``,
    ``name.namespace``, ``name.namespace.svc``)."""
    out: set[str] = set()
    for obj in state.services():
        meta = obj["metadata"]
        host = f"{meta['name']}.{meta['namespace']}.svc.{DOMAIN}"
        names = [host]
        if meta["namespace"] == namespace:
            names += [
                meta["name"],
                f"{meta['name']}.{namespace}",
                f"{meta['name']}.{namespace}.svc",
            ]
        for p in obj["spec"].get("ports") or ():
            out.update(f"{name}:{p['port']}" for name in names)
    return sorted(out)


def marker_objects(n: int) -> tuple[str, str, list[dict[str, Any]]]:
    """The ``n``-th sync marker: its cluster's name, its endpoint's address and its
    objects (a ready Pod, a Service on port 1, the Service's EndpointSlice)."""
    name = f"sync-marker-{n}"
    address = f"10.250.{n // 250}.{n % 250 + 1}"
    objects = [
        pod(name, MARKER_NAMESPACE, address, "node-a", app=name),
        service(name, MARKER_NAMESPACE, [port("http-marker", MARKER_PORT)], selector={"app": name}),
        endpoint_slice(
            f"{name}-slice",
            MARKER_NAMESPACE,
            name,
            [slice_port("http-marker", MARKER_PORT)],
            [endpoint(address, name, MARKER_NAMESPACE, "node-a")],
        ),
    ]
    host = f"{name}.{MARKER_NAMESPACE}.svc.{DOMAIN}"
    return f"outbound|{MARKER_PORT}||{host}", address, objects


@dataclass(frozen=True, slots=True)
class _Sync:
    """What a server serves once it has read a whole state: the marker Service's
    cluster with its endpoint's address, and the config directory's marker (its
    cluster for an Envoy, its listener for a proxyless gRPC client)."""

    cluster: str
    address: str
    file_cluster: str
    file_listener: str

    def seen(self, served: Served, node: Node) -> bool:
        endpoint = f'"{self.address}"' in json.dumps(served.get("eds", {}).get(self.cluster, {}))
        if node.kind == "grpc":
            return endpoint and self.file_listener in served.get("lds", {})
        return endpoint and self.file_cluster in served.get("cds", {})


class KubePair:
    """See the module.  Use :meth:`start`; :meth:`stop` ends every server."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.dir = workdir / "entries"  # both readers' Istio config (a state's entries)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._count = itertools.count(1)
        self._stored: dict[str, dict[str, Any]] = {}  # API path -> object, in creation order
        self._namespaces: set[str] = set()
        self.api: KubeApiServer | None = None
        self.istiod: Istiod | None = None
        self.registryd: Registryd | None = None

    def start(self) -> KubePair:
        istiod, apiserver = istiod_binary(), kube_apiserver_binary()  # skip before starting
        try:
            self.api = start_kube_apiserver(self.workdir, binary=apiserver)
            for obj in CLUSTER_NODES:
                self.api.create(obj)
            self._namespace("istio-system")  # istiod's own
            kubeconfig = self.api.kubeconfig
            self.istiod = start_istiod(
                self.workdir,
                self.workdir / "istiod.log",
                config_sources=[fs_source(self.dir)],
                mesh={"discoverySelectors": [DISCOVERY_SELECTOR]},
                binary=istiod,
                kubeconfig=kubeconfig,
            )
            config = self.workdir / "registryd.yaml"
            registry = {
                "name": "kube",
                "type": "kubernetes",
                "kubeconfig": str(kubeconfig),
                "cluster_id": CLUSTER_ID,
                "domain": DOMAIN,
                "namespace_selector": DISCOVERY_SELECTOR,
            }
            config.write_text(yaml.safe_dump({"registries": [registry]}))
            self.registryd = start_registryd(
                self.dir, self.workdir / "registryd.log", f"--config={config}"
            )
        except BaseException:
            self.stop()
            raise
        return self

    async def serve(
        self, state: KubeState, nodes: Iterable[Node] = KUBE_NODES
    ) -> AsyncIterator[tuple[Node, Served, Served]]:
        """Load ``state`` alone, then per node what each server serves."""
        assert self.istiod is not None and self.registryd is not None
        n = next(self._count)
        marker, address, marker_objs = marker_objects(n)
        file_marker, file_marker_doc = marker_entry(n)
        for name, content in (("input.yaml", state.entries), ("marker.yaml", file_marker_doc)):
            staging = self.workdir / f"{name}.tmp"
            staging.write_text(content)
            os.replace(staging, self.dir / name)
        self._apply([*state.objects, *marker_objs])
        file_host = file_marker.rsplit("|", 1)[-1]
        entries = [*entry_names(yaml.safe_load_all(state.entries)), f"{file_host}:{MARKER_PORT}"]
        sync = _Sync(marker, address, file_marker, f"{file_host}:{MARKER_PORT}")
        for node in nodes:
            names = sorted({*grpc_names(state, node.metadata["NAMESPACE"]), *entries})
            options = {"grpc_listeners": names} if node.kind == "grpc" else {}
            theirs = await self._synced(self.istiod.grpc_port, node, sync, options)
            ours = await self._synced(self.registryd.grpc_port, node, sync, options)
            yield node, theirs, ours

    async def _synced(
        self, grpc_port: int, node: Node, sync: _Sync, options: dict[str, Any]
    ) -> Served:
        """What the server on ``grpc_port`` serves ``node`` once it serves the marker's
        endpoint (a server may serve the marker's Service before its endpoint) and the
        config directory's marker."""
        deadline = time.monotonic() + SYNC_TIMEOUT
        while True:
            served = await collect(f"127.0.0.1:{grpc_port}", node, sync.cluster, **options)
            if sync.seen(served, node):
                return served
            if time.monotonic() > deadline:
                raise AssertionError(f"port {grpc_port} never served {sync}")
            await asyncio.sleep(0.1)

    # -- the cluster --------------------------------------------------------------------
    def _namespace(self, name: str) -> None:
        assert self.api is not None
        if name in self._namespaces:
            return
        self._ensure(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        self._service_account(name)
        self._namespaces.add(name)

    def _service_account(self, namespace: str) -> None:
        """The namespace's ``default`` ServiceAccount, which a Pod needs (the
        ServiceAccount admission plugin looks it up; no controller creates it here)."""
        account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}
        self._ensure(f"/api/v1/namespaces/{namespace}/serviceaccounts", account)

    def _ensure(self, path: str, body: dict[str, Any]) -> None:
        assert self.api is not None
        status, answer = self.api.request("POST", path, body)
        assert status in (201, 409), f"create {body['kind']} at {path}: {status} {answer}"

    def _apply(self, objects: Iterable[dict[str, Any]]) -> None:
        """Make the cluster hold ``objects``: delete what the previous state had and
        this one has not (newest first), update what both have (same kind, namespace and
        name: what a controller does in place, e.g. a slice during a rollout), create the
        rest in order."""
        assert self.api is not None
        wanted = {_path(o): o for o in objects if o["kind"] != "Namespace"}
        for path in reversed(list(self._stored)):
            if path not in wanted:
                # Pods at once: no kubelet would confirm a graceful deletion
                code, answer = self.api.request("DELETE", f"{path}?gracePeriodSeconds=0")
                assert code in (200, 202, 404), f"delete {path}: {code} {answer}"
                del self._stored[path]
        for obj in objects:
            if obj["kind"] == "Namespace":
                self._put_namespace(obj)
            elif _path(obj) in self._stored:
                self._update(obj)
            else:
                self._create(obj)

    def _put_namespace(self, obj: dict[str, Any]) -> None:
        """Create a Namespace once (no controller would ever finish deleting one; some
        are there already: default, kube-system), or give it ``obj``'s labels."""
        assert self.api is not None
        name = obj["metadata"]["name"]
        path = f"/api/v1/namespaces/{name}"
        code, current = self.api.request("GET", path)
        if code == 404:
            self.api.create(obj)
        else:
            assert code == 200, f"GET {path}: {code} {current}"
            labels = {**(obj["metadata"].get("labels") or {})}
            labels["kubernetes.io/metadata.name"] = name  # the API server's own
            if (current["metadata"].get("labels") or {}) != labels:
                current["metadata"]["labels"] = labels
                code, answer = self.api.request("PUT", path, current)
                assert code == 200, f"PUT {path}: {code} {answer}"
        if name not in self._namespaces:
            self._service_account(name)
            self._namespaces.add(name)

    def _create(self, obj: dict[str, Any]) -> None:
        """Create ``obj`` (its namespace first if need be); a Pod's status is written
        after it."""
        assert self.api is not None
        namespace = obj["metadata"].get("namespace")
        if namespace:
            self._namespace(namespace)
        body = copy.deepcopy(obj)
        status = body.pop("status", None) if obj["kind"] == "Pod" else None
        path = _path(obj)
        self._stored[path] = self.api.create(body)
        if status is not None:
            self._status(path, status)

    def _update(self, obj: dict[str, Any]) -> None:
        """Replace the stored object of ``obj``'s path with ``obj``: a Pod's labels and
        status only (the rest of a Pod is immutable)."""
        assert self.api is not None
        path = _path(obj)
        stored = self._stored[path]
        if obj["kind"] == "Pod":
            body = copy.deepcopy(stored)
            body["metadata"]["labels"] = dict(obj["metadata"].get("labels") or {})
        else:
            body = copy.deepcopy(obj)
            body["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
        body.pop("status", None)
        code, answer = self.api.request("PUT", path, body)
        assert code == 200, f"PUT {path}: {code} {answer}"
        self._stored[path] = answer
        if obj["kind"] == "Pod":
            self._status(path, obj["status"])

    def _status(self, path: str, status: dict[str, Any]) -> None:
        assert self.api is not None
        body = {**self._stored[path], "status": status}
        code, answer = self.api.request("PUT", f"{path}/status", body)
        assert code == 200, f"status of {path}: {code} {answer}"
        self._stored[path] = answer

    def stop(self) -> None:
        for server in (self.registryd, self.istiod):
            if server is not None:
                server.stop()
        if self.api is not None:
            self.api.stop()
