"""Istio ServiceEntry YAML for the tests, and writing it the way tools do (atomically)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["copy_remapped", "remap_ports", "service_entry", "write_atomic", "write_entries"]


def service_entry(
    host: str,
    port: int,
    endpoints: Sequence[tuple[str, int]],
    *,
    protocol: str = "HTTP",
    port_name: str = "http",
    namespace: str = "default",
) -> dict[str, Any]:
    """A STATIC ServiceEntry for ``host`` on ``port``; each endpoint is ``(address,
    target port)``."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": host.split(".")[0], "namespace": namespace},
        "spec": {
            "hosts": [host],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": port, "name": port_name, "protocol": protocol}],
            "endpoints": [
                {"address": address, "ports": {port_name: number}} for address, number in endpoints
            ],
        },
    }


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by a rename, so a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_entries(path: Path, *entries: dict[str, Any]) -> None:
    """Write ``entries`` to ``path`` as one multi-document YAML file."""
    write_atomic(path, yaml.safe_dump_all(entries, sort_keys=False))


def remap_ports(document: dict[str, Any], port: Callable[[int], int]) -> dict[str, Any]:
    """Replace every port number of a ServiceEntry or WorkloadEntry (service ports,
    target ports, endpoint and workload ports) by ``port(number)``, in place."""
    spec = document.get("spec") or {}
    for service_port in spec.get("ports") or []:
        if isinstance(service_port, dict):  # ServiceEntry: a list of port mappings
            for key in ("number", "targetPort"):
                if key in service_port:
                    service_port[key] = port(service_port[key])
    if document.get("kind") == "WorkloadEntry":
        workloads = [spec]
    else:
        workloads = spec.get("endpoints") or []
    for workload in workloads:
        numbers = workload.get("ports") or {}
        for name in numbers:
            numbers[name] = port(numbers[name])
    return document


def copy_remapped(source: Path, target: Path, port: Callable[[int], int]) -> list[Path]:
    """Copy every YAML file under ``source`` to the same place under ``target`` with its
    ports remapped; returns the files written."""
    written = []
    for path in sorted(source.rglob("*.yaml")):
        documents = [
            remap_ports(d, port) for d in yaml.safe_load_all(path.read_text()) if d is not None
        ]
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        write_entries(destination, *documents)
        written.append(destination)
    return written
