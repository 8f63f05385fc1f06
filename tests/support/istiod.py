"""A real istiod (``pilot-discovery`` from istio.io/istio) on 127.0.0.1 for tests, with no
Kubernetes cluster: Istio config comes from the mesh config's ``configSources`` (say a
directory of ServiceEntry YAML, ``fs:///dir``), and a real Envoy can take its xDS from
istiod's plaintext gRPC port as it takes it from registryd.

:func:`istiod_binary` builds or finds the binary with ``scripts/build-servers istiod``
(without Go, or if the build fails, the test is skipped with the reason, or fails when
the environment variable ``CI`` is set).  The first build takes minutes and shows no
progress under pytest: run ``scripts/build-servers istiod`` once beforehand to watch it.
:func:`start_istiod` starts istiod and waits until it is ready.

How istiod is run, and why (all from istiod's source at the pinned version):

* **A stub Kubernetes API.**  This istiod cannot start without a Kubernetes client: its
  ServiceEntry registry reads namespaces through the multicluster controller, which only
  exists with a Kubernetes client, so ``--registries=`` (none) ends in a nil pointer
  panic in ``serviceentry.newController``.  istiod therefore gets
  ``--registries=Kubernetes`` and a kubeconfig for :class:`~tests.support.kube_stub.KubeStub`,
  an empty cluster served from the test process.  Its Kubernetes registry stays empty;
  its Istio config comes from ``configSources`` alone (istiod builds no Kubernetes config
  store when ``configSources`` are given and ``k8s://`` is not among them).
  ``KUBE_FEATURE_WatchListClient=false``: client-go lists, then watches.  Given a
  ``kubeconfig`` (a real API server's, :mod:`tests.support.kube_apiserver`), istiod's
  Kubernetes registry reads that cluster instead (its Services, EndpointSlices, Pods,
  Nodes and Namespaces; with ``configSources`` still, it wants no Istio CRDs there).
* **Config sources.**  istiod's file source is ``fs:///abs/dir`` (every ``*.yaml`` and
  ``*.yml`` below it, watched); istiod silently ignores a ``file://`` address, so
  :func:`start_istiod` refuses one.  :func:`fs_source` makes the address.
* **No certificates, no webhooks.**  ``ENABLE_CA_SERVER=false`` (no CA, so no secure gRPC
  port: ``--secureGRPCAddr=`` too), ``--httpsAddr=`` (webhooks would share the HTTP port),
  ``INJECT_ENABLED=false``, and no webhook configuration to patch
  (``INJECTION_WEBHOOK_CONFIG_NAME``, ``VALIDATION_WEBHOOK_CONFIG_NAME`` empty).
  ``PILOT_ENABLE_IP_AUTOALLOCATE=false``: nothing writes ServiceEntry status.
* **Ports.**  Plaintext xDS on ``--grpcAddr``, readiness (``/ready``) and the debug
  endpoints on ``--httpAddr`` (istiod's 8080), metrics on ``--monitoringAddr`` (15014),
  ControlZ on a port the kernel picks; all on 127.0.0.1.  Relative paths istiod defaults
  to (``./etc/cacerts``, ``./var/lib/istio/inject``, ...) resolve below its own
  directory in the test's workdir; istiod writes nothing there.
* **The environment is istiod's own**: only the variables above, ``POD_NAMESPACE``
  (``istio-system``) and ``POD_NAME``, so no ``PILOT_*`` setting of the caller leaks in.
* **Ready** means ``/ready`` answers 200 (discovery ready: every cache synced and the
  first push context built) and the gRPC port accepts connections (istiod opens it just
  after marking itself ready).

What an Envoy needs to use this istiod (an upstream Envoy, not Istio's proxy build):

* a node id ``sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`` and node
  metadata ``NAMESPACE``; ``INTERCEPTION_MODE: NONE`` so that, without iptables capture,
  istiod sends one listener per service port bound to 127.0.0.1 (``127.0.0.1_<port>``)
  and no virtual outbound listener on 15001; ``ISTIO_VERSION`` (else istiod warns and
  assumes the newest proxy).  The example bootstrap has all but ``ISTIO_VERSION``:
  :func:`sidecar_node` adds it.
* istiod must not send what only Istio's proxy understands:
  ``PILOT_ENABLE_METADATA_EXCHANGE=false`` (the ``istio.metadata_exchange`` cluster and
  HTTP filters), ``PILOT_ENABLE_ALPN_FILTER=false`` (the ``istio.alpn`` HTTP filter), and
  ``enableAutoMtls: false`` in the mesh config: with auto mTLS every in-mesh cluster gets
  an Istio-mTLS transport socket whose certificates come by SDS from the ``sds-grpc``
  cluster of Istio's agent, and the cluster stays warming forever without it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.kube_stub import KubeStub
from tests.support.procs import Process, _start, free_ports, http_get, poll
from tests.support.servers import BUILD_SERVERS, server_binary

__all__ = [
    "BUILD_SERVERS",
    "ISTIO_VERSION",
    "Istiod",
    "fs_source",
    "istiod_binary",
    "sidecar_node",
    "start_istiod",
]

START_DEADLINE = 30.0  # seconds for istiod to become ready (it usually takes about one)
ISTIO_VERSION = "1.31"  # the pinned commit's Istio version (its VERSION file)
NAMESPACE = "istio-system"


def istiod_binary() -> str:
    """The path of pilot-discovery, built first if need be; skips the test if it cannot
    be had (fails it when ``CI`` is set)."""
    return server_binary("istiod")


def fs_source(directory: Path) -> str:
    """The address of istiod's file config source for ``directory``."""
    return f"fs://{directory.resolve()}"


