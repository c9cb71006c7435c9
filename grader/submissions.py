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
import os
import pathlib
import re
import shutil
import stat
import tempfile
import zipfile

import nbformat

from .config import SETTINGS
from .course import ASSIGNMENT, NOTEBOOK

_SKIP = {"__MACOSX", ".ipynb_checkpoints", "__pycache__"}


@dataclasses.dataclass
class Submission:
    student: str
    notebook: pathlib.Path | None  # None when there is no notebook to grade
    timestamp: str | None = None  # nbgrader's timestamp.txt, when it holds a date
    source: str = ""  # where it was found, relative to the submissions folder (printable)
    note: str = ""  # what the instructor should know: an id collision, several notebooks
    problem: str = ""  # why it cannot be graded, when notebook is None
    path: pathlib.Path | None = None  # the student's folder or file in the staged copy


def student_id(name: str) -> str:
    """Return ``name`` made safe as an nbgrader student id and a folder name."""
    cleaned = re.sub(r"[^\w.@+-]", "_", name).strip("._")[:MAX_ID_LENGTH]
    return cleaned or "student"


# Limits of what one student hands in. A notebook is a few MB (outputs included); a
# bigger file is not graded. A zip inside the class's zip (one student's upload) is opened
# when it is no bigger than SETTINGS.max_nested_zip_mb; a zip inside that one is not.
MAX_TIMESTAMP_BYTES = 1024
TIMESTAMP = "timestamp.txt"
# Student ids become folder names (at most 255 bytes on most file systems).
MAX_ID_LENGTH = 80
_CHUNK = 1 << 20


def shown(name: str) -> str:
    """A file name as text that can always be printed and written as UTF-8.

    Names that are not UTF-8 come from the file system with surrogate escapes; their
    bytes are shown as ``\\xe9``.
    """
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _kind(mode: int) -> str:
    for test, what in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def _wanted(name: str) -> bool:
    """The files grading reads: notebooks, nbgrader's timestamp, and zips (one student's)."""
    return name.endswith((".ipynb", ".zip")) or name == TIMESTAMP


def _limit(name: str) -> int:
    if name.endswith(".zip"):
        return SETTINGS.max_nested_zip_mb * 2**20
    if name == TIMESTAMP:
        return MAX_TIMESTAMP_BYTES
    return SETTINGS.max_notebook_mb * 2**20


def _too_big(name: str) -> str:
    return f"{shown(name)} is bigger than the {_limit(name) // 2**20 or 1} MiB limit"


def _copy_bounded(source, dest: pathlib.Path, limit: int) -> bool:
    """Copy the stream ``source`` to ``dest``; False (and no dest) when it exceeds ``limit``."""
    written = 0
    with open(dest, "wb") as handle:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > limit:
                break
            handle.write(chunk)
    if written > limit:
        dest.unlink()
        return False
    return True


