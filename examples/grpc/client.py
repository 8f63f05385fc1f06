"""A proxyless gRPC client for the example: it dials ``xds:///greeter.example:50051``, so
gRPC itself asks registryd (over ADS, as configured by ``bootstrap.json``) for the
listener, route, cluster and endpoints of that name, then calls the server directly.

    python examples/grpc/client.py                          # 3 calls, prints each answer
    python examples/grpc/client.py --count 10 --message you

``GRPC_XDS_BOOTSTRAP`` names the bootstrap file; when it is not set, ``bootstrap.json``
beside this script is used (registryd on 127.0.0.1:15010).  Prints ``answer: <text>`` or
``error: <code>: <details>`` per call; exits 0 when every call was answered, else 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SERVICE = "registryd.example.Greeter"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="xds:///greeter.example:50051")
    parser.add_argument("--message", default="world")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    args = parser.parse_args()
    # gRPC reads the bootstrap when it creates its first xDS channel: set it before that
    bootstrap = Path(__file__).with_name("bootstrap.json")
    os.environ.setdefault("GRPC_XDS_BOOTSTRAP", str(bootstrap))

    import grpc
    from google.protobuf.wrappers_pb2 import StringValue

    failures = 0
    with grpc.insecure_channel(args.target) as channel:
        say_hello = channel.unary_unary(
            f"/{SERVICE}/SayHello",
            request_serializer=StringValue.SerializeToString,
            response_deserializer=StringValue.FromString,
        )
        for _ in range(args.count):
            try:
                # wait_for_ready: the first call waits while xDS resolves the name
                answer = say_hello(
                    StringValue(value=args.message), timeout=args.timeout, wait_for_ready=True
                )
            except grpc.RpcError as exc:
                failures += 1
                print(f"error: {exc.code().name}: {exc.details()}", flush=True)
            else:
                print(f"answer: {answer.value}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
