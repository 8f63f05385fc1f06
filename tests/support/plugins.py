"""Installing test plugins the way pip would, without pip."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

__all__ = ["install"]


def install(files: Mapping[str, str], where: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write ``files`` (relative path -> text: modules and a ``*.dist-info`` with its
    ``entry_points.txt``) under ``where`` and put it on ``sys.path`` for this test, so
    entry-point discovery finds them as installed plugins; ``where``."""
    for name, text in files.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(text)
    monkeypatch.syspath_prepend(str(where))
    return where
