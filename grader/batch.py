"""Autograde a whole class in parallel, and survive any one bad submission.

    python -m grader.batch SUBMISSIONS [--course course] [--workers N] [--force] [--out DIR]

SUBMISSIONS is a folder or a zip (layouts: see grader/submissions.py). Each student
is graded by ``nbgrader autograde`` in a temporary copy of the course (its own
gradebook), N at a time, under a wall-clock and a memory limit. A submission that
kills the kernel, hangs, uses too much memory or is not a notebook gets a row with a
status saying why, and 0 points where nothing could be graded. The results are then
merged into the course's one gradebook (``course/gradebook.db``) and folders
(``submitted/``, ``autograded/``, ``feedback/``), so ``nbgrader export`` and the
formgrader work as usual.

Writes, in --out (default: <course>/batch):
    grades.csv            student, points per test cell, total, status, seconds
    feedback/<s>.html     each student's feedback, without the hidden tests' code
    logs/<s>.log          nbgrader's log for each student
    results/<s>.json      the record that makes a re-run skip graded students
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import datetime
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
import warnings

import nbformat
import psutil

from . import submissions
from .config import CELL_TIMEOUT, MEMORY_LIMIT_MB, SUBMISSION_TIMEOUT
from .course import (
    ASSIGNMENT,
    BIN,
    NOTEBOOK,
    db_url,
    grade_cells,
    nbgrader,
    release_notebook_path,
)
from .execute import STATUS_FILE

# Seconds and MiB beyond the student's limits for nbgrader itself and the checker.
OVERHEAD_SECONDS = 300
CHECKER_MEMORY_MB = 4096


GRADED = "graded"


# --------------------------------------------------------------------------------------
# The course
# --------------------------------------------------------------------------------------


def prepare_course(course: pathlib.Path) -> None:
    """Make sure the gradebook knows the assignment and the release exists."""
    from nbgrader.api import Gradebook, MissingEntry

    release = release_notebook_path(course)
    try:
        with Gradebook(db_url(course)) as gradebook:
            known = bool(gradebook.find_notebook(NOTEBOOK, ASSIGNMENT).grade_cells)
    except MissingEntry:
        known = False
    if known and release.is_file():
        return
    print(f"Running nbgrader generate_assignment {ASSIGNMENT} in {course} ...", file=sys.stderr)
    result = nbgrader(["generate_assignment", ASSIGNMENT, "--force"], cwd=course)
    if result.returncode != 0 or not release.is_file():
        raise SystemExit(f"nbgrader generate_assignment failed:\n{result.stdout}")


# --------------------------------------------------------------------------------------
# Grading one student (runs in a worker thread; the work runs in subprocesses)
# --------------------------------------------------------------------------------------


def _kill_tree(process: psutil.Process) -> None:
    try:
        family = process.children(recursive=True) + [process]
    except psutil.NoSuchProcess:
        return
    for member in family:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)


def _tree_rss_mb(process: psutil.Process) -> float:
    total = 0
    try:
        family = [process] + process.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    for member in family:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def run_limited(command, cwd, env, log, timeout, memory_mb):
    """Run ``command``; kill its whole process tree on timeout or memory overuse.

    Returns ``(returncode, why_killed or None, peak MiB of the tree)``. The kernels
    nbgrader starts are in their own sessions, so the tree is followed with psutil,
    not a process group.
    """
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command[1:])}\n")
        handle.flush()
        child = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process = psutil.Process(child.pid)
        start, peak, killed = time.monotonic(), 0.0, None
        while child.poll() is None:
            rss = _tree_rss_mb(process)
            peak = max(peak, rss)
            if rss > memory_mb:
                killed = f"out of memory: used more than {memory_mb:.0f} MiB"
            elif time.monotonic() - start > timeout:
                killed = f"timeout: not finished after {timeout:.0f} s"
            if killed:
                _kill_tree(process)
                break
            time.sleep(0.25)
        child.wait()
    return child.returncode, killed, peak


def _failure_from_log(text: str) -> str:
    if "DeadKernelError" in text or "Kernel died" in text or "kernel died" in text:
        return "kernel died (the notebook crashed the Python process)"
    if "UnresponsiveKernelError" in text:
        return "kernel unresponsive"
    errors = [line for line in text.splitlines() if "[AutogradeApp | ERROR]" in line]
    detail = errors[0].split("]", 1)[1].strip() if errors else "see the log"
    return f"autograde failed: {detail[:200]}"


def _notes(restored: list[str], edited: list[str]) -> list[str]:
    notes = []
    if restored:
        notes.append("deleted cells put back: " + " ".join(restored))
    if edited:
        notes.append("edited locked cells restored: " + " ".join(edited))
    return notes


def _grading_status(folder: pathlib.Path) -> dict:
    """What the grading preprocessor wrote beside the autograded notebook."""
    try:
        return json.loads((folder / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"status": "no grading status written: see the log"}


def _scores(course: pathlib.Path, student: str) -> tuple[dict, dict]:
    """Return ``({grade_id: points}, {grade_id: auto comment})`` from a gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(db_url(course)) as gradebook:
        notebook = gradebook.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student)
        points = {g.name: float(g.score or 0) for g in notebook.grades}
        comments = {c.name: c.auto_comment for c in notebook.comments if c.auto_comment}
    return points, comments


def grade_one(sub, course, template_db, release, out, options) -> dict:
    """Grade one student in a temporary course; return the result record."""
    started = time.monotonic()
    student = sub.student
    work = out / "work" / student
    if work.exists():
        shutil.rmtree(work)
    temp = work / "course"
    (temp / "source").mkdir(parents=True)
    (temp / "nbgrader_config.py").symlink_to(course.resolve() / "nbgrader_config.py")
    (temp / "source" / ASSIGNMENT).symlink_to(course.resolve() / "source" / ASSIGNMENT)
    shutil.copy(template_db, temp / "gradebook.db")
    log = out / "logs" / f"{student}.log"
    log.write_text(f"student {student}: {sub.notebook}\n", encoding="utf-8")
    result = {
        "student": student,
        "points": {},
        "comments": {},
        "peak_mb": 0.0,
        "notebook": str(sub.notebook) if sub.notebook else None,
        "sha256": options["sha256"],
    }

    def finish(status, **extra):
        result.update(status=status, seconds=round(time.monotonic() - started, 1), **extra)
        return result

    if sub.notebook is None:
        return finish("no notebook found in the submission")
    try:
        notebook = submissions.read(sub.notebook)
    except ValueError as error:
        return finish(str(error))
    edited = submissions.edited_locked_cells(notebook, release)
    restored = submissions.restore_deleted_cells(notebook, release)

    submitted = temp / "submitted" / student / ASSIGNMENT
    submitted.mkdir(parents=True)
    nbformat.write(notebook, submitted / f"{NOTEBOOK}.ipynb")
    if sub.timestamp:
        shutil.copy(sub.timestamp, submitted / "timestamp.txt")

    env = dict(os.environ)
    env.update(options["env"])
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    command = [
        sys.executable,
        "-m",
        "nbgrader",
        "autograde",
        ASSIGNMENT,
        "--student",
        student,
        "--force",
        f"--SandboxedExecute.timeout={options['cell_timeout']}",
        f"--SandboxedExecute.total_timeout={options['timeout']}",
        f"--SandboxedExecute.memory_mb={options['memory_mb']}",
        f"--SandboxedExecute.sandbox={options['sandbox']}",
    ]
    # The sandboxes enforce the submission's limits; this is the net around nbgrader,
    # the student's sandbox and the checker together.
    code, killed, peak = run_limited(
        command,
        temp,
        env,
        log,
        options["timeout"] + OVERHEAD_SECONDS,
        options["memory_mb"] + CHECKER_MEMORY_MB,
    )
    result["peak_mb"] = round(peak)
    result["autograde_seconds"] = round(time.monotonic() - started, 1)
    log_text = log.read_text(encoding="utf-8", errors="replace")
    autograded = temp / "autograded" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    if killed:
        return finish(killed)
    if code != 0 or not autograded.is_file():
        return finish(_failure_from_log(log_text))
    result["points"], result["comments"] = _scores(temp, student)

    feedback = nbgrader(
        ["generate_feedback", ASSIGNMENT, "--student", student, "--force"],
        cwd=temp,
        log=log,
        env=env,
    )
    html = temp / "feedback" / student / ASSIGNMENT / f"{NOTEBOOK}.html"
    notes = _notes(restored, edited)
    if feedback.returncode != 0 or not html.is_file():
        notes.append("feedback failed: see the log")
    how = _grading_status(autograded.parent)
    status = GRADED if how["status"] == GRADED else how["status"]
    if not how.get("sandbox", True):
        notes.append("NO SANDBOX: student code ran unconfined")
    status += f" ({'; '.join(notes)})" if notes else ""
    return finish(status, work=str(temp))