class _Stager:
    """Copies what grading reads into a fresh folder, and notes every entry it refused."""

    def __init__(self, into: pathlib.Path):
        self.into = into
        self.problems: dict[str, str] = {}  # {relative path: why it is not there}

    def refuse(self, relative: str, why: str) -> None:
        self.problems[relative] = why

    def folder(self, source: pathlib.Path, relative: str = "") -> None:
        """Copy a folder of submissions, never following a link, refusing special files."""
        (self.into / relative).mkdir(parents=True, exist_ok=True)
        with os.scandir(source) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name in _SKIP or entry.name.startswith("."):
                    continue
                inner = f"{relative}/{entry.name}" if relative else entry.name
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    self.folder(pathlib.Path(entry.path), inner)
                elif not stat.S_ISREG(mode):  # a link to a notebook, a folder, anywhere
                    self.refuse(inner, f"{shown(entry.name)} is {_kind(mode)}, not a file")
                elif not _wanted(entry.name):
                    continue
                else:
                    try:
                        with open(entry.path, "rb") as handle:
                            self.file(handle, inner)
                    except OSError as error:
                        self.refuse(inner, f"{shown(entry.name)} cannot be read ({error.strerror})")

    def file(self, handle, relative: str, nested: bool = False) -> None:
        name = relative.rsplit("/", 1)[-1]
        dest = self.into / relative
        if name.endswith(".zip"):
            if nested:
                self.refuse(relative, f"{shown(name)} is a zip inside a zip: not opened")
                return
            with tempfile.TemporaryFile() as copy:
                written = 0
                while chunk := handle.read(_CHUNK):
                    written += len(chunk)
                    if written > _limit(name):
                        self.refuse(relative, _too_big(name))
                        return
                    copy.write(chunk)
                copy.seek(0)
                self.archive(copy, relative[: -len(".zip")], nested=True)
            return
        if dest.exists():
            self.refuse(relative, f"{shown(name)} is there twice")
            return
        if not _copy_bounded(handle, dest, _limit(name)):
            self.refuse(relative, _too_big(name))

    def archive(self, source, relative: str = "", nested: bool = False) -> None:
        """Extract what grading reads from a zip (a path or an open file) under ``relative``.

        Names lose their ``..``, absolute and empty parts; each member is read with a
        limit (its stated size can lie) and its CRC checked. A member that cannot be
        extracted is noted, and costs only its own student.
        """
        where = shown(relative + ".zip") if nested else "the zip"
        try:
            archive = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
            if not nested:
                raise SystemExit(f"{source} is not a readable zip file ({error}).") from None
            self.refuse(relative, f"{where} cannot be opened ({error})")
            return
        if nested and (self.into / relative).exists():
            relative += "-zip"
        with archive:
            (self.into / relative).mkdir(parents=True, exist_ok=True)
            for info in archive.infolist():
                parts = [
                    p
                    for p in info.filename.replace("\\", "/").split("/")
                    if p not in ("", ".", "..")
                ]
                if not parts or set(parts) & _SKIP or any(p.startswith(".") for p in parts):
                    continue
                inner = "/".join([relative, *parts] if relative else parts)
                try:
                    if info.is_dir():
                        (self.into / inner).mkdir(parents=True, exist_ok=True)
                        continue
                    (self.into / inner).parent.mkdir(parents=True, exist_ok=True)
                    if not _wanted(parts[-1]):
                        continue
                    if info.file_size > _limit(parts[-1]):
                        self.refuse(inner, _too_big(parts[-1]))
                        continue
                    with archive.open(info) as handle:
                        self.file(handle, inner, nested=nested)
                except Exception as error:  # noqa: BLE001 -- CRC, zlib, encryption ...: the member's
                    partial = self.into / inner
                    if partial.is_file():
                        partial.unlink()
                    self.refuse(inner, f"{shown(parts[-1])} is damaged in {where} ({error})"[:300])


def unpack(path: pathlib.Path, into: pathlib.Path) -> tuple[pathlib.Path, dict[str, str]]:
    """Copy the submissions (a folder or a zip) into ``into``; return it and what was refused.

    Only what grading reads is copied: notebooks, ``timestamp.txt`` files, and the
    contents of a zip that a student handed in (a zip inside the zip). Links,
    folders where files should be, special files, files over the limits and damaged
    zip members are not copied: each is in the returned ``{relative path: why}``, and
    `find()` gives its student a row that says why.
    """
    path = pathlib.Path(path)
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    stager = _Stager(into)
    if path.is_dir():
        stager.folder(path)
    elif zipfile.is_zipfile(path):
        stager.archive(path)
    else:
        raise SystemExit(f"{path} is neither a folder nor a zip file.")
    return into, stager.problems


def _entries(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.iterdir() if p.name not in _SKIP and not p.name.startswith("."))


