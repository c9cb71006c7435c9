"""The grader as installed: run from any folder, the environment not activated, anywhere.

`make` installs the `grader` package into `.venv`, so `.venv/bin/python -m grader.batch`
works from any folder with a plain shell: no PYTHONPATH, no `.venv/bin` on PATH
(nbgrader runs `alembic`, which the grader finds beside its Python), a course that
is not this repository's.
"""

from __future__ import annotations

import csv
import pathlib
import shutil
import subprocess
import tempfile

import pytest
import sample

from grader import batch
from tools import build

ROOT = pathlib.Path(__file__).resolve().parents[1]
CELL_TIMEOUT = 120


def standalone_course(dest: pathlib.Path) -> pathlib.Path:
    """A course of its own, away from this repository: files copied, no gradebook yet."""
    shutil.copytree(
        build.COURSE / "source",
        dest / "source",
        symlinks=False,
        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
    )
    shutil.copyfile(build.COURSE / "nbgrader_config.py", dest / "nbgrader_config.py")
    return dest


def grade_solution(python: str, where: pathlib.Path) -> tuple[subprocess.CompletedProcess, dict]:
    """Grade the master's solution with ``python -m grader.batch``, run from ``where``."""
    sample.environment()
    course = standalone_course(where / "course")
    folder = where / "helper"
    helper = sample.make_course(folder)  # only to build the solution notebook
    sample.write_submission(where / "in", "own_solution", sample.solution_notebook(helper))
    shutil.rmtree(folder)
    result = subprocess.run(
        [python, "-m", "grader.batch", "in", "--course", "course", "--workers", "1"]
        + ["--cell-timeout", str(CELL_TIMEOUT)],
        cwd=where,
        env=sample.instructor_environment(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    rows = {}
    grades = course / "batch" / "grades.csv"
    if grades.is_file():
        with open(grades, newline="", encoding="utf-8") as handle:
            rows = {row["student"]: row for row in csv.DictReader(handle)}
    return result, rows


@pytest.mark.slow
def test_installed_batch_grades_from_any_folder_without_activating(tmp_path):
    """Does `.venv/bin/python -m grader.batch`, run elsewhere in a plain shell, grade a new course?"""
    result, rows = grade_solution(str(ROOT / ".venv" / "bin" / "python"), tmp_path)
    assert result.returncode == 0, (
        "`.venv/bin/python -m grader.batch` failed outside the repository, without "
        f"activating the environment:\n{result.stderr[-3000:]}"
    )
    assert "alembic" not in result.stderr
    assert (tmp_path / "course" / "gradebook.db").is_file()
    assert float(rows["own_solution"]["total"]) == sample.TOTAL, rows
    assert rows["own_solution"]["status"] == "graded"


@pytest.mark.slow
def test_course_and_environment_under_tmp():
    """Does a checkout under /tmp, its course and its .venv included, grade the solution?"""
    with tempfile.TemporaryDirectory(prefix="alpaca-checkout-", dir="/tmp") as temp:
        checkout = pathlib.Path(temp)
        # The environment as this checkout's own .venv (a link keeps the test quick).
        (checkout / ".venv").symlink_to((ROOT / ".venv").resolve())
        result, rows = grade_solution(str(checkout / ".venv" / "bin" / "python"), checkout)
        assert result.returncode == 0, result.stderr[-3000:]
        assert float(rows["own_solution"]["total"]) == sample.TOTAL, rows
        assert rows["own_solution"]["status"] == "graded"


def test_batch_exits_non_zero_on_a_grader_error(tmp_path, monkeypatch, capsys):
    """Does a batch where one submission hit a grader error exit 1 and say so?"""

    def fake_run(*args, **kwargs):
        return [
            {"student": "ann", "source": "ann", "status": "graded"},
            {
                "student": "bob",
                "source": "bob",
                "status": "grader error: RuntimeError: Error during deserialization",
            },
        ]

    monkeypatch.setattr(batch, "run", fake_run)
    code = batch.main([str(tmp_path), "--course", str(tmp_path), "--no-sandbox"])
    captured = capsys.readouterr()
    assert code == 1, captured
    assert "bob (bob): grader error: RuntimeError" in captured.out
    assert "1 submission(s) hit a grader error" in captured.err
