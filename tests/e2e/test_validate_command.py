"""``registryd validate`` as a pre-commit hook runs it: a new process, its exit status
and output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


# -- hostile files: each is its own error, nothing blocks, no traceback -----------------

HANG_GUARD = 60.0  # seconds before a run counts as hung (the runs take well under one)
SERVICE_ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.example]
  ports:
  - {{number: {port}, name: http, protocol: HTTP}}
"""


def hostile(tmp_path: Path, kind: str, text: str = "") -> Path:
    """A file that is not what it should be: ``fifo``, ``loop`` (a symlink to itself)
    or a regular file of ``text``."""
    path = tmp_path / f"{kind}.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "loop":
        path.symlink_to(path.name)
    else:
        path.write_text(text)
    return path


def test_hostile_files_are_each_their_own_error_and_the_others_are_checked(
    tmp_path: Path,
) -> None:
    good = hostile(tmp_path, "good", SERVICE_ENTRY.format(name="web", port=80))
    files = {
        "huge-integer": hostile(
            tmp_path, "huge-integer", SERVICE_ENTRY.format(name="db", port="9" * 4301)
        ),
        "deep": hostile(tmp_path, "deep", "[" * 100_000 + "]" * 100_000),
        "fifo": hostile(tmp_path, "fifo"),
        "loop": hostile(tmp_path, "loop"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "registryd", "validate", str(good), *map(str, files.values())],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert (done.returncode, done.stderr) == (1, ""), done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "4 error(s), 0 warning(s) in 5 files."
    errors = {name: [x for x in lines if f"] {path}" in x] for name, path in files.items()}
    assert all(len(found) == 1 for found in errors.values()), done.stdout
    assert not any(str(good) in line for line in lines), done.stdout
    assert "4300 digits" in errors["huge-integer"][0]
    assert "nested deeper than 64" in errors["deep"][0]
    assert errors["fifo"][0].endswith(": not a regular file (a FIFO)")
    assert errors["loop"][0].endswith(": symlink loop")


def test_a_device_is_refused_unread() -> None:
    done = validate("/dev/zero")  # read, it would never end
    assert done.returncode == 1, done.stderr
    assert "/dev/zero: not a regular file (a character device)" in done.stdout


CONFIGS = {
    "deep": ("registries: " + "[" * 100_000 + "]" * 100_000, "nested deeper than 64"),
    "huge-integer": (
        "registries:\n- {name: a, type: memory, priority: " + "9" * 5000 + "}\n",
        "4300 digits",
    ),
    "aliases": (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{b}: &{b} [*{a}, *{a}, *{a}, *{a}, *{a}, *{a}]\n"
            for a, b in zip("abcdefgh", "bcdefghi", strict=True)
        )
        + "registries: *i\n",
        "max_expanded",
    ),
    "not-utf8": ("", "not UTF-8"),
    "fifo": ("", "not a regular file (a FIFO)"),
    "loop": ("", "symlink loop"),
}


def config_file(tmp_path: Path, name: str) -> tuple[Path, str]:
    text, expected = CONFIGS[name]
    if name == "not-utf8":
        path = tmp_path / "registryd.yaml"
        path.write_bytes(b"registries: [\xff\xfe]\n")
        return path, expected
    return hostile(tmp_path, name if name in ("fifo", "loop") else "registryd", text), expected


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_hostile_registryd_yaml_is_its_own_error(tmp_path: Path, name: str) -> None:
    config, expected = config_file(tmp_path, name)
    done = subprocess.run(
        [sys.executable, "-m", "registryd", "validate", "--config", str(config), "-o", "json"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert (done.returncode, done.stderr) == (1, ""), done.stderr
    (finding,) = json.loads(done.stdout)["findings"]
    assert finding["code"] == "invalid-config"
    assert expected in finding["message"]
