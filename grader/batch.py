"""Autograde a whole class on Dask workers, and survive any one bad submission.

    python -m grader.batch SUBMISSIONS [--course course] [--workers N | --scheduler ADDRESS]
                                       [--force] [--out DIR] [--no-sandbox]

SUBMISSIONS is a folder or a zip (layouts: see grader/submissions.py). One Dask
task grades one submission (``worker.grade_submission``): nbgrader autograde and
feedback, in-process on a warm worker, with the student's code in a sandbox.
Without ``--scheduler`` the workers are an embedded ``LocalCluster`` of N processes
of one thread each; with it, an existing Dask cluster does the work. The notebook
travels with its task; no file system is shared.

This process is the one writer: it merges each result, as it comes, into the
course's gradebook (``course/gradebook.db``) and folders (``submitted/``,
``autograded/``, ``feedback/``), so ``nbgrader export`` and the formgrader work as
usual, and into --out (default: <course>/batch):

    grades.csv            student, source, points per test cell, total, status, seconds
    feedback/<s>.html     each student's feedback, without the hidden tests' code
    logs/<s>.log          nbgrader's log for each student
    results/<s>.json      the record that makes a re-run skip graded students

A worker that dies mid-grade has its submission graded again elsewhere; Ctrl-C
stops after the result being written, and the next run goes on from there.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import datetime
import hashlib
import importlib.util
import json
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import warnings

import nbformat

from . import submissions, worker
from .config import SETTINGS
from .course import (
    ASSIGNMENT,
    NOTEBOOK,
    db_url,
    grade_cells,
    nbgrader,
    release_notebook_path,
    tools_on_path,
)
from .execute import STATUS_FILE

GRADED = "graded"
# Statuses of a submission the grader itself failed on (not the student's doing).
GRADER_ERRORS = ("grader error", "autograde failed")
# Seconds to reach a scheduler given with --scheduler before giving up.
CONNECT_TIMEOUT = 10


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


def template_gradebook(course: pathlib.Path, folder: pathlib.Path) -> pathlib.Path:
    """A gradebook that knows the assignment and no student, for the workers."""
    temp = folder / "template"
    (temp / "source").mkdir(parents=True)
    shutil.copyfile(course / "nbgrader_config.py", temp / "nbgrader_config.py")
    (temp / "source" / ASSIGNMENT).symlink_to((course / "source" / ASSIGNMENT).resolve())
    result = nbgrader(["generate_assignment", ASSIGNMENT, "--force"], cwd=temp)
    if result.returncode != 0:
        raise SystemExit(f"nbgrader generate_assignment failed:\n{result.stdout}")
    return temp / "gradebook.db"


# --------------------------------------------------------------------------------------
# Before a task: what the client can decide alone
# --------------------------------------------------------------------------------------


def _sha256(path) -> str | None:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest() if path else None


NOT_GRADED = "not graded"


def make_task(sub, release, options, digest) -> tuple[dict | None, dict]:
    """Return ``(task or None, base result)``: None when there is nothing to grade."""
    result = {
        "student": sub.student,
        "source": sub.source,
        "points": {},
        "comments": {},
        "notes": [sub.note] if sub.note else [],
        "notebook": str(sub.notebook) if sub.notebook else None,
        "sha256": digest,
        "seconds": 0.0,
    }
    if sub.notebook is None:
        return None, {**result, "status": f"{NOT_GRADED}: {sub.problem or 'no notebook'}"}
    try:
        notebook = submissions.read(sub.notebook)
    except ValueError as error:
        return None, {**result, "status": f"{NOT_GRADED}: {error}"}
    edited = submissions.edited_locked_cells(notebook, release)
    restored = submissions.restore_deleted_cells(notebook, release)
    if restored:
        result["notes"].append("deleted cells put back: " + " ".join(restored))
    if edited:
        result["notes"].append("edited locked cells restored: " + " ".join(edited))
    task = {
        "student": sub.student,
        "notebook": nbformat.writes(notebook),
        "timestamp": sub.timestamp,
        "options": options,
    }
    return task, result


def unreadable(sub, error: BaseException) -> dict:
    """The row of a submission the client could not even prepare (a bug: never a crash)."""
    return {
        "student": sub.student,
        "source": sub.source,
        "points": {},
        "comments": {},
        "notes": [],
        "notebook": None,
        "sha256": None,
        "seconds": 0.0,
        "status": f"{NOT_GRADED}: {type(error).__name__}: {error}"[:300],
    }


def finish(result: dict, graded: dict) -> dict:
    """Combine the client's base result with what the worker returned."""
    how = graded.get("grading") or {}
    notes = list(result["notes"])
    if how and not how.get("sandbox", True):
        notes.append("NO SANDBOX: student code ran unconfined")
    status = graded.get("status") or how.get("status", "no grading status")
    if notes:
        status += f" ({'; '.join(notes)})"
    return {
        **result,
        **{k: graded[k] for k in ("points", "comments", "seconds") if k in graded},
        "status": status,
        "peak_mb": how.get("peak_mb", 0.0),
        "worker": graded.get("worker"),
        "autograded": graded.get("autograded"),
        "feedback": graded.get("feedback"),
        "log": graded.get("log", ""),
    }


