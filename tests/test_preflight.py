"""The preflight: no student is graded unless the course's own solution gets full marks here.

A wrong set-up (no dataset, no weights, another version, no sandbox) used to grade the
solution 2/13, status "graded", and every student with it. Now grading stops at once,
writes nothing to the gradebook, and says in two lines what is wrong.
"""

from __future__ import annotations

import csv
import os
import pathlib
import subprocess
import sys

import pytest
import sample
from traitlets.config.loader import PyFileConfigLoader

from grader import grading, preflight
from grader.course import ASSIGNMENT, NOTEBOOK, db_url
from grader.course import nbgrader as run_nbgrader
from grader.execute import SandboxedExecute

ROOT = pathlib.Path(__file__).resolve().parents[1]
CELL_TIMEOUT = 120


def executor(course: pathlib.Path) -> SandboxedExecute:
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(course)
    config.SandboxedExecute.cell_timeout = CELL_TIMEOUT
    return SandboxedExecute(config=config)


def submissions_in_gradebook(course: pathlib.Path) -> list[str]:
    from nbgrader.api import Gradebook

    with Gradebook(db_url(course)) as gradebook:
        return [s.student.id for s in gradebook.assignment_submissions(ASSIGNMENT)]


def test_environment_problems_say_where_things_go(monkeypatch, tmp_path):
    """Does a missing weights or dataset folder get one sentence that says where it goes?"""
    options = grading.Options()
    monkeypatch.delenv("ALPACA_WEIGHTS_DIR", raising=False)
    assert "ALPACA_WEIGHTS_DIR is not set" in preflight._environment_problem(options)
    monkeypatch.setenv("ALPACA_WEIGHTS_DIR", str(tmp_path))
    assert "holds no MobileNetV2 weights file" in preflight._environment_problem(options)
    (tmp_path / "weights.h5").write_bytes(b"")
    monkeypatch.delenv("ALPACA_DATASET", raising=False)
    assert "ALPACA_DATASET is not set" in preflight._environment_problem(options)
    assert "'alpaca/' and 'not alpaca/'" in preflight._environment_problem(options)
    monkeypatch.setenv("ALPACA_DATASET", str(tmp_path))
    assert f"ALPACA_DATASET={tmp_path} is not a folder" in preflight._environment_problem(options)


@pytest.mark.slow
def test_batch_with_data_and_weights_unset_grades_nobody_and_says_why(tmp_path):
    """With the variables unset, does the batch stop before any grade, and say what to set?

    (It used to give the course's own solution 2/13, status "graded".)
    """
    sample.environment()
    course = sample.make_course(tmp_path / "course")
    sample.write_submission(tmp_path / "in", "ann", sample.solution_notebook(course))
    unset = ("ALPACA_DATASET", "ALPACA_WEIGHTS_DIR")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    result = subprocess.run(
        [sys.executable, "-m", "grader.batch", str(tmp_path / "in"), "--course", str(course)]
        + ["--workers", "1", "--cell-timeout", str(CELL_TIMEOUT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode != 0, result.stdout + result.stderr[-3000:]
    assert "Grading stopped: the course's own solution gets" in result.stderr, result.stderr
    assert "ALPACA_WEIGHTS_DIR is not set" in result.stderr, result.stderr[-3000:]
    assert "gets 2/13" in result.stderr, result.stderr[-3000:]
    grades = course / "batch" / "grades.csv"
    with open(grades, newline="", encoding="utf-8") as handle:
        assert list(csv.DictReader(handle)) == []
    assert submissions_in_gradebook(course) == []
    assert not (course / "autograded" / "ann").exists()


@pytest.mark.slow
def test_nbgrader_autograde_with_weights_missing_stops(tmp_path):
    """Does `nbgrader autograde` refuse to grade when the weights folder holds no weights?"""
    sample.environment()
    course = sample.make_course(tmp_path / "course")
    submitted = course / "submitted" / "ann" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    sample.write_submission(course / "submitted", "ann", sample.solution_notebook(course))
    assert submitted.is_file()
    (tmp_path / "empty").mkdir()
    env = {**os.environ, "ALPACA_WEIGHTS_DIR": str(tmp_path / "empty")}
    result = run_nbgrader(
        ["autograde", ASSIGNMENT, f"--SandboxedExecute.cell_timeout={CELL_TIMEOUT}"],
        cwd=course,
        env=env,
        timeout=900,
    )
    assert result.returncode != 0, result.stdout[-3000:]
    assert "holds no MobileNetV2 weights file" in result.stdout, result.stdout[-3000:]
    assert not (course / "autograded" / "ann" / ASSIGNMENT / f"{NOTEBOOK}.ipynb").exists()


@pytest.mark.slow
def test_a_passed_preflight_is_kept_per_configuration(tmp_path, monkeypatch):
    """Is a passed preflight reused (no grading) in the same configuration, and redone in another?"""
    sample.environment()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(preflight, "CACHE", tmp_path / "cache" / "alpaca-grader" / "preflight")
    monkeypatch.setattr(preflight, "_checked", {})
    course = sample.make_course(tmp_path / "course")
    executor(course).preflight(ASSIGNMENT, NOTEBOOK)  # grades the solution: 13/13
    assert len(list(preflight.CACHE.glob("*.json"))) == 1

    calls = []

    def counting_grade(*args, **kwargs):
        calls.append(args)
        raise AssertionError("graded again")

    monkeypatch.setattr(grading, "grade", counting_grade)
    monkeypatch.setattr(preflight, "_checked", {})  # a new process: only the disk cache
    executor(course).preflight(ASSIGNMENT, NOTEBOOK)
    assert calls == []
    # Another configuration (the dataset elsewhere) is checked again.
    monkeypatch.setenv("ALPACA_DATASET", str(tmp_path))
    with pytest.raises(AssertionError, match="graded again"):
        executor(course).preflight(ASSIGNMENT, NOTEBOOK)
    assert len(calls) == 1
