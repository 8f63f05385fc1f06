"""Hand-written Kubernetes states for :class:`tests.differential.kube.KubePair`: what a
user's cluster holds, as its controllers would have written it (no controller runs
beside the test API server, so the EndpointSlices and the Pods' status are written
here).  Every state is applied alone; the :data:`CLUSTER_NODES` are there throughout.

Addresses: pods in 10.244.0.0/16 (the node's pod range), hand-managed endpoints
(Services without a selector) elsewhere; never the harness's own node address
(10.1.0.1, :data:`tests.differential.servers.NODES`), which istiod would take for the
proxy's own workload.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from tests.differential.normalize import KubeFacts

__all__ = ["CLUSTER_NODES", "STATES", "KubeState"]

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class KubeState:
    """One cluster state: its objects in the order they are created (Namespaces, Pods,
    Services, EndpointSlices), and the ServiceEntries and WorkloadEntries both read from
    their config directory with it.  A Pod's ``status`` is written after it is created
    (the API server drops a new Pod's status)."""

    name: str
    objects: tuple[Obj, ...]
    entries: str = ""  # Istio config (ServiceEntry/WorkloadEntry YAML) beside the cluster

    def services(self) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == "Service"]

    def facts(self) -> KubeFacts:
        """What the Kubernetes normalization rules need to know of this state."""

        def hosts(pick: Callable[[Obj], object]) -> frozenset[str]:
            return frozenset(
                f"{o['metadata']['name']}.{o['metadata']['namespace']}.svc.cluster.local"
                for o in self.services()
                if pick(o)
            )

        annotation = "networking.istio.io/traffic-distribution"
        return KubeFacts(
            node_local=hosts(lambda o: o["spec"].get("internalTrafficPolicy") == "Local"),
            distributed=hosts(
                lambda o: (
                    o["spec"].get("trafficDistribution")
                    or annotation in (o["metadata"].get("annotations") or {})
                )
            ),
            selected=self._selected(),
        )

    def _selected(self) -> dict[str, frozenset[str]]:
        """Hostname -> addresses of the WorkloadEntries (of :attr:`entries`) that its
        Service's selector matches, in the Service's namespace."""
        entries = [
            d
            for d in yaml.safe_load_all(self.entries)
            if isinstance(d, dict) and d.get("kind") == "WorkloadEntry"
        ]
        out: dict[str, frozenset[str]] = {}
        for obj in self.services():
            selector = obj["spec"].get("selector") or {}
            meta = obj["metadata"]
            found = frozenset(
                e["spec"]["address"]
                for e in entries
                if selector
                and e["metadata"].get("namespace", "default") == meta["namespace"]
                and selector.items() <= (e["spec"].get("labels") or {}).items()
            )
            if found:
                out[f"{meta['name']}.{meta['namespace']}.svc.cluster.local"] = found
        return out


