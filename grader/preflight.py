"""Before any student is graded: the course's own solution must get full marks, here.

    preflight.check(master, learner_files, root, options)   # or raises PreflightFailed

A wrong set-up (the dataset or the weights missing, another Keras, a sandbox that
cannot start) would otherwise grade every student wrong, silently. So the grader
first grades the master notebook, with its solutions, exactly as it grades a
student: the same `grading.grade()`, the same options, the same sandbox. Anything
short of full marks raises `PreflightFailed`, whose message says in one or two lines
what is wrong and how to fix it; the callers grade no student then.

The result is kept per configuration: a digest of the learner files, the solution,
the grading options, the data and weights folders (their paths and listings), the
installed versions, the grader's own code and the sandbox program. In a process it
is checked once; a passed check is also kept on disk (``~/.cache/alpaca-grader``), so
the next run, another worker or `nbgrader autograde` skip it in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import sys

from . import grading, kernels
from .course import grade_cells

HERE = pathlib.Path(__file__).resolve().parent
CACHE = (
    pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
    / "alpaca-grader"
    / "preflight"
)
# The packages whose version changes what the solution's checks see.
PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "numpy", "h5py", "pillow", "nbgrader")
DATASET_ENV, WEIGHTS_ENV = "ALPACA_DATASET", "ALPACA_WEIGHTS_DIR"

_checked: dict[str, str | None] = {}  # {key: None (passed) or the failure message}


class PreflightFailed(RuntimeError):
    """The course's own solution does not get full marks in this configuration."""


def _versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def _listing(folder: str | None) -> str:
    """A digest of a folder's file names, sizes and times (not their contents: fast)."""
    digest = hashlib.sha256(str(folder).encode())
    if folder and os.path.isdir(folder):
        for parent, dirs, files in sorted(os.walk(folder)):
            dirs.sort()
            for name in sorted(files):
                try:
                    info = os.stat(os.path.join(parent, name))
                except OSError:
                    continue
                entry = (
                    f"{os.path.relpath(parent, folder)}/{name}:{info.st_size}:{info.st_mtime_ns}"
                )
                digest.update(entry.encode(errors="backslashreplace"))
    return digest.hexdigest()


def _code_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(HERE.rglob("*.py")):
        digest.update(path.relative_to(HERE).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def key(master, learner_files, root, options: grading.Options) -> str:
    """The digest of everything that decides how the solution is graded here."""
    import nbformat

    bwrap = shutil.which("bwrap")
    parts = {
        "files": kernels.files_digest(learner_files, root),
        "solution": hashlib.sha256(nbformat.writes(master).encode()).hexdigest(),
        "options": repr(options),
        "dataset": _listing(options.dataset or os.environ.get(DATASET_ENV)),
        "weights": _listing(options.weights or os.environ.get(WEIGHTS_ENV)),
        "versions": _versions(),
        "grader": _code_digest(),
        "python": sys.executable,
        "bwrap": [bwrap, os.stat(bwrap).st_mtime_ns if bwrap else None],
        "threads": [os.environ.get(n) for n in kernels.INHERITED],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _pins(learner_files) -> dict[str, str]:
    """The pinned versions of the course's requirements.txt: {package: version}."""
    for path in learner_files:
        if pathlib.Path(path).name == "requirements.txt":
            text = pathlib.Path(path).read_text(encoding="utf-8")
            return {
                m.group(1).lower(): m.group(2)
                for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", text, re.MULTILINE)
            }
    return {}


def _environment_problem(options: grading.Options) -> str | None:
    """What is wrong with the weights or the data, in one sentence, or None.

    The weights first: grading needs them (the solution gets 2/13 without); it does not
    read the photos.
    """
    data = options.dataset or os.environ.get(DATASET_ENV)
    weights = options.weights or os.environ.get(WEIGHTS_ENV)
    if not weights:
        return (
            f"{WEIGHTS_ENV} is not set: set it to the folder that holds the MobileNetV2 "
            f"weights files (*.h5) and imagenet_class_index.json."
        )
    if not os.path.isdir(weights) or not any(name.endswith(".h5") for name in os.listdir(weights)):
        return (
            f"{WEIGHTS_ENV}={weights} holds no MobileNetV2 weights file (*.h5): point it at "
            f"the folder that holds them and imagenet_class_index.json."
        )
    if not data:
        return (
            f"{DATASET_ENV} is not set: set it to the folder that holds 'alpaca/' and "
            f"'not alpaca/' (see the README, For developers)."
        )
    if not os.path.isdir(data) or not all(
        os.path.isdir(os.path.join(data, name)) for name in ("alpaca", "not alpaca")
    ):
        return (
            f"{DATASET_ENV}={data} is not a folder that holds 'alpaca/' and 'not alpaca/': "
            f"point it at the course's dataset."
        )
    return None


def _version_problem(learner_files) -> str | None:
    installed = {name.lower(): version for name, version in _versions().items()}
    for name, pinned in _pins(learner_files).items():
        if name in installed and installed[name] != pinned:
            return (
                f"{name} {installed[name]} is installed, but the course is pinned to "
                f"{name}=={pinned} (requirements.txt): run `make` to install the pinned versions."
            )
    return None


def _first_failure(outcome) -> str:
    for cell, verdicts in outcome.verdicts.items():
        for verdict in verdicts:
            if not verdict.get("passed"):
                message = str(verdict.get("message", "")).strip().splitlines()
                return f"{cell}: {message[0][:200] if message else 'failed'}"
    return ""


def _diagnose(outcome, score: float, total: float, learner_files, options) -> str:
    head = (
        f"Grading stopped: the course's own solution gets {score:g}/{total:g} in this set-up, "
        f"so every grade would be wrong."
    )
    cause = (
        _environment_problem(options)
        or _version_problem(learner_files)
        or (
            f"The sandbox did not run it through: {outcome.problems[0]}"
            if outcome.problems
            else None
        )
        or f"First failure: {_first_failure(outcome)}"
    )
    return f"{head}\n{cause}"


def check(master, learner_files, root, options: grading.Options) -> None:
    """Grade the master's solution as a student; raise `PreflightFailed` short of full marks."""
    digest = key(master, learner_files, root, options)
    if digest not in _checked and (CACHE / f"{digest}.json").is_file():
        _checked[digest] = None
    if digest not in _checked:
        _checked[digest] = _run(master, learner_files, root, options)
        if _checked[digest] is None:
            try:
                CACHE.mkdir(parents=True, exist_ok=True)
                (CACHE / f"{digest}.json").write_text(json.dumps({"passed": True}))
            except OSError:  # no cache: the next process checks again
                pass
    if _checked[digest] is not None:
        raise PreflightFailed(_checked[digest])


def _run(master, learner_files, root, options) -> str | None:
    from .sandbox import SandboxUnavailable

    try:
        outcome = grading.grade(master, master, learner_files, root, options)
    except SandboxUnavailable as error:
        return f"Grading stopped: the sandbox cannot start. {error}"
    cells = grade_cells(master)
    total = sum(points for _, points in cells)
    score = sum(
        points
        for name, points in cells
        if outcome.verdicts.get(name) and all(v.get("passed") for v in outcome.verdicts[name])
    )
    if score == total and not outcome.problems:
        return None
    return _diagnose(outcome, score, total, learner_files, options)
