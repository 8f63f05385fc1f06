"""A real Consul agent (the open-source release ``scripts/build-servers consul`` builds)
on 127.0.0.1 for tests: ``consul agent -dev``, one server that elects itself, its state
in memory.

:func:`consul_binary` builds or finds the binary (skips the test without it, fails it
under ``CI``); :func:`start_consul` starts an agent and waits until it has a leader;
:meth:`ConsulAgent.stop` ends it.

How it is run, and why:

* **Ports.**  HTTP, Serf LAN and server RPC on free loopback ports (``-bind`` and
  ``-client`` 127.0.0.1, so nothing listens elsewhere); DNS, Serf WAN, gRPC and gRPC TLS
  are turned off (``-1``): the tests use none of them and each is a port that could be
  taken.
* **State.**  ``-dev`` keeps the catalog in memory; ``-data-dir`` (a directory of the
  test's) only holds what the agent writes besides (its node id file and the like).
* **Identity.**  ``-node`` names the node (the host's name could be anything);
  ``-disable-host-node-id`` makes the node id random, so two agents on one host do not
  share one derived from the host.
* **Ready** means ``/v1/status/leader`` names a leader (``"127.0.0.1:<server port>"``)
  and the agent's own node is in the catalog, so a service registered next is synced.
* **ACLs** (``management_token``): ACLs enabled with ``default_policy = "deny"`` and that
  token as the initial management token; :meth:`ConsulAgent.get` and
  :meth:`ConsulAgent.put` send it, :meth:`ConsulAgent.create_reader` makes a token that
  may read some services.  Without it ACLs are off.
* **Restart** (:meth:`ConsulAgent.restart`): the agent crashes (SIGKILL) and a new one
  starts on the same ports, logging to ``<name>.restarted.log`` beside the first log;
  ``-dev`` keeps nothing, so it starts with an empty catalog but for its own node and
  ``consul`` service.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.procs import Process, _start, free_ports, http_get, poll
from tests.support.servers import server_binary

__all__ = ["NODE", "ConsulAgent", "consul_binary", "consul_with_acls", "start_consul"]

START_DEADLINE = 60.0  # seconds to elect itself (usually a few; a busy 2-CPU machine is slower)
NODE = "registryd-test"


def consul_binary() -> str:
    """The path of consul, built first if need be; skips the test without it (fails it
    when ``CI`` is set)."""
    return server_binary("consul")


class ConsulAgent(Process):
    """``consul agent -dev`` on free loopback ports, with ``<workdir>/<name>`` as its data
    directory."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        log: Path,
        *,
        name: str = "consul",
        management_token: str | None = None,
        ports: tuple[int, int, int] | None = None,
        hcl: tuple[str, ...] = (),
    ) -> None:
        """``hcl``: more agent configuration, one ``-hcl`` argument each."""
        self.binary, self.workdir, self.management_token = binary, workdir, management_token
        self.http_port, self.serf_lan_port, self.server_port = ports or free_ports(3)
        self.data_dir = workdir / name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            "agent",
            "-dev",
            f"-node={NODE}",
            "-disable-host-node-id",
            f"-data-dir={self.data_dir}",
            "-bind=127.0.0.1",
            "-client=127.0.0.1",
            f"-http-port={self.http_port}",
            f"-serf-lan-port={self.serf_lan_port}",
            f"-server-port={self.server_port}",
            "-serf-wan-port=-1",
            "-dns-port=-1",
            "-grpc-port=-1",
            "-grpc-tls-port=-1",
            "-log-level=info",
        ]
        if management_token is not None:
            tokens = f'tokens {{ initial_management = "{management_token}" }}'
            argv.append(f'-hcl=acl {{ enabled = true default_policy = "deny" {tokens} }}')
        argv += [f"-hcl={text}" for text in hcl]
        super().__init__(name, argv, log, cwd=self.data_dir)

    def _headers(self) -> dict[str, str]:
        return {"X-Consul-Token": self.management_token} if self.management_token else {}

    @property
    def address(self) -> str:
        """``host:port`` of the HTTP API (a ``consul`` registry's ``address``)."""
        return f"127.0.0.1:{self.http_port}"

    def get(self, path: str) -> Any:
        """GET ``path`` of the HTTP API: the decoded JSON body (fails on non-200)."""
        request = urllib.request.Request(f"http://{self.address}{path}", headers=self._headers())
        with urllib.request.urlopen(request, timeout=10.0) as response:
            assert response.status == 200, f"consul GET {path}: {response.status}"
            return json.loads(response.read())

    def put(self, path: str, document: Any) -> str:
        """PUT ``document`` as JSON to ``path`` of the HTTP API: the body (fails on non-200)."""
        request = urllib.request.Request(
            f"http://{self.address}{path}",
            data=json.dumps(document).encode(),
            method="PUT",
            headers={"Content-Type": "application/json", **self._headers()},
        )
        with urllib.request.urlopen(request, timeout=10.0) as response:
            assert response.status == 200, f"consul PUT {path}: {response.status}"
            return str(response.read().decode())

    def create_reader(self, name: str, service_prefixes: tuple[str, ...]) -> str:
        """An ACL token (its secret) that may read the services whose names start with one
        of ``service_prefixes`` and every node, through a policy ``name`` (needs the
        management token)."""
        rules = [f'service_prefix "{p}" {{ policy = "read" }}' for p in service_prefixes]
        rules.append('node_prefix "" { policy = "read" }')
        self.put("/v1/acl/policy", {"Name": name, "Rules": "\n".join(rules)})
        token = json.loads(self.put("/v1/acl/token", {"Policies": [{"Name": name}]}))
        return str(token["SecretID"])

    def ready(self) -> bool:
        self.check_alive()
        status, body = http_get(self.http_port, "/v1/status/leader", timeout=2.0)
        if status != 200 or not json.loads(body):
            return False
        try:
            return self.get(f"/v1/catalog/node/{NODE}") is not None
        except OSError:  # urllib's errors (an HTTP error status included) are OSErrors
            return False

    def wait_ready(self) -> None:
        poll(
            self.ready,
            "consul to elect a leader and list its node",
            deadline=START_DEADLINE,
            details=self.tail,
        )

    def restart(self) -> ConsulAgent:
        """Crash this agent (SIGKILL) and start a new one on the same ports, ready; the
        new agent (with an empty catalog: see the module docstring)."""
        self.kill()
        self.stop()
        again = ConsulAgent(
            self.binary,
            self.workdir,
            self.log.parent / f"{self.name}.restarted.log",
            name=self.name,
            management_token=self.management_token,
            ports=(self.http_port, self.serf_lan_port, self.server_port),
        )
        try:
            again.wait_ready()
        except BaseException:
            again.stop()
            raise
        return again


def start_consul(
    workdir: Path,
    log: Path,
    *,
    name: str = "consul",
    binary: str | None = None,
    management_token: str | None = None,
) -> ConsulAgent:
    """Start a dev-mode Consul agent and wait until it has a leader (with ACLs when given
    a ``management_token``: see the module docstring).  Skips the test when there is no
    consul binary (see :func:`consul_binary`)."""
    path = binary or consul_binary()
    return _start(
        lambda: ConsulAgent(path, workdir, log, name=name, management_token=management_token),
        ConsulAgent.wait_ready,
    )


@contextlib.contextmanager
def consul_with_acls(workdir: Path, management_token: str) -> Iterator[ConsulAgent]:
    """A dev-mode agent with ACLs (default policy deny) for the ``with`` block, its log
    in ``workdir``."""
    agent = start_consul(workdir, workdir / "consul.log", management_token=management_token)
    try:
        yield agent
    finally:
        agent.stop()
