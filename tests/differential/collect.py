"""What one xDS server serves one node: CDS, EDS, LDS and RDS as JSON, by name.

:func:`collect` opens a state-of-the-world ADS stream as an Envoy would (CDS, then EDS
for its EDS clusters; LDS, then RDS for the routes its listeners name; a proxyless gRPC
node asks LDS for the ``host:port`` names it is given), waits until the server serves a
*marker* cluster (the input's own sync marker: both servers have read the input once
they serve it), and returns every resource as the JSON Envoy's config dump would show
(field names as in the protos, every ``Any`` expanded: :func:`load_protos` registers
every Envoy, xDS and UDPA message first).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from google.protobuf import json_format

from registryd.testing import AdsClient, Response

__all__ = ["Node", "Served", "collect", "load_protos"]

Served = dict[str, dict[str, Any]]  # type (cds/eds/lds/rds) -> name -> resource JSON
TIMEOUT = 20.0  # seconds: a hang guard for a server to serve the marker


@dataclass(frozen=True, slots=True)
class Node:
    """An ADS client's identity: its id and metadata."""

    kind: str  # sidecar, local (INTERCEPTION_MODE NONE), grpc (proxyless)
    id: str
    metadata: Mapping[str, str]


@cache
def load_protos() -> int:
    """Import every generated message module of Envoy, xDS and UDPA, so that any
    ``Any`` a server packs can be shown; the number of modules."""
    count = 0
    for top in ("envoy.extensions", "envoy.config", "envoy.type", "udpa", "xds"):
        package = importlib.import_module(top)
        for info in pkgutil.walk_packages(package.__path__, f"{top}."):
            if info.name.endswith("_pb2"):
                try:
                    importlib.import_module(info.name)
                except Exception:  # a module some optional dependency of which is missing
                    continue
                count += 1
    return count


def _json(response: Response) -> dict[str, Any]:
    out = {}
    for message in response.decode():
        data = json_format.MessageToDict(message, preserving_proto_field_name=True)
        out[str(data.get("name") or data.get("cluster_name"))] = data
    return out


def _named(resources: Iterable[Mapping[str, Any]], key: str) -> list[str]:
    """Every string value of field ``key`` anywhere in ``resources``: the RDS route names
    listeners ask for (``route_config_name``), the clusters routes send to (``cluster``)."""
    found: set[str] = set()
    for resource in resources:
        for part in json.dumps(resource).split(f'"{key}": "')[1:]:
            found.add(part.split('"', 1)[0])
    return sorted(found)


async def _until(client: AdsClient, kind: str, done: Any, timeout: float) -> Response:
    """The first response of ``kind`` for which ``done(response)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.next(kind, timeout=max(0.01, deadline - time.monotonic()))
        if done(response):
            return response


async def collect(
    target: str, node: Node, marker: str, *, grpc_listeners: Iterable[str] = ()
) -> Served:
    """Everything ``target`` serves ``node`` once it serves the marker: cluster
    ``outbound|<port>||<host>`` (an Envoy), listener ``<host>:<port>`` (proxyless gRPC)."""
    load_protos()
    async with AdsClient(target, node_id=node.id, metadata=dict(node.metadata)) as client:
        if node.kind == "grpc":
            return await _as_grpc(client, marker, grpc_listeners)
        return await _as_envoy(client, marker)


async def _as_envoy(client: AdsClient, marker: str) -> Served:
    """CDS (wildcard) then EDS, LDS (wildcard) then RDS, as Envoy asks."""
    out: Served = {}
    client.subscribe("cds")
    clusters = await _until(client, "cds", lambda r: marker in r.names, TIMEOUT)
    out["cds"] = _json(clusters)
    if clusters.eds_names:
        client.subscribe("eds", clusters.eds_names)
        out["eds"] = _json(await client.next("eds", timeout=TIMEOUT))
    client.subscribe("lds")
    out["lds"] = _json(await client.next("lds", timeout=TIMEOUT))
    routes = _named(out["lds"].values(), "route_config_name")
    if routes:
        client.subscribe("rds", routes)
        out["rds"] = _json(await client.next("rds", timeout=TIMEOUT))
    return out


async def _as_grpc(client: AdsClient, marker: str, listeners: Iterable[str]) -> Served:
    """LDS by name, RDS for their routes, CDS for the routes' clusters, then EDS, as a
    proxyless gRPC client asks."""
    out: Served = {}
    _, _, host = marker.split("|", 3)[1:]
    port = marker.split("|")[1]
    wanted = sorted({*listeners, f"{host}:{port}"})
    client.subscribe("lds", wanted)
    found = await _until(client, "lds", lambda r: f"{host}:{port}" in r.names, TIMEOUT)
    out["lds"] = _json(found)
    routes = _named(out["lds"].values(), "route_config_name")
    if routes:
        client.subscribe("rds", routes)
        out["rds"] = _json(await client.next("rds", timeout=TIMEOUT))
    clusters = _named(out.get("rds", {}).values(), "cluster")
    if clusters:
        client.subscribe("cds", clusters)
        response = await client.next("cds", timeout=TIMEOUT)
        out["cds"] = _json(response)
        if response.eds_names:
            client.subscribe("eds", response.eds_names)
            out["eds"] = _json(await client.next("eds", timeout=TIMEOUT))
    return out
