"""What the fuzz suite feeds to each parser, and which errors count as the parser's own.

Each :class:`Target` is a pure function of the adapters that takes untrusted input, a
Hypothesis strategy for that input (random text and values, and values shaped like the
real objects with random contents), and the validation error the module promises.  Any
other exception is a failure of the property "any input gives a result or the module's
own validation error".
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from hypothesis import strategies as st

from registryd.adapters.consul import parse as consul
from registryd.adapters.etcd import parse as etcd
from registryd.adapters.kubernetes import parse as kubernetes
from registryd.adapters.nacos import convert as nacos
from registryd.adapters.serviceentry import schema
from registryd.adapters.serviceentry.documents import read_documents
from registryd.adapters.serviceentry.yamlsafe import FileProblem

__all__ = ["TARGETS", "Target"]


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    inputs: st.SearchStrategy[Any]
    call: Callable[[Any], object]
    rejects: tuple[type[BaseException], ...]  # the module's own validation errors


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(["10.0.0.1", "::1", "80", "http", "grpc-x", "a.example", "*", "", "-1"])
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)


def _shaped(fields: dict[str, list[str]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the real objects' field names (nested as given) and random values."""
    parts = {
        top: st.dictionaries(st.sampled_from(names), _values, max_size=len(names))
        if names
        else _values
        for top, names in fields.items()
    }
    return st.fixed_dictionaries({}, optional=parts)


# -- ServiceEntry / WorkloadEntry files --------------------------------------------------

_SE_FIELDS = {
    "apiVersion": [],
    "kind": [],
    "metadata": ["name", "namespace", "labels"],
    "spec": [
        "hosts",
        "addresses",
        "ports",
        "location",
        "resolution",
        "endpoints",
        "workloadSelector",
        "exportTo",
        "address",
        "network",
        "locality",
        "weight",
        "labels",
    ],
}
_SE_KNOWN = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(sorted(schema.API_VERSIONS)) | _values,
        "kind": st.sampled_from(["ServiceEntry", "WorkloadEntry"]) | _values,
    },
    optional={
        "metadata": _shaped({"name": [], "namespace": [], "labels": []}),
        "spec": st.dictionaries(st.sampled_from(_SE_FIELDS["spec"]), _values),
    },
)
_YAML_BITS = ["---\n", "&a ", "*a ", "[", "]", "{", "}", ": ", "- ", "\n  ", "!!binary ", "<<: "]