# --------------------------------------------------------------------------------------
# Merging into the course (this process only: one writer)
# --------------------------------------------------------------------------------------


def _write(path: pathlib.Path, text: str | None) -> None:
    """Write ``text`` to ``path`` atomically, or remove ``path`` when text is None."""
    if text is None:
        if path.exists():
            path.unlink()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    # Text from a submission may hold anything, even lone surrogates: never a crash.
    partial.write_text(text, encoding="utf-8", errors="backslashreplace")
    os.replace(partial, path)


def merge(result: dict, sub, course: pathlib.Path, out: pathlib.Path) -> dict:
    """Put one student's result into the course gradebook and folders, and into --out."""
    from nbgrader.api import Gradebook

    student = result["student"]
    for folder in ("submitted", "autograded", "feedback"):
        dest = course / folder / student / ASSIGNMENT
        if dest.exists():
            shutil.rmtree(dest)
    submitted = course / "submitted" / student / ASSIGNMENT
    if sub.notebook is not None:
        submitted.mkdir(parents=True)
        shutil.copyfile(sub.notebook, submitted / f"{NOTEBOOK}.ipynb")
        if sub.timestamp:
            (submitted / "timestamp.txt").write_text(sub.timestamp, encoding="utf-8")
    autograded = course / "autograded" / student / ASSIGNMENT
    _write(autograded / f"{NOTEBOOK}.ipynb", result.get("autograded"))
    if result.get("autograded"):
        _write(autograded / STATUS_FILE, json.dumps({"status": result["status"]}))
    _write(course / "feedback" / student / ASSIGNMENT / f"{NOTEBOOK}.html", result.get("feedback"))
    _write(out / "feedback" / f"{student}.html", result.get("feedback"))
    _write(out / "logs" / f"{student}.log", f"{result['source']}\n{result.get('log', '')}")

    timestamp = None
    if sub.timestamp:
        from nbgrader.utils import parse_utc

        timestamp = parse_utc(sub.timestamp)  # checked by submissions.find()
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
            # Every cell is the grader's: a regrade undoes any override (a script in a
            # submission opened in the formgrader could have set one).
            grade.manual_score = None
            grade.extra_credit = None
        for comment in notebook.comments:
            comment.auto_comment = result["comments"].get(comment.name)
        # Flag in the formgrader the students who need a look.
        notebook.flagged = not result["status"].startswith(GRADED)
        gradebook.db.commit()

    record = {k: v for k, v in result.items() if k not in ("autograded", "feedback", "log")}
    _write(out / "results" / f"{student}.json", json.dumps(record, indent=1))
    return record


def merge_safely(result: dict, sub, course: pathlib.Path, out: pathlib.Path) -> dict:
    """`merge`, and when that fails, a row that says so: never a lost student."""
    try:
        return merge(result, sub, course, out)
    except Exception as error:  # noqa: BLE001 -- one student's files must not stop the class
        return {
            **{k: v for k, v in result.items() if k not in ("autograded", "feedback", "log")},
            "status": (f"grader error: could not record the result: {error!r}")[:300],
        }


def write_csv(path: pathlib.Path, results: list[dict], cells) -> None:
    partial = path.with_name(path.name + ".part")
    with open(partial, "w", newline="", encoding="utf-8", errors="backslashreplace") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["student", "source", *[name for name, _ in cells], "total", "status", "seconds"]
        )
        for r in results:
            points = [r["points"].get(name, 0.0) for name, _ in cells]
            writer.writerow(
                [
                    r["student"],
                    r.get("source", ""),
                    *[f"{p:g}" for p in points],
                    f"{sum(points):g}",
                    r["status"],
                    r["seconds"],
                ]
            )
    os.replace(partial, path)


