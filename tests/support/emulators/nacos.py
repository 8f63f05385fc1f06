"""A small emulator of the Nacos v1 Open API subset registryd reads, for tests.

Covered (``namespaceId`` defaults to ``public``, ``groupName`` to ``DEFAULT_GROUP``):

========================================  ================================================
``GET /nacos/v1/ns/service/list``         ``{"count": N, "doms": [names]}``; ``pageNo`` and
                                          ``pageSize`` required (400 otherwise, as Nacos'
                                          parameter check answers), 1-based pages of the
                                          group's services sorted by name
``GET /nacos/v1/ns/instance/list``        ``{"name": "<group>@@<svc>", "groupName",
                                          "clusters", "cacheMillis": 10000, "hosts":
                                          [...], "lastRefTime", "checksum", "allIPs",
                                          "reachProtectionThreshold", "valid"}``;
                                          ``serviceName`` required, may carry its group as
                                          ``<group>@@<svc>``; ``healthyOnly=true`` leaves
                                          unhealthy hosts out; an unknown service answers
                                          an empty ``hosts`` list (Nacos 2.x)
``POST /nacos/v1/auth/login``             form ``username``/``password`` -> ``{"accessToken",
                                          "tokenTtl", "globalAdmin"}``, 403
                                          ``unknown user!`` otherwise
========================================  ================================================

Hosts carry ``instanceId, ip, port, weight, healthy, enabled, ephemeral, clusterName,
serviceName, metadata`` plus the heartbeat fields.  ``checksum`` is the MD5 of the hosts
as JSON and ``lastRefTime`` the time (ms) of the service's last change; with
``empty_checksum`` the checksum is ``""``, as some server versions send.

With ``auth=(username, password)`` every ``/ns/`` call needs a valid ``accessToken``
query parameter, else 403 ``token invalid!`` (or ``user not found!`` without one).

Knobs for tests: :meth:`register` / :meth:`deregister` / :meth:`remove_service` change
the state; :meth:`fail_service` makes one service's instance reads answer an error status
(``status=200`` with a body that is not JSON, or any hostile body: millions of ``{}``,
JSON nested thousands deep); :meth:`drip_service` makes them answer at once but send the
body one byte at a time; :attr:`endless_list` makes ``service/list`` answer every page
full of new names and a ``count`` one page further, forever, and :attr:`silent_list`
makes it never answer at all; :meth:`expire_tokens`
revokes every token; :meth:`stop` / :meth:`start` (the server goes away and comes back
on the same port).  Every request is recorded in :attr:`requests`.

Standalone: ``python -m tests.support.emulators.nacos [--port P] [FILE]`` serves it
on 127.0.0.1 (port 8848 by default) until Ctrl-C, with the instances of ``FILE``
(:func:`from_state` gives the format).

Not covered: registration over HTTP, heartbeats and health checks (health changes only
through :meth:`register`), clusters filtering, protect threshold, v2 API, gRPC.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.emulators import standalone
from tests.support.emulators.base import LoopbackServer

__all__ = ["NacosEmulator", "Request"]

DEFAULT_GROUP = "DEFAULT_GROUP"
PUBLIC = "public"
TOKEN_TTL = 18000


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    params: Mapping[str, str]


@dataclass
class _Service:
    hosts: dict[tuple[str, int, str], dict[str, Any]] = field(default_factory=dict)
    changed_ms: int = 0


class NacosEmulator(LoopbackServer):
    def __init__(self, *, auth: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.auth = auth
        self.tokens: set[str] = set()
        self.empty_checksum = False
        self.endless_list = False
        self.silent_list = False
        self.requests: list[Request] = []
        self._services: dict[tuple[str, str, str], _Service] = {}  # (ns, group, name)
        self._failing: dict[str, tuple[int, str]] = {}  # "<group>@@<name>" -> status, body
        self._dripping: dict[str, float] = {}  # "<group>@@<name>" -> seconds per byte

    # -- state ---------------------------------------------------------------------------
    def register(
        self,
        service: str,
        ip: str,
        port: int,
        *,
        group: str = DEFAULT_GROUP,
        namespace: str = PUBLIC,
        weight: float = 1.0,
        healthy: bool = True,
        enabled: bool = True,
        ephemeral: bool = True,
        cluster: str = "DEFAULT",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Add or replace the instance ``ip:port`` of ``cluster``."""
        entry = self._services.setdefault((namespace, group, service), _Service())
        grouped = f"{group}@@{service}"
        entry.hosts[(ip, port, cluster)] = {
            "instanceId": f"{ip}#{port}#{cluster}#{grouped}",
            "ip": ip,
            "port": port,
            "weight": weight,
            "healthy": healthy,
            "enabled": enabled,
            "ephemeral": ephemeral,
            "clusterName": cluster,
            "serviceName": grouped,
            "metadata": dict(metadata or {}),
            "instanceHeartBeatInterval": 5000,
            "instanceHeartBeatTimeOut": 15000,
            "ipDeleteTimeout": 30000,
            "instanceIdGenerator": "simple",
        }
        entry.changed_ms = int(time.time() * 1000)

    def deregister(
        self,
        service: str,
        ip: str,
        port: int,
        *,
        group: str = DEFAULT_GROUP,
        namespace: str = PUBLIC,
        cluster: str = "DEFAULT",
    ) -> None:
        """Remove one instance; the service stays listed (empty), as in Nacos."""
        entry = self._services[(namespace, group, service)]
        del entry.hosts[(ip, port, cluster)]
        entry.changed_ms = int(time.time() * 1000)

    def remove_service(
        self, service: str, *, group: str = DEFAULT_GROUP, namespace: str = PUBLIC
    ) -> None:
        self._services.pop((namespace, group, service), None)

    def fail_service(
        self,
        service: str,
        status: int | None = 500,
        *,
        group: str = DEFAULT_GROUP,
        body: str = "<html>not an instance list</html>",
    ):
        """Instance reads of one service answer ``status`` with ``body`` (None: normal
        again)."""
        if status is None:
            self._failing.pop(f"{group}@@{service}", None)
        else:
            self._failing[f"{group}@@{service}"] = (status, body)

    def drip_service(
        self, service: str, interval: float | None = 0.05, *, group: str = DEFAULT_GROUP
    ) -> None:
        """Instance reads of one service answer 200 and their headers at once, then the
        body one byte every ``interval`` seconds (None: normal again)."""
        if interval is None:
            self._dripping.pop(f"{group}@@{service}", None)
        else:
            self._dripping[f"{group}@@{service}"] = interval

    def expire_tokens(self) -> None:
        self.tokens.clear()

    # -- HTTP ----------------------------------------------------------------------------
    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/nacos/v1/ns/service/list", self._service_list)
        router.add_get("/nacos/v1/ns/instance/list", self._instance_list)
        router.add_post("/nacos/v1/auth/login", self._login)

    async def _handle(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(Request(request.method, request.path, dict(request.query)))
        if self.auth and request.path.startswith("/nacos/v1/ns/"):
            token = request.query.get("accessToken")
            if token is None:
                return web.Response(status=403, text="user not found!")
            if token not in self.tokens:
                return web.Response(status=403, text="token invalid!")
        response: web.StreamResponse = await handler(request)
        return response

    async def _login(self, request: web.Request) -> web.Response:
        form = await request.post()
        if self.auth is None or (form.get("username"), form.get("password")) != self.auth:
            return web.Response(status=403, text="unknown user!")
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        body = {"accessToken": token, "tokenTtl": TOKEN_TTL, "globalAdmin": True}
        return web.json_response(body)

    async def _service_list(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            page, size = int(query["pageNo"]), int(query["pageSize"])
        except (KeyError, ValueError):
            return web.Response(status=400, text="Required parameter 'pageNo' is not present")
        namespace = query.get("namespaceId") or PUBLIC
        group = query.get("groupName") or DEFAULT_GROUP
        if self.silent_list:
            await asyncio.Event().wait()  # until the client gives up (or stop())
        if self.endless_list:
            doms = [f"endless-{page}-{i}" for i in range(size)]
            return web.json_response({"count": (page + 1) * size, "doms": doms})
        names = sorted(n for (ns, g, n) in self._services if ns == namespace and g == group)
        start = max(0, (page - 1) * size)
        return web.json_response({"count": len(names), "doms": names[start : start + size]})

    async def _instance_list(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        name = query.get("serviceName")
        if not name:
            return web.Response(status=400, text="Required parameter 'serviceName' is not present")
        group = query.get("groupName") or DEFAULT_GROUP
        if "@@" in name:
            group, name = name.split("@@", 1)
        grouped = f"{group}@@{name}"
        if grouped in self._failing:
            status, text = self._failing[grouped]
            return web.Response(status=status, text=text)
        namespace = query.get("namespaceId") or PUBLIC
        entry = self._services.get((namespace, group, name), _Service())
        hosts = [h for _, h in sorted(entry.hosts.items())]
        if query.get("healthyOnly") == "true":
            hosts = [h for h in hosts if h["healthy"]]
        digest = hashlib.md5(json.dumps(hosts, sort_keys=True).encode()).hexdigest()
        body = {
            "name": grouped,
            "groupName": group,
            "clusters": "",
            "cacheMillis": 10000,
            "hosts": hosts,
            "lastRefTime": entry.changed_ms,
            "checksum": "" if self.empty_checksum else digest,
            "allIPs": False,
            "reachProtectionThreshold": False,
            "valid": True,
        }
        if grouped in self._dripping:
            return await self._drip(request, json.dumps(body).encode(), self._dripping[grouped])
        return web.json_response(body)

    @staticmethod
    async def _drip(request: web.Request, body: bytes, interval: float) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(body)
        await response.prepare(request)
        for index in range(len(body)):
            await asyncio.sleep(interval)
            await response.write(body[index : index + 1])
        await response.write_eof()
        return response


STATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "service": str,
    "ip": str,
    "port": int,
    "group": str,
    "namespace": str,
    "weight": (int, float),
    "healthy": bool,
    "enabled": bool,
    "ephemeral": bool,
    "cluster": str,
    "metadata": dict,
}


def from_state(document: Any) -> NacosEmulator:
    """An emulator with the instances of a state file (see :mod:`.standalone`)::

    instances:                # each one instance of a service
    - service: orders         # required
      ip: 127.0.0.1           # required
      port: 8080              # required
      group: DEFAULT_GROUP    # the default
      namespace: public       # the default (a namespace id)
      weight: 1.0
      healthy: true
      enabled: true
      ephemeral: true
      cluster: DEFAULT
      metadata: {protocol: http}
    """
    instances = standalone.entries(document, "instances", STATE_FIELDS, ("service", "ip", "port"))
    emulator = NacosEmulator()
    for instance in instances:
        service, ip, port = instance.pop("service"), instance.pop("ip"), instance.pop("port")
        emulator.register(service, ip, port, **instance)
    return emulator


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.support.emulators.nacos [--port P] [FILE]``: serve until Ctrl-C
    (see :mod:`.standalone`; the file's format is :func:`from_state`'s)."""
    standalone.run(
        "nacos",
        8848,
        from_state,
        argv,
        file_help="instances to load (YAML or JSON: see from_state in nacos.py)",
    )


if __name__ == "__main__":
    main()
