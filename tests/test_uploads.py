"""One bad upload costs only itself: every class of broken submission gets its own row.

Folders, links and special files where files should be; names and contents in any
encoding; empty, truncated, non-JSON, several and huge notebooks; zips that are
malformed, nested or too big. Each is found, gets `not graded: <why>` (or is graded
with a note), and never stops the others.
"""

from __future__ import annotations

import csv
import io
import os
import pathlib
import subprocess
import sys
import zipfile

import nbformat
import pytest
import sample

from grader import batch, submissions
from grader.config import SETTINGS
from grader.course import ASSIGNMENT, NOTEBOOK

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_FILE = f"{NOTEBOOK}.ipynb"
MINIMAL = nbformat.writes(nbformat.v4.new_notebook())
LATIN1_NAME = os.fsdecode(b"\xe9mile")  # "émile" in Latin-1: not UTF-8


def put(path: pathlib.Path, data: bytes | str = MINIMAL) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def zipped(files: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def bad_folder(folder: pathlib.Path, good: str = MINIMAL) -> dict[str, str]:
    """A class folder with one good student and one student per bad class.

    Returns {student id: what its status must say}.
    """
    put(folder / "ann" / ASSIGNMENT / NOTEBOOK_FILE, good)
    # A folder where the notebook should be.
    (folder / "bob" / ASSIGNMENT / NOTEBOOK_FILE).mkdir(parents=True)
    # A link to a file of the grading machine, and a link to another student's folder.
    (folder / "cy" / ASSIGNMENT).mkdir(parents=True)
    (folder / "cy" / ASSIGNMENT / NOTEBOOK_FILE).symlink_to("/etc/passwd")
    (folder / "cy2").symlink_to(folder / "ann")
    # A named pipe: reading it would wait forever.
    (folder / "dee" / ASSIGNMENT).mkdir(parents=True)
    os.mkfifo(folder / "dee" / ASSIGNMENT / NOTEBOOK_FILE)
    # A file name and a timestamp that are not UTF-8 (graded, the timestamp ignored).
    put(folder / LATIN1_NAME / ASSIGNMENT / NOTEBOOK_FILE, good)
    put(folder / "fay" / ASSIGNMENT / NOTEBOOK_FILE, good)
    put(folder / "fay" / ASSIGNMENT / "timestamp.txt", b"2026-12-01 10:00:00 \xff\xfe")
    # Empty, truncated and not-JSON notebooks, and a JSON file that is no notebook.
    put(folder / "gus" / ASSIGNMENT / NOTEBOOK_FILE, b"")
    put(folder / "hal" / ASSIGNMENT / NOTEBOOK_FILE, MINIMAL[: len(MINIMAL) // 2])
    put(folder / "hal2" / ASSIGNMENT / NOTEBOOK_FILE, b"\x89PNG\r\n\x1a\n\x00\x00binary")
    put(folder / "hal3" / ASSIGNMENT / NOTEBOOK_FILE, "[1, 2, 3]")
    # Several notebooks, none named as the assignment: the first is graded, with a note.
    put(folder / "ivy" / "draft.ipynb", good)
    put(folder / "ivy" / "final.ipynb", good)
    # A huge notebook (sparse: no disk used).
    huge = put(folder / "jo" / ASSIGNMENT / NOTEBOOK_FILE, b"")
    os.truncate(huge, (SETTINGS.max_notebook_mb + 1) * 2**20)
    # A student's own zip (graded), a damaged one, a zip inside a zip, and a zip bomb.
    put(folder / "kim.zip", zipped({f"kim/{NOTEBOOK_FILE}": good}))
    put(folder / "lee.zip", b"PK\x03\x04 this is not a zip at all")
    put(folder / "max.zip", zipped({"inner.zip": zipped({NOTEBOOK_FILE: good})}))
    bomb = b"\0" * ((SETTINGS.max_notebook_mb + 1) * 2**20)
    put(folder / "ned.zip", zipped({NOTEBOOK_FILE: bomb}))
    return {
        "bob": f"not graded: {ASSIGNMENT}/{NOTEBOOK_FILE} is a folder, not a notebook",
        "cy": f"not graded: {NOTEBOOK_FILE} is a symbolic link, not a file",
        "cy2": "not graded: cy2 is a symbolic link, not a file",
        "dee": f"not graded: {NOTEBOOK_FILE} is a named pipe, not a file",
        "gus": "not graded: the notebook is empty (0 bytes)",
        "hal": "not graded: not a valid notebook (NotJSONError",
        "hal2": "not graded: not a valid notebook (",
        "hal3": "not graded: not a valid notebook (",
        "jo": f"not graded: {NOTEBOOK_FILE} is bigger than the {SETTINGS.max_notebook_mb} MiB",
        "lee": "not graded: lee.zip cannot be opened",
        "max": "not graded: inner.zip is a zip inside a zip: not opened",
        "ned": f"not graded: {NOTEBOOK_FILE} is bigger than the {SETTINGS.max_notebook_mb} MiB",
    }


def test_every_bad_upload_is_found_with_its_reason(tmp_path):
    """Does each class of bad upload get a row of its own saying why, and the good ones a notebook?"""
    expected = bad_folder(tmp_path / "in")
    folder, refused = submissions.unpack(tmp_path / "in", tmp_path / "staged")
    found = {s.student: s for s in submissions.find(folder, refused)}
    assert sorted(found) == sorted(["ann", "mile", "fay", "ivy", "kim", *expected]), (
        "every student, bad or not, must have a row"
    )
    release = nbformat.v4.new_notebook()
    for student, status in expected.items():
        sub = found[student]
        task, base = batch.make_task(sub, release, {}, None)
        assert task is None, f"{student} should not be graded"
        assert base["status"].startswith(status), (student, base["status"])
    for student in ("ann", "mile", "fay", "ivy", "kim"):
        task, base = batch.make_task(found[student], release, {}, None)
        assert task is not None, (student, base)
    # The name that is not UTF-8 is shown with its byte escaped, and can be written as UTF-8.
    assert found["mile"].source == "\\xe9mile"
    assert "ignored" in found["fay"].note and found["fay"].timestamp is None
    assert "several notebooks (draft.ipynb, final.ipynb)" in found["ivy"].note
    # Nothing outside the submissions was copied in: not the linked /etc/passwd.
    staged = [p for p in folder.rglob("*") if p.is_file()]
    assert all(b"root:" not in p.read_bytes() for p in staged)
    assert not any(p.is_symlink() for p in folder.rglob("*"))


def test_damaged_and_oversized_members_of_the_class_zip(tmp_path):
    """In the class's zip, do a damaged member and a zip bomb cost only their own students?"""
    good = MINIMAL.encode()
    data = zipped(
        {
            f"submitted/ann/{ASSIGNMENT}/{NOTEBOOK_FILE}": good,
            f"submitted/bob/{ASSIGNMENT}/{NOTEBOOK_FILE}": b"x" * 5000,
            f"submitted/cy/{ASSIGNMENT}/{NOTEBOOK_FILE}": b"\0"
            * ((SETTINGS.max_notebook_mb + 1) * 2**20),
            f"submitted/dee/{ASSIGNMENT}/{NOTEBOOK_FILE}": good,
            "../../escape.ipynb": good,
        }
    )
    # Damage bob's compressed bytes (its CRC no longer matches).
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(f"submitted/bob/{ASSIGNMENT}/{NOTEBOOK_FILE}")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 10
    data = data[:start] + bytes(b ^ 0xFF for b in data[start : start + 20]) + data[start + 20 :]
    put(tmp_path / "class.zip", data)
    folder, refused = submissions.unpack(tmp_path / "class.zip", tmp_path / "staged")
    found = {s.student: s for s in submissions.find(folder, refused)}
    assert sorted(found) == ["ann", "bob", "cy", "dee", "escape"]
    assert found["ann"].notebook and found["dee"].notebook
    assert found["bob"].notebook is None and "is damaged in the zip" in found["bob"].problem
    assert found["cy"].notebook is None and "bigger than the" in found["cy"].problem
    assert not (tmp_path / "escape.ipynb").exists()
    # A class "zip" that is no zip at all stops at once, saying so.
    put(tmp_path / "broken.zip", b"PK\x03\x04 not a zip")
    with pytest.raises(SystemExit, match="neither a folder nor a zip"):
        submissions.unpack(tmp_path / "broken.zip", tmp_path / "staged2")


@pytest.mark.slow
def test_batch_grades_everyone_beside_bad_uploads(tmp_path):
    """Does `python -m grader.batch` grade the good students, and give each bad one its row?"""
    sample.environment()
    course = sample.make_course(tmp_path / "course")
    solution = nbformat.writes(sample.solution_notebook(course))
    expected = bad_folder(tmp_path / "in", good=solution)
    result = subprocess.run(
        [sys.executable, "-m", "grader.batch", str(tmp_path / "in"), "--course", str(course)]
        + ["--out", str(tmp_path / "out"), "--workers", "1", "--cell-timeout", "120"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # A clean console: the progress bar and the summary, no library warnings.
    assert "Warning" not in result.stderr, result.stderr[-3000:]
    with open(tmp_path / "out" / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    for student in ("ann", "mile", "fay", "ivy", "kim"):
        assert float(rows[student]["total"]) == sample.TOTAL, rows[student]
        assert rows[student]["status"].startswith("graded"), rows[student]
    assert rows["mile"]["source"] == "\\xe9mile"
    for student, status in expected.items():
        assert rows[student]["status"].startswith(status), rows[student]
        assert float(rows[student]["total"]) == 0
        # One line each in the summary.
        assert f"  {student} (" in result.stdout and status in result.stdout
