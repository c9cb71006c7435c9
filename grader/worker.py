"""The task a Dask worker runs: grade one submission with nbgrader, in this process.

    result = grade_submission(course_bundle, task)

A worker stays warm: it unpacks the course once (``Course``), keeps nbgrader and
the grader imported, and runs ``nbgrader autograde`` and ``generate_feedback``
in-process, each time in a fresh private copy of the course. Each student's kernel,
and each check of their records, is a new process forked from a warm parent that
imported TensorFlow once, in namespaces made for that run alone (``kernels.py``,
``sandbox/warm.py``). Nothing of one student stays for the next: the private course
is deleted after each task, and each run's processes are dead and its folder gone
before the next run exists.

The worker writes nothing the client must read back from disk: the result is data
(points and comments per test cell, the status, the autograded notebook and the
feedback HTML). The client alone writes the gradebook and the course folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pathlib
import re
import shutil
import tempfile
import time

from . import feedback, renderer
from .course import ASSIGNMENT, NOTEBOOK, db_url
from .execute import STATUS_FILE
from .preflight import PreflightFailed

# The private course of a task lives in memory where it can: it is small, thrown away
# after the task, and its gradebook's commits then cost no disk flush (SQLite syncs each).
_MEMORY = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None


def course_bundle(course: pathlib.Path, template_db: pathlib.Path) -> dict:
    """What a worker needs of the course, as data: config, source folder, empty gradebook.

    The source folder's files are read through their symlinks; the gradebook is a
    template that knows the assignment and no student.
    """
    course = pathlib.Path(course)
    source = course / "source" / ASSIGNMENT
    files = {}
    for path in sorted(source.rglob("*")):
        if path.is_file() and ".ipynb_checkpoints" not in path.parts:
            files[f"source/{ASSIGNMENT}/{path.relative_to(source).as_posix()}"] = path.read_bytes()
    files["nbgrader_config.py"] = (course / "nbgrader_config.py").read_bytes()
    files["gradebook.db"] = pathlib.Path(template_db).read_bytes()
    digest = hashlib.sha256()
    for key in sorted(files):
        digest.update(key.encode() + b"\0" + hashlib.sha256(files[key]).digest())
    return {"files": files, "digest": digest.hexdigest()}


def unpack_course(bundle: dict) -> dict:
    """The task that puts the course on a worker: unpacked once, then handed to each grading.

    The feedback renderer starts here too, so that it is ready by the first feedback.
    """
    Course.get(bundle)
    renderer.shared().start()
    return bundle


class Course:
    """The course, unpacked once per worker process, and private copies of it per task."""

    _cache: dict[str, Course] = {}

    def __init__(self, bundle: dict):
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="alpaca-course-"))
        for relative, data in bundle["files"].items():
            path = self.root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    @classmethod
    def get(cls, bundle: dict) -> Course:
        if bundle["digest"] not in cls._cache:
            cls._cache[bundle["digest"]] = cls(bundle)
        return cls._cache[bundle["digest"]]

    @contextlib.contextmanager
    def private_copy(self):
        """A fresh course folder: the config, the source (linked), a copy of the gradebook."""
        folder = pathlib.Path(tempfile.mkdtemp(prefix="alpaca-task-", dir=_MEMORY))
        try:
            shutil.copyfile(self.root / "nbgrader_config.py", folder / "nbgrader_config.py")
            shutil.copyfile(self.root / "gradebook.db", folder / "gradebook.db")
            (folder / "source").mkdir()
            (folder / "source" / ASSIGNMENT).symlink_to(self.root / "source" / ASSIGNMENT)
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _captured_logs():
    """Collect what nbgrader logs during one task."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("[%(name)s | %(levelname)s] %(message)s"))
    loggers = [logging.getLogger(name) for name in ("traitlets", "NbGrader", "nbgrader")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def _config(folder: pathlib.Path, overrides: dict):
    """The course's nbgrader config for a private course folder, with the task's options."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(folder)).load_config()
    config.CourseDirectory.root = str(folder)
    for section, values in overrides.items():
        for key, value in values.items():
            config[section][key] = value
    return config


def preflight(folder: pathlib.Path, overrides: dict) -> None:
    """Grade the course's solution as nbgrader autograde will (once per configuration).

    Raises `preflight.PreflightFailed`: the client then stops, and records nothing.
    """
    from .execute import SandboxedExecute

    SandboxedExecute(config=_config(folder, overrides)).preflight(ASSIGNMENT, NOTEBOOK)


def _run_converter(converter_class, folder: pathlib.Path, student: str, overrides: dict) -> bool:
    """Run an nbgrader converter (Autograde, GenerateFeedback) for one student, in-process."""
    from nbgrader.converters.base import NbGraderException
    from nbgrader.coursedir import CourseDirectory

    config = _config(folder, overrides)
    coursedir = CourseDirectory(config=config)
    coursedir.assignment_id = ASSIGNMENT
    coursedir.student_id = student
    converter = converter_class(coursedir=coursedir, config=config)
    converter.force = True
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        converter.start()
        return True
    except NbGraderException:
        return False
    finally:
        os.chdir(cwd)


def _failure(log: str) -> str:
    """What made nbgrader fail, from its log: the exception that ended the traceback."""
    lines = log.splitlines()
    raised = [line.strip() for line in lines if re.match(r"^\w+(Error|Exception|Exit): ", line)]
    if raised:
        return raised[-1]
    errors = [line for line in lines if "ERROR" in line]
    return errors[0].split("]", 1)[-1].strip() if errors else "see the log"


def grade_submission(bundle: dict, task: dict) -> dict:
    """Grade one submission; return the result as data (see the module doc).

    ``task``: ``student``, ``notebook`` (the notebook's JSON text, already checked and
    repaired by the client), ``timestamp`` (text or None) and ``options``
    (``cell_timeout``, ``timeout``, ``memory_mb``, ``sandbox``).
    """
    from nbgrader.converters import Autograde

    started = time.monotonic()
    student, options = task["student"], task["options"]
    # One core per worker (--workers N uses N cores): TensorFlow in the sandboxes gets one.
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        os.environ[name] = "1"
    course = Course.get(bundle)
    result = {"student": student, "points": {}, "comments": {}, "worker": os.getpid()}
    with course.private_copy() as folder, _captured_logs() as log:
        submitted = folder / "submitted" / student / ASSIGNMENT
        submitted.mkdir(parents=True)
        (submitted / f"{NOTEBOOK}.ipynb").write_text(task["notebook"], encoding="utf-8")
        if task.get("timestamp"):
            (submitted / "timestamp.txt").write_text(task["timestamp"], encoding="utf-8")
        overrides = {
            "SandboxedExecute": {
                "cell_timeout": options["cell_timeout"],
                "submission_timeout": options["submission_timeout"],
                "memory_mb": options["memory_mb"],
                "sandbox": options["sandbox"],
            }
        }
        # Each worker, as it joins, first grades the course's own solution: a worker
        # set up wrong stops the run instead of grading everyone wrong.
        try:
            preflight(folder, overrides)
        except PreflightFailed as error:  # data, not an exception: no Dask error log
            return {**result, "preflight_failed": str(error)}
        graded = _run_converter(Autograde, folder, student, overrides)
        autograded = folder / "autograded" / student / ASSIGNMENT
        if not graded or not (autograded / f"{NOTEBOOK}.ipynb").is_file():
            detail = _failure(log.getvalue())
            result.update(status=f"autograde failed: {detail[:200]}", log=log.getvalue())
            return {**result, "seconds": round(time.monotonic() - started, 1)}
        result["points"], result["comments"] = feedback.scores(db_url(folder), student)
        result["autograded"] = (autograded / f"{NOTEBOOK}.ipynb").read_text(encoding="utf-8")
        try:
            how = json.loads((autograded / STATUS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            how = {"status": "no grading status written: see the log"}
        result["grading"] = how
        # Rendered in a process of its own, with a time and memory limit (hostile markdown).
        result["feedback"], short = feedback.generate(
            folder, student, result["points"], result["comments"]
        )
        result["log"] = log.getvalue() + (f"feedback: plain, because {short}\n" if short else "")
    result["seconds"] = round(time.monotonic() - started, 1)
    return result