# --------------------------------------------------------------------------------------
# The Dask cluster
# --------------------------------------------------------------------------------------


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def connect(workers: int, scheduler: str | None):
    """Return ``(client, cluster or None)``: an embedded LocalCluster, or the given scheduler."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT}s")
        except (OSError, TimeoutError) as error:
            raise SystemExit(
                f"Cannot reach the Dask scheduler at {scheduler} within {CONNECT_TIMEOUT} s "
                f"({type(error).__name__}). Start it with `dask scheduler`, and check the "
                f"address and the firewall."
            ) from None
        return client, None
    # A free port: Dask's default (8787) may be taken by another cluster, and it warns.
    dashboard = ":0"
    # Dask's statistical profiler samples each worker's stack every 10 ms: CPU taken
    # from the grading, for a profile nobody reads here.
    dask.config.set({"distributed.worker.profile.enabled": False})
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        memory_limit=0,  # the sandboxes limit memory; TensorFlow must not trip the nanny
        dashboard_address=dashboard,
        host="127.0.0.1",
    )
    return Client(cluster), cluster


def run(
    submissions_path,
    course,
    workers=None,
    force=False,
    out=None,
    submission_timeout=SETTINGS.submission_timeout,
    cell_timeout=SETTINGS.cell_timeout,
    memory_mb=SETTINGS.memory_mb,
    progress=True,
    sandbox=True,
    scheduler=None,
) -> list[dict]:
    """Grade every submission; return the result records (one per student)."""
    from distributed import wait
    from tqdm import tqdm

    tools_on_path()
    course = pathlib.Path(course).resolve()
    out = pathlib.Path(out).resolve() if out else course / "batch"
    workers = max(1, workers or default_workers())
    for folder in ("logs", "results", "feedback"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    folder, refused = submissions.unpack(pathlib.Path(submissions_path), out / "incoming")
    found = submissions.find(folder, refused)
    if not found:
        raise SystemExit(f"No submissions found in {submissions_path}.")
    # A scheduler that cannot be reached fails the run now, before any work.
    client, cluster = connect(workers, scheduler) if scheduler else (None, None)
    for sub in found:
        if sub.note.startswith("id collision"):
            print(f"warning: {sub.source} is graded as {sub.student}: {sub.note}", file=sys.stderr)
    prepare_course(course)
    release = nbformat.read(release_notebook_path(course), as_version=4)
    cells = grade_cells(release)
    by_student = {sub.student: sub for sub in found}

    options = {
        "submission_timeout": submission_timeout,
        "cell_timeout": cell_timeout,
        "memory_mb": memory_mb,
        "sandbox": sandbox,
    }
    results, tasks, skipped = {}, [], 0
    for sub in found:
        try:
            record = out / "results" / f"{sub.student}.json"
            digest = _sha256(sub.notebook)
            if record.is_file() and not force:
                previous = json.loads(record.read_text("utf-8"))
                # A grader error is never kept: the next run grades that student again.
                kept = not str(previous.get("status", "")).startswith(GRADER_ERRORS)
                if previous.get("sha256") == digest and kept:
                    results[sub.student] = previous
                    skipped += 1
                    continue
            task, base = make_task(sub, release, options, digest)
        except Exception as error:  # noqa: BLE001 -- one upload must not stop the class
            task, base = None, unreadable(sub, error)
        if task is None:
            results[sub.student] = merge_safely(base, sub, course, out)
        else:
            tasks.append((task, base))
    if skipped:
        print(
            f"{skipped} student(s) already graded: skipped (use --force to regrade).",
            file=sys.stderr,
        )

    def write_grades():
        write_csv(
            out / "grades.csv", [results[s.student] for s in found if s.student in results], cells
        )

    write_grades()
    if not tasks:
        if client is not None:
            client.close()
        return [results[sub.student] for sub in found]

    stop = {"asked": False}

    def on_interrupt(signum, frame):
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        print(
            "\nStopping after the results being written (Ctrl-C again to quit now).",
            file=sys.stderr,
        )

    previous_handler = signal.signal(signal.SIGINT, on_interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="alpaca-batch-") as temp:
            # The workers' gradebook is made while the cluster starts (each takes seconds).
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                made = pool.submit(template_gradebook, course, pathlib.Path(temp))
                if client is None:
                    client, cluster = connect(workers, scheduler)
                template = made.result()
            if client.dashboard_link and importlib.util.find_spec("bokeh"):
                print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
            # A task, not scattered data: if every worker that holds it dies, the
            # scheduler computes it again instead of cancelling the gradings.
            bundle = client.submit(worker.unpack_course, worker.course_bundle(course, template))
        futures = {}
        for task, base in tasks:
            future = client.submit(
                worker.grade_submission,
                bundle,
                task,
                key=f"grade-{task['student']}-{base['sha256'][:12]}",
                pure=False,
            )
            futures[future] = base
        bar = tqdm(total=len(futures), unit="student", desc="autograde", disable=not progress)
        pending = set(futures)
        while pending and not stop["asked"]:
            done, pending = wait(pending, timeout=None, return_when="FIRST_COMPLETED")
            for future in done:
                base = futures[future]
                try:
                    graded = future.result()
                    if graded.get("preflight_failed"):
                        stop["preflight"] = graded["preflight_failed"]  # nothing merged
                        break
                    result = finish(base, graded)
                except Exception as error:  # noqa: BLE001 -- a bug must not lose the row
                    result = {
                        **base,
                        "status": f"grader error: {type(error).__name__}: {error}"[:300],
                    }
                results[base["student"]] = merge_safely(
                    result, by_student[base["student"]], course, out
                )
                write_grades()
                total = sum(result["points"].values())
                bar.set_postfix_str(f"{base['student']}: {total:g} pts, {result['status'][:40]}")
                bar.update()
                if stop["asked"]:
                    break
            if stop.get("preflight"):
                break
        bar.close()
        for future in [*pending, *futures]:
            future.cancel()
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    if stop.get("preflight"):
        raise SystemExit(stop["preflight"])
    if stop["asked"]:
        raise KeyboardInterrupt
    return [results[sub.student] for sub in found]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grader.batch",
        description="Autograde every submission with nbgrader, on Dask workers.",
    )
    parser.add_argument("submissions", help="a folder or a zip of submissions")
    parser.add_argument("--course", default="course", help="the nbgrader course folder")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"worker processes of an embedded cluster (default: the cores, here "
        f"{default_workers()})",
    )
    where.add_argument(
        "--scheduler",
        default=None,
        help="address of an existing Dask scheduler (tcp://HOST:PORT) to send the work to",
    )
    parser.add_argument("--force", action="store_true", help="regrade students already graded")
    parser.add_argument("--out", default=None, help="output folder (default: COURSE/batch)")
    parser.add_argument(
        "--submission-timeout",
        type=float,
        default=SETTINGS.submission_timeout,
        help="seconds one submission may take in all (default %(default)s)",
    )
    parser.add_argument(
        "--cell-timeout",
        type=int,
        default=SETTINGS.cell_timeout,
        help="seconds one cell may run (default %(default)s)",
    )
    parser.add_argument(
        "--memory-limit",
        type=float,
        default=SETTINGS.memory_mb,
        help="MiB one submission's sandbox may use (default %(default)s)",
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
    try:
        results = run(
            args.submissions,
            args.course,
            args.workers,
            args.force,
            args.out,
            args.submission_timeout,
            args.cell_timeout,
            args.memory_limit,
            sandbox=not args.no_sandbox,
            scheduler=args.scheduler,
        )
    except KeyboardInterrupt:
        print(
            "Stopped: grades.csv and the gradebook hold the students graded so far; run "
            "the same command again to go on.",
            file=sys.stderr,
        )
        return 130
    out = pathlib.Path(args.out) if args.out else pathlib.Path(args.course) / "batch"
    failed = [r for r in results if not r["status"].startswith(GRADED)]
    print(
        f"{len(results)} students, {len(failed)} not graded normally, in "
        f"{(datetime.datetime.now() - started).total_seconds():.0f} s. "
        f"Wrote {out / 'grades.csv'} and {out / 'feedback'}/."
    )
    for r in failed:
        print(f"  {r['student']} ({r.get('source', '')}): {r['status']}")
    broken = [r for r in results if r["status"].startswith(GRADER_ERRORS)]
    if broken:
        print(
            f"{len(broken)} submission(s) hit a grader error (not the student's doing): fix the "
            f"cause and run the same command again (it grades them again).",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
