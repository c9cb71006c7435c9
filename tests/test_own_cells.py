"""A student's own cells count, and a cell past its time limit is interrupted, not lost.

Learners add cells for imports, constants and helpers; nbgrader and the learner's own
kernel run every cell. Grading runs the cells a student added or changed, in notebook
order, in the student's sandbox. A cell that runs past its time limit is interrupted
inside the sandbox (as nbgrader interrupts the kernel), so what it defined before
stays; only a kernel that ignores the interrupt is killed by the host.
"""

from __future__ import annotations

import copy

import nbformat
import pytest
import sample

from grader import grading, plan
from tools import build

STEP_SECONDS = 20


def with_cell_before(notebook, grade_id: str, source: str):
    """A copy of ``notebook`` with a new code cell (no nbgrader metadata) before ``grade_id``."""
    notebook = copy.deepcopy(notebook)
    index = next(
        i
        for i, cell in enumerate(notebook.cells)
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id
    )
    notebook.cells.insert(index, nbformat.v4.new_code_cell(source))
    return notebook


def dropout_from_own_cell(solution):
    """The issue's notebook: alpaca_model uses DROPOUT_RATE, set in a cell the student added."""
    notebook = with_cell_before(solution, "alpaca_model", "DROPOUT_RATE = 0.2")
    cell = sample.cell(notebook, "alpaca_model")
    assert "Dropout(0.2)" in cell.source, cell.source
    cell.source = cell.source.replace("Dropout(0.2)", "Dropout(DROPOUT_RATE)")
    return notebook


def test_plan_runs_added_and_changed_cells_in_notebook_order():
    """Does the plan run a student's added cells before the graded cell they precede, and no course cell?"""
    master = build.master_notebook()
    student = with_cell_before(master, "alpaca_model", "DROPOUT_RATE = 0.2")
    student = with_cell_before(student, "data_augmenter", "import math")
    student.cells.append(nbformat.v4.new_code_cell("print('after the last graded cell')"))
    names = [step.grade_id for step in plan.steps(master, student)]
    positions = {name: i for i, name in enumerate(names) if plan.own_cell_number(name) is not None}
    assert len(positions) == 2, names
    first, second = sorted(positions, key=positions.get)
    assert names[names.index(first) + 1] == "data_augmenter"
    assert names[names.index(second) + 1] == "alpaca_model"
    assert student.cells[plan.own_cell_number(first) - 1].source == "import math"
    assert student.cells[plan.own_cell_number(second) - 1].source == "DROPOUT_RATE = 0.2"
    # The course's own display and training cells, unchanged, are not run.
    assert plan.steps(master, master) == plan.steps(master)
    assert not [n for n in (s.grade_id for s in plan.steps(master, master)) if "your-cell" in n]


def score(outcome, master) -> float:
    from grader.course import grade_cells

    return sum(
        points
        for name, points in grade_cells(master)
        if outcome.verdicts.get(name) and all(v["passed"] for v in outcome.verdicts[name])
    )


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    sample.environment()
    return sample.make_course(tmp_path_factory.mktemp("own") / "course")


def grade(course, notebook):
    from nbgrader.utils import find_all_files

    source = course / "source" / build.ASSIGNMENT
    master = nbformat.read(source / f"{build.ASSIGNMENT}.ipynb", as_version=4)
    files = find_all_files(str(source), [".ipynb_checkpoints", "*.pyc", "__pycache__", "*.ipynb"])
    files = [f for f in files if not f.endswith(f"{build.ASSIGNMENT}.py")]
    options = grading.Options(step_seconds=STEP_SECONDS, total_seconds=600)
    outcome = grading.grade(notebook, master, files, str(source), options)
    return outcome, score(outcome, master)


@pytest.mark.slow
def test_a_constant_in_an_added_cell_counts(course):
    """Does alpaca_model() using DROPOUT_RATE, set in a cell the student added, get 13/13?"""
    outcome, points = grade(course, dropout_from_own_cell(sample.solution_notebook(course)))
    assert points == sample.TOTAL, (outcome.status, outcome.verdicts, outcome.cell_errors)
    assert outcome.status == "graded"


@pytest.mark.slow
def test_a_hang_after_the_definition_is_interrupted_and_keeps_it(course):
    """Does time.sleep(100000) after alpaca_model's definition cost nothing but a flag?"""
    solution = sample.solution_notebook(course)
    hang = copy.deepcopy(solution)
    sample.cell(hang, "alpaca_model").source += "\n\nimport time\ntime.sleep(100000)\n"
    outcome, points = grade(course, hang)
    assert points == sample.TOTAL, (outcome.status, outcome.verdicts)
    assert "cell alpaca_model timed out: interrupted after 20 s" in outcome.status, outcome.status
    assert "CellTimeout" in outcome.cell_errors["alpaca_model"]


@pytest.mark.slow
def test_a_kernel_that_ignores_the_interrupt_is_killed(course):
    """Does a cell that swallows the interrupt lose only what it broke, killed by the host?"""
    solution = sample.solution_notebook(course)
    stubborn = copy.deepcopy(solution)
    sample.cell(stubborn, "data_augmenter").source += (
        "\n\nwhile True:\n    try:\n        while True:\n            pass\n"
        "    except BaseException:\n        pass\n"
    )
    outcome, points = grade(course, stubborn)
    assert "step timeout" in outcome.status and "data_augmenter" in outcome.status, outcome.status
    assert points == sample.TOTAL - sample.POINTS["data_augmenter_test"], outcome.verdicts
