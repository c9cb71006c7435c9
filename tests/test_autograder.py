"""The instructor side: nbgrader config, batch autograding, feedback and export.

The slow tests share one batch run (``graded``) over eight students that cover
every scenario, in a temporary course made from the master, graded with 2 workers.
"""

from __future__ import annotations

import copy
import csv
import html
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import nbformat
import psutil
import pytest
import sample
from sample import POINTS, TOTAL
from traitlets.config.loader import PyFileConfigLoader

from grader import batch, plan, renderer, submissions
from grader import course as course_module
from grader.config import SETTINGS
from grader.course import ASSIGNMENT, NOTEBOOK
from grader.feedback import HideHiddenTests, significant
from tools import build

ROOT = pathlib.Path(__file__).resolve().parents[1]
COURSE = ROOT / "course"
# The grading options of the slow tests: cells of a correct submission take < 30 s here.
CELL_TIMEOUT = 90
SUBMISSION_TIMEOUT = 600


def course_config():
    return PyFileConfigLoader("nbgrader_config.py", path=str(COURSE)).load_config()


# --------------------------------------------------------------------------------------
# Fast tests
# --------------------------------------------------------------------------------------


def test_config_grades_in_the_sandbox():
    """Does the course config grade with SandboxedExecute, never nbgrader's Execute, and survive copied cells?"""
    config = course_config()
    pipeline = config.Autograde.autograde_preprocessors
    assert pipeline[0] == "grader.execute.SandboxedExecute"
    assert not any(name.endswith(".Execute") for name in pipeline)
    assert "nbgrader.preprocessors.SaveAutoGrades" in pipeline
    assert "grader.deduplicate.DeduplicateCells" in config.Autograde.sanitize_preprocessors
    assert config.OverwriteCells.add_missing_cells is True
    assert 60 <= config.SandboxedExecute.cell_timeout <= 900


def test_nbgrader_commands_print_no_config_warnings(tmp_path):
    """Does an nbgrader command with the course config run without "not recognized" warnings?"""
    course = build.copy_course(tmp_path / "course")
    result = course_module.nbgrader(["db", "assignment", "list"], cwd=course, timeout=120)
    assert result.returncode == 0, result.stdout
    assert "not recognized" not in result.stdout, result.stdout
    assert "Warning" not in result.stdout, result.stdout


def test_test_cells_are_read_as_data():
    """Does every test cell of the master hold only public-test calls with literal inputs, hidden ones included?"""
    steps = plan.steps(build.master_notebook())
    tests = [step for step in steps if step.is_test]
    assert [step.grade_id for step in tests] == list(POINTS)
    for step in tests:
        assert [call.hidden for call in step.calls] == [False, True], step
    assert [step.grade_id for step in steps if not step.is_test] == [
        "setup",
        "data_augmenter",
        "alpaca_model",
        "fine_tune",
    ]
    with pytest.raises(ValueError, match="may only call public tests"):
        plan.test_calls("import os\npublic_tests.fine_tune_test(fine_tune)")
    with pytest.raises(ValueError, match="must be a literal"):
        plan.test_calls("public_tests.fine_tune_test(fine_tune, fine_tune_at=int('1'))")


def test_hide_hidden_tests_in_source_and_traceback():
    """Does the feedback preprocessor drop hidden code and traceback frames but keep the message?"""
    cell = nbformat.v4.new_code_cell(
        "public_tests.fine_tune_test(fine_tune)\n### BEGIN HIDDEN TESTS\n"
        "public_tests.fine_tune_test(fine_tune, fine_tune_at=100)\n### END HIDDEN TESTS",
        outputs=[
            nbformat.v4.new_output(
                "error",
                ename="AssertionError",
                evalue="fine_tune: layer 101 should train",
                traceback=[
                    "\x1b[0;31mAssertionError\x1b[0m  Traceback (most recent call last)",
                    "Cell In[9], line 3\n----> 3 public_tests.fine_tune_test(fine_tune, "
                    "fine_tune_at=100)",
                    "File public_tests.py:12, in fine_tune_test(target)\n  raise",
                    "\x1b[0;31mAssertionError\x1b[0m: fine_tune: layer 101 should train",
                ],
            )
        ],
    )
    cell, _ = HideHiddenTests().preprocess_cell(cell, {}, 0)
    text = cell.source + "\n".join(cell.outputs[0].traceback)
    assert "fine_tune_at=100" not in text
    assert "BEGIN HIDDEN TESTS" not in text
    assert cell.source.startswith("public_tests.fine_tune_test(fine_tune)\n")
    assert cell.outputs[0].traceback[-1].endswith("fine_tune: layer 101 should train")
    assert "public_tests.py:12" in text


