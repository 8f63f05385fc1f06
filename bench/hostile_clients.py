"""Hostile-client benchmark: what unauthenticated ADS clients can make registryd hold.

Starts registryd (a subprocess, loopback, ``--configDir`` with a few services), then:

1. ``names``: K clients each subscribe EDS to N made-up names and leave; prints
   registryd's RSS before and after (with the default ``--xdsMaxUnknownNames`` the
   streams are refused; ``--max-unknown 0`` lifts the limit to show the interner letting
   go once the clients are gone);
2. ``nacks``: one client sends M NACKs of S bytes each (matching nonce), then M with a
   stale nonce; prints how many bytes registryd logged meanwhile.

Prints numbers; asserts nothing.

    python -m bench.hostile_clients --clients 30 --names 90000 --nacks 60 --nack-bytes 3000000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from bench.common import METHOD, mib, registryd
from bench.fault_storm import service_yaml

EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
OPTIONS = [
    ("grpc.max_send_message_length", 64 * 2**20),
    ("grpc.max_receive_message_length", 64 * 2**20),
]


def open_stream(channel: grpc.aio.Channel) -> grpc.aio.StreamStreamCall:
    return channel.stream_stream(
        METHOD,
        request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
    )()


async def name_flood(target: str, clients: int, names: int) -> str:
    outcomes: dict[str, int] = {}
    for k in range(clients):
        async with grpc.aio.insecure_channel(target, options=OPTIONS) as channel:
            call = open_stream(channel)
            listed = [f"outbound|8080||made-up-{k}-{i}.example" for i in range(names)]
            node = base_pb2.Node(id=f"flood-{k}", cluster="b")
            await call.write(
                discovery_pb2.DiscoveryRequest(type_url=EDS, node=node, resource_names=listed)
            )
            try:
                await asyncio.wait_for(call.read(), 60)
                outcome = "answered"
            except grpc.aio.AioRpcError as exc:
                details = (exc.details() or "")[:50]
                outcome = f"{exc.code().name}: {details}"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            call.cancel()
    return ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))


async def nack_flood(target: str, nacks: int, size: int) -> None:
    async with grpc.aio.insecure_channel(target, options=OPTIONS) as channel:
        call = open_stream(channel)
        node = base_pb2.Node(id="nacker\nforged line", cluster="b")
        await call.write(discovery_pb2.DiscoveryRequest(type_url=CDS, node=node))
        response = await call.read()
        message = "x" * size
        for nonce in [response.nonce] * nacks + ["stale"] * nacks:
            await call.write(
                discovery_pb2.DiscoveryRequest(
                    type_url=CDS,
                    response_nonce=nonce,
                    error_detail=status_pb2.Status(code=3, message=message),
                )
            )
        await call.done_writing()
        call.cancel()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=30)
    ap.add_argument("--names", type=int, default=90000)
    ap.add_argument("--max-unknown", default=None, help="--xdsMaxUnknownNames for registryd")
    ap.add_argument("--nacks", type=int, default=60)
    ap.add_argument("--nack-bytes", type=int, default=3_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "se"
        config.mkdir()
        for i in range(5):
            (config / f"svc-{i}.yaml").write_text(service_yaml(i))
        log = Path(tmp) / "registryd.log"
        flags = [] if args.max_unknown is None else [f"--xdsMaxUnknownNames={args.max_unknown}"]
        with log.open("wb") as sink, registryd(config, *flags, stderr=sink) as daemon:
            before = mib(daemon.proc)
            outcome = asyncio.run(name_flood(daemon.target, args.clients, args.names))
            print(
                f"names: {args.clients} clients x {args.names} made-up EDS names ({outcome}); "
                f"RSS {before} -> {mib(daemon.proc)} MiB"
            )
            logged = log.stat().st_size
            started = time.monotonic()
            asyncio.run(nack_flood(daemon.target, args.nacks, args.nack_bytes))
            time.sleep(1)  # let registryd drain what it read (a bench, not a test)
            grown = log.stat().st_size - logged
            took = time.monotonic() - started
            print(
                f"nacks: {args.nacks} NACKs + {args.nacks} stale, "
                f"{args.nack_bytes} bytes each: {grown} bytes logged in {took:.1f} s"
            )


if __name__ == "__main__":
    main()
