"""The nbgrader vocabulary of the course, in one place.

The assignment and notebook names, the grade ids of the cells grading runs, the
hidden-test markers, where nbgrader keeps things, and how to run nbgrader.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import warnings

ASSIGNMENT = "Transfer_learning_with_MobileNet"
NOTEBOOK = ASSIGNMENT  # the one notebook of the assignment, without .ipynb

# The locked cells that answers may rely on: grading runs them, and the answer
# cells, and nothing else of the lesson.
SETUP_CELLS = ("setup",)

HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_END = "### END HIDDEN TESTS"
SOLUTION_BEGIN = "### BEGIN SOLUTION"
SOLUTION_END = "### END SOLUTION"

BIN = pathlib.Path(sys.executable).parent


def tools_on_path() -> None:
    """Put this environment's ``bin/`` first on PATH, for the commands nbgrader runs.

    nbgrader runs ``alembic`` as a subprocess when it makes a gradebook: without
    this, ``.venv/bin/python -m grader.batch`` or ``.venv/bin/nbgrader`` run without
    activating the environment fail with ``FileNotFoundError: 'alembic'``.
    """
    path = os.environ.get("PATH", "")
    if str(BIN) not in path.split(os.pathsep):
        os.environ["PATH"] = f"{BIN}{os.pathsep}{path}" if path else str(BIN)


def quiet_gradebook_warnings() -> None:
    """Silence SQLAlchemy's "not in session" SAWarning that nbgrader's gradebook raises.

    nbgrader's ``Gradebook.add_submission()`` warns once per relationship for every
    student (``Object of type <SubmittedAssignment> not in session, add operation
    along 'Student.submissions' will not proceed``); the submission is stored all the
    same, and the batch grader's console would show three warnings per student.
    """
    warnings.filterwarnings("ignore", message=r".*not in session.*", module="nbgrader")


def nbgrader_meta(cell) -> dict:
    """Return a cell's nbgrader metadata ({} for a cell nbgrader does not know)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def grade_id(cell) -> str | None:
    return nbgrader_meta(cell).get("grade_id")


def release_notebook_path(course: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(course) / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"


def source_folder(course: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(course) / "source" / ASSIGNMENT


def db_url(course: pathlib.Path) -> str:
    return f"sqlite:///{pathlib.Path(course) / 'gradebook.db'}"


def grade_cells(notebook) -> list[tuple[str, float]]:
    """Return ``[(grade_id, max points)]`` of the graded cells, in notebook order."""
    cells = []
    for cell in notebook.cells:
        meta = nbgrader_meta(cell)
        if meta.get("grade"):
            cells.append((meta["grade_id"], float(meta["points"])))
    return cells


def nbgrader(args, cwd, log=None, timeout=600, env=None):
    """Run an nbgrader command in ``cwd``; return the CompletedProcess."""
    env = dict(env or os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # nbgrader calls alembic
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=cwd,
        env=env,
        timeout=timeout,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if log is not None:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"$ nbgrader {' '.join(args)}\n{result.stdout}\n")
    return result
