"""The two warm parents of a course: the students' kernels and the checker.

    kernels = Kernels.of(learner_files, root, options)   # one pair per course and process
    with kernels.student.run(request, limits) as run: ...   # driver.run(request)
    with kernels.checker.run(request, limits) as run: ...   # checker.run(request)

Each is a ``sandbox.warm.WarmParent``: one outer sandbox whose zygote imported TensorFlow and
the course's files once, and whose every run is a new child in namespaces made for it alone.
A batch worker, ``nbgrader autograde`` and the formgrader's button all grade through them;
a process that grades many submissions keeps them warm.

What the sandboxes see (read-only): a private copy of the learner files at /assignment, the
scripts that run inside at /runner, the weights at /weights, and (the student's only) the
dataset at /data. Nothing of the grader, the course or the gradebook.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import tempfile
import threading

from .config import SETTINGS
from .sandbox.warm import WarmParent

INSIDE = pathlib.Path(__file__).resolve().parent / "inside"  # the scripts run inside
# The folders as the sandboxes see them.
ASSIGNMENT, RUNNER, WEIGHTS, DATA = "/assignment", "/runner", "/weights", "/data"
# What the zygotes import once, for every run: TensorFlow and what the set-up cell imports
# (the learner files are the course's copies, the same for every student).
STUDENT_MODULES = (
    "IPython.core.interactiveshell",
    "matplotlib.pyplot",
    "numpy",
    "tensorflow",
    "public_tests",
    "test_utils",
    "trainable_training",
)
CHECKER_MODULES = ("numpy", "tensorflow", "public_tests")
# The scripts that run inside the sandboxes, copied to /runner.
STUDENT_SCRIPTS = ("zygote.py", "driver.py", "artifacts.py")
CHECKER_SCRIPTS = ("zygote.py", "checker.py", "artifacts.py")
# Host variables the sandboxes inherit: how many threads TensorFlow may use.
INHERITED = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")


def copy_files(files: list[pathlib.Path], root: pathlib.Path, dest: pathlib.Path) -> None:
    """Copy each file (following symlinks) to the same relative place under ``dest``."""
    for path in files:
        target = dest / pathlib.Path(path).relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def files_digest(files, root) -> str:
    """A digest of these files' paths under ``root`` and contents (which course they are)."""
    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(p) for p in files):
        relative = path.relative_to(root).as_posix()
        digest.update(relative.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def runner(folder: pathlib.Path, *scripts: str) -> pathlib.Path:
    """A folder with copies of some of the scripts that run inside (``grader/inside/``)."""
    folder.mkdir()
    for name in scripts:
        shutil.copyfile(INSIDE / name, folder / name)
    return folder


def environment(root: str = "") -> dict[str, str]:
    """The whole environment inside a sandbox (``root``: where its folders are, "" inside)."""
    return {
        **{name: os.environ[name] for name in INHERITED if name in os.environ},
        "ALPACA_WEIGHTS_DIR": root + WEIGHTS,
        "ALPACA_DATASET": root + DATA,
        "NBGRADER_EXECUTION": "autograde",
        "MPLBACKEND": "Agg",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # TensorFlow's plain (Eigen) CPU kernels, not oneDNN's: a run executes each of
        # MobileNetV2's many layer shapes once or twice, on batches of two, and oneDNN
        # prepares every new shape first. Measured with the solution on 1 thread: the
        # checker's run 2.88 s instead of 3.14 s, the student's run the same.
        "TF_ENABLE_ONEDNN_OPTS": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "KERAS_HOME": f"{root}/scratch/.keras",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",  # what was printed before a kill is kept
    }


def binds(assignment, scripts, options, dataset=True) -> dict[str, str]:
    """{host folder: where a sandbox sees it}: the course's files, the scripts, the data."""
    weights = options.weights or os.environ.get("ALPACA_WEIGHTS_DIR")
    data = options.dataset or os.environ.get("ALPACA_DATASET")
    found = {str(assignment): ASSIGNMENT, str(scripts): RUNNER}
    if weights and os.path.isdir(weights):
        found[weights] = WEIGHTS
    if dataset and data and os.path.isdir(data):
        found[data] = DATA
    return found


class Kernels:
    _by_course: dict[str, Kernels] = {}
    _lock = threading.Lock()

    def __init__(self, learner_files, root, options):
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="alpaca-kernels-"))
        assignment = self.work / "assignment"
        copy_files(learner_files, pathlib.Path(root), assignment)
        student_runner = runner(self.work / "student", *STUDENT_SCRIPTS)
        checker_runner = runner(self.work / "checker", *CHECKER_SCRIPTS)
        self.student = WarmParent(
            runner=student_runner,
            path=[ASSIGNMENT],
            entry="driver",
            modules=STUDENT_MODULES,
            readonly=binds(assignment, student_runner, options),
            env=environment(),
            memory_mb=options.memory_mb,
        )
        self.checker = WarmParent(
            runner=checker_runner,
            path=[ASSIGNMENT],
            entry="checker",
            modules=CHECKER_MODULES,
            readonly=binds(assignment, checker_runner, options, dataset=False),
            env=environment(),
            memory_mb=SETTINGS.checker_memory_mb,
        )
        self.references = None  # grading.References, set by grading on first use
        # The two zygotes import TensorFlow at the same time (seconds each), before the
        # first run needs them.
        self.student.start_soon()
        self.checker.start_soon()

    @classmethod
    def of(cls, learner_files, root, options) -> Kernels:
        """The warm parents of this course's learner files and options, made on first use."""
        key = files_digest(learner_files, root) + repr(options)
        with cls._lock:
            if key not in cls._by_course:
                cls._by_course[key] = cls(learner_files, root, options)
            return cls._by_course[key]
