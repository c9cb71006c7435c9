"""Lint: ruff catches what tests cannot see, such as a test shadowed by a second of the same name."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUFF = pathlib.Path(sys.executable).parent / "ruff"


def test_ruff_check():
    """Does `ruff check` pass on the whole project (pyflakes, pycodestyle, bugbear, isort)?"""
    result = subprocess.run([str(RUFF), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format():
    """Is every Python file formatted as `make format` leaves it?"""
    result = subprocess.run(
        [str(RUFF), "format", "--check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
