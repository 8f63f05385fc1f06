"""Hostile-client benchmark: what unauthenticated ADS clients can make registryd hold.

Starts registryd (a subprocess, loopback, ``--configDir`` with a few services), then:

1. ``names``: K clients each subscribe EDS to N made-up names and leave; prints
   registryd's RSS before and after (with the default ``--xdsMaxUnknownNames`` the
   streams are refused; ``--max-unknown 0`` lifts the limit to show the interner letting
   go once the clients are gone);
2. ``nacks``: one client sends M NACKs of S bytes each (matching nonce), then M with a
   stale nonce; prints how many bytes registryd logged meanwhile;
3. ``kinds`` (``--kind-clients`` of each, all connected at once, then gone): SotW EDS
   for 3 names of 1.2 MB (refused: names are at most 1,024 bytes) and for 2,000 names
   of 1,000 bytes (answered); Delta EDS for names of 3.5 MB (refused) and 2,000 of 1,000
   bytes; Delta ``*`` then made-up clusters 1,000 at a time (refused at
   ``--xdsMaxUnknownNames`` names or 256 bytes a name); Delta subscribe/unsubscribe
   churn (``--kinds`` picks some).  Prints each kind's outcomes and RSS before, while
   connected and after (RSS after may stay up: the allocator keeps freed memory for
   reuse, and a later kind that does not grow it is reusing it; what registryd itself
   retains is measured by tests/xds/test_memory.py).

Prints numbers; asserts nothing.

    python -m bench.hostile_clients --clients 30 --names 90000 --nacks 60 --nack-bytes 3000000 \
        --kind-clients 60
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

from bench.common import CDS, DELTA_METHOD, EDS, METHOD, OWN_CONNECTION, Daemon, mib, registryd
from bench.fault_storm import service_yaml

OPTIONS = [
    ("grpc.max_send_message_length", 64 * 2**20),
    ("grpc.max_receive_message_length", 64 * 2**20),
]


# Raw streams, not registryd.testing's clients: they send what no well-behaved client
# would, and read the status that refuses them.


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


def open_delta(channel: grpc.aio.Channel) -> grpc.aio.StreamStreamCall:
    return channel.stream_stream(
        DELTA_METHOD,
        request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
    )()


def made_up(tag: str, count: int, size: int) -> list[str]:
    return [f"outbound|1||{tag}-{i}-".ljust(size, "x") for i in range(count)]


async def sotw_names(call: grpc.aio.StreamStreamCall, tag: str, count: int, size: int) -> None:
    node = base_pb2.Node(id=f"sotw-{tag}", cluster="b")
    names = made_up(tag, count, size)
    await call.write(discovery_pb2.DiscoveryRequest(type_url=EDS, node=node, resource_names=names))
    await call.read()


async def delta_names(call: grpc.aio.StreamStreamCall, tag: str, count: int, size: int) -> None:
    node = base_pb2.Node(id=f"delta-{tag}", cluster="b")
    for start in range(0, count, 500):  # requests under gRPC's 4 MB
        names = made_up(f"{tag}-{start}", min(500, count - start), size)
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=EDS, node=node, resource_names_subscribe=names
        )
        await call.write(request)
        await call.read()


async def delta_wildcard(call: grpc.aio.StreamStreamCall, tag: str) -> None:
    node = base_pb2.Node(id=f"wild-{tag}", cluster="b")
    await call.write(
        discovery_pb2.DeltaDiscoveryRequest(type_url=CDS, node=node, resource_names_subscribe=["*"])
    )
    await call.read()
    for batch in range(2000):  # 2,000,000 names if nothing stops it
        names = [f"made-up-{tag}-{batch}-{i}" for i in range(1000)]
        await call.write(
            discovery_pb2.DeltaDiscoveryRequest(type_url=CDS, resource_names_subscribe=names)
        )
        await call.read()


async def delta_churn(call: grpc.aio.StreamStreamCall, tag: str, seconds: float) -> None:
    node = base_pb2.Node(id=f"churn-{tag}", cluster="b")
    previous: list[str] = []
    deadline = time.monotonic() + seconds
    for round_ in range(10**9):
        if time.monotonic() > deadline:
            return
        names = made_up(f"{tag}-{round_}", 200, 1000)
        await call.write(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=EDS,
                node=node,
                resource_names_subscribe=names,
                resource_names_unsubscribe=previous,
            )
        )
        await call.read()
        previous = names


KINDS = {  # name: (what it does, opens its stream, acts on it)
    "sotw-huge": (
        "SotW EDS 3 x 1.2 MB names",
        open_stream,
        lambda c, t: sotw_names(c, t, 3, 1_200_000),
    ),
    "sotw-1k": (
        "SotW EDS 2,000 x 1,000 B names",
        open_stream,
        lambda c, t: sotw_names(c, t, 2000, 1000),
    ),
    "delta-huge": (
        "Delta EDS 3.5 MB names",
        open_delta,
        lambda c, t: delta_names(c, t, 1, 3_500_000),
    ),
    "delta-1k": (
        "Delta EDS 2,000 x 1,000 B names",
        open_delta,
        lambda c, t: delta_names(c, t, 2000, 1000),
    ),
    "delta-wildcard": ("Delta CDS * + made-up clusters", open_delta, delta_wildcard),
    "delta-churn": ("Delta EDS churn for 5 s", open_delta, lambda c, t: delta_churn(c, t, 5.0)),
}


async def one_kind(daemon: Daemon, kind: str, clients: int) -> str:
    """``clients`` of ``kind`` at once; RSS before, while they are connected, after."""
    what, opener, act = KINDS[kind]
    outcomes: dict[str, int] = {}
    channels = [
        grpc.aio.insecure_channel(daemon.target, options=OPTIONS + OWN_CONNECTION)
        for _ in range(clients)
    ]
    calls = [opener(channel) for channel in channels]
    before = mib(daemon.proc)

    async def run(call: grpc.aio.StreamStreamCall, tag: str) -> None:
        try:
            await act(call, tag)
            outcome = "held"
        except grpc.aio.AioRpcError as exc:
            outcome = f"{exc.code().name}: {(exc.details() or '')[:40]}"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    await asyncio.gather(*(run(call, f"{kind}{i}") for i, call in enumerate(calls)))
    during = mib(daemon.proc)
    for call in calls:
        call.cancel()
    for channel in channels:
        await channel.close()
    await asyncio.sleep(2)  # let registryd notice (a bench, not a test)
    listed = ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
    return f"{what}: {listed}; RSS {before} -> {during} -> {mib(daemon.proc)} MiB"


async def all_kinds(daemon: Daemon, clients: int, kinds: list[str]) -> None:
    for kind in kinds:
        print(await one_kind(daemon, kind, clients), flush=True)


def size_of(path: Path) -> int:
    return path.stat().st_size


async def phases(daemon: Daemon, args: argparse.Namespace, log: Path) -> None:
    before = mib(daemon.proc)
    outcome = await name_flood(daemon.target, args.clients, args.names)
    print(
        f"names: {args.clients} clients x {args.names} made-up EDS names ({outcome}); "
        f"RSS {before} -> {mib(daemon.proc)} MiB"
    )
    logged = size_of(log)
    started = time.monotonic()
    await nack_flood(daemon.target, args.nacks, args.nack_bytes)
    await asyncio.sleep(1)  # let registryd drain what it read (a bench, not a test)
    grown = size_of(log) - logged
    took = time.monotonic() - started
    print(
        f"nacks: {args.nacks} NACKs + {args.nacks} stale, "
        f"{args.nack_bytes} bytes each: {grown} bytes logged in {took:.1f} s"
    )
    if args.kind_clients:
        await all_kinds(daemon, args.kind_clients, args.kinds.split(","))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=30)
    ap.add_argument("--names", type=int, default=90000)
    ap.add_argument("--max-unknown", default=None, help="--xdsMaxUnknownNames for registryd")
    ap.add_argument("--nacks", type=int, default=60)
    ap.add_argument("--nack-bytes", type=int, default=3_000_000)
    ap.add_argument("--kind-clients", type=int, default=20, help="clients of each kind (0: none)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"of {', '.join(KINDS)}")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "se"
        config.mkdir()
        for i in range(5):
            (config / f"svc-{i}.yaml").write_text(service_yaml(i))
        log = Path(tmp) / "registryd.log"
        flags = [] if args.max_unknown is None else [f"--xdsMaxUnknownNames={args.max_unknown}"]
        with log.open("wb") as sink, registryd(config, *flags, stderr=sink) as daemon:
            # one event loop for every phase: grpc.aio keeps to the loop it started on
            asyncio.run(phases(daemon, args, log))


if __name__ == "__main__":
    main()
