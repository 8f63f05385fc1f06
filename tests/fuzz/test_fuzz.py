"""Property: any input gives a result or the module's own validation error, never another
exception (see :mod:`tests.fuzz.targets`).  A short profile runs with the normal tests;
``pytest -m fuzz`` (or ``bench/fuzz.py``, which also prints numbers) runs the long one."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz.catalog import ALL as TARGETS
from tests.fuzz.targets import Target

SHORT = 40  # inputs per target in the normal test run (a few seconds in all)
LONG = 100_000 // len(TARGETS) + 1  # inputs per target with -m fuzz: 100,000 in all


def check(target: Target, value: Any) -> None:
    try:
        target.call(value)
    except target.rejects:
        pass


def run(target: Target, examples: int) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(target.inputs)
    def prop(value: Any) -> None:
        check(target, value)

    prop()


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_short_profile(target: Target) -> None:
    run(target, SHORT)


@pytest.mark.fuzz
@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_long_profile(target: Target) -> None:
    run(target, LONG)