def test_find_submissions_in_every_layout(tmp_path):
    """Are students found in nbgrader's layout, in student folders and as flat files, zipped or not?"""
    (tmp_path / "in" / "submitted" / "ann" / ASSIGNMENT).mkdir(parents=True)
    (tmp_path / "in" / "submitted" / "ann" / ASSIGNMENT / f"{NOTEBOOK}.ipynb").write_text("{}")
    (tmp_path / "in" / "submitted" / "bo b").mkdir()
    (tmp_path / "in" / "submitted" / "bo b" / "mine.ipynb").write_text("{}")
    (tmp_path / "in" / "submitted" / "cy.ipynb").write_text("{}")
    (tmp_path / "in" / "submitted" / "dee").mkdir()
    (tmp_path / "in" / "submitted" / "notes.txt").write_text("not a submission")
    found = submissions.find(tmp_path / "in")
    assert [(s.student, s.notebook and s.notebook.name) for s in found] == [
        ("ann", f"{NOTEBOOK}.ipynb"),
        ("bo_b", "mine.ipynb"),
        ("cy", "cy.ipynb"),
        ("dee", None),
    ]
    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in (tmp_path / "in").rglob("*"):
            handle.write(path, path.relative_to(tmp_path / "in"))
    unpacked, refused = submissions.unpack(archive, tmp_path / "unzipped")
    assert refused == {}
    assert [s.student for s in submissions.find(unpacked)] == ["ann", "bo_b", "cy", "dee"]


def test_colliding_ids_keep_their_own_rows(tmp_path):
    """Do "a b" and "a_b" keep one id each, shown with their source and a collision note?"""
    for name in ("a b", "a_b", "alice"):
        folder = tmp_path / name / ASSIGNMENT
        folder.mkdir(parents=True)
        (folder / f"{NOTEBOOK}.ipynb").write_text(name)
    (tmp_path / "alice.ipynb").write_text("alice's file")
    found = {s.source: s for s in submissions.find(tmp_path)}
    assert sorted(found) == ["a b", "a_b", "alice", "alice.ipynb"]
    ids = [s.student for s in found.values()]
    assert len(set(ids)) == 4
    assert found["a_b"].student == "a_b" and found["alice"].student == "alice"
    assert found["a b"].student.startswith("a_b-")
    assert found["alice.ipynb"].student.startswith("alice-")
    assert found["a b"].notebook.read_text() == "a b"
    for source in found:
        assert found[source].note.startswith("id collision"), found[source]
    # The same ids on every run: a re-run finds its own results again.
    assert [s.student for s in submissions.find(tmp_path)] == sorted(ids)


def test_wrapper_folder_beside_a_stray_file(tmp_path):
    """Is a zip of submitted/<students> plus a README.txt at the top graded as its students?"""
    for name in ("ann", "bob", "cy"):
        folder = tmp_path / "in" / "submitted" / name / ASSIGNMENT
        folder.mkdir(parents=True)
        (folder / f"{NOTEBOOK}.ipynb").write_text(name)
    (tmp_path / "in" / "README.txt").write_text("Exported by the learning platform")
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in (tmp_path / "in").rglob("*"):
            handle.write(path, path.relative_to(tmp_path / "in"))
    unpacked, refused = submissions.unpack(archive, tmp_path / "unzipped")
    assert refused == {}
    found = submissions.find(unpacked)
    assert [(s.student, s.source) for s in found] == [
        ("ann", "submitted/ann"),
        ("bob", "submitted/bob"),
        ("cy", "submitted/cy"),
    ]
    assert [s.notebook.read_text() for s in found] == ["ann", "bob", "cy"]
    # A group beside a lone student at the top: both are found, none merged.
    (unpacked / "dave").mkdir()
    (unpacked / "dave" / "mine.ipynb").write_text("dave")
    assert [s.student for s in submissions.find(unpacked)] == ["ann", "bob", "cy", "dave"]