# --------------------------------------------------------------------------------------
# Merging into the course (main thread only: one writer for the gradebook)
# --------------------------------------------------------------------------------------


def _replace_tree(source: pathlib.Path | None, dest: pathlib.Path) -> None:
    """Make ``dest`` a copy of ``source``, or remove it when ``source`` is None."""
    if dest.exists():
        shutil.rmtree(dest)
    if source is not None and source.exists():
        shutil.copytree(source, dest)


def merge(result: dict, sub, course: pathlib.Path, out: pathlib.Path) -> None:
    """Put one student's result into the course gradebook and folders, and into --out."""
    from nbgrader.api import Gradebook

    student = result["student"]
    work = pathlib.Path(result["work"]) if result.get("work") else None
    for folder in ("submitted", "autograded", "feedback"):
        dest = course / folder / student / ASSIGNMENT
        if work is not None:
            _replace_tree(work / folder / student / ASSIGNMENT, dest)
        elif folder == "submitted":
            # Keep what the student handed in, even when it is not a notebook.
            _replace_tree(None, dest)
            if sub.notebook is not None:
                dest.mkdir(parents=True)
                shutil.copy(sub.notebook, dest / f"{NOTEBOOK}.ipynb")
        else:
            _replace_tree(None, dest)

    timestamp = None
    stamp = course / "submitted" / student / ASSIGNMENT / "timestamp.txt"
    if stamp.is_file():
        try:
            from nbgrader.utils import parse_utc

            timestamp = parse_utc(stamp.read_text().strip())
        except Exception:
            timestamp = None
    with warnings.catch_warnings(), Gradebook(db_url(course)) as gradebook:
        # nbgrader's own add_submission() makes SQLAlchemy warn ("not in session").
        warnings.simplefilter("ignore")
        gradebook.update_or_create_student(student)
        kwargs = {"timestamp": timestamp} if timestamp else {}
        gradebook.update_or_create_submission(ASSIGNMENT, student, **kwargs)
        notebook = gradebook.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student)
        for grade in notebook.grades:
            grade.auto_score = result["points"].get(grade.name, 0.0)
            grade.needs_manual_grade = False
        for comment in notebook.comments:
            comment.auto_comment = result["comments"].get(comment.name)
        # Flag in the formgrader the students who need a look.
        notebook.flagged = not result["status"].startswith(GRADED)
        gradebook.db.commit()

    html = course / "feedback" / student / ASSIGNMENT / f"{NOTEBOOK}.html"
    target = out / "feedback" / f"{student}.html"
    if html.is_file():
        shutil.copy(html, target)
    elif target.exists():
        target.unlink()
    if work is not None:
        shutil.rmtree(work.parent, ignore_errors=True)
    result.pop("work", None)
    (out / "results" / f"{student}.json").write_text(json.dumps(result, indent=1), "utf-8")


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------


def write_csv(path: pathlib.Path, results: list[dict], cells) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", *[name for name, _ in cells], "total", "status", "seconds"])
        for r in results:
            points = [r["points"].get(name, 0.0) for name, _ in cells]
            writer.writerow(
                [
                    r["student"],
                    *[f"{p:g}" for p in points],
                    f"{sum(points):g}",
                    r["status"],
                    r["seconds"],
                ]
            )