def _yaml_text(docs: list[Any]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


_se_text = (
    st.lists(_SE_KNOWN | _values, min_size=1, max_size=3).map(_yaml_text)
    | st.text(max_size=300)
    | st.lists(st.sampled_from(_YAML_BITS) | st.text(max_size=8), max_size=40).map("".join)
)


def _parse_file(text: str) -> object:
    return schema.parse_file(text, "fuzz.yaml")


def _read_documents(text: str) -> object:
    return read_documents(text, "fuzz.yaml")


# -- etcd values -------------------------------------------------------------------------

_ETCD_OBJECT = _shaped({f: [] for f in (*etcd.RICH_FIELDS, "Addr", "Metadata", "Op")})
_etcd_value = (
    (_ETCD_OBJECT | _values).map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
    | st.lists(st.sampled_from(['{"a":', "[", "]", "}", '"x"', "1", ","]), max_size=60)
    .map("".join)
    .map(str.encode)
)
_ETCD_OPTIONS = etcd.Options()


def _etcd_entry(value: bytes) -> object:
    return etcd.parse_entry(b"/registryd/services/web/1", value, _ETCD_OPTIONS)


# -- Consul health entries ---------------------------------------------------------------

_CONSUL_ENTRY = _shaped(
    {
        "Node": ["Node", "Address", "Datacenter", "Meta", "TaggedAddresses"],
        "Service": [
            "ID",
            "Service",
            "Address",
            "Port",
            "Tags",
            "Meta",
            "Kind",
            "Weights",
            "TaggedAddresses",
        ],
        "Checks": [],
    }
)
_CONSUL_OPTIONS = consul.Options()


def _consul_entry(entry: Any) -> object:
    return consul.convert_entry(entry, service="web", datacenter="dc1", options=_CONSUL_OPTIONS)


# -- Nacos instance lists ----------------------------------------------------------------

_NACOS_HOST = st.fixed_dictionaries(
    {  # mostly usable addresses, so that the other fields get looked at
        "ip": st.sampled_from(["10.0.0.1", "::1"]) | _values,
        "port": st.integers(1, 65_535) | _values,
    },
    optional={
        "weight": st.sampled_from([math.inf, -math.inf, math.nan, 1e308, 2**70, 10**400, 0.5])
        | st.floats()
        | _values,
        "healthy": st.booleans() | _values,
        "enabled": st.booleans() | _values,
        "clusterName": _values,
        "metadata": st.dictionaries(st.sampled_from(["protocol", "zone"]), _values) | _values,
    },
)
_NACOS_LIST = st.fixed_dictionaries(
    {},
    optional={
        "hosts": st.lists(_NACOS_HOST, max_size=6) | _values,
        "checksum": _values,
        "name": _values,
    },
)


def _nacos_list(document: Any) -> object:
    return nacos.convert_service(
        document,
        host="orders.default-group.public.nacos",
        namespace="public",
        zone_from="metadata:zone",
        weight_scale=100.0,
    )


# -- Kubernetes objects ------------------------------------------------------------------

_KUBE_OBJECT = _shaped(
    {
        "metadata": ["name", "namespace", "labels", "annotations", "resourceVersion"],
        "spec": ["ports", "clusterIP", "clusterIPs", "type", "externalName", "selector"],
        "endpoints": [],
        "ports": [],
        "addressType": [],
    }
)


# -- the ADS request handler: a stream's requests, each digested and planned ------------
def _ads_snapshot() -> Any:
    from registryd.adapter import Replace
    from registryd.build.builder import SnapshotBuilder
    from registryd.build.clusters import BuildOptions
    from registryd.model import Endpoint, Port, Resolution, Service, ShardKey
    from registryd.registry.store import RegistryStore

    store = RegistryStore()
    services = (
        Service(hostname="a.example", ports=(Port(number=80, protocol="HTTP"),)),
        Service(
            hostname="greeter.shop.svc.cluster.local",
            namespace="shop",
            ports=(Port(number=7070, protocol="GRPC"),),
            export_to=(".",),
        ),
        Service(hostname="dns.example", resolution=Resolution.DNS, ports=(Port(number=443),)),
    )
    endpoints = (
        Endpoint(hostname="a.example", address="10.0.0.1", port=80, service_port=80),
        Endpoint(hostname="dns.example", address="x.example", port=443, service_port=443),
    )
    store.apply(ShardKey("memory", "fuzz"), Replace(services=services, endpoints=endpoints))
    return SnapshotBuilder(BuildOptions()).build(store.view)


_SNAPSHOT: list[Any] = []
_TYPES = [
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "type.googleapis.com/envoy.config.listener.v3.Listener",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
]
_NAMES = ["*", "", "80", "a.example:80", "greeter:7070", "outbound|80||a.example", "0.0.0.0_80"]
_request = st.fixed_dictionaries(
    {
        "type_url": st.sampled_from(_TYPES) | st.text(max_size=20),
        "resource_names": st.lists(st.sampled_from(_NAMES) | st.text(max_size=40), max_size=6),
        "response_nonce": st.sampled_from(["", "1-1", "2-1", "0"]) | st.text(max_size=8),
        "version_info": st.text(max_size=12),
        "error": st.none() | st.text(max_size=200),
        "node_id": st.none()
        | st.text(max_size=60)
        | st.sampled_from(["sidecar~1.2.3.4~a.shop~shop.svc.cluster.local", "~~~", "a~b~c.d"]),
        "metadata": st.dictionaries(
            st.sampled_from(["GENERATOR", "NAMESPACE", "INTERCEPTION_MODE", "x"]),
            st.sampled_from(["grpc", "shop", "NONE", ""]) | st.text(max_size=10),
            max_size=3,
        ),
    }
)


def _ads_stream(requests: list[dict[str, Any]]) -> object:
    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import discovery_pb2
    from google.rpc import status_pb2

    from registryd.xds.stream import Connection

    if not _SNAPSHOT:
        _SNAPSHOT.append(_ads_snapshot())
    snapshot = _SNAPSHOT[0]
    conn = Connection(peer="fuzz", version_prefix="fuzz")
    sent: dict[str, str] = {}
    for raw in requests:
        request = discovery_pb2.DiscoveryRequest(
            type_url=raw["type_url"],
            resource_names=raw["resource_names"],
            version_info=raw["version_info"],
            # a real nonce of this stream now and then, so ACKs and NACKs happen
            response_nonce=sent.get(raw["type_url"], raw["response_nonce"])
            if raw["response_nonce"] == "0"
            else raw["response_nonce"],
        )
        if raw["error"] is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=raw["error"]))
        if raw["node_id"] is not None:
            node = base_pb2.Node(id=raw["node_id"])
            for key, value in raw["metadata"].items():
                node.metadata.fields[key].string_value = value
            request.node.CopyFrom(node)
        conn.on_request(request)
        for planned in conn.plan(snapshot):
            discovery_pb2.DiscoveryResponse.FromString(planned.payload)  # well-formed
            sent[planned.type_url] = planned.nonce
    return conn


TARGETS = (
    Target("serviceentry.parse_file", _se_text, _parse_file, (schema.InvalidConfig,)),
    Target("serviceentry.read_documents", _se_text, _read_documents, (FileProblem,)),
    Target("etcd.parse_entry", _etcd_value, _etcd_entry, (etcd.InvalidEntry,)),
    Target("consul.convert_entry", _CONSUL_ENTRY | _values, _consul_entry, (consul.EntryError,)),
    Target("nacos.convert_service", _NACOS_LIST | _values, _nacos_list, (ValueError,)),
    Target("xds.ads_stream", st.lists(_request, max_size=8), _ads_stream, ()),
    *(
        Target(f"kubernetes.{f.__name__}", _KUBE_OBJECT | _values, f, (kubernetes.ObjectError,))
        for f in (
            kubernetes.parse_service,
            kubernetes.parse_slice,
            kubernetes.parse_node,
            kubernetes.parse_namespace,
        )
    ),
)
