"""House habits, checked by the test command itself (so CI and a fresh clone run them): ruff's lint
and format check over the repository, and mypy over the package, configured in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    "check", [("check", "."), ("format", "--check", ".")], ids=["lint", "format"]
)
def test_ruff(check):
    result = _run(sys.executable, "-m", "ruff", *check)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy():
    # Files and strictness come from [tool.mypy] in pyproject.toml.
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr
