"""registryd against a real istiod on generated ServiceEntry/WorkloadEntry inputs
(:mod:`tests.differential.generate`).

* the generator's own checks (no servers): every input is YAML that registryd's parser
  accepts, never the harness's marker, names unique per kind and namespace;
* the short profile: a few dozen inputs, the same ones on every run;
* the long profile (``pytest -m differential_long``): 5,000 inputs, shrunk to a
  smallest one on a difference.

Both profiles expect no difference at all.  ``python -m tests.differential.generate``
prints every difference of many inputs, grouped by field path; the smallest input of
each, once fixed, becomes an input of ``corpus/``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, reject, settings

from registryd.adapters.serviceentry.schema import parse_file
from tests.differential.generate import inputs
from tests.differential.report import differences
from tests.differential.servers import Ambiguous, IstiodRefused, Pair

SHORT = 40  # inputs of the short profile
LONG = 5_000  # inputs of the long profile


def _settings(examples: int, *phases: Phase) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=phases,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@given(text=inputs())
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_generated_inputs_are_valid_yaml_registryd_parses(text: str) -> None:
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert docs
    names = [(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs]
    assert len(set(names)) == len(names)
    parsed = parse_file(text, "generated.yaml")
    assert len(parsed.documents) == len(docs)
    for doc in [d for d in docs if d["kind"] == "ServiceEntry"]:
        spec: dict[str, Any] = doc["spec"]
        assert not any("sync.registryd.test" in h for h in spec.get("hosts", ()))
        assert all(p["number"] != 1 for p in spec.get("ports", ()))


def _agree(pair: Pair, text: str) -> None:
    try:
        outcome = asyncio.run(differences(pair, text))
    except Ambiguous:
        reject()  # a docs/xds.md row: istiod's answer is not one definition
    except IstiodRefused as refused:  # the generator's inputs are all meant to be valid
        raise AssertionError(
            f"istiod refused a generated input (registryd: {refused.registryd_errors or 'took it'})"
            f":\n{text}"
        ) from None
    found = "\n".join(f"[{key}] {d}" for key, d in outcome.found)
    assert not outcome.found, f"differences for the input\n{text}\n{found}"


@given(text=inputs())
@_settings(SHORT, Phase.explicit, Phase.generate)  # no shrinking: a short, fixed run
def test_istiod_agrees_on_generated_inputs(pair: Pair, text: str) -> None:
    _agree(pair, text)


@pytest.mark.differential_long
@given(text=inputs())
@_settings(LONG, Phase.explicit, Phase.generate, Phase.shrink)
def test_istiod_agrees_on_generated_inputs_long(pair: Pair, text: str) -> None:
    _agree(pair, text)
