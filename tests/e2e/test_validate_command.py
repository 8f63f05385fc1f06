"""``registryd validate`` as a pre-commit hook runs it: a new process, its exit status
and output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "serviceentries"


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "registryd", "validate", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_shipped_examples_are_clean() -> None:
    done = validate(str(EXAMPLES))
    assert (done.returncode, done.stdout, done.stderr) == (0, "No problems found in 3 files.\n", "")


def test_a_broken_file_exits_1_with_its_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("kind: ServiceEntry\nkind: ServiceEntry\n")
    done = validate(str(tmp_path), "-o", "json")
    assert done.returncode == 1, done.stderr
    assert '"code": "invalid-document"' in done.stdout
    assert "duplicate key 'kind'" in done.stdout


def test_usage_error_exits_2_with_one_line() -> None:
    done = validate()
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "registryd: error: validate: nothing to check; give --config, --configDir or files\n"
    )