def _notebooks(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(
        p
        for p in folder.rglob("*.ipynb")
        if p.is_file() and not set(p.relative_to(folder).parts) & _SKIP
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
    """The notebook to grade in a student's folder, and a note: a choice made, or why none."""
    for candidate in (folder / ASSIGNMENT / f"{NOTEBOOK}.ipynb", folder / f"{NOTEBOOK}.ipynb"):
        if candidate.is_file():
            return candidate, ""
    found = _notebooks(folder)
    if len(found) > 1:
        names = ", ".join(shown(p.relative_to(folder).as_posix()) for p in found)
        return found[0], f"several notebooks ({names}): graded the first"
    if found:
        return found[0], ""
    folders = sorted(p for p in folder.rglob("*.ipynb") if p.is_dir())
    if folders:
        name = shown(folders[0].relative_to(folder).as_posix())
        return None, f"{name} is a folder, not a notebook"
    return None, "no notebook found in the submission"


def _timestamp(notebook: pathlib.Path | None) -> tuple[str | None, str]:
    """nbgrader's timestamp.txt beside the notebook, and a note when it cannot be used."""
    path = notebook.parent / TIMESTAMP if notebook else None
    if path is None or not path.is_file():
        return None, ""
    from nbgrader.utils import parse_utc

    try:
        text = path.read_bytes().decode("utf-8").strip()
        parse_utc(text)
    except Exception:  # noqa: BLE001 -- any bytes at all: the student's file
        return None, f"{TIMESTAMP} holds no date nbgrader reads: ignored"
    return text, ""


def find(folder: pathlib.Path, problems: dict[str, str] | None = None) -> list[Submission]:
    """Return one `Submission` per student found in ``folder``, sorted by student id.

    Ids come from the folder or file names. Two names that give one id (``a b`` and
    ``a_b``, or ``alice/`` and ``alice.ipynb``) never share a row: the name that is
    the id already keeps it, the other gets a suffix made from its path, and both
    carry a note that says so. ``problems`` (from `unpack`) are the entries that were
    refused: each goes to the student it belongs to, or makes a row of its own.
    """
    folder = pathlib.Path(folder)
    groups: dict[str, list[Submission]] = {}
    found_all = []
    for entry in _students(folder):
        problem = ""
        if entry.is_dir():
            notebook, note = _notebook_in(entry)
            if notebook is None:
                problem, note = note, ""
        else:
            notebook, note = entry, ""
        timestamp, stamp_note = _timestamp(notebook)
        name = entry.name if entry.is_dir() else entry.stem
        submission = Submission(
            student_id(name),
            notebook,
            timestamp,
            shown(entry.relative_to(folder).as_posix()),
            "; ".join(filter(None, [note, stamp_note])),
            problem,
            entry,
        )
        found_all.append(submission)
    for relative, why in sorted((problems or {}).items()):
        owner = next(
            (
                s
                for s in found_all
                if s.path is not None
                and (relative + "/").startswith(s.path.relative_to(folder).as_posix() + "/")
            ),
            None,
        )
        if owner is None:
            name = relative.rsplit("/", 1)[-1]
            name = name[: -len(".ipynb")] if name.endswith(".ipynb") else name
            name = name[: -len(".zip")] if name.endswith(".zip") else name
            found_all.append(Submission(student_id(name), None, None, shown(relative), "", why))
        elif owner.notebook is None:
            owner.problem = why if owner.problem.startswith("no notebook") else owner.problem
        else:
            owner.note = "; ".join(filter(None, [owner.note, why]))
    for submission in found_all:
        groups.setdefault(submission.student, []).append(submission)
    found = []
    for student, group in groups.items():
        if len(group) > 1:
            # The folder named exactly like the id keeps it, then a file so named.
            keeper = min(
                group,
                key=lambda s: (
                    pathlib.PurePath(s.source).name != student,
                    not (s.path is not None and s.path.is_dir()),
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
    if pathlib.Path(path).stat().st_size == 0:
        raise ValueError("the notebook is empty (0 bytes)")
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
