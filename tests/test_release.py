"""One source of truth: the learner notebook is generated from the master and holds no solution."""

import re
import subprocess
import sys

import jupytext
import nbformat

import build

NOTEBOOKS = (build.MASTER_NOTEBOOK, build.LEARNER_NOTEBOOK)


def solution_lines(script_text: str) -> list[str]:
    """Return the code lines found only between the solution and hidden-test markers."""
    lines, given, inside = [], set(), False
    for line in script_text.splitlines():
        stripped = line.strip()
        if stripped in ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS"):
            inside = True
        elif stripped in ("### END SOLUTION", "### END HIDDEN TESTS"):
            inside = False
        elif inside and stripped and not stripped.startswith("#") and len(stripped) > 3:
            lines.append(stripped)
        elif not inside:
            given.add(stripped)
    # Lines such as `metrics=["accuracy"],` also stand in the given code: not secrets.
    return [line for line in lines if line not in given]


def test_generated_notebooks_do_not_drift():
    """Do the committed notebooks equal a fresh generation from the master script?"""
    result = subprocess.run(
        [sys.executable, str(build.ROOT / "tools" / "build.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_learner_notebook_has_no_solution():
    """Is no line of solution or hidden-test code left in the learner notebook's code cells?"""
    script = build.MASTER_SCRIPT.read_text(encoding="utf-8")
    secret = solution_lines(script)
    assert len(secret) > 20, "the master lost its solution markers"
    learner = nbformat.read(build.LEARNER_NOTEBOOK, as_version=4)
    code = "\n".join(c.source for c in learner.cells if c.cell_type == "code")
    code_lines = {line.strip() for line in code.splitlines()}
    leaked = [line for line in secret if line in code_lines]
    assert not leaked, f"solution lines in the learner notebook: {leaked}"
    assert "BEGIN SOLUTION" not in code and "HIDDEN TESTS" not in code
    assert code.count("raise NotImplementedError()") == 3


def test_every_exercise_ends_with_its_test_cell():
    """Is each exercise cell followed by its graded public test cell?"""
    learner = nbformat.read(build.LEARNER_NOTEBOOK, as_version=4)
    code_cells = [c for c in learner.cells if c.cell_type == "code"]
    for exercise in ("data_augmenter", "alpaca_model", "fine_tune"):
        index = next(
            i
            for i, c in enumerate(code_cells)
            if c.metadata.get("nbgrader", {}).get("grade_id") == exercise
        )
        following = code_cells[index + 1]
        assert following.metadata["nbgrader"]["grade"] is True
        assert re.search(rf"public_tests\.{exercise}_test\({exercise}\)", following.source)


def test_notebooks_are_committed_clean():
    """Are the notebooks free of outputs, with one kernelspec and stable cell ids?"""
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata.kernelspec.name == "python3"
        assert "jupytext" not in notebook.metadata
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path


def test_master_script_round_trips():
    """Does jupytext read the master's nbgrader metadata exactly as written in the script?"""
    notebook = jupytext.read(build.MASTER_SCRIPT)
    headers = re.findall(r"^# %% nbgrader=(\{.*\})$", build.MASTER_SCRIPT.read_text(), re.M)
    graded = [c.metadata["nbgrader"] for c in notebook.cells if "nbgrader" in c.metadata]
    assert len(graded) == len(headers) > 0
    points = {m["grade_id"]: m.get("points") for m in graded if m["grade"]}
    assert sum(points.values()) == 13, points
