"""Real servers built from their Go modules by ``scripts/build-servers`` (istiod, Consul,
kube-apiserver): :func:`server_binary` finds or builds one.

Without Go, or if the build fails, the test is skipped with the reason (or fails when the
environment variable ``CI`` is set, as :func:`~tests.support.certs.missing` does).  A
first build takes minutes and shows no progress under pytest: run
``scripts/build-servers NAME`` once beforehand to watch it.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from tests.support.certs import missing

__all__ = ["BUILD_SERVERS", "BUILD_TIMEOUT", "server_binary"]

BUILD_SERVERS = Path(__file__).resolve().parents[2] / "scripts" / "build-servers"
BUILD_TIMEOUT = 30 * 60.0  # seconds: a cold build compiles all of a server's dependencies


@functools.cache
def _build(name: str) -> tuple[str | None, str]:
    """(path, "") once ``scripts/build-servers NAME`` succeeded, else (None, why); run
    once per test session and name, whatever it gave."""
    try:
        done = subprocess.run(
            [str(BUILD_SERVERS), name],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"scripts/build-servers {name}: {exc}"
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        return None, said[-1] if said else f"scripts/build-servers exited {done.returncode}"
    return done.stdout.strip(), ""


def server_binary(name: str) -> str:
    """The path of server ``name``'s binary (a name ``scripts/build-servers`` knows), built
    first if need be; skips the test if it cannot be had (fails it when ``CI`` is set)."""
    path, why = _build(name)
    if path is None:
        missing(f"no {name}: {why}")
    return path
