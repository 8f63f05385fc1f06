"""``registryd validate`` on Istio's own accepted and rejected objects, read in place:
golden output (text and JSON), and the same errors as the file registry of the daemon."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from registryd.adapters.serviceentry.tree import FileTree
from registryd.adapters.serviceentry.yamlsafe import shorten
from registryd.tools import cli
from registryd.tools.analyze import Severity
from registryd.tools.configcheck import check
from tests.adapters.test_serviceentry_hostile import BOMB

ISTIO = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "istio"
GOLDEN = Path(__file__).parent / "golden" / "validate"
UPDATE = os.environ.get("REGISTRYD_UPDATE_GOLDEN") == "1"  # rewrite the golden files

needs_istio = pytest.mark.skipif(not ISTIO.is_dir(), reason="Istio conformance data absent")

VALID = ["serviceentry-valid.yaml", "workloadentry-valid.yaml", "static-weighted-se.yaml"]
INVALID = ["serviceentry-invalid.yaml", "workloadentry-invalid.yaml"]
CASES = {
    "valid": (VALID, 0),  # warnings only
    "invalid": (INVALID, 1),
    "all": (["."], 1),  # with the Go-templated benchmark config: invalid YAML
}


@needs_istio
@pytest.mark.parametrize("output", ["text", "json"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_output_on_istio_conformance_data(
    case: str, output: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files, status = CASES[case]
    monkeypatch.chdir(ISTIO)
    assert cli.main(["validate", "-o", output, *files]) == status
    got = capsys.readouterr().out
    golden = GOLDEN / f"{case}.{'txt' if output == 'text' else 'json'}"
    if UPDATE:
        golden.write_text(got)
    assert got == golden.read_text()


@needs_istio
def test_every_rejected_istio_object_is_one_error_with_its_document_and_line() -> None:
    report = check(paths=[str(ISTIO / name) for name in INVALID])
    # each document also has Istio's test annotation ``_err``: an unknown field of its own
    errors = [f for f in report.findings if f.code == "invalid-document"]
    assert [(Path(f.source).name, f.document) for f in errors] == [
        *(("serviceentry-invalid.yaml", n) for n in range(1, 13)),
        *(("workloadentry-invalid.yaml", n) for n in range(1, 8)),
    ]
    assert all(f.line is not None and f.line > 0 for f in errors)
    assert all(f.message.startswith(f"document {f.document} (") for f in errors)


def daemon_errors(root: Path) -> dict[str, str]:
    """The per-file errors the file registry reports after its first reading of ``root``."""
    tree = FileTree(str(root))
    tree.refresh()
    return dict(tree.problems().errors)


def validate_errors(root: Path) -> dict[str, str]:
    """validate's errors of ``root``, joined per file as the daemon joins them: a broken
    document's unknown fields (errors of their own in validate, with their lines) go
    first in its one message, as the daemon names them."""
    per_file: dict[str, list[str]] = {}
    unknown: dict[tuple[str, int | None], list[str]] = {}
    for finding in check(paths=[str(root)]).findings:
        if finding.code == "unknown-field":
            unknown.setdefault((finding.source, finding.document), []).append(finding.message)
        elif finding.severity is Severity.ERROR:
            message = finding.message
            fields = unknown.pop((finding.source, finding.document), [])
            if fields:
                label, _, rest = message.partition(": ")
                named = [field.partition(": ")[2] for field in fields]
                message = f"{label}: {'; '.join([*named, rest])}"
            per_file.setdefault(finding.source, []).append(message)
    return {source: shorten(f"{source}: {' | '.join(m)}") for source, m in per_file.items()}


@needs_istio
def test_errors_are_the_daemons_on_istio_data() -> None:
    expected = daemon_errors(ISTIO)
    assert len(expected) == 3
    assert validate_errors(ISTIO) == expected


def test_errors_are_the_daemons_on_hostile_files(tmp_path: Path) -> None:
    good = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: w}\n"
    files = {
        "duplicate-key.yaml": good + "spec: {address: 10.0.0.1, address: 10.0.0.2}\n",
        "bomb.yaml": BOMB,
        "not-utf8.yaml": b"kind: \xff\xfe\n",
        "too-large.yaml": "# " + "x" * (1 << 20) + "\n",
        "scalar.yaml": "just a string\n",
        "kind.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n",
        "mixed.yaml": good + "spec: {address: 10.0.0.1}\n---\n" + good + "spec: {}\n",
        "nested/deep.yaml": "a: " + "[" * 70 + "]" * 70 + "\n",
    }
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    (tmp_path / "elsewhere.yaml").symlink_to("/")
    expected = daemon_errors(tmp_path)
    assert len(expected) == len(files) + 1
    assert validate_errors(tmp_path) == expected
