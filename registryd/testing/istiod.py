"""A client that reads registryd the way an istiod reads a ``configSources`` server.

istiod's config-source client (``pkg/adsc/adsc.go``, used by
``pilot/pkg/bootstrap/configcontroller.go`` ``initConfigSources`` for an ``xds://``
address) opens one state-of-the-world ADS stream with node metadata ``GENERATOR: api``,
asks ``core/v1alpha1/MeshConfig`` and every type of ``collections.Pilot`` (with no
resource names), ACKs every response with its nonce and version, and keeps, per type,
exactly the configs of the latest response (a config missing from it is deleted).  It
is synced (``HasSynced``) once every Pilot type had a response, an empty one included;
until then istiod is not ready.  :class:`IstiodClient` does the same, so tests and
benchmarks can check registryd's side of that protocol without an istiod.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any

from registryd.build import istio_pb
from registryd.testing.ads import AdsClient, Response

__all__ = ["MESH_CONFIG", "PILOT_TYPES", "IstiodClient"]

MESH_CONFIG = "core/v1alpha1/MeshConfig"
# collections.Pilot of istio (pkg/config/schema/collections), as ConfigInitialRequests
# asks them: group/version/Kind at each type's current version
PILOT_TYPES = (
    "security.istio.io/v1/AuthorizationPolicy",
    "networking.istio.io/v1/DestinationRule",
    "networking.istio.io/v1alpha3/EnvoyFilter",
    "networking.istio.io/v1/Gateway",
    "security.istio.io/v1/PeerAuthentication",
    "networking.istio.io/v1beta1/ProxyConfig",
    "security.istio.io/v1/RequestAuthentication",
    "networking.istio.io/v1/ServiceEntry",
    "networking.istio.io/v1/Sidecar",
    "telemetry.istio.io/v1/Telemetry",
    "extensions.istio.io/v1alpha1/TrafficExtension",
    "networking.istio.io/v1/VirtualService",
    "extensions.istio.io/v1alpha1/WasmPlugin",
    "networking.istio.io/v1/WorkloadEntry",
    "networking.istio.io/v1/WorkloadGroup",
)


class IstiodClient(AdsClient):
    """An ADS client that asks and keeps Istio config as istiod's ``adsc`` does.

    ``configs[type_url]`` maps ``namespace/name`` to the decoded
    ``istio.mcp.v1alpha1.Resource`` of the latest response of that type;
    :attr:`stored` counts, per type, the configs a real istiod would have stored again
    (new, or with a ``metadata.version`` that differs from the one it held, or empty);
    :meth:`synced` is ``HasSynced``."""

    def __init__(
        self,
        target: str,
        *,
        namespace: str = "istio-system",
        types: Iterable[str] = PILOT_TYPES,
        **options: Any,
    ) -> None:
        options.setdefault(
            "node_id", f"sidecar~127.0.0.1~istiod-1.{namespace}~{namespace}.svc.cluster.local"
        )
        metadata = {"GENERATOR": "api", "ISTIO_VERSION": "65536.65536.65536"}
        metadata.update(options.pop("metadata", None) or {})
        super().__init__(target, metadata=metadata, **options)
        self.types = tuple(types)
        self.configs: dict[str, dict[str, Any]] = {}
        self.stored: dict[str, int] = {}
        self.answered: set[str] = set()
        self._changed = asyncio.Event()

    async def connect(self) -> None:
        await super().connect()
        for type_url in (MESH_CONFIG, *self.types):
            self.subscribe(type_url)

    def synced(self) -> bool:
        """Every Pilot type asked had a response (istiod's ``HasSynced``)."""
        return all(t in self.answered for t in self.types)

    async def _answered(self, response: Response) -> None:
        type_url = response.type_url
        if type_url != MESH_CONFIG:
            self._keep(type_url, response.decode())
        self.answered.add(type_url)
        self._changed.set()
        await super()._answered(response)

    def _keep(self, type_url: str, resources: list[Any]) -> None:
        old: Mapping[str, Any] = self.configs.get(type_url, {})
        new = {str(r.metadata.name): r for r in resources}
        for name, resource in new.items():
            held = old.get(name)
            version = resource.metadata.version
            if held is None or held.metadata.version != version or not version:
                self.stored[type_url] = self.stored.get(type_url, 0) + 1
        self.configs[type_url] = new

    def bodies(self, type_url: str) -> dict[str, Any]:
        """The ServiceEntry or WorkloadEntry messages of ``type_url`` by name."""
        out = {}
        for name, resource in self.configs.get(type_url, {}).items():
            message = (
                istio_pb.ServiceEntry()
                if resource.body.type_url == istio_pb.SERVICE_ENTRY
                else istio_pb.WorkloadEntry()
            )
            resource.body.Unpack(message)
            out[name] = message
        return out

    async def wait(self, condition: Any, timeout: float = 5.0) -> None:
        """Until ``condition(self)`` holds after a response (``TimeoutError`` if it does
        not within ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()  # before looking: a response after the look wakes us
            if condition(self):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{condition!r} does not hold within {timeout}s")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                continue
