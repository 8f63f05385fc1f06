"""Every fuzz target, from the modules that define them by surface: parsers of registry
objects and the SotW request handler (:mod:`tests.fuzz.targets`), Delta request streams
(:mod:`tests.fuzz.targets_xds`), registry answers as bodies (:mod:`tests.fuzz.targets_registries`),
and what the command-line tools read: debug-port answers and registryd.yaml
(:mod:`tests.fuzz.targets_tools`)."""

from __future__ import annotations

from tests.fuzz import targets, targets_registries, targets_tools, targets_xds
from tests.fuzz.targets import Target

__all__ = ["ALL"]

ALL: tuple[Target, ...] = (
    *targets.TARGETS,
    *targets_xds.TARGETS,
    *targets_registries.TARGETS,
    *targets_tools.TARGETS,
)
