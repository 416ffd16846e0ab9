"""The tree stays ``ruff check`` clean and ``ruff format``-ted (issue #17: style is checked in CI).

Runs the ruff the test extra installs, over the files git tracks; a failure prints what to run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        import ruff  # noqa: F401  (the test extra installs it)
    except ImportError:
        pytest.skip("ruff is not installed: pip install -e '.[test]'")
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_check_is_clean() -> None:
    result = _ruff("check", "--no-cache", ".")
    assert result.returncode == 0, f"run `ruff check --fix .`:\n{result.stdout}{result.stderr}"


def test_ruff_format_is_applied() -> None:
    result = _ruff("format", "--check", "--no-cache", ".")
    assert result.returncode == 0, f"run `ruff format .`:\n{result.stdout}{result.stderr}"
