"""A real kube-apiserver (the release ``scripts/build-servers kube-apiserver`` builds) on
127.0.0.1 for tests, with an etcd of its own and no controllers: what a test creates
through the API is all there is (no EndpointSlice is made for a Service, no default
ServiceAccount for a Namespace).

:func:`kube_apiserver_binary` builds or finds the binary (skips the test without it,
fails it under ``CI``); :func:`start_kube_apiserver` starts etcd and the API server (with
any extra flags), waits until ``/readyz`` answers 200 and writes a kubeconfig for the
admin token (:attr:`KubeApiServer.kubeconfig`); :meth:`KubeApiServer.stop` ends both.
:meth:`KubeApiServer.crash_apiserver` kills the API server alone and
:meth:`KubeApiServer.start` brings it back on the same port and etcd (an outage).
Objects are made and changed with :meth:`~KubeApiServer.create`,
:meth:`~KubeApiServer.update`, :meth:`~KubeApiServer.delete` and, many at once, with
:meth:`~KubeApiServer.create_all` / :meth:`~KubeApiServer.delete_collection`.

How it is run, and why:

* **etcd**: one member on free loopback ports
  (:class:`~tests.support.etcd_server.EtcdServer`), its data in the test's directory.
* **TLS**: a serving certificate for 127.0.0.1 and ``localhost`` signed by a fresh test
  CA (:func:`~tests.support.certs.make_tls`); the kubeconfigs carry the CA.
* **Authentication**: a static token file (``--token-auth-file``, read once at start)
  with two users: ``admin`` in ``system:masters`` (every right, no RBAC needed) and
  ``reader``, who has no right until a test gives it some (:meth:`KubeApiServer.grant`).
  Anonymous requests stay allowed as by default (``/readyz``, ``/version``).
* **Authorization**: ``--authorization-mode=RBAC`` only.
* **Service accounts**: an EC key pair made with ``openssl`` for
  ``--service-account-key-file`` / ``--service-account-signing-key-file``, issuer
  ``https://kubernetes.default.svc.cluster.local``.
* **Service IPs**: ``--service-cluster-ip-range 10.96.0.0/16`` (a Service's ``clusterIP``
  must fall in it).
* **No endpoint reconciler** (``--endpoint-reconciler-type=none``): the ``kubernetes``
  Service in ``default`` is still created, but without endpoints, since an Endpoints
  address may not be a loopback one and the server's only address is 127.0.0.1.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import http.client
import json
import ssl
import threading
from pathlib import Path
from typing import Any

import yaml

from tests.support.certs import TlsFiles, make_tls, openssl
from tests.support.etcd_server import EtcdServer
from tests.support.procs import Process, ProcessDied, free_ports, poll
from tests.support.servers import server_binary

__all__ = ["KubeApiServer", "kube_apiserver_binary", "start_kube_apiserver"]

START_DEADLINE = 180.0  # seconds until /readyz is 200 (tens of seconds on a busy 2-CPU machine)
PORT_ATTEMPTS = 3
REQUEST_TIMEOUT = 10.0  # seconds for one answer (a socket timeout: a hang guard)
STOP_GRACE = 3.0  # seconds from SIGTERM to SIGKILL (an idle kube-apiserver exits in less)
ADMIN = "admin"
READER = "reader"


def kube_apiserver_binary() -> str:
    """The path of kube-apiserver, built first if need be; skips the test without it
    (fails it when ``CI`` is set)."""
    return server_binary("kube-apiserver")


def _token() -> str:
    with open("/dev/urandom", "rb") as random:
        return random.read(16).hex()


class KubeApiServer:
    """kube-apiserver and its etcd, in ``<workdir>/<name>``.  ``start()`` waits until
    ``/readyz`` is 200."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        name: str = "kube-apiserver",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary
        self.name = name
        self.extra_args = extra_args
        self.home = workdir / name
        self.home.mkdir(parents=True, exist_ok=True)
        self.etcd = EtcdServer(self.home)
        self.tls: TlsFiles = make_tls(self.home / "tls")
        self.sa_key = self.home / "sa.key"
        self.sa_pub = self.home / "sa.pub"
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", self.sa_key)
        openssl("ec", "-in", self.sa_key, "-pubout", "-out", self.sa_pub)
        self.tokens = {ADMIN: _token(), READER: _token()}
        self.token_file = self.home / "tokens.csv"
        self.token_file.write_text(
            f'{self.tokens[ADMIN]},{ADMIN},uid-{ADMIN},"system:masters"\n'
            f"{self.tokens[READER]},{READER},uid-{READER}\n"
        )
        self.port = 0
        self.kubeconfig = self.home / f"{ADMIN}.kubeconfig"  # written by start()
        self.proc: Process | None = None
        self.runs = 0

    # -- the process -----------------------------------------------------------------
    def _argv(self) -> list[str]:
        return [
            self.binary,
            f"--etcd-servers=http://{self.etcd.endpoint}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.home}",
            f"--tls-cert-file={self.tls.server_cert}",
            f"--tls-private-key-file={self.tls.server_key}",
            f"--token-auth-file={self.token_file}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={self.sa_pub}",
            f"--service-account-signing-key-file={self.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
            *self.extra_args,
        ]

    def start(self) -> KubeApiServer:
        """Start etcd (if it is not running) and kube-apiserver, and wait until
        ``/readyz`` is 200.  Everything it started is stopped if it fails."""
        try:
            if self.etcd.proc is None or not self.etcd.proc.alive():
                self.etcd.start()
            again = self.port != 0  # a restart: the same port, so kubeconfigs stay good
            for attempt in range(1, PORT_ATTEMPTS + 1):
                self.runs += 1
                if not again:
                    (self.port,) = free_ports(1)
                self.proc = Process(
                    self.name,
                    self._argv(),
                    self.home / f"{self.name}-{self.runs}.log",
                    cwd=self.home,
                )
                try:
                    poll(
                        self.ready,
                        f"{self.name} /readyz to answer 200",
                        deadline=START_DEADLINE,
                        details=self.tail,
                    )
                except ProcessDied:
                    self.proc.stop()
                    if attempt == PORT_ATTEMPTS or "ddress already in use" not in self.output():
                        raise
                    continue
                self.write_kubeconfig(self.kubeconfig)
                return self
            raise AssertionError("unreachable")
        except BaseException:
            self.stop()
            raise

    def crash_apiserver(self) -> None:
        """Kill kube-apiserver only (SIGKILL: an outage, every connection cut at once; etcd
        and its data stay): :meth:`start` brings it back on the same port."""
        if self.proc is not None:
            if self.proc.alive():
                self.proc.kill()
            self.proc.stop()

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (each for sure, whatever the other did).  While a
        client still watches, kube-apiserver is slow to exit on SIGTERM (over 10 s): it
        has :data:`STOP_GRACE` seconds before SIGKILL."""
        try:
            if self.proc is not None:
                self.proc.stop(grace=STOP_GRACE)
        finally:
            self.etcd.stop()

    def output(self) -> str:
        return self.proc.output() if self.proc is not None else ""

    def tail(self, lines: int = 60) -> str:
        if self.proc is None:
            return f"({self.name} never started)"
        return self.proc.tail(lines) + "\n" + self.etcd.tail(20)

    def check_alive(self) -> None:
        assert self.proc is not None, f"{self.name} was not started"
        self.proc.check_alive()

    def ready(self) -> bool:
        self.check_alive()
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = self.request("GET", "/readyz")
            return status == 200
        return False

    # -- the API -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _connection(self, timeout: float = REQUEST_TIMEOUT) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=context)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        user: str = ADMIN,
        connection: http.client.HTTPSConnection | None = None,
    ) -> tuple[int, Any]:
        """One request as ``user`` (a token user): (status, decoded JSON body, or the
        text when it is not JSON).  Raises on connection errors.  On a new connection,
        closed after it, unless ``connection`` is given (kept open for more)."""
        keep = connection is not None
        connection = connection or self._connection()
        headers = {"Authorization": f"Bearer {self.tokens[user]}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read().decode(errors="replace")
        finally:
            if not keep:
                connection.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw

    def create(self, obj: dict[str, Any], *, user: str = ADMIN) -> dict[str, Any]:
        """POST ``obj`` to its collection (core ``v1`` or a group version): the object
        as stored.  Fails unless the server answers 201."""
        status, answer = self.request("POST", collection(obj), obj, user=user)
        assert status == 201, f"create {obj['kind']} {obj['metadata']['name']}: {status} {answer}"
        assert isinstance(answer, dict)
        return answer

    def create_all(self, objs: list[dict[str, Any]], *, workers: int = 8) -> None:
        """:meth:`create` each of ``objs``, ``workers`` at a time, each worker on one
        connection: many objects in far less time than one after another."""
        local = threading.local()
        opened: list[http.client.HTTPSConnection] = []

        def create(obj: dict[str, Any]) -> None:
            if not hasattr(local, "connection"):
                local.connection = self._connection()
                opened.append(local.connection)
            path = collection(obj)
            status, answer = self.request("POST", path, obj, connection=local.connection)
            assert status == 201, f"POST {path}: {status} {answer}"

        try:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                for _ in pool.map(create, objs):
                    pass
        finally:
            for connection in opened:
                connection.close()

    def update(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT ``obj`` over the stored object of its name (whose resourceVersion it takes:
        no conflict check): the object as stored.  Fails unless the server answers 200."""
        path = f"{collection(obj)}/{obj['metadata']['name']}"
        status, stored = self.request("GET", path)
        assert status == 200, f"GET {path}: {status} {stored}"
        version = stored["metadata"]["resourceVersion"]
        body = {**obj, "metadata": {**obj["metadata"], "resourceVersion": version}}
        status, answer = self.request("PUT", path, body)
        assert status == 200, f"update {obj['kind']} {obj['metadata']['name']}: {status} {answer}"
        assert isinstance(answer, dict)
        return answer

    def delete(self, obj: dict[str, Any]) -> None:
        """DELETE the object of ``obj``'s kind, namespace and name.  Fails unless the
        server answers 200 (deleted at once: nothing here sets finalizers)."""
        path = f"{collection(obj)}/{obj['metadata']['name']}"
        status, answer = self.request("DELETE", path)
        assert status == 200, f"delete {path}: {status} {answer}"

    def delete_collection(self, path: str) -> None:
        """DELETE every object of the collection at ``path`` (``/api/v1/namespaces/x/
        services``...) in one request, which may take seconds (the server deletes them one
        by one).  Fails unless the server answers 200."""
        connection = self._connection(timeout=START_DEADLINE)
        try:
            status, answer = self.request("DELETE", path, connection=connection)
        finally:
            connection.close()
        assert status == 200, f"delete {path}: {status} {answer}"

    def items(self, path: str, *, user: str = ADMIN) -> list[dict[str, Any]]:
        """The items of the list at ``path`` (``/api/v1/namespaces/x/services``...)."""
        status, answer = self.request("GET", path, user=user)
        assert status == 200, f"GET {path}: {status} {answer}"
        return list(answer["items"])

    def grant(self, rules: list[dict[str, Any]], *, user: str = READER) -> None:
        """Give ``user`` a ClusterRole of ``rules`` (RBAC policy rules) on every
        namespace, e.g. ``[{"apiGroups": [""], "resources": ["services"], "verbs":
        ["get", "list", "watch"]}]``.  RBAC applies it at once."""
        role = f"registryd-test-{user}"
        self.create(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": role},
                "rules": rules,
            }
        )
        self.create(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": role},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                ],
            }
        )

    def write_kubeconfig(
        self, path: Path | None = None, *, user: str = ADMIN, url: str | None = None
    ) -> Path:
        """A kubeconfig for ``user``'s token (by default ``<home>/<user>.kubeconfig``), on
        ``url`` (default :attr:`url`; e.g. a relay in front of the server: the server's
        certificate must be good for its host)."""
        path = path or self.home / f"{user}.kubeconfig"
        ca = base64.b64encode(self.tls.ca.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.name,
                    "cluster": {"server": url or self.url, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": user, "user": {"token": self.tokens[user]}}],
            "contexts": [{"name": user, "context": {"cluster": self.name, "user": user}}],
            "current-context": user,
        }
        path.write_text(yaml.safe_dump(config))
        return path


def collection(obj: dict[str, Any]) -> str:
    """The API path of ``obj``'s collection (its namespace's, for a namespaced kind)."""
    version = obj["apiVersion"]
    base = f"/api/{version}" if "/" not in version else f"/apis/{version}"
    plural = {
        "Namespace": "namespaces",
        "Service": "services",
        "Pod": "pods",
        "ServiceAccount": "serviceaccounts",
        "Node": "nodes",
        "EndpointSlice": "endpointslices",
        "ClusterRole": "clusterroles",
        "ClusterRoleBinding": "clusterrolebindings",
        "Role": "roles",
        "RoleBinding": "rolebindings",
    }[obj["kind"]]
    namespace = obj["metadata"].get("namespace")
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


def start_kube_apiserver(
    workdir: Path,
    *,
    name: str = "kube-apiserver",
    binary: str | None = None,
    extra_args: tuple[str, ...] = (),
) -> KubeApiServer:
    """Start etcd and kube-apiserver (with ``extra_args`` after the usual flags) in
    ``workdir`` and wait until ``/readyz`` is 200.  Skips the test when there is no
    kube-apiserver binary (see :func:`kube_apiserver_binary`)."""
    server = KubeApiServer(
        binary or kube_apiserver_binary(), workdir, name=name, extra_args=extra_args
    )
    return server.start()


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.support.kube_apiserver [--dir D] [FILES...]``: a real
    kube-apiserver and its etcd on 127.0.0.1 (as the tests run them), with the objects of
    the YAML FILES created in order, until Ctrl-C (or SIGTERM)."""
    import argparse
    import signal
    import sys
    import tempfile
    import threading

    parser = argparse.ArgumentParser(
        prog="python -m tests.support.kube_apiserver",
        description="A real kube-apiserver with its own etcd on 127.0.0.1 (built by "
        "scripts/build-servers kube-apiserver), with the objects of FILES (YAML, several "
        "documents a file) created in order; prints the path of an admin kubeconfig.",
    )
    parser.add_argument("files", nargs="*", type=Path, metavar="FILES", help="YAML objects")
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="its data, logs and kubeconfigs (default: a new temporary directory)",
    )
    args = parser.parse_args(argv)
    objects = []
    for path in args.files:
        try:
            documents = yaml.safe_load_all(path.read_text(encoding="utf-8"))
            objects += [(path, doc) for doc in documents if doc is not None]
        except (OSError, yaml.YAMLError) as exc:
            parser.error(f"{path}: {exc}")
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="kube-apiserver-"))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server = start_kube_apiserver(workdir)
    try:
        for path, obj in objects:
            status, answer = server.request("POST", collection(obj), obj)
            if status != 201:
                message = answer.get("message") if isinstance(answer, dict) else answer
                print(
                    f"{path}: {obj.get('kind')} {obj['metadata'].get('name')}: {status} {message}",
                    file=sys.stderr,
                )
        print(f"kube-apiserver on {server.url}", flush=True)
        print(f"kubeconfig: {server.kubeconfig}", flush=True)
        stop.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
