"""The packages show the data path, and imports follow it (docs/architecture.md): a
module imports only from its own layer or the layers below.  Read from the source with
:mod:`ast`, imports inside functions and ``TYPE_CHECKING`` blocks included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "registryd"

# layer of each package, bottom (0) to top; the top-level modules are the public API
LAYERS = {
    "": 0,  # adapter, model, errors, settings, ratelimit, jsonbound, offloop, config
    "base": 0,
    "registry": 1,
    "xds": 1,
    "build": 2,
    "workers": 3,
    "web": 4,
    "daemon": 5,
    "tools": 6,
    "testing": 7,  # the plugin author's tools: may use anything
}
# xds (serving) and registry (the store) are siblings: neither may import the other
SIBLINGS = {("xds", "registry"), ("registry", "xds")}


def package_of(module: str) -> str | None:
    """``build`` for ``registryd.build.clusters``, ``""`` for a top-level module; None
    for a module outside registryd (the adapters are plugins, not layers)."""
    parts = module.split(".")
    if parts[0] != "registryd" or (len(parts) > 1 and parts[1] == "adapters"):
        return None
    if parts[1:] == ["__main__"]:
        return "tools"  # ``python -m registryd``: the command line
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS):
        return parts[1]
    return ""


def imports(path: Path) -> list[str]:
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found.extend(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
    return [m for m in found if m.startswith("registryd") and m != module]


def violations() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = package_of(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        assert here is not None
        for target in imports(path):
            there = package_of(target)
            if there is None or there == here or there not in LAYERS:
                continue
            if LAYERS[there] > LAYERS[here] or (here, there) in SIBLINGS:
                out.append(f"{path.relative_to(PACKAGE.parent)} imports {target}")
    return sorted(set(out))


def test_no_import_runs_back_up_a_layer() -> None:
    assert violations() == []


def test_the_check_sees_imports() -> None:  # so that an empty list above means something
    builder = imports(PACKAGE / "build" / "builder.py")
    assert any(package_of(m) == "registry" for m in builder)
    assert any(package_of(m) == "xds" for m in builder)
