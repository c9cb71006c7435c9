"""Run the solution code of the master notebook outside Jupyter (for tests and benchmarks).

    namespace = master.solution_namespace()
    model = namespace["alpaca_model"]()

The namespace is the notebook's: the set-up cell (which also defines
`preprocess_input`) and the cells of the three exercises with their solutions. `source_of(grade_id)` returns one
cell's code, so that a test can change it and run it again with `run_cells()`.
"""

from __future__ import annotations

import functools

from tools import build

EXERCISES = ("data_augmenter", "alpaca_model", "fine_tune")


@functools.cache
def cells() -> dict[str, str]:
    """Return ``{grade_id: source}`` for every nbgrader cell of the master."""
    return {
        cell.metadata["nbgrader"]["grade_id"]: cell.source + "\n"
        for cell in build.master_notebook().cells
        if "nbgrader" in cell.metadata
    }


def source_of(grade_id: str) -> str:
    return cells()[grade_id]


def run_cells(sources, namespace: dict | None = None) -> dict:
    """Execute code cell sources, in order, in ``namespace`` (a fresh one by default)."""
    namespace = {"__name__": "__main__"} if namespace is None else namespace
    for source in sources:
        exec(compile(source, "<master notebook>", "exec"), namespace)
    return namespace


def setup_namespace() -> dict:
    """Return the notebook's namespace after its set-up cell, before any exercise."""
    return run_cells([source_of("setup")])


def solution_namespace(**replacements: str) -> dict:
    """Return the namespace after the set-up cell and the three exercises' solutions.

    ``replacements`` maps an exercise's grade_id to the source to run instead.
    """
    namespace = setup_namespace()
    return run_cells([replacements.get(name, source_of(name)) for name in EXERCISES], namespace)
