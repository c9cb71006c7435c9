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
import hashlib
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
    source: str = ""  # where it was found, relative to the submissions folder
    note: str = ""  # what the instructor should know: an id collision, several notebooks


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


def _notebooks(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(
        p for p in folder.rglob("*.ipynb") if not set(p.relative_to(folder).parts) & _SKIP
    )


def _is_group(folder: pathlib.Path) -> bool:
    """True for a folder of students (``submitted/``), not one student's folder.

    A group has no assignment folder, and holds a student folder (a subfolder with
    notebooks) beside at least one more student: another such folder or a notebook.
    A folder with notebooks only directly inside is one student's.
    """
    if (folder / ASSIGNMENT).is_dir():
        return False
    entries = _entries(folder)
    folders = [p for p in entries if p.is_dir() and _notebooks(p)]
    files = [p for p in entries if p.suffix == ".ipynb"]
    return bool(folders) and len(folders) + len(files) >= 2


def _looks_like_a_student(folder: pathlib.Path) -> bool:
    if _is_group(folder):
        return False
    return (folder / ASSIGNMENT).is_dir() or any(p.suffix == ".ipynb" for p in _entries(folder))


def _students(folder: pathlib.Path, top: bool = True) -> list[pathlib.Path]:
    """The entries that are students, each one folder or notebook.

    Groups of student folders (``submitted/``) are opened at any depth. At the top,
    a lone folder that is not a student's is a wrapper, and is opened too. Stray
    files that are not notebooks (a README.txt that an export adds) are left out.
    """
    candidates = [p for p in _entries(folder) if p.is_dir() or p.suffix == ".ipynb"]
    if top and len(candidates) == 1 and candidates[0].is_dir():
        if not _looks_like_a_student(candidates[0]):
            return _students(candidates[0], top=True)
    found = []
    for entry in candidates:
        if entry.is_dir() and _is_group(entry):
            found.extend(_students(entry, top=False))
        else:
            found.append(entry)
    return found


def _notebook_in(folder: pathlib.Path) -> tuple[pathlib.Path | None, str]:
    """The notebook to grade in a student's folder, and a note when there was a choice."""
    for candidate in (folder / ASSIGNMENT / f"{NOTEBOOK}.ipynb", folder / f"{NOTEBOOK}.ipynb"):
        if candidate.is_file():
            return candidate, ""
    found = _notebooks(folder)
    if len(found) > 1:
        names = ", ".join(p.relative_to(folder).as_posix() for p in found)
        return found[0], f"several notebooks ({names}): graded the first"
    return (found[0] if found else None), ""


def find(folder: pathlib.Path) -> list[Submission]:
    """Return one `Submission` per student found in ``folder``, sorted by student id.

    Ids come from the folder or file names. Two names that give one id (``a b`` and
    ``a_b``, or ``alice/`` and ``alice.ipynb``) never share a row: the name that is
    the id already keeps it, the other gets a suffix made from its path, and both
    carry a note that says so.
    """
    folder = pathlib.Path(folder)
    groups: dict[str, list[Submission]] = {}
    for entry in _students(folder):
        if entry.is_dir():
            notebook, note = _notebook_in(entry)
        else:
            notebook, note = entry, ""
        name = entry.name if entry.is_dir() else entry.stem
        timestamp = notebook.parent / "timestamp.txt" if notebook else None
        submission = Submission(
            student_id(name),
            notebook,
            timestamp if timestamp and timestamp.is_file() else None,
            entry.relative_to(folder).as_posix(),
            note,
        )
        groups.setdefault(submission.student, []).append(submission)
    found = []
    for student, group in groups.items():
        if len(group) > 1:
            # The folder named exactly like the id keeps it, then a file so named.
            keeper = min(
                group,
                key=lambda s: (
                    pathlib.PurePath(s.source).name != student,
                    not (folder / s.source).is_dir(),
                    s.source,
                ),
            )
            others = ", ".join(repr(s.source) for s in group)
            for submission in group:
                if submission is not keeper:
                    digest = hashlib.sha1(submission.source.encode()).hexdigest()[:6]
                    submission.student = f"{student}-{digest}"
                collision = f"id collision: {others} all give the id {student!r}"
                submission.note = "; ".join(filter(None, [collision, submission.note]))
        found.extend(group)
    return sorted(found, key=lambda s: s.student)


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