def sidecar_node(
    pod: str = "envoy-1", namespace: str = "default"
) -> Callable[[dict[str, Any]], None]:
    """A bootstrap change for :func:`~tests.support.procs.start_envoy`: the node istiod
    expects from a sidecar of ``pod`` in ``namespace`` without traffic capture."""

    def customize(bootstrap: dict[str, Any]) -> None:
        node = bootstrap["node"]
        node["id"] = f"sidecar~127.0.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local"
        node["cluster"] = pod
        node.setdefault("metadata", {}).update(
            {"INTERCEPTION_MODE": "NONE", "NAMESPACE": namespace, "ISTIO_VERSION": ISTIO_VERSION}
        )

    return customize


class Istiod(Process):
    """``pilot-discovery discovery`` on loopback ports, with its own stub Kubernetes API
    and a directory ``<workdir>/<name>`` for its mesh config and kubeconfig."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        log: Path,
        *,
        config_sources: Sequence[str],
        mesh: Mapping[str, Any] | None = None,
        name: str = "istiod",
        kubeconfig: Path | None = None,
    ) -> None:
        for address in config_sources:
            if address.startswith("file:"):
                raise ValueError(f"{address}: istiod's file config source is fs:///dir")
        self.grpc_port, self.http_port, self.monitoring_port = free_ports(3)
        home = workdir / name
        home.mkdir(exist_ok=True)
        self.mesh_config = home / "mesh.yaml"
        self.mesh_config.write_text(
            yaml.safe_dump(
                {
                    "configSources": [{"address": address} for address in config_sources],
                    "enableAutoMtls": False,
                    "ingressControllerMode": "OFF",
                    "defaultConfig": {"discoveryAddress": f"127.0.0.1:{self.grpc_port}"},
                    **(mesh or {}),
                }
            )
        )
        self.kube = KubeStub().start() if kubeconfig is None else None
        try:
            if self.kube is not None:
                kubeconfig = self.kube.write_kubeconfig(home / "kubeconfig")
            argv = [
                binary,
                "discovery",
                "--registries=Kubernetes",
                f"--kubeconfig={kubeconfig}",
                f"--meshConfig={self.mesh_config}",
                f"--networksConfig={home / 'meshNetworks.yaml'}",  # absent: no networks
                "--domain=cluster.local",
                f"--grpcAddr=127.0.0.1:{self.grpc_port}",
                f"--httpAddr=127.0.0.1:{self.http_port}",
                f"--monitoringAddr=127.0.0.1:{self.monitoring_port}",
                "--secureGRPCAddr=",
                "--httpsAddr=",
                "--ctrlz_address=127.0.0.1",
                "--ctrlz_port=0",
                "--shutdownDuration=1s",
                "--log_output_level=default:info",
            ]
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "POD_NAMESPACE": NAMESPACE,
                "POD_NAME": name,
                "ENABLE_CA_SERVER": "false",
                "INJECT_ENABLED": "false",
                "INJECTION_WEBHOOK_CONFIG_NAME": "",
                "VALIDATION_WEBHOOK_CONFIG_NAME": "",
                "PILOT_ENABLE_IP_AUTOALLOCATE": "false",
                "PILOT_ENABLE_METADATA_EXCHANGE": "false",
                "PILOT_ENABLE_ALPN_FILTER": "false",
                "KUBE_FEATURE_WatchListClient": "false",
            }
            super().__init__(name, argv, log, env=env, cwd=home)
        except BaseException:
            if self.kube is not None:
                self.kube.stop()
            raise

    def noise(self, line: str) -> bool:
        """The flags istiod echoes at start and its per-collection sync reports."""
        return "\tFLAG: " in line or "sync complete" in line or "\tkrt\t" in line

    def ready(self) -> bool:
        self.check_alive()
        status, _ = http_get(self.http_port, "/ready", timeout=1.0)
        if status != 200:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            return probe.connect_ex(("127.0.0.1", self.grpc_port)) == 0

    def wait_ready(self) -> None:
        poll(
            self.ready,
            "istiod /ready to answer 200 and its gRPC port to accept",
            deadline=START_DEADLINE,
            details=self.tail,
        )

    def stop(self, grace: float = 5.0) -> int | None:
        """Stop istiod, then its stub Kubernetes API (if it has one)."""
        try:
            return super().stop(grace)
        finally:
            if self.kube is not None:
                self.kube.stop()


def start_istiod(
    workdir: Path,
    log: Path,
    *,
    config_sources: Sequence[str],
    mesh: Mapping[str, Any] | None = None,
    name: str = "istiod",
    binary: str | None = None,
    kubeconfig: Path | None = None,
) -> Istiod:
    """Start istiod on ``config_sources`` (e.g. ``[fs_source(dir)]``) and wait until it is
    ready; ``mesh`` adds to (or overrides) its mesh config; ``kubeconfig``: the cluster
    its Kubernetes registry reads (else an empty stub).  Skips the test when there is no
    istiod binary (see :func:`istiod_binary`)."""
    path = binary or istiod_binary()
    return _start(
        lambda: Istiod(
            path,
            workdir,
            log,
            config_sources=config_sources,
            mesh=mesh,
            name=name,
            kubeconfig=kubeconfig,
        ),
        Istiod.wait_ready,
    )