def _sha256(path) -> str | None:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest() if path else None


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run(
    submissions_path,
    course,
    workers=None,
    force=False,
    out=None,
    timeout=SUBMISSION_TIMEOUT,
    cell_timeout=CELL_TIMEOUT,
    memory_mb=MEMORY_LIMIT_MB,
    progress=True,
    sandbox=True,
) -> list[dict]:
    """Grade every submission; return the result records (one per student)."""
    from tqdm import tqdm

    course = pathlib.Path(course).resolve()
    out = pathlib.Path(out).resolve() if out else course / "batch"
    workers = max(1, workers or default_workers())
    for folder in ("logs", "results", "feedback", "work"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    folder = submissions.unpack(pathlib.Path(submissions_path), out / "incoming")
    found = submissions.find(folder)
    if not found:
        raise SystemExit(f"No submissions found in {submissions_path}.")
    prepare_course(course)
    release = nbformat.read(release_notebook_path(course), as_version=4)
    cells = grade_cells(release)

    results, todo = {}, []
    for sub in found:
        record = out / "results" / f"{sub.student}.json"
        digest = _sha256(sub.notebook)
        if record.is_file() and not force:
            previous = json.loads(record.read_text("utf-8"))
            if previous.get("sha256") == digest:
                results[sub.student] = previous
                continue
        todo.append((sub, digest))

    # Each worker's TensorFlow gets an equal share of the cores.
    threads = str(max(1, default_workers() // workers))
    env = {
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": threads,
        "OMP_NUM_THREADS": threads,
        "MPLBACKEND": "Agg",
    }
    template = out / "work" / "template.db"
    shutil.copy(course / "gradebook.db", template)
    skipped = len(found) - len(todo)
    if skipped:
        print(
            f"{skipped} student(s) already graded: skipped (use --force to regrade).",
            file=sys.stderr,
        )

    lock = threading.Lock()
    bar = tqdm(
        total=len(todo), unit="student", desc="autograde", disable=not progress, dynamic_ncols=True
    )
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {}
        for sub, digest in todo:
            options = {
                "sha256": digest,
                "env": env,
                "timeout": timeout,
                "cell_timeout": cell_timeout,
                "memory_mb": memory_mb,
                "sandbox": sandbox,
            }
            futures[pool.submit(grade_one, sub, course, template, release, out, options)] = sub
        for future in concurrent.futures.as_completed(futures):
            sub = futures[future]
            try:
                result = future.result()
            except Exception as error:  # a bug here must not lose the row
                result = {
                    "student": sub.student,
                    "points": {},
                    "comments": {},
                    "status": f"grader error: {type(error).__name__}: {error}",
                    "seconds": 0.0,
                    "peak_mb": 0,
                    "sha256": _sha256(sub.notebook),
                }
            with lock:
                merge(result, sub, course, out)
            results[sub.student] = result
            total = sum(result["points"].values())
            bar.set_postfix_str(f"{sub.student}: {total:g} pts, {result['status'][:40]}")
            bar.update()
    bar.close()
    shutil.rmtree(out / "work", ignore_errors=True)

    ordered = [results[sub.student] for sub in found]
    write_csv(out / "grades.csv", ordered, cells)
    return ordered


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grader.batch",
        description="Autograde every submission in parallel with nbgrader.",
    )
    parser.add_argument("submissions", help="a folder or a zip of submissions")
    parser.add_argument("--course", default="course", help="the nbgrader course folder")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"parallel gradings (default: the cores, here {default_workers()})",
    )
    parser.add_argument("--force", action="store_true", help="regrade students already graded")
    parser.add_argument("--out", default=None, help="output folder (default: COURSE/batch)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=SUBMISSION_TIMEOUT,
        help="seconds one submission may take in all (default %(default)s)",
    )
    parser.add_argument(
        "--cell-timeout",
        type=int,
        default=CELL_TIMEOUT,
        help="seconds one cell may run (default %(default)s)",
    )
    parser.add_argument(
        "--memory-limit",
        type=float,
        default=MEMORY_LIMIT_MB,
        help="MiB one grading may use (default %(default)s)",
    )
    parser.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run student code unconfined: for trusted notebooks only (your own solutions)",
    )
    args = parser.parse_args(argv)
    if not args.no_sandbox:
        from .sandbox import SandboxUnavailable, check_available

        try:
            check_available()
        except SandboxUnavailable as error:
            raise SystemExit(f"Cannot grade: {error}") from None
    started = datetime.datetime.now()
    results = run(
        args.submissions,
        args.course,
        args.workers,
        args.force,
        args.out,
        args.timeout,
        args.cell_timeout,
        args.memory_limit,
        sandbox=not args.no_sandbox,
    )
    out = pathlib.Path(args.out) if args.out else pathlib.Path(args.course) / "batch"
    failed = [r for r in results if not r["status"].startswith(GRADED)]
    print(
        f"{len(results)} students, {len(failed)} not graded normally, in "
        f"{(datetime.datetime.now() - started).total_seconds():.0f} s. "
        f"Wrote {out / 'grades.csv'} and {out / 'feedback'}/."
    )
    for r in failed:
        print(f"  {r['student']}: {r['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
