"""A proxyless gRPC client, run as its own process so that ``GRPC_XDS_BOOTSTRAP`` is set
before gRPC loads.

    python grpc_client.py xds:///greeter.example:PORT /e2e.Greeter/SayHello \\
        --message e2e --stop-file STOP --deadline 30

It calls the unary method (raw bytes in and out) every ``--interval`` seconds and prints
one line per call, ``answer: <text>`` or ``error: <code>: <details>``, until the stop
file exists (exit 0) or the deadline passes (exit 3).  Exit 2 without a bootstrap.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("method")
    parser.add_argument("--message", default="e2e")
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--deadline", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    if not os.environ.get("GRPC_XDS_BOOTSTRAP"):
        print("error: GRPC_XDS_BOOTSTRAP is not set", flush=True)
        return 2

    import grpc  # only now: gRPC reads the bootstrap variable when it loads

    end = time.monotonic() + args.deadline
    with grpc.insecure_channel(args.target) as channel:
        call = channel.unary_unary(args.method)
        for _ in range(int(args.deadline / args.interval) + 1):
            if os.path.exists(args.stop_file):
                return 0
            if time.monotonic() >= end:
                break
            try:
                answer = call(args.message.encode(), timeout=2.0, wait_for_ready=True)
            except grpc.RpcError as exc:
                print(f"error: {exc.code().name}: {exc.details()}", flush=True)
            else:
                print(f"answer: {answer.decode(errors='replace')}", flush=True)
            time.sleep(args.interval)
    print("error: deadline passed before the stop file appeared", flush=True)
    return 3


if __name__ == "__main__":
    sys.exit(main())