def node(name: str, **labels: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def _topology(region: str, zone: str, **more: str) -> dict[str, str]:
    return {"topology.kubernetes.io/region": region, "topology.kubernetes.io/zone": zone, **more}


# the cluster's nodes: two zones of one region, one zone of another with a subzone, and
# one node without topology labels (a bare-metal node, say)
CLUSTER_NODES: tuple[Obj, ...] = (
    node("node-a", **_topology("eu-west1", "eu-west1-a")),
    node("node-b", **_topology("eu-west1", "eu-west1-b")),
    node("node-c", **_topology("us-east1", "us-east1-c", **{"topology.istio.io/subzone": "rack7"})),
    node("node-d"),
    node(
        "node-e",  # an older cluster's node: the beta topology labels only
        **{
            "failure-domain.beta.kubernetes.io/region": "ap-south1",
            "failure-domain.beta.kubernetes.io/zone": "ap-south1-a",
        },
    ),
)
_ZONES = {"node-a": "eu-west1-a", "node-b": "eu-west1-b", "node-c": "us-east1-c"}


def namespace(name: str, **labels: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(
    name: str,
    ns: str,
    ip: str,
    node_name: str,
    *,
    ready: bool = True,
    more: Mapping[str, str] | None = None,
    **labels: str,
) -> Obj:
    """A running Pod (``ready``: its Ready condition) on ``node_name`` at ``ip``, with
    ``labels`` and ``more`` labels (keys no keyword can spell)."""
    labels = {**labels, **(more or {})}
    condition = "True" if ready else "False"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node_name, "containers": [{"name": "app", "image": "app:1"}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [
                {"type": "Ready", "status": condition},
                {"type": "ContainersReady", "status": condition},
            ],
        },
    }


def port(
    name: str | None,
    number: int,
    target: int | str | None = None,
    *,
    protocol: str = "TCP",
    app_protocol: str | None = None,
) -> Obj:
    out: Obj = {"port": number, "protocol": protocol}
    if name is not None:
        out["name"] = name
    if target is not None:
        out["targetPort"] = target
    if app_protocol is not None:
        out["appProtocol"] = app_protocol
    return out


def service(
    name: str,
    ns: str,
    ports: Sequence[Obj] = (),
    *,
    selector: Mapping[str, str] | None = None,
    headless: bool = False,
    annotations: Mapping[str, str] | None = None,
    **labels: str,
) -> Obj:
    """A ClusterIP Service (its address allocated by the API server), or a headless one."""
    spec: Obj = {"type": "ClusterIP", "ports": list(ports)}
    if selector is not None:
        spec["selector"] = dict(selector)
    if headless:
        spec["clusterIP"] = "None"
    metadata: Obj = {"name": name, "namespace": ns, "labels": labels}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def external_name(name: str, ns: str, target: str, ports: Sequence[Obj] = ()) -> Obj:
    spec: Obj = {"type": "ExternalName", "externalName": target}
    if ports:
        spec["ports"] = list(ports)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def endpoint(
    ip: str,
    pod_name: str | None = None,
    ns: str = "",
    node_name: str | None = None,
    *,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
) -> Obj:
    """One EndpointSlice endpoint: the zone is its node's, as the EndpointSlice
    controller writes it; ``serving`` defaults to ``ready``, ``terminating`` to false."""
    conditions: Obj = {}
    if ready is not None:
        conditions["ready"] = ready
        conditions["serving"] = ready if serving is None else serving
        conditions["terminating"] = bool(terminating)
    out: Obj = {"addresses": [ip], "conditions": conditions}
    if node_name is not None:
        out["nodeName"] = node_name
        if node_name in _ZONES:
            out["zone"] = _ZONES[node_name]
    if pod_name is not None:
        out["targetRef"] = {"kind": "Pod", "name": pod_name, "namespace": ns}
    return out


def endpoint_slice(
    name: str, ns: str, service_name: str, ports: Sequence[Obj], endpoints: Sequence[Obj]
) -> Obj:
    """An IPv4 EndpointSlice of ``service_name``; ``ports``: ``{name, port, protocol}``."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {
                "kubernetes.io/service-name": service_name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "ports": list(ports),
        "endpoints": list(endpoints),
    }


def slice_port(name: str | None, number: int, protocol: str = "TCP") -> Obj:
    out: Obj = {"port": number, "protocol": protocol}
    if name is not None:
        out["name"] = name
    return out


def _ports_state() -> KubeState:
    """One Deployment behind a Service of many ports: named by protocol prefix, by
    ``appProtocol``, by nothing (sniffed), a UDP port, target ports by number and name."""
    ns = "shop"
    pods = [
        pod("web-1", ns, "10.244.1.11", "node-a", app="web", version="v1"),
        pod("web-2", ns, "10.244.2.12", "node-b", app="web", version="v1"),
    ]
    ports = [
        port("http", 80, 8080),
        port("grpc-api", 9090, "grpc"),
        port("tcp-db", 5432),
        port("metrics", 9100, "metrics", app_protocol="http"),
        port("admin", 8443, 8443, app_protocol="https"),
        port("h2", 8081, 8081, app_protocol="kubernetes.io/h2c"),
        port("cache", 6379, 6379),
        port("dns", 53, 5353, protocol="UDP"),
    ]
    slice_ports = [
        slice_port("http", 8080),
        slice_port("grpc-api", 9091),
        slice_port("tcp-db", 5432),
        slice_port("metrics", 9100),
        slice_port("admin", 8443),
        slice_port("h2", 8081),
        slice_port("cache", 6379),
        slice_port("dns", 5353, "UDP"),
    ]
    endpoints = [
        endpoint(p["status"]["podIP"], p["metadata"]["name"], ns, p["spec"]["nodeName"])
        for p in pods
    ]
    return KubeState(
        "ports",
        (
            namespace(ns),
            *pods,
            service("web", ns, ports, selector={"app": "web"}, app="web"),
            endpoint_slice("web-x7k2p", ns, "web", slice_ports, endpoints),
        ),
    )


def _of(p: Obj) -> Obj:
    """The endpoint the EndpointSlice controller writes for Pod ``p``."""
    ready = p["status"]["conditions"][0]["status"] == "True"
    meta = p["metadata"]
    return endpoint(
        p["status"]["podIP"], meta["name"], meta["namespace"], p["spec"]["nodeName"], ready=ready
    )


def _conditions_state() -> KubeState:
    """A rollout in progress: ready pods, one not ready yet, one terminating while still
    serving, one terminating and no longer serving; a slice of a Service whose
    endpoints publish before they are ready (``publishNotReadyAddresses``)."""
    ns = "orders"
    pods = [
        pod("api-6d9f-a", ns, "10.244.1.21", "node-a", app="api", version="v2"),
        pod("api-6d9f-b", ns, "10.244.2.22", "node-b", app="api", version="v2"),
        pod("api-6d9f-c", ns, "10.244.3.23", "node-c", ready=False, app="api", version="v2"),
        pod("api-5c4b-a", ns, "10.244.1.24", "node-a", ready=False, app="api", version="v1"),
        pod("api-5c4b-b", ns, "10.244.2.25", "node-b", ready=False, app="api", version="v1"),
        pod("worker-0", ns, "10.244.3.26", "node-c", ready=False, app="worker"),
    ]
    api_endpoints = [
        _of(pods[0]),
        _of(pods[1]),
        _of(pods[2]),  # not ready, not terminating
        endpoint(
            "10.244.1.24", "api-5c4b-a", ns, "node-a", ready=False, serving=True, terminating=True
        ),
        endpoint(
            "10.244.2.25", "api-5c4b-b", ns, "node-b", ready=False, serving=False, terminating=True
        ),
    ]
    worker = service(
        "worker", ns, [port("http", 80, 8080)], selector={"app": "worker"}, app="worker"
    )
    worker["spec"]["publishNotReadyAddresses"] = True
    return KubeState(
        "conditions",
        (
            namespace(ns),
            *pods,
            service("api", ns, [port("http", 8080), port("grpc", 9090)], selector={"app": "api"}),
            worker,
            endpoint_slice(
                "api-b8d2x",
                ns,
                "api",
                [slice_port("http", 8080), slice_port("grpc", 9090)],
                api_endpoints,
            ),
            endpoint_slice(
                "worker-q4v9m",
                ns,
                "worker",
                [slice_port("http", 8080)],
                [endpoint("10.244.3.26", "worker-0", ns, "node-c", ready=True)],
            ),
        ),
    )


def _headless_state() -> KubeState:
    """A StatefulSet's headless Service with ports, one without any (DNS only), and
    ExternalName Services with and without ports."""
    ns = "data"
    pods = [
        pod(f"db-{i}", ns, f"10.244.{i + 1}.3{i}", f"node-{'abc'[i]}", app="db") for i in range(3)
    ]
    return KubeState(
        "headless",
        (
            namespace(ns),
            *pods,
            service(
                "db",
                ns,
                [port("tcp-postgres", 5432), port("http-metrics", 9187)],
                selector={"app": "db"},
                headless=True,
                app="db",
            ),
            service("db-peers", ns, selector={"app": "db"}, headless=True),
            external_name("payments", ns, "api.payments.example.com", [port("https", 443)]),
            external_name("legacy", ns, "legacy.corp.example.com."),
            endpoint_slice(
                "db-m2c8r",
                ns,
                "db",
                [slice_port("tcp-postgres", 5432), slice_port("http-metrics", 9187)],
                [_of(p) for p in pods],
            ),
            endpoint_slice("db-peers-7hq2w", ns, "db-peers", [], [_of(p) for p in pods]),
        ),
    )


def _locality_state() -> KubeState:
    """Pods spread over zones, regions and a node without topology labels; Services
    without a selector whose EndpointSlices are written by hand (addresses outside the
    cluster, no node, no pod), one of them headless."""
    ns = "search"
    pods = [
        pod("search-a", ns, "10.244.1.41", "node-a", app="search"),
        pod("search-b", ns, "10.244.2.42", "node-b", app="search"),
        pod("search-c", ns, "10.244.3.43", "node-c", app="search"),
        pod("search-c2", ns, "10.244.3.44", "node-c", app="search"),
        pod("search-d", ns, "10.244.4.45", "node-d", app="search"),
    ]
    manual = endpoint_slice(
        "elastic-1",
        ns,
        "elastic",
        [slice_port("http", 9200)],
        [endpoint("192.168.10.5"), endpoint("192.168.10.6")],
    )
    manual["endpoints"][0]["zone"] = "eu-west1-a"  # a topology hint written by hand
    manual["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] = "ops.example.com"
    # a headless Service of outside databases, its slice without conditions (all ready)
    databases = endpoint_slice(
        "oracle-1",
        ns,
        "oracle",
        [slice_port("tcp-oracle", 1521)],
        [endpoint("192.168.20.7", ready=None), endpoint("192.168.20.8", ready=None)],
    )
    databases["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] = "ops.example.com"
    return KubeState(
        "locality",
        (
            namespace(ns),
            *pods,
            service("search", ns, [port("http", 80, 8080)], selector={"app": "search"}),
            service("elastic", ns, [port("http", 9200)]),
            service("oracle", ns, [port("tcp-oracle", 1521)], headless=True),
            endpoint_slice(
                "search-p8n4k", ns, "search", [slice_port("http", 8080)], [_of(p) for p in pods]
            ),
            manual,
            databases,
        ),
    )


def _slices_state() -> KubeState:
    """A Service whose endpoints span several slices (a large Deployment), one pod
    moving between two of them, and an unnamed single-port Service."""
    ns = "media"
    pods = [
        pod(f"img-{i}", ns, f"10.244.{i % 3 + 1}.{60 + i}", f"node-{'abc'[i % 3]}", app="img")
        for i in range(6)
    ]
    endpoints = [_of(p) for p in pods]
    ports = [slice_port("http", 8080), slice_port("grpc", 9000)]
    return KubeState(
        "slices",
        (
            namespace(ns),
            *pods,
            service(
                "img", ns, [port("http", 80, 8080), port("grpc", 9000)], selector={"app": "img"}
            ),
            service("thumb", ns, [port(None, 8000, 8000)], selector={"app": "img"}),
            endpoint_slice("img-4xk2a", ns, "img", ports, endpoints[:3]),
            endpoint_slice("img-9bq7c", ns, "img", ports, endpoints[2:5]),
            endpoint_slice("img-h2m5d", ns, "img", ports, endpoints[5:]),
            endpoint_slice("thumb-w8r3t", ns, "thumb", [slice_port(None, 8000)], endpoints[:2]),
        ),
    )


def _namespaces_state() -> KubeState:
    """One Service name in two namespaces, one exported to its own namespace only, a
    Service of the proxy's own namespace, and one of a namespace the mesh's discovery
    selector leaves out."""
    pods = [
        pod("cart-1", "team-a", "10.244.1.81", "node-a", app="cart"),
        pod("cart-2", "team-b", "10.244.2.82", "node-b", app="cart"),
        pod("ui-1", "default", "10.244.3.83", "node-c", app="ui"),
    ]
    return KubeState(
        "namespaces",
        (
            namespace("team-a", team="a"),
            namespace("team-b", team="b"),
            namespace("sandbox", **{"discovery.registryd.test/hidden": "true"}),
            pod("toy-1", "sandbox", "10.244.1.84", "node-a", app="toy"),
            service("toy", "sandbox", [port("http", 80, 8080)], selector={"app": "toy"}),
            endpoint_slice(
                "toy-s1",
                "sandbox",
                "toy",
                [slice_port("http", 8080)],
                [endpoint("10.244.1.84", "toy-1", "sandbox", "node-a")],
            ),
            *pods,
            service("cart", "team-a", [port("http", 80, 8080)], selector={"app": "cart"}),
            service(
                "cart",
                "team-b",
                [port("http", 80, 8080)],
                selector={"app": "cart"},
                annotations={"networking.istio.io/exportTo": "."},
            ),
            service("ui", "default", [port("http-web", 3000)], selector={"app": "ui"}),
            endpoint_slice("cart-a1", "team-a", "cart", [slice_port("http", 8080)], [_of(pods[0])]),
            endpoint_slice("cart-b1", "team-b", "cart", [slice_port("http", 8080)], [_of(pods[1])]),
            endpoint_slice(
                "ui-c1", "default", "ui", [slice_port("http-web", 3000)], [_of(pods[2])]
            ),
        ),
    )


_INJECTED = {
    "security.istio.io/tlsMode": "istio",
    "service.istio.io/canonical-revision": "v1",
}


def _mesh_state() -> KubeState:
    """Injected workloads (the labels a sidecar injector adds), several HTTP Services on
    port 80, two Services selecting the same pods, and an ExternalName alias of an
    in-cluster Service."""
    ns = "bookinfo"
    pods = [
        pod("reviews-v1", ns, "10.244.1.91", "node-a", app="reviews", version="v1", more=_INJECTED),
        pod("reviews-v2", ns, "10.244.2.92", "node-b", app="reviews", version="v2", more=_INJECTED),
        pod("ratings-v1", ns, "10.244.3.93", "node-c", app="ratings", version="v1", more=_INJECTED),
        pod("details-v1", ns, "10.244.1.94", "node-a", app="details", version="v1"),
    ]
    for p in pods:
        p["metadata"]["labels"]["service.istio.io/canonical-name"] = p["metadata"]["labels"]["app"]
    http = [slice_port("http", 9080)]
    return KubeState(
        "mesh",
        (
            namespace(ns, **{"istio-injection": "enabled"}),
            *pods,
            service("reviews", ns, [port("http", 9080)], selector={"app": "reviews"}),
            service("reviews-v2", ns, [port("http", 9080)], selector={"version": "v2"}),
            service("ratings", ns, [port("http", 80, 9080)], selector={"app": "ratings"}),
            service("details", ns, [port("http", 80, 9080)], selector={"app": "details"}),
            external_name(
                "book-ratings", ns, f"ratings.{ns}.svc.cluster.local", [port("http", 80)]
            ),
            endpoint_slice("reviews-k2j4h", ns, "reviews", http, [_of(pods[0]), _of(pods[1])]),
            endpoint_slice("reviews-v2-w9q2z", ns, "reviews-v2", http, [_of(pods[1])]),
            endpoint_slice("ratings-c7x1v", ns, "ratings", http, [_of(pods[2])]),
            endpoint_slice("details-m3n8b", ns, "details", http, [_of(pods[3])]),
        ),
    )


def _traffic_state() -> KubeState:
    """kube-dns (UDP and TCP on 53), a node-local Service, a LoadBalancer with its
    ingress address and an external IP, a NodePort Service, a Service no pod backs yet
    (no slice) and one whose slice is empty, ports whose ``appProtocol`` and name
    disagree."""
    system, ns = "kube-system", "edge"
    pods = [
        pod("coredns-1", system, "10.244.1.2", "node-a", more={"k8s-app": "kube-dns"}),
        pod("coredns-2", system, "10.244.2.2", "node-b", more={"k8s-app": "kube-dns"}),
        pod("gw-1", ns, "10.244.1.101", "node-a", app="gw"),
        pod("gw-2", ns, "10.244.3.102", "node-c", app="gw"),
    ]
    dns = service(
        "kube-dns",
        system,
        [port("dns", 53, 53, protocol="UDP"), port("dns-tcp", 53, 53), port("metrics", 9153)],
        selector={"k8s-app": "kube-dns"},
    )
    dns["metadata"]["labels"]["k8s-app"] = "kube-dns"
    local = service("logs", ns, [port("tcp-fluent", 24224)], selector={"app": "gw"})
    local["spec"]["internalTrafficPolicy"] = "Local"
    balancer = service(
        "gateway",
        ns,
        [port("http2", 80, 8080), port("https", 443, 8443), port("tcp-ssh", 22, 2222)],
        selector={"app": "gw"},
    )
    balancer["spec"]["type"] = "LoadBalancer"
    balancer["spec"]["externalIPs"] = ["203.0.113.10"]
    nodeport = service(
        "console",
        ns,
        [
            port("web", 8000, 8080, app_protocol="http"),
            port("http-raw", 8001, 8080, app_protocol="tcp"),
            port("grpc-web", 8002, 8080, app_protocol="grpc-web"),
            port("mongo", 27017, 27017),
            port("mysql-main", 3306, 3306),
        ],
        selector={"app": "gw"},
    )
    nodeport["spec"]["type"] = "NodePort"
    gw = [_of(pods[2]), _of(pods[3])]
    return KubeState(
        "traffic",
        (
            namespace(system),
            namespace(ns),
            *pods,
            dns,
            local,
            balancer,
            nodeport,
            service("pending", ns, [port("http", 80, 8080)], selector={"app": "pending"}),
            service("idle", ns, [port("http", 80, 8080)], selector={"app": "idle"}),
            endpoint_slice(
                "kube-dns-4pq7s",
                system,
                "kube-dns",
                [
                    slice_port("dns", 53, "UDP"),
                    slice_port("dns-tcp", 53),
                    slice_port("metrics", 9153),
                ],
                [_of(pods[0]), _of(pods[1])],
            ),
            endpoint_slice("logs-9d2kf", ns, "logs", [slice_port("tcp-fluent", 24224)], gw),
            endpoint_slice(
                "gateway-s8c3n",
                ns,
                "gateway",
                [slice_port("http2", 8080), slice_port("https", 8443), slice_port("tcp-ssh", 2222)],
                gw,
            ),
            endpoint_slice(
                "console-f5h6j",
                ns,
                "console",
                [
                    slice_port("web", 8080),
                    slice_port("http-raw", 8080),
                    slice_port("grpc-web", 8080),
                    slice_port("mongo", 27017),
                    slice_port("mysql-main", 3306),
                ],
                gw,
            ),
            endpoint_slice("idle-z1x2c", ns, "idle", [slice_port("http", 8080)], []),
        ),
    )


def _topology_state() -> KubeState:
    """Pods on a node with the beta topology labels only, a pod pinning its locality
    with ``istio-locality``, a namespace and a pod on a named network, a Service
    preferring close endpoints (``trafficDistribution``)."""
    ns = "geo"
    pods = [
        pod("maps-e", ns, "10.244.5.11", "node-e", app="maps"),
        pod("maps-a", ns, "10.244.1.12", "node-a", app="maps"),
        pod(
            "maps-pin",
            ns,
            "10.244.2.13",
            "node-b",
            app="maps",
            more={"istio-locality": "eu-west1.eu-west1-z"},
        ),
        pod("tiles-1", "geo-net", "10.244.3.14", "node-c", app="tiles"),
        pod(
            "tiles-2",
            "geo-net",
            "10.244.4.15",
            "node-d",
            app="tiles",
            more={"topology.istio.io/network": "net-2"},
        ),
    ]
    maps = service("maps", ns, [port("http", 80, 8080)], selector={"app": "maps"})
    maps["spec"]["trafficDistribution"] = "PreferClose"
    return KubeState(
        "topology",
        (
            namespace(ns),
            namespace("geo-net", **{"topology.istio.io/network": "net-1"}),
            *pods,
            maps,
            service("tiles", "geo-net", [port("grpc", 9000)], selector={"app": "tiles"}),
            endpoint_slice(
                "maps-r4t5y", ns, "maps", [slice_port("http", 8080)], [_of(p) for p in pods[:3]]
            ),
            endpoint_slice(
                "tiles-u7i8o",
                "geo-net",
                "tiles",
                [slice_port("grpc", 9000)],
                [_of(p) for p in pods[3:]],
            ),
        ),
    )


def _tls_state() -> KubeState:
    """HTTPS and TLS Services on 443 beside the API server's own, WebSocket ports by
    ``appProtocol``, a StatefulSet's endpoints with hostnames, a Service exported to a
    list of namespaces."""
    ns = "secure"
    pods = [
        pod("vault-0", ns, "10.244.1.31", "node-a", app="vault"),
        pod("vault-1", ns, "10.244.2.32", "node-b", app="vault"),
        pod("chat-1", ns, "10.244.3.33", "node-c", app="chat"),
    ]
    vault_endpoints = [_of(pods[0]), _of(pods[1])]
    for i, item in enumerate(vault_endpoints):
        item["hostname"] = f"vault-{i}"
    return KubeState(
        "tls",
        (
            namespace(ns),
            *pods,
            service(
                "vault",
                ns,
                [port("https", 443, 8200), port("tls-cluster", 8201)],
                selector={"app": "vault"},
            ),
            service(
                "vault-internal",
                ns,
                [port("https", 8200), port("tls-cluster", 8201)],
                selector={"app": "vault"},
                headless=True,
            ),
            service(
                "chat",
                ns,
                [
                    port("ws", 80, 8080, app_protocol="kubernetes.io/ws"),
                    port("wss", 443, 8443, app_protocol="kubernetes.io/wss"),
                ],
                selector={"app": "chat"},
                annotations={"networking.istio.io/exportTo": "secure,default"},
            ),
            endpoint_slice(
                "vault-a1s2d",
                ns,
                "vault",
                [slice_port("https", 8200), slice_port("tls-cluster", 8201)],
                vault_endpoints,
            ),
            endpoint_slice(
                "vault-internal-f3g4h",
                ns,
                "vault-internal",
                [slice_port("https", 8200), slice_port("tls-cluster", 8201)],
                vault_endpoints,
            ),
            endpoint_slice(
                "chat-j5k6l",
                ns,
                "chat",
                [slice_port("ws", 8080), slice_port("wss", 8443)],
                [_of(pods[2])],
            ),
        ),
    )


_VM_ENTRIES = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: billing-vm-1
  namespace: legacy
spec:
  address: 172.16.0.21
  labels:
    app: billing
    version: vm
  ports:
    http: 8080
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: payments-api
  namespace: legacy
spec:
  hosts: [api.payments.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports:
  - {number: 443, name: https, protocol: TLS}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ledger
  namespace: legacy
spec:
  hosts: [ledger.legacy.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP, targetPort: 8080}
  workloadSelector:
    labels: {app: ledger}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: ledger-vm-1
  namespace: legacy
spec:
  address: 172.16.0.31
  labels: {app: ledger}
"""


def _vm_state() -> KubeState:
    """A migration to the mesh: a Kubernetes Service whose selector also matches a VM's
    WorkloadEntry, an external API as a ServiceEntry, and a ServiceEntry giving a VM
    workload a cluster-local name that no Kubernetes Service has."""
    ns = "legacy"
    pods = [pod("billing-1", ns, "10.244.1.51", "node-a", app="billing", version="k8s")]
    return KubeState(
        "vm",
        (
            namespace(ns),
            *pods,
            service("billing", ns, [port("http", 80, 8080)], selector={"app": "billing"}),
            endpoint_slice(
                "billing-z9x8c", ns, "billing", [slice_port("http", 8080)], [_of(pods[0])]
            ),
        ),
        _VM_ENTRIES,
    )


_SHADOW_ENTRIES = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: search-extra
  namespace: lookup
spec:
  hosts: [search.lookup.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP}
  endpoints:
  - address: 172.16.1.10
"""


def _shadow_state() -> KubeState:
    """A ServiceEntry of a Kubernetes Service's own hostname (its namespace too), adding
    an endpoint outside the cluster."""
    ns = "lookup"
    pods = [pod("search-1", ns, "10.244.2.61", "node-b", app="search")]
    return KubeState(
        "shadow",
        (
            namespace(ns),
            *pods,
            service("search", ns, [port("http", 80, 8080)], selector={"app": "search"}),
            endpoint_slice(
                "search-q1w2e", ns, "search", [slice_port("http", 8080)], [_of(pods[0])]
            ),
        ),
        _SHADOW_ENTRIES,
    )


def _daemons_state() -> KubeState:
    """Host-network DaemonSets (their pods share their node's address), and a Service
    whose named target port is a different number on old and new pods (two slices, as
    the EndpointSlice controller splits them)."""
    ns = "monitoring"
    exporters = [
        pod("node-exporter-a", ns, "192.168.0.11", "node-a", app="node-exporter"),
        pod("node-exporter-b", ns, "192.168.0.12", "node-b", app="node-exporter"),
    ]
    shippers = [
        pod("fluent-bit-a", ns, "192.168.0.11", "node-a", app="fluent-bit"),
        pod("fluent-bit-b", ns, "192.168.0.12", "node-b", app="fluent-bit"),
    ]
    old = [pod("grafana-old", ns, "10.244.1.77", "node-a", app="grafana")]
    new = [pod("grafana-new", ns, "10.244.2.78", "node-b", app="grafana")]
    return KubeState(
        "daemons",
        (
            namespace(ns),
            *exporters,
            *shippers,
            *old,
            *new,
            service(
                "node-exporter", ns, [port("http-metrics", 9100)], selector={"app": "node-exporter"}
            ),
            service(
                "fluent-bit",
                ns,
                [port("http", 2020), port("forward", 24224)],
                selector={"app": "fluent-bit"},
            ),
            service("grafana", ns, [port("http", 3000, "web")], selector={"app": "grafana"}),
            endpoint_slice(
                "node-exporter-b5n6m",
                ns,
                "node-exporter",
                [slice_port("http-metrics", 9100)],
                [_of(p) for p in exporters],
            ),
            endpoint_slice(
                "fluent-bit-v4c3x",
                ns,
                "fluent-bit",
                [slice_port("http", 2020), slice_port("forward", 24224)],
                [_of(p) for p in shippers],
            ),
            endpoint_slice(
                "grafana-2k3l4", ns, "grafana", [slice_port("http", 3000)], [_of(old[0])]
            ),
            endpoint_slice(
                "grafana-5j6h7", ns, "grafana", [slice_port("http", 3001)], [_of(new[0])]
            ),
        ),
    )


def _mixed_state() -> KubeState:
    """Port 80 and 443 shared by Services of every kind of protocol: HTTP, sniffed (a
    name without a protocol), raw TCP, HTTPS and TLS."""
    ns = "mixed"
    pods = [
        pod(f"m-{i}", ns, f"10.244.{i % 3 + 1}.{110 + i}", f"node-{'abc'[i % 3]}", app=f"m{i}")
        for i in range(6)
    ]
    specs = [
        ("alpha", [port("http", 80, 8080)]),
        ("beta", [port("web", 80, 8080)]),
        ("gamma", [port("tcp-raw", 80, 8080)]),
        ("delta", [port("https", 443, 8443)]),
        ("epsilon", [port("tls-passthrough", 443, 8443)]),
        ("zeta", [port("http", 443, 8443)]),
    ]
    objects: list[Obj] = [namespace(ns), *pods]
    for i, (name, ports) in enumerate(specs):
        objects.append(service(name, ns, ports, selector={"app": f"m{i}"}))
    for i, (name, ports) in enumerate(specs):
        slice_ports = [slice_port(p["name"], int(p.get("targetPort", p["port"]))) for p in ports]
        objects.append(endpoint_slice(f"{name}-e1", ns, name, slice_ports, [_of(pods[i])]))
    return KubeState("mixed", tuple(objects))


def _aliases_state() -> KubeState:
    """ExternalName Services naming in-cluster Services of another namespace (a TCP
    database, a cache without ports, an HTTP API), one naming a Service that does not
    exist, and one naming an outside host on a port an HTTPS Service also has."""
    app, data = "storefront", "backing"
    pods = [
        pod("postgres-0", data, "10.244.1.121", "node-a", app="postgres"),
        pod("redis-0", data, "10.244.2.122", "node-b", app="redis"),
        pod("catalog-1", data, "10.244.3.123", "node-c", app="catalog"),
    ]
    return KubeState(
        "aliases",
        (
            namespace(app),
            namespace(data),
            *pods,
            service("postgres", data, [port("tcp-postgres", 5432)], selector={"app": "postgres"}),
            service("redis", data, [port("tcp-redis", 6379)], selector={"app": "redis"}),
            service(
                "catalog",
                data,
                [port("http", 80, 8080), port("https", 443, 8443)],
                selector={"app": "catalog"},
            ),
            external_name(
                "db", app, f"postgres.{data}.svc.cluster.local", [port("tcp-postgres", 5432)]
            ),
            external_name("cache", app, f"redis.{data}.svc.cluster.local"),
            external_name("products", app, f"catalog.{data}.svc.cluster.local", [port("http", 80)]),
            external_name("reports", app, f"reports.{data}.svc.cluster.local", [port("http", 80)]),
            external_name("maps-api", app, "maps.example.com", [port("https", 443)]),
            endpoint_slice(
                "postgres-a1", data, "postgres", [slice_port("tcp-postgres", 5432)], [_of(pods[0])]
            ),
            endpoint_slice(
                "redis-b2", data, "redis", [slice_port("tcp-redis", 6379)], [_of(pods[1])]
            ),
            endpoint_slice(
                "catalog-c3",
                data,
                "catalog",
                [slice_port("http", 8080), slice_port("https", 8443)],
                [_of(pods[2])],
            ),
        ),
    )


def _rollout_states() -> tuple[KubeState, ...]:
    """A Deployment rolled from v1 to v2 in three steps, the Service and its slice
    updated in place as controllers do (a port added, then renamed with another
    protocol, a target port changed, pods coming, terminating, going, a pod
    relabelled), and a namespace leaving the mesh's discovery and coming back."""
    ns = "deploy"
    hidden = {"discovery.registryd.test/hidden": "true"}
    v1 = [
        pod("api-v1-a", ns, "10.244.1.71", "node-a", app="api", version="v1"),
        pod("api-v1-b", ns, "10.244.2.72", "node-b", app="api", version="v1"),
    ]
    v2 = [
        pod("api-v2-a", ns, "10.244.3.73", "node-c", app="api", version="v2"),
        pod("api-v2-b", ns, "10.244.1.74", "node-a", ready=False, app="api", version="v2"),
    ]
    admin = [pod("admin-1", "ops", "10.244.2.75", "node-b", app="admin")]
    http, grpc = port("http", 80, 8080), port("grpc", 9090)
    ops = (
        *admin,
        service("admin", "ops", [port("http", 80, 8080)], selector={"app": "admin"}),
        endpoint_slice("admin-p0o9i", "ops", "admin", [slice_port("http", 8080)], [_of(admin[0])]),
    )
    first = KubeState(
        "rollout-1",
        (
            namespace(ns),
            namespace("ops"),
            *v1,
            service("api", ns, [http], selector={"app": "api"}),
            endpoint_slice(
                "api-7h6g5", ns, "api", [slice_port("http", 8080)], [_of(p) for p in v1]
            ),
            *ops,
        ),
    )
    relabelled = pod(
        "api-v1-b", ns, "10.244.2.72", "node-b", app="api", version="v1", rollout="old"
    )
    going = endpoint(
        "10.244.1.71", "api-v1-a", ns, "node-a", ready=False, serving=True, terminating=True
    )
    both = [slice_port("http", 8080), slice_port("grpc", 9090)]
    second = KubeState(
        "rollout-2",
        (
            namespace(ns),
            namespace("ops", **hidden),
            v1[0],
            relabelled,
            *v2,
            service("api", ns, [http, grpc], selector={"app": "api"}),
            endpoint_slice(
                "api-7h6g5", ns, "api", both, [going, _of(relabelled), *(_of(p) for p in v2)]
            ),
            *ops,
        ),
    )
    ready = pod("api-v2-b", ns, "10.244.1.74", "node-a", app="api", version="v2")
    h2c = port("stream", 9090, app_protocol="kubernetes.io/h2c")  # the gRPC port renamed
    third = KubeState(
        "rollout-3",
        (
            namespace(ns),
            namespace("ops"),
            v2[0],
            ready,
            service("api", ns, [port("http", 80, 8081), h2c], selector={"app": "api"}),
            endpoint_slice(
                "api-7h6g5",
                ns,
                "api",
                [slice_port("http", 8081), slice_port("stream", 9090)],
                [_of(v2[0]), _of(ready)],
            ),
            *ops,
        ),
    )
    return first, second, third


STATES: tuple[KubeState, ...] = (
    _ports_state(),
    _conditions_state(),
    _headless_state(),
    _locality_state(),
    _slices_state(),
    _namespaces_state(),
    _mesh_state(),
    _traffic_state(),
    _topology_state(),
    _tls_state(),
    _vm_state(),
    _shadow_state(),
    _daemons_state(),
    _mixed_state(),
    _aliases_state(),
    *_rollout_states(),
)
