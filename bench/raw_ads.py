"""The transport's own cost: a minimal grpc.aio ADS server writing registryd's bytes.

It builds the very snapshots registryd builds (the same ServiceEntry directory, the same
builder), but serves them with nothing per stream beyond what gRPC needs: requests are
read and dropped (only the first of each type is decoded, to learn its type), and every
push writes the same pre-assembled responses to every stream — all clients of the
benchmark subscribe alike, so one response per type serves them all.  No ACK
bookkeeping, no subscriptions, no traces, no metrics.  What registryd spends per client
beyond this is its own overhead.

    python -m bench.raw_ads --config DIR --grpc-port P --http-port H

Serves ``/ready`` and ``/debug/connections`` (an empty list) on the HTTP port so the
benchmark can treat it like registryd.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from envoy.service.discovery.v3 import discovery_pb2
from watchfiles import awatch

from registryd.adapters.serviceentry.convert import diff_models
from registryd.adapters.serviceentry.state import FileTable
from registryd.build.builder import SnapshotBuilder
from registryd.build.clusters import BuildOptions
from registryd.model import ShardKey
from registryd.registry.store import RegistryStore
from registryd.xds.snapshot import (
    CDS,
    EDS,
    LDS_SIDECAR,
    RDS,
    TABLE_TYPES,
    Snapshot,
    encode_field,
)

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
SHARD = ShardKey("serviceentry", "raw")
TABLES = (CDS, EDS, LDS_SIDECAR, RDS)  # what a sidecar reads, in push order
FULL_STATE = (CDS, LDS_SIDECAR)


def response(table: str, snapshot: Snapshot, names: list[str] | None, nonce: str) -> bytes:
    """A DiscoveryResponse of ``table``: every resource (``names`` None) or those named."""
    resources = snapshot.tables.get(table, {})
    chosen = sorted(resources) if names is None else sorted(n for n in names if n in resources)
    version = f"raw-{snapshot.version}"
    body = encode_field(1, version.encode()) + b"".join(resources[n].entry for n in chosen)
    body += encode_field(4, TABLE_TYPES[table].encode()) + encode_field(5, nonce.encode())
    return body


class RawServer:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.table = FileTable()
        self.store = RegistryStore()
        self.builder = SnapshotBuilder(BuildOptions())
        self.model = self.table.model()
        self.queues: set[asyncio.Queue[list[bytes]]] = set()
        self.nonces = itertools.count(1)

    def load(self, paths: list[Path]) -> tuple[set[str], bool]:
        for path in paths:
            if path.suffix == ".yaml" and path.exists():
                self.table.load(str(path), path.read_bytes())
        model = self.table.model()
        hostnames: set[str] = set()
        endpoints_only = True
        for update in diff_models(self.model, model, self.table.changed):
            event = self.store.apply(SHARD, update)
            if event is not None:
                hostnames |= event.hostnames
                endpoints_only &= event.endpoints_only
        self.model = model
        return hostnames, endpoints_only

    def initial(self) -> None:
        self.load(sorted(self.config.glob("*.yaml")))
        self.builder.build(self.store.view)

    def push(self, hostnames: set[str], endpoints_only: bool) -> None:
        before = self.builder.snapshot
        after = self.builder.build(self.store.view, hostnames, endpoints_only)
        nonce = f"{after.version}-{next(self.nonces)}"
        payloads = []
        for table in TABLES:
            changed = after.changed_since(table, before.version)
            if not changed:
                continue
            names = None if table in FULL_STATE else sorted(changed)
            payloads.append(response(table, after, names, nonce))
        for queue in self.queues:
            queue.put_nowait(payloads)

    async def watch(self) -> None:
        async for changes in awatch(self.config, step=20, debounce=500):
            hostnames, endpoints_only = self.load(sorted({Path(p) for _, p in changes}))
            if hostnames:
                self.push(hostnames, endpoints_only)

    async def stream(self, requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        queue: asyncio.Queue[list[bytes]] = asyncio.Queue()
        self.queues.add(queue)
        answered: set[str] = set()

        async def read() -> None:
            async for raw in requests:
                if len(answered) == len(TABLES):
                    continue  # an ACK: dropped unread
                request = discovery_pb2.DiscoveryRequest.FromString(raw)
                table = {TABLE_TYPES[t]: t for t in TABLES}.get(request.type_url)
                if table is None or table in answered:
                    continue
                answered.add(table)
                names = None if table in FULL_STATE else list(request.resource_names)
                snapshot = self.builder.snapshot
                queue.put_nowait([response(table, snapshot, names, f"{snapshot.version}-0")])

        reader = asyncio.create_task(read())
        try:
            while True:
                for payload in await queue.get():
                    await context.write(payload)
        finally:
            reader.cancel()
            self.queues.discard(queue)


async def serve(config: Path, grpc_port: int, http_port: int) -> None:
    raw = RawServer(config)
    raw.initial()
    server = grpc.aio.server()
    method = grpc.stream_stream_rpc_method_handler(
        raw.stream, request_deserializer=None, response_serializer=None
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"StreamAggregatedResources": method}),)
    )
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    app = web.Application()
    app.router.add_get("/ready", lambda _: web.Response(text="ready"))
    app.router.add_get("/debug/connections", lambda _: web.json_response([]))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    try:
        await raw.watch()
    finally:
        await runner.cleanup()
        await server.stop(None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--http-port", type=int, required=True)
    args = ap.parse_args()
    asyncio.run(serve(args.config, args.grpc_port, args.http_port))


if __name__ == "__main__":
    main()
