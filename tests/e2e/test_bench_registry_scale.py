"""``python -m bench.registry_scale`` runs end to end at tiny sizes for each registry type:
the server holds the services, registryd syncs them, and every change reaches the ADS
client, also after a churn.  A benchmark is not a timed test: no number it prints is
checked."""

from __future__ import annotations

import pytest

from bench import registry_scale
from tests.support.etcd_server import etcd_binary


@pytest.mark.parametrize("registry", registry_scale.REGISTRIES)
def test_runs_at_tiny_sizes(registry: str, capsys: pytest.CaptureFixture[str]) -> None:
    if registry == "etcd":
        etcd_binary()  # skipped without it (CI has it)
    registry_scale.main(
        [
            f"--registry={registry}",
            "--services=3",
            "--instances=2",
            "--idle=0.5",
            "--changes=3",
            "--timeout=60",
            "--change-timeout=30",
            "--churn=40",
            "--churn-seconds=0.5",
        ]
    )
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(f"{registry} "))
    assert "(3 changes, 0 missed)" in line, out
    assert "ready" in line and "idle CPU" in line and "req/s" in line
    # the churn: 20 changes, after which the client holds exactly the final state
    assert "churn: 20 changes in" in line and ", 0 services wrong" in line, out
