"""A stand-in for the Kubernetes API server: an empty cluster on 127.0.0.1, in the test
process, for programs that insist on a Kubernetes client but get nothing they need from
it (istiod, see :mod:`tests.support.istiod`).

It speaks just enough of the API for client-go's informers and leader election:

* discovery (``/version``, ``/api``, ``/apis``) for a cluster with no API groups;
* LIST of any collection: the objects created in it (at first none), with a
  ``resourceVersion``;
* WATCH of any collection: the stream is held open and stays silent until the client
  leaves or the stub stops.  A watch asking for its initial events in the stream
  (client-go's WatchList) is refused, so the client falls back to LIST then WATCH;
* GET, POST (create), PUT (replace) and DELETE of single objects, kept in memory: enough
  for the ConfigMap or Lease locks of leader election.

Nothing ever changes unless a client writes it; no other semantics (selectors, field
managers, PATCH, status, admission) are implemented.  Every request is counted by method
and path, so a test can see what its program asked for.
"""

from __future__ import annotations

import collections
import itertools
import json
import select
import threading
import urllib.parse
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["KubeStub"]

_POLL = 0.2  # seconds: how often an open watch checks whether the stub is stopping


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


def _is_collection(parts: list[str]) -> bool:
    """``/api/v1/<resource>``, ``/api/v1/namespaces/<ns>/<resource>`` and the same under
    ``/apis/<group>/<version>``: a collection (else a single object or a subresource)."""
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        rest = parts[3:]
    else:
        return False
    return len(rest) == 1 or (len(rest) == 3 and rest[0] == "namespaces")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests are counted instead."""

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> tuple[str, list[str], dict[str, list[str]]]:
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        self.server.count(self.command, path)
        return path, [p for p in path.split("/") if p], urllib.parse.parse_qs(url.query)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        document = json.loads(self.rfile.read(length) or b"{}")
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        return document

    def do_GET(self) -> None:
        path, parts, query = self._route()
        if path == "/version":
            return self._send(200, {"major": "1", "minor": "36", "gitVersion": "v1.36.0"})
        if path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
        if path == "/apis":
            return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        if query.get("watch", [""])[0] in ("true", "1"):
            if query.get("sendInitialEvents", [""])[0] == "true":
                message = "this stub serves no WatchList; list, then watch"
                return self._send(400, _status(400, "BadRequest", message))
            return self._hold_watch()
        with self.server.lock:
            found = self.server.objects.get(path)
            if found is None and _is_collection(parts):
                prefix = path + "/"
                items = [
                    obj
                    for key, obj in self.server.objects.items()
                    if key.startswith(prefix) and "/" not in key[len(prefix) :]
                ]
                return self._send(
                    200,
                    {
                        "kind": "List",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": str(self.server.version)},
                        "items": items,
                    },
                )
        if found is None:
            return self._send(404, _status(404, "NotFound", f"{path} not found"))
        return self._send(200, found)

    def _hold_watch(self) -> None:
        """A watch that reports nothing: open until the client leaves or the stub stops."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        while not self.server.stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], _POLL)
            if readable:
                try:
                    if not self.connection.recv(4096):
                        return  # the client closed the connection
                except OSError:
                    return
        self.close_connection = True

    def _write(self, path: str, obj: dict[str, Any], *, create: bool) -> None:
        with self.server.lock:
            if create and path in self.server.objects:
                return self._send(409, _status(409, "AlreadyExists", f"{path} exists"))
            meta = obj.setdefault("metadata", {})
            meta["resourceVersion"] = str(self.server.bump())
            meta.setdefault("uid", f"stub-{meta['resourceVersion']}")
            meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            self.server.objects[path] = obj
        self._send(201 if create else 200, obj)

    def do_POST(self) -> None:
        path, parts, _ = self._route()
        try:
            obj = self._body()
        except ValueError as exc:
            return self._send(400, _status(400, "BadRequest", str(exc)))
        name = (obj.get("metadata") or {}).get("name")
        if not name or not _is_collection(parts):
            message = "create needs a collection and a name"
            return self._send(400, _status(400, "BadRequest", message))
        self._write(f"{path}/{name}", obj, create=True)

    def do_PUT(self) -> None:
        path, _, _ = self._route()
        try:
            obj = self._body()
        except ValueError as exc:
            return self._send(400, _status(400, "BadRequest", str(exc)))
        self._write(path, obj, create=False)

    def do_DELETE(self) -> None:
        path, _, _ = self._route()
        with self.server.lock:
            found = self.server.objects.pop(path, None)
        if found is None:
            return self._send(404, _status(404, "NotFound", f"{path} not found"))
        self._send(200, _status(200, "", "deleted"))

    def do_PATCH(self) -> None:
        self._route()
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(405, _status(405, "MethodNotAllowed", "this stub does not patch"))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self.stopping = threading.Event()
        self._versions = itertools.count(2)
        self.version = 1

    def bump(self) -> int:
        """A new resourceVersion (call with ``lock`` held)."""
        self.version = next(self._versions)
        return self.version

    def count(self, method: str, path: str) -> None:
        with self.lock:
            self.requests[(method, path)] += 1


class KubeStub:
    """The stub API server on a free port of 127.0.0.1, served by a thread."""

    def __init__(self) -> None:
        self._server = _Server()
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="kube-stub",
            daemon=True,
        )

    @property
    def requests(self) -> dict[tuple[str, str], int]:
        """How often each (method, path) was asked for."""
        with self._server.lock:
            return dict(self._server.requests)

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig file (JSON is valid YAML) for this stub, without credentials."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stub", "cluster": {"server": self.url}}],
            "users": [{"name": "stub", "user": {}}],
            "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}}],
            "current-context": "stub",
        }
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self) -> KubeStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
