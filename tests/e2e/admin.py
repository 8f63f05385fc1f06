"""Reading Envoy's admin interface: clusters and their hosts, config dump, stats."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.support.procs import http_get

__all__ = ["Admin", "ConfigView"]


@dataclass(frozen=True)
class ConfigView:
    """The dynamic part of Envoy's ``/config_dump``: name → version for each kind, and
    the raw listeners, for comparing what Envoy runs at two moments."""

    clusters: dict[str, str]
    listeners: dict[str, str]
    routes: dict[str, str]
    warming_clusters: tuple[str, ...]
    listener_errors: dict[str, Any]
    raw_listeners: dict[str, Any]

    def identity(self) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """What must stay equal when nothing changed."""
        return (self.clusters, self.listeners, self.routes)


class Admin:
    """Envoy's admin endpoint on 127.0.0.1:``port``."""

    def __init__(self, port: int) -> None:
        self.port = port

    def get(self, path: str) -> str:
        status, body = http_get(self.port, path, timeout=2.0)
        if status != 200:
            raise AssertionError(f"Envoy admin {path}: status {status}: {body[:500]}")
        return body

    def get_json(self, path: str) -> Any:
        return json.loads(self.get(path))

    def hosts(self, cluster: str) -> list[tuple[str, int]] | None:
        """``(address, port)`` of each host of ``cluster`` (None: no such cluster)."""
        data = self.get_json("/clusters?format=json")
        for status in data.get("cluster_statuses", []):
            if status.get("name") == cluster:
                hosts = []
                for host in status.get("host_statuses", []):
                    socket = host["address"]["socket_address"]
                    hosts.append((socket["address"], int(socket["port_value"])))
                return sorted(hosts)
        return None

    def stats(self, contains: str = "") -> dict[str, int]:
        """Counters and gauges whose name contains ``contains``."""
        path = "/stats?format=json"
        if contains:
            path += f"&filter={contains}"
        data = self.get_json(path)
        result: dict[str, int] = {}
        for stat in data.get("stats", []):
            if "name" in stat and isinstance(stat.get("value"), int):
                result[stat["name"]] = stat["value"]
        return result

    def config(self) -> ConfigView:
        """The dynamic clusters, listeners and routes Envoy runs now."""
        dump = self.get_json("/config_dump")
        clusters: dict[str, str] = {}
        warming: list[str] = []
        listeners: dict[str, str] = {}
        errors: dict[str, Any] = {}
        raw: dict[str, Any] = {}
        routes: dict[str, str] = {}
        for section in dump.get("configs", []):
            kind = section.get("@type", "").rsplit(".", 1)[-1]
            if kind == "ClustersConfigDump":
                for entry in section.get("dynamic_active_clusters", []):
                    clusters[entry["cluster"]["name"]] = entry.get("version_info", "")
                warming += [
                    e["cluster"]["name"] for e in section.get("dynamic_warming_clusters", [])
                ]
            elif kind == "ListenersConfigDump":
                for entry in section.get("dynamic_listeners", []):
                    name = entry["name"]
                    if "error_state" in entry:
                        errors[name] = entry["error_state"]
                    active = entry.get("active_state")
                    if active is not None:
                        listeners[name] = active.get("version_info", "")
                        raw[name] = active["listener"]
            elif kind == "RoutesConfigDump":
                for entry in section.get("dynamic_route_configs", []):
                    routes[entry["route_config"]["name"]] = entry.get("version_info", "")
        return ConfigView(clusters, listeners, routes, tuple(warming), errors, raw)

    def route_domains(self, name: str) -> dict[str, list[str]]:
        """Virtual host name → domains of the dynamic route configuration ``name``."""
        dump = self.get_json("/config_dump?resource=dynamic_route_configs")
        for section in dump.get("configs", []):
            config = section.get("route_config", {})
            if config.get("name") == name:
                return {v["name"]: v.get("domains", []) for v in config.get("virtual_hosts", [])}
        return {}