def test_restore_deleted_cells_in_place():
    """Are deleted set-up, solution and test cells put back where they were?"""
    master = build.master_notebook()
    handed_in = copy.deepcopy(master)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in master.cells]
    gone = {"setup", "data_augmenter", "data_augmenter_test", "fine_tune_test"}
    handed_in.cells = [c for c, i in zip(handed_in.cells, ids) if i not in gone]
    restored = submissions.restore_deleted_cells(handed_in, master)
    assert sorted(restored) == sorted(gone)
    order = [c.metadata.get("nbgrader", {}).get("grade_id") for c in handed_in.cells]
    assert [i for i in order if i] == [i for i in ids if i]


# --------------------------------------------------------------------------------------
# The full cycle (slow)
# --------------------------------------------------------------------------------------


def variants(course):
    """Return {student: notebook or text}: one student per scenario."""
    solution = sample.solution_notebook(course)
    replace = sample.replace_in
    wrong_augmenter = replace(
        solution, "data_augmenter", 'RandomFlip("horizontal")', 'RandomFlip("vertical")'
    )
    # Exercise 3 with one detail wrong (BatchNormalization unfrozen), and every test cell
    # emptied or deleted, and the locked set-up cell edited.
    tampered = replace(solution, "fine_tune", " and not is_batch_norm", "")
    for cell in tampered.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            cell.source = "pass"
    tampered.cells = [
        c
        for c in tampered.cells
        if c.metadata.get("nbgrader", {}).get("grade_id")
        not in ("frozen_base_test", "fine_tune_compile_test")
    ]
    sample.cell(tampered, "setup").source += "\npublic_tests = None"
    # Exercise 3 wrong (BatchNormalization unfrozen), and the public test replaced by a fake.
    cheat = replace(solution, "fine_tune", " and not is_batch_norm", "")
    sample.cell(
        cheat, "fine_tune"
    ).source += (
        "\n\npublic_tests.fine_tune_test = lambda *args, **kwargs: print('all tests passed')"
    )
    return {
        "cheat": cheat,
        "solution": solution,
        "release": sample.release_notebook(course),
        "wrong_augmenter": wrong_augmenter,
        "tampered": tampered,
        "crash": replace(
            solution,
            "alpaca_model",
            "    input_shape = image_shape + (3,)\n",
            "    input_shape = image_shape + (3,)\n    os._exit(1)\n",
        ),
        "hang": replace(
            solution,
            "data_augmenter",
            "def data_augmenter():",
            "while True:\n    pass\n\n\ndef data_augmenter():",
        ),
        "not_json": '{"cells": [ this is not JSON',
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Generate the release, zip nine submissions, grade them with 2 workers, export."""
    sample.environment()
    tmp = tmp_path_factory.mktemp("autograde")
    course = sample.make_course(tmp / "course")
    folder = tmp / "submissions"
    for student, notebook in variants(course).items():
        sample.write_submission(folder, student, notebook)
    (folder / "empty_folder").mkdir()
    archive = tmp / "submissions.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in folder.rglob("*"):
            handle.write(path, pathlib.Path("submitted") / path.relative_to(folder))
    out = tmp / "out"
    start = time.monotonic()
    results = batch.run(
        archive,
        course,
        workers=2,
        out=out,
        submission_timeout=SUBMISSION_TIMEOUT,
        cell_timeout=CELL_TIMEOUT,
        progress=False,
    )
    seconds = time.monotonic() - start
    with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    return {
        "course": course,
        "out": out,
        "rows": rows,
        "results": results,
        "archive": archive,
        "seconds": seconds,
    }


def total(graded, student):
    return float(graded["rows"][student]["total"])


@pytest.mark.slow
def test_release_holds_exactly_the_learner_files(graded):
    """Does generate_assignment release exactly the learner files, without the master script?"""

    release = graded["course"] / "release" / ASSIGNMENT
    files = sorted(p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file())
    assert files == build.expected_release()


@pytest.mark.slow
def test_every_student_has_a_row(graded):
    """Does grades.csv have one row per submission, with every column, whatever happened?"""
    rows = graded["rows"]
    assert sorted(rows) == sorted([*variants(graded["course"]), "empty_folder"])
    header = list(next(iter(rows.values())))
    assert header == ["student", "source", *POINTS, "total", "status", "seconds"]
    assert max(POINTS[name] for name in POINTS) == 3 and sum(POINTS.values()) == TOTAL


@pytest.mark.slow
def test_solution_gets_full_marks(graded):
    """Does the solution get all 13 points, every test cell included (no stderr zero)?"""
    row = graded["rows"]["solution"]
    assert {name: float(row[name]) for name in POINTS} == POINTS
    assert total(graded, "solution") == TOTAL
    assert row["status"] == "graded"


@pytest.mark.slow
def test_untouched_release_gets_zero(graded):
    """Does the release, handed in untouched, get 0?"""
    assert total(graded, "release") == 0
    assert graded["rows"]["release"]["status"] == "graded"


@pytest.mark.slow
def test_one_exercise_wrong_loses_only_its_points(graded):
    """Does a wrong data_augmenter() lose exactly Exercise 1's 2 points?"""
    row = graded["rows"]["wrong_augmenter"]
    assert float(row["data_augmenter_test"]) == 0
    assert total(graded, "wrong_augmenter") == TOTAL - POINTS["data_augmenter_test"]


@pytest.mark.slow
def test_edited_and_deleted_tests_are_graded_as_intact(graded):
    """Is a submission with tests emptied or deleted graded as if they were intact?

    Its fine_tune() leaves BatchNormalization trainable: one wrong detail of Exercise 3
    loses fine_tune_test (3) and keeps fine_tune_compile_test (2).
    """
    row = graded["rows"]["tampered"]
    assert float(row["fine_tune_test"]) == 0
    assert float(row["fine_tune_compile_test"]) == POINTS["fine_tune_compile_test"]
    assert total(graded, "tampered") == TOTAL - POINTS["fine_tune_test"]
    assert "put back: frozen_base_test fine_tune_compile_test" in row["status"]
    assert "edited locked cells restored: setup" in row["status"]


@pytest.mark.slow
def test_replaced_test_function_does_not_fool_the_grader(graded):
    """Does a notebook that replaces public_tests.fine_tune_test with a fake still lose its points?"""
    row = graded["rows"]["cheat"]
    assert float(row["fine_tune_test"]) == 0
    assert total(graded, "cheat") == TOTAL - POINTS["fine_tune_test"]


@pytest.mark.slow
def test_broken_submissions_get_status_rows(graded):
    """Do a crash, a hang and a file that is not JSON each get a row saying why?"""
    rows = graded["rows"]
    # The crash is in alpaca_model(): both of its test cells lose their points, the
    # sandbox is started again after each, and Exercises 1 and 3 keep theirs.
    assert rows["crash"]["status"].startswith("kernel died in cell alpaca_model_test")
    assert (
        total(graded, "crash") == TOTAL - POINTS["alpaca_model_test"] - POINTS["frozen_base_test"]
    )
    assert rows["not_json"]["status"].startswith("not graded: not a valid notebook")
    assert total(graded, "not_json") == 0
    assert rows["empty_folder"]["status"] == "not graded: no notebook found in the submission"
    # The hanging cell is interrupted at its time limit (as nbgrader interrupts a cell);
    # the rest of the notebook is graded.
    assert rows["hang"]["status"].startswith("cell data_augmenter timed out: interrupted after")
    assert float(rows["hang"]["data_augmenter_test"]) == 0
    assert total(graded, "hang") == TOTAL - POINTS["data_augmenter_test"]


@pytest.mark.slow
def test_feedback_shows_no_hidden_test_code(graded):
    """Does every feedback HTML leave out each hidden test line, and keep the failure messages?"""
    course, out = graded["course"], graded["out"]
    public = json.dumps(sample.release_notebook(course).cells)
    hidden = significant(sample.hidden_lines(), public)
    assert len(hidden) >= 5
    # The check can see a leak: the autograded notebook (nbgrader#917) has every hidden line.
    autograded = nbformat.read(
        course / "autograded" / "solution" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", 4
    )
    sources = "\n".join(cell.source for cell in autograded.cells)
    assert all(line in sources for line in hidden)
    pages = sorted((out / "feedback").glob("*.html"))
    assert {p.stem for p in pages} == {
        "solution",
        "release",
        "wrong_augmenter",
        "tampered",
        "cheat",
        "hang",
        "crash",
    }
    for page in pages:
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))
        leaked = [line for line in hidden if line in text]
        assert not leaked, f"{page.name} shows hidden test code: {leaked}"
    # The learner still reads why Exercise 1 failed.
    autograded = nbformat.read(
        course / "autograded" / "wrong_augmenter" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", 4
    )
    error = next(
        o
        for o in sample.cell(autograded, "data_augmenter_test").outputs
        if o.output_type == "error"
    )
    page = (out / "feedback" / "wrong_augmenter.html").read_text(encoding="utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert error.evalue.splitlines()[0] in text


@pytest.mark.slow
def test_nbgrader_generate_feedback_is_quiet_and_html_only(graded):
    """Does `nbgrader generate_feedback` warn about nothing, and leave the feedback HTML only?

    (nbgrader copies every file of autograded/ into the feedback: timestamp.txt,
    grading.json, whatever the student handed in.)
    """
    course = graded["course"]
    autograded = course / "autograded" / "solution" / ASSIGNMENT
    (autograded / "timestamp.txt").write_text("2026-12-01 10:00:00.000000 UTC")
    result = course_module.nbgrader(["generate_feedback", ASSIGNMENT, "--force"], cwd=course)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "not recognized" not in result.stdout, result.stdout[-3000:]
    assert "SAWarning" not in result.stdout, result.stdout[-3000:]
    files = sorted(
        p.relative_to(course / "feedback").as_posix()
        for p in (course / "feedback").rglob("*")
        if not p.is_dir()
    )
    assert files, "nbgrader generate_feedback wrote no feedback"
    assert all(name.endswith(f"/{ASSIGNMENT}/{NOTEBOOK}.html") for name in files), files
    assert f"solution/{ASSIGNMENT}/{NOTEBOOK}.html" in files


@pytest.mark.slow
def test_feedback_renderer_stays_warm_and_kills_a_slow_render(graded, tmp_path):
    """Does one warm renderer, started before it is asked, render feedback after feedback,
    kill a render that runs out of time with its whole process group, and come back after
    it was killed itself?"""
    course = tmp_path / "course"
    shutil.copytree(graded["course"], course)
    page = course / "feedback" / "solution" / ASSIGNMENT / f"{NOTEBOOK}.html"
    warm = renderer.Renderer()
    limits = {
        "seconds": SETTINGS.feedback_timeout,
        "cpu_seconds": SETTINGS.feedback_cpu_seconds,
        "memory_mb": SETTINGS.feedback_memory_mb,
    }
    try:
        warm.start()  # as a worker does when the course arrives: the first render uses it
        first = warm.process.pid
        assert warm.render(course, "solution", **limits)[0] == 0
        assert warm.process.pid == first, "start() did not start the renderer that renders"
        page.unlink()
        returncode, output = warm.render(course, "solution", **limits)
        assert returncode == 0, output
        assert warm.process.pid == first, "a new renderer was started for the second render"
        assert "alpaca_model_test" in page.read_text(encoding="utf-8")
        # Out of time: nothing of the child is left, and the renderer answers the next one.
        assert warm.render(course, "solution", **{**limits, "seconds": 0.01})[0] is None
        left = [p.pid for p in psutil.process_iter() if _group(p) == warm.last_child]
        assert not psutil.pid_exists(warm.last_child) and not left, left
        assert warm.render(course, "solution", **limits)[0] == 0 and warm.process.pid == first
        # A renderer that died is started again.
        os.killpg(first, signal.SIGKILL)
        warm.process.wait()
        assert warm.render(course, "solution", **limits)[0] == 0
        assert warm.process.pid != first
    finally:
        warm.close()


# A render as the renderer's child does it (render_limited), after preload() or cold.
RENDER = (
    "from grader import feedback\n"
    "from grader.config import SETTINGS\n"
    "feedback.render_limited(sys.argv[1], 'solution', SETTINGS.feedback_cpu_seconds, "
    "SETTINGS.feedback_memory_mb)\n"
)
COMPILED_BEFORE_RENDER = (
    "import sys\n"
    "from grader import feedback\n"
    "feedback.preload()\n"
    "compiled = dict(feedback.COMPILED_TEMPLATES.compiled)\n"
    + RENDER
    + "print(len(compiled), feedback.COMPILED_TEMPLATES.compiled == compiled)\n"
)
RENDER_COLD = "import sys\n" + RENDER


@pytest.mark.slow
def test_feedback_templates_compiled_before_the_fork_give_the_same_page(graded, tmp_path):
    """Does the renderer's warm-up compile every template a render uses (the render
    compiles none), and is the page then byte for byte the page of a cold process?"""
    course = tmp_path / "course"
    shutil.copytree(graded["course"], course)
    page = course / "feedback" / "solution" / ASSIGNMENT / f"{NOTEBOOK}.html"
    pages = []
    for script in (COMPILED_BEFORE_RENDER, RENDER_COLD):
        page.unlink(missing_ok=True)
        done = subprocess.run(
            [sys.executable, "-c", script, str(course)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        pages.append(page.read_bytes())
        if script is COMPILED_BEFORE_RENDER:
            count, unchanged = done.stdout.split()[-2:]
            assert int(count) >= 5 and unchanged == "True", done.stdout
    assert pages[0] == pages[1]


def _group(process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


@pytest.mark.slow
def test_nbgrader_export_matches_grades_csv(graded):
    """Does nbgrader export, on the course gradebook, give the same totals as grades.csv?"""
    course = graded["course"]
    result = course_module.nbgrader(["export", "--to", str(course / "export.csv")], cwd=course)
    assert result.returncode == 0, result.stdout
    with open(course / "export.csv", newline="", encoding="utf-8") as handle:
        exported = {row["student_id"]: float(row["score"]) for row in csv.DictReader(handle)}
    assert exported == {student: total(graded, student) for student in graded["rows"]}


@pytest.mark.slow
def test_rerun_skips_graded_students(graded):
    """Does a second run skip every student already graded, and keep the same grades.csv?"""
    before = (graded["out"] / "grades.csv").read_text(encoding="utf-8")
    start = time.monotonic()
    batch.run(graded["archive"], graded["course"], workers=2, out=graded["out"], progress=False)
    assert time.monotonic() - start < 30
    assert (graded["out"] / "grades.csv").read_text(encoding="utf-8") == before


@pytest.mark.slow
def test_batch_command_line(graded, tmp_path):
    """Does `python -m grader.batch` run from the shell and print a summary?"""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grader.batch",
            str(graded["archive"]),
            "--course",
            str(graded["course"]),
            "--out",
            str(graded["out"]),
            "--workers",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"{len(graded['rows'])} students" in result.stdout and "already graded" in result.stderr


@pytest.mark.slow
def test_no_sandbox_grades_trusted_notebooks_and_says_so(tmp_path):
    """Does --no-sandbox grade the solution in plain processes, with a status that says so?"""
    sample.environment()
    course = sample.make_course(tmp_path / "course")  # its own: the gradebook gets a row
    sample.write_submission(tmp_path / "in", "own_solution", sample.solution_notebook(course))
    result = subprocess.run(
        [sys.executable, "-m", "grader.batch", str(tmp_path / "in"), "--course"]
        + [str(course), "--out", str(tmp_path / "out"), "--workers", "1"]
        + ["--no-sandbox"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "out" / "grades.csv", newline="", encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["total"]) == TOTAL
    assert row["status"] == "graded (NO SANDBOX: student code ran unconfined)"


@pytest.mark.slow
def test_nbgrader_validate_master_and_inverted_release(graded):
    """Does `nbgrader validate` pass the master, and `validate --invert` pass the release?"""
    course = graded["course"]
    master = course / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    release = course / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    result = course_module.nbgrader(["validate", str(master)], cwd=course, timeout=900)
    assert "Success! Your notebook passes all the tests." in result.stdout, result.stdout[-3000:]
    result = course_module.nbgrader(["validate", "--invert", str(release)], cwd=course, timeout=900)
    assert "Success! The notebook does not pass any tests." in result.stdout, result.stdout[-3000:]
