"""Temporary courses and sample submissions built from the master, for tests and benchmarks.

course = make_course(tmp)            # a course folder with the release generated
solution = solution_notebook()       # the master without its hidden tests
write_submission(tmp / "in", "alice", solution)
"""

from __future__ import annotations

import copy
import os
import pathlib
import sys

import nbformat

from grader.course import ASSIGNMENT, HIDDEN_BEGIN, HIDDEN_END, NOTEBOOK
from tools import build  # the master notebook is made as for the release

ROOT = pathlib.Path(__file__).resolve().parents[1]


# The points of each test cell, as the README's table gives them: 13 in all.
POINTS = {
    "data_augmenter_test": 2,
    "alpaca_model_test": 3,
    "frozen_base_test": 3,
    "fine_tune_test": 3,
    "fine_tune_compile_test": 2,
}
TOTAL = 13
# The learner files the set-up cell imports (what the grader copies into its sandboxes).
LEARNER_FILES = ("utils.py", "public_tests.py", "test_utils.py", "trainable_training.py")


def make_course(dest: pathlib.Path) -> pathlib.Path:
    """Make a course in ``dest`` from the real one, and run generate_assignment in it."""
    from grader.course import nbgrader

    dest = build.copy_course(pathlib.Path(dest))
    source = dest / "source" / ASSIGNMENT
    nbformat.write(build.master_notebook(), source / f"{NOTEBOOK}.ipynb")
    result = nbgrader(["generate_assignment", ASSIGNMENT, "--force"], cwd=dest)
    if result.returncode != 0:
        raise RuntimeError(f"generate_assignment failed:\n{result.stdout}")
    return dest


def release_notebook(course: pathlib.Path) -> nbformat.NotebookNode:
    return nbformat.read(course / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)


def hidden_lines() -> list[str]:
    """Return every line of the master's hidden tests."""
    lines = []
    for cell in build.master_notebook().cells:
        inside = False
        for line in cell.source.splitlines():
            if line.strip().startswith(HIDDEN_BEGIN):
                inside = True
            elif line.strip().startswith(HIDDEN_END):
                inside = False
            elif inside:
                lines.append(line)
    return lines


def solution_notebook(course: pathlib.Path) -> nbformat.NotebookNode:
    """Return what a perfect student hands in: the release with the master's solutions."""
    notebook = release_notebook(course)
    master = build.master_notebook()
    for target in notebook.cells:
        meta = target.metadata.get("nbgrader", {})
        if meta.get("solution"):
            lines = cell(master, meta["grade_id"]).source.splitlines()
            target.source = "\n".join(
                line
                for line in lines
                if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")
            )
    return notebook


def cell(notebook, grade_id: str):
    """Return the cell of ``notebook`` with this nbgrader grade_id."""
    for candidate in notebook.cells:
        if candidate.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return candidate
    raise KeyError(grade_id)


def replace_in(notebook, grade_id: str, old: str, new: str) -> nbformat.NotebookNode:
    """Return a copy of ``notebook`` with ``old`` replaced by ``new`` in one cell."""
    notebook = copy.deepcopy(notebook)
    target = cell(notebook, grade_id)
    if old not in target.source:
        raise ValueError(f"{old!r} is not in cell {grade_id}")
    target.source = target.source.replace(old, new)
    return notebook


def write_submission(folder: pathlib.Path, student: str, notebook) -> pathlib.Path:
    """Write ``notebook`` (a notebook, or raw text) as nbgrader's submitted layout."""
    path = pathlib.Path(folder) / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(notebook, str):
        path.write_text(notebook, encoding="utf-8")
    else:
        nbformat.write(notebook, path)
    return path


def environment() -> None:
    """Point at the shared data and weights when the environment does not say."""
    shared = ROOT.parent / "shared"
    os.environ.setdefault("ALPACA_DATASET", str(shared / "data" / "alpaca"))
    os.environ.setdefault("ALPACA_WEIGHTS_DIR", str(shared / "weights"))
    bin_dir = str(pathlib.Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def instructor_environment() -> dict:
    """An instructor's shell: the data and weights set, the environment not activated."""
    bin_dir = pathlib.Path(sys.executable).parent.resolve()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(
        folder
        for folder in env.get("PATH", "").split(os.pathsep)
        if folder and pathlib.Path(folder).resolve() != bin_dir
    )
    return env
