"""A plain gRPC server for the proxyless example: ``Greeter.SayHello`` answers
``hello <name> from <server name>``.

    python examples/grpc/server.py                      # 127.0.0.1:50051, as greeter.yaml says
    python examples/grpc/server.py --port 50052 --name greeter-2

It knows nothing of xDS: the client finds it through registryd.  Messages are protobuf
``google.protobuf.StringValue`` (no generated code needed).  It prints ``serving on
HOST:PORT`` once it listens, and stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf.wrappers_pb2 import StringValue

SERVICE = "registryd.example.Greeter"


def serve(host: str, port: int, name: str) -> grpc.Server:
    """Start the server on ``host:port``; it answers as ``name``."""

    def say_hello(request: StringValue, context: grpc.ServicerContext) -> StringValue:
        return StringValue(value=f"hello {request.value} from {name}")

    handler = grpc.unary_unary_rpc_method_handler(
        say_hello,
        request_deserializer=StringValue.FromString,
        response_serializer=StringValue.SerializeToString,
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"SayHello": handler}),)
    )
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise SystemExit(f"cannot listen on {host}:{port}")
    server.start()
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--name", default="greeter-1", help="how the answers sign")
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server = serve(args.host, args.port, args.name)
    print(f"serving on {args.host}:{args.port}", flush=True)
    stop.wait()
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
