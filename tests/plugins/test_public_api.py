"""The built-in adapters are written against registryd's public API only, as a plugin
must be (see :mod:`registryd`): a test fails when one imports anything else."""

from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path

import pytest

import registryd
import registryd.model
from registryd.adapter import API_VERSION, AdapterContext

ADAPTERS = Path(__file__).resolve().parents[2] / "adapters"


def registryd_imports(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """``(module, names)`` of every ``registryd`` import in ``path`` (names empty for a
    plain ``import``); imports inside the adapters package itself are left out."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("registryd"):
                out.append((node.module, tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Import):
            out.extend((a.name, ()) for a in node.names if a.name.startswith("registryd"))
    return [(m, n) for m, n in out if not m.startswith("registryd.adapters")]


def public_names(module: str) -> set[str] | None:
    """The names ``module`` offers to adapters: a public module's ``__all__``, the listed
    names of another; None for a whole public module without ``__all__``."""
    if module in registryd.PUBLIC_MODULES:
        exported = getattr(importlib.import_module(module), "__all__", None)
        return None if exported is None else set(exported)
    return set(registryd.PUBLIC_NAMES.get(module, ()))


def violations(path: Path) -> list[str]:
    """The imports of ``path`` that are not registryd's public API: a module that is not
    public, or a name a public module does not export."""
    found = []
    for module, names in registryd_imports(path):
        allowed = public_names(module)
        if module in registryd.PUBLIC_MODULES and not names:
            continue  # import registryd.model
        if allowed is None:
            continue
        if not names or not set(names) <= allowed:
            found.append(f"{module} {', '.join(n for n in names if n not in allowed)}".strip())
    return found


def test_the_api_has_a_version() -> None:
    major, minor = (int(part) for part in API_VERSION.split("."))
    assert major >= 1 and minor >= 0


def test_the_adapter_context_holds_only_what_every_adapter_may_use() -> None:
    # registry-specific flags (--kubeconfig, --kubernetesApiQPS...) reach their registries
    # as settings; the context is what is common to all of them
    assert [f.name for f in dataclasses.fields(AdapterContext)] == ["domain"]
    assert AdapterContext(domain="corp.example").domain == "corp.example"
    with pytest.raises(TypeError):
        AdapterContext(kubeconfig="kc")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "path", sorted(ADAPTERS.rglob("*.py")), ids=lambda p: str(p.relative_to(ADAPTERS))
)
def test_built_in_adapters_import_only_the_public_api(path: Path) -> None:
    assert violations(path) == []


def test_the_check_catches_private_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from registryd.build import SnapshotBuilder\n"
        "import registryd.push\n"
        "from registryd.config import go_duration, load_registries\n"
        "from registryd.adapter import Replace\n"
        "from registryd.adapter import Built, follow\n"
        "from registryd.model import Service, dataclass\n"
        "from registryd import adapter\n"
    )
    assert violations(bad) == [
        "registryd.build SnapshotBuilder",
        "registryd.push",
        "registryd.config load_registries",
        "registryd.adapter Built",
        "registryd.model dataclass",
        "registryd adapter",
    ]


@pytest.mark.parametrize("model", ["Service", "Port", "Endpoint"])
def test_the_plugin_guide_lists_every_field_of_the_model(model: str) -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
    (row,) = [line for line in guide.splitlines() if line.startswith(f"| `{model}` |")]
    cls = getattr(registryd.model, model)
    assert [f.name for f in dataclasses.fields(cls) if f"`{f.name}`" not in row] == []
