"""Find the students' notebooks in a folder or a zip, and repair what students deleted.

Accepted layouts (in a folder, or in a zip with the same layout inside, possibly
wrapped in one top-level folder such as ``submitted/``):

    <student>/<assignment>/<assignment>.ipynb   nbgrader's ``submitted/`` layout
    <student>/<any name>.ipynb                  one notebook per student folder
    <student>.ipynb                             flat files named after the student

A ``timestamp.txt`` beside the notebook (nbgrader's format) is kept. Only the
notebook is graded: other files a student hands in are ignored, and the course's
own ``utils.py``, ``public_tests.py`` ... are used.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
import re
import shutil
import zipfile

import nbformat

from .course import ASSIGNMENT, NOTEBOOK

_SKIP = {"__MACOSX", ".ipynb_checkpoints", "__pycache__"}


@dataclasses.dataclass
class Submission:
    student: str
    notebook: pathlib.Path | None  # None when the student folder holds no notebook
    timestamp: pathlib.Path | None = None


def student_id(name: str) -> str:
    """Return ``name`` made safe as an nbgrader student id and a folder name."""
    cleaned = re.sub(r"[^\w.@+-]", "_", name).strip("._")
    return cleaned or "student"


def unpack(path: pathlib.Path, into: pathlib.Path) -> pathlib.Path:
    """Return the folder of submissions: ``path`` itself, or a zip extracted into ``into``."""
    path = pathlib.Path(path)
    if path.is_dir():
        return path
    if not zipfile.is_zipfile(path):
        raise SystemExit(f"{path} is neither a folder nor a zip file.")
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    with zipfile.ZipFile(path) as archive:
        archive.extractall(into)  # extractall drops ".." and absolute parts of names
    return into


def _entries(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.iterdir() if p.name not in _SKIP and not p.name.startswith("."))


def _wrapper(folder: pathlib.Path) -> pathlib.Path:
    """Descend through single folders that are not a student's (e.g. ``submitted/``)."""
    while True:
        entries = _entries(folder)
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        inner = _entries(entries[0])
        one_student = (entries[0] / ASSIGNMENT).is_dir() or (
            len([p for p in inner if p.suffix == ".ipynb"]) == 1
            and not any(p.is_dir() for p in inner)
        )
        if one_student:
            return folder
        folder = entries[0]


def _notebook_in(folder: pathlib.Path) -> pathlib.Path | None:
    for candidate in (folder / ASSIGNMENT / f"{NOTEBOOK}.ipynb", folder / f"{NOTEBOOK}.ipynb"):
        if candidate.is_file():
            return candidate
    found = sorted(
        p for p in folder.rglob("*.ipynb") if not set(p.relative_to(folder).parts) & _SKIP
    )
    return found[0] if found else None


def find(folder: pathlib.Path) -> list[Submission]:
    """Return one `Submission` per student found in ``folder``, sorted by student id."""
    found: dict[str, Submission] = {}
    for entry in _entries(_wrapper(pathlib.Path(folder))):
        if entry.is_dir():
            notebook = _notebook_in(entry)
        elif entry.suffix == ".ipynb":
            notebook = entry
        else:
            continue
        name = student_id(entry.stem if entry.is_file() else entry.name)
        while name in found:  # "alice/" and "alice.ipynb", or names equal once cleaned
            name += "_"
        timestamp = notebook.parent / "timestamp.txt" if notebook else None
        found[name] = Submission(
            name, notebook, timestamp if timestamp and timestamp.is_file() else None
        )
    return [found[name] for name in sorted(found)]


def read(path: pathlib.Path) -> nbformat.NotebookNode:
    """Read and validate a notebook; raise ValueError saying why it is not one."""
    try:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
    except Exception as error:  # not JSON, not a notebook, wrong schema ...
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"not a valid notebook ({type(error).__name__}: {message[:200]})"
        ) from None
    return notebook


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def restore_deleted_cells(notebook, release) -> list[str]:
    """Put back, in place, every nbgrader cell of ``release`` missing from ``notebook``.

    nbgrader's ``add_missing_cells`` puts back deleted *test* cells only, and fails
    when the cell before one was deleted too. Here every cell with a ``grade_id``
    (set-up, solution and test cells) comes back, after the nearest cell before it
    that is present. A deleted solution cell comes back as the release's stub, so it
    scores 0. nbgrader then restores the source of every locked cell. Returns the
    grade_ids put back.
    """
    restored = []
    previous = None  # grade_id of the last release cell placed so far
    for cell in release.cells:
        grade_id = _grade_id(cell)
        if not grade_id:
            continue
        present = [i for i, c in enumerate(notebook.cells) if _grade_id(c) == grade_id]
        if not present:
            anchor = [
                i for i, c in enumerate(notebook.cells) if previous and _grade_id(c) == previous
            ]
            position = anchor[-1] + 1 if anchor else 0
            new = copy.deepcopy(cell)
            new.pop("id", None)
            notebook.cells.insert(position, new)
            restored.append(grade_id)
        previous = grade_id
    if restored:
        # Fresh cell ids: copies of release cells may clash with ids still present.
        for index, cell in enumerate(notebook.cells):
            cell["id"] = f"cell-{index}"
    return restored


def edited_locked_cells(notebook, release) -> list[str]:
    """Return the grade_ids of locked cells whose source differs from the release.

    (nbgrader's own "checksum has changed" warning fires for every cell with hidden
    tests, edited or not, so it cannot tell.)
    """
    handed_in = {_grade_id(c): c.source.strip() for c in notebook.cells if _grade_id(c)}
    edited = []
    for cell in release.cells:
        grade_id = _grade_id(cell)
        if grade_id and cell.metadata["nbgrader"].get("locked"):
            if grade_id in handed_in and handed_in[grade_id] != cell.source.strip():
                edited.append(grade_id)
    return edited
