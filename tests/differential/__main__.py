"""Print what differs between istiod and registryd for ServiceEntry/WorkloadEntry inputs.

    python -m tests.differential examples/serviceentries ../shared/conformance/istio

    python -m tests.differential --registries examples/serviceentries

    python -m tests.differential --kubernetes

Each YAML file (or each directory's files, one at a time) is one input; both servers
read it (:class:`tests.differential.servers.Pair`), and every node of
:data:`~tests.differential.servers.NODES` is compared.  With ``--registries`` the
registry states of :mod:`tests.differential.registry_states` are compared too, istiod
reading them from registryd over MCP (:class:`tests.differential.mcp.McpPair`); with
``--kubernetes`` the Kubernetes states of :mod:`tests.differential.kube_states`, both
reading one kube-apiserver (:class:`tests.differential.kube.KubePair`).  Prints,
per field path, how many differences and one example, then the totals and the run time.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from tests.differential.kube import KubePair
from tests.differential.kube_states import STATES as KUBE_STATES
from tests.differential.mcp import McpPair
from tests.differential.registry_states import STATES
from tests.differential.report import (
    Tally,
    differences,
    kube_differences,
    mcp_differences,
    print_groups,
)
from tests.differential.servers import Ambiguous, IstiodRefused, Pair, istio_inputs


def inputs(paths: list[str]) -> list[Path]:
    return istio_inputs(Path(p) for p in paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="ServiceEntry/WorkloadEntry files or trees")
    parser.add_argument(
        "--registries",
        action="store_true",
        help="also compare istiod fed over MCP on the registry states (etcd, Consul, Nacos)",
    )
    parser.add_argument(
        "--kubernetes",
        action="store_true",
        help="also compare both reading one kube-apiserver on the Kubernetes states",
    )
    parser.add_argument("--show", type=int, default=1, help="examples shown per field path")
    parser.add_argument("--workdir", help="keep the servers' files and logs here")
    asyncio.run(report(parser.parse_args()))


async def report(args: argparse.Namespace) -> None:
    started = time.monotonic()
    total = Tally()
    refusals = ambiguous = 0
    with tempfile.TemporaryDirectory(prefix="differential-") as tmp:
        if args.paths:  # the file pair, for file inputs only
            pair = Pair(Path(args.workdir or tmp))
            try:
                for path in inputs(args.paths):
                    try:
                        outcome = await differences(pair, path.read_text())
                    except Ambiguous as why:
                        print(f"not compared: {path}: {why}")
                        ambiguous += 1
                        continue
                    except IstiodRefused as refused:
                        both = "both refuse it" if refused.registryd_errors else "REGISTRYD TOOK IT"
                        print(f"istiod refused {path}: {both}")
                        refusals += 0 if refused.registryd_errors else 1
                        continue
                    total.add(outcome, path.name)
            finally:
                pair.stop()
        if args.registries:
            mcp = McpPair(Path(args.workdir or tmp) / "mcp").start()
            try:
                for state in STATES:
                    total.add(await mcp_differences(mcp, state), state.name)
            finally:
                mcp.stop()
        if args.kubernetes:
            kube = KubePair(Path(args.workdir or tmp) / "kubernetes").start()
            try:
                for kube_state in KUBE_STATES:
                    total.add(await kube_differences(kube, kube_state), kube_state.name)
            finally:
                kube.stop()
    count = print_groups(total.by_group, args.show)
    print(
        f"\n{total.views} node views of {len(inputs(args.paths))} inputs"
        f"{f' and {len(STATES)} registry states' if args.registries else ''}"
        f"{f' and {len(KUBE_STATES)} Kubernetes states' if args.kubernetes else ''}, "
        f"{total.resources} istiod resources: {count} differences on "
        f"{len(total.by_group)} field paths ({time.monotonic() - started:.1f} s); "
        f"{refusals} inputs istiod refused and registryd took; {ambiguous} not compared "
        "(istiod's answer is not one definition: docs/xds.md rows)"
    )


if __name__ == "__main__":
    main()
