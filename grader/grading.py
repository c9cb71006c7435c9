"""Grade one notebook: run it in the student's sandbox, then judge its records apart.

    outcome = grade(submission, master, learner_files, root, Options())

1. The student's sandbox runs ``driver.py`` on the plan of the notebook (its set-up
   and answer cells, and the produce half of each test call, hidden inputs given at
   run time). It sees a private read-only copy of the learner files, the weights,
   the dataset and the Python environment, and writes only its scratch folder.
2. The records it left are copied out with ``sandbox.read_artifact`` (no symlinks,
   size limits). When the run died or hung, the sandbox is started again after the
   step that broke, so that every other exercise still counts.
3. A second sandbox runs ``checker.py``, which never runs student code: it judges
   each record with the course's own copy of the public tests.

The result is data: a verdict per test call, the error of each answer cell that
raised, and a status line. The nbgrader preprocessor (``execute.py``) turns it
into cell outputs; nothing here knows about nbgrader's files or gradebook.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

from . import artifacts, plan, sandbox
from .config import CELL_TIMEOUT, MEMORY_LIMIT_MB, SUBMISSION_TIMEOUT

HERE = pathlib.Path(__file__).resolve().parent
# The folders as the sandboxes see them.
ASSIGNMENT, RUNNER, WEIGHTS, DATA = "/assignment", "/runner", "/weights", "/data"
RECORDS = f"{sandbox.SCRATCH}/records"  # where the student's run writes them
CHECKED = "/records"  # where the checker reads the copies taken out of it
# Times the student's sandbox is started again after a step that crashed or hung.
RESTARTS = 3
# Set by the batch workers, which grade many submissions: keep a warm kernel (students'
# kernels forked with TensorFlow imported) and a warm checker.
KEEP_WARM = False
# The checker's own limits: it runs the course's code only, on records of bounded size.
CHECKER_LIMITS = sandbox.Limits(wall_seconds=600, step_seconds=None, scratch_mb=64)


@dataclasses.dataclass(frozen=True)
class Options:
    step_seconds: float = CELL_TIMEOUT  # one cell, or one test cell's produce calls
    total_seconds: float = SUBMISSION_TIMEOUT  # all runs of the student's sandbox
    memory_mb: int = MEMORY_LIMIT_MB
    weights: str | None = None  # default: $ALPACA_WEIGHTS_DIR
    dataset: str | None = None  # default: $ALPACA_DATASET
    sandboxed: bool = True  # False: plain processes, for trusted notebooks only


@dataclasses.dataclass
class Outcome:
    verdicts: dict  # {grade_id of a test cell: [verdict per call]}
    cell_errors: dict  # {grade_id of an answer cell: "ValueError: ..."}
    problems: list  # what went wrong with the run: "kernel died in cell fine_tune", ...
    seconds: float
    peak_mb: float

    @property
    def status(self) -> str:
        return "; ".join(self.problems) if self.problems else "graded"


class Unsandboxed:
    """Runs like `sandbox.Sandbox`, in plain processes: for trusted notebooks only.

    The folders the sandbox would bind are symbolic links in ``root``; only the wall
    time and the step time are enforced.
    """

    def __init__(self, *, readonly, scratch, limits, env, root):
        self.limits, self.scratch = limits, pathlib.Path(scratch)
        self.env = {**env, "PATH": os.environ.get("PATH", ""), "HOME": str(scratch)}
        for host, inside in readonly.items():
            link = pathlib.Path(f"{root}{inside}")
            if link.is_symlink():
                link.unlink()
            link.symlink_to(host)
        link = pathlib.Path(f"{root}{sandbox.SCRATCH}")
        if link.is_symlink():
            link.unlink()
        link.symlink_to(self.scratch)

    def run(self, argv, *, input=None) -> sandbox.Result:
        import subprocess

        import psutil

        start = time.monotonic()
        output = sandbox._Output(self.limits.output_bytes)
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.scratch,
                start_new_session=True,
            )
            process.stdin.write(input or b"")
            process.stdin.close()
            killed, seen, step_start = None, 0, start
            while process.poll() is None:
                time.sleep(0.2)
                log.seek(seen)
                data = log.read()
                seen += len(data)
                markers = output.markers
                output.feed(data)
                now = time.monotonic()
                step_start = now if output.markers != markers else step_start
                if now - start > self.limits.wall_seconds:
                    killed = f"timeout: the run took more than {self.limits.wall_seconds:g} s"
                elif self.limits.step_seconds and now - step_start > self.limits.step_seconds:
                    killed = f"step timeout: more than {self.limits.step_seconds:g} s"
                if killed:
                    family = psutil.Process(process.pid).children(recursive=True)
                    for member in [psutil.Process(process.pid), *family]:
                        member.kill()
                    process.wait()
            log.seek(seen)
            output.feed(log.read())
        output.finish()
        return sandbox.Result(
            returncode=None if killed else process.returncode,
            killed=killed,
            output=output.text(),
            steps=output.steps,
            peak_mb=0.0,
            seconds=time.monotonic() - start,
        )


def _box(work, options: Options, **kwargs):
    """The student's or the checker's sandbox; plain processes when sandboxing is off."""
    if options.sandboxed:
        return sandbox.Sandbox(**kwargs)
    return Unsandboxed(root=_root(work, options), **kwargs)


def _root(work, options: Options) -> str:
    """Where the sandboxes' folders are: "/" inside a sandbox, a folder of links without."""
    if options.sandboxed:
        return ""
    root = pathlib.Path(work) / "root"
    root.mkdir(exist_ok=True)
    return str(root)


def _copy_files(files: list[pathlib.Path], root: pathlib.Path, dest: pathlib.Path) -> None:
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


def _runner(folder: pathlib.Path, *modules: str) -> pathlib.Path:
    """A folder with copies of some of this package's modules, to run as plain scripts."""
    folder.mkdir()
    for name in modules:
        shutil.copyfile(HERE / name, folder / name)
    return folder


# Host variables the sandboxes inherit: how many threads TensorFlow may use.
INHERITED = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")


def _environment(root: str) -> dict[str, str]:
    return {
        **{name: os.environ[name] for name in INHERITED if name in os.environ},
        "ALPACA_WEIGHTS_DIR": root + WEIGHTS,
        "ALPACA_DATASET": root + DATA,
        "NBGRADER_EXECUTION": "autograde",
        "MPLBACKEND": "Agg",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "KERAS_HOME": f"{root}{sandbox.SCRATCH}/.keras",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",  # what was printed before a kill is kept
    }


def _binds(work, runner, options: Options, dataset=True) -> dict[str, str]:
    weights = options.weights or os.environ.get("ALPACA_WEIGHTS_DIR")
    data = options.dataset or os.environ.get("ALPACA_DATASET")
    binds = {str(work / "assignment"): ASSIGNMENT, str(runner): RUNNER}
    if weights and os.path.isdir(weights):
        binds[weights] = WEIGHTS
    if dataset and data and os.path.isdir(data):
        binds[data] = DATA
    return binds


def _run_student(steps, work, options, deadline, problems, warm=None):
    """Run the student's sandbox, again after each broken step; copy the records out.

    ``warm`` is a `warm_kernel.WarmKernel` to run in (the batch workers keep one).
    """
    runner = None if warm else _runner(work / "student_runner", "driver.py", "artifacts.py")
    root = _root(work, options)
    records = work / "records"
    records.mkdir()
    calls = {i: len(s.calls) for i, s in enumerate(steps) if s.is_test}
    missing = {}  # {step index: why its records are missing}
    done: set[int] = set()  # test cells whose calls all ran
    broken: set[int] = set()  # cells that crashed or hung: never run again
    cell_errors = {}
    peak = 0.0
    for attempt in range(RESTARTS + 1):
        remaining = deadline - time.monotonic()
        if remaining < 5:
            problems.append("the submission used up its time")
            break
        request = {
            "runner": root + RUNNER,
            "assignment": root + ASSIGNMENT,
            "workdir": f"{root}{sandbox.SCRATCH}/work",
            "records": root + RECORDS,
            "skip": sorted(done | broken),
            "cell_errors": cell_errors,
            "steps": [
                {
                    "grade_id": s.grade_id,
                    "source": s.source,
                    "calls": [c.as_data() for c in s.calls],
                }
                for s in steps
            ],
        }
        limits = sandbox.Limits(
            wall_seconds=remaining,
            step_seconds=options.step_seconds,
            memory_mb=options.memory_mb,
        )
        if warm is not None:
            result = warm.run(request, limits)
            scratch = warm.scratch
        else:
            scratch = work / f"scratch{attempt}"
            scratch.mkdir()
            box = _box(
                work,
                options,
                readonly=_binds(work, runner, options),
                scratch=scratch,
                limits=limits,
                env=_environment(root),
            )
            result = box.run(
                [sys.executable, "-I", f"{root}{RUNNER}/driver.py"],
                input=json.dumps(request).encode(),
            )
        peak = max(peak, result.peak_mb)
        # The markers say which steps started. The student's code could print fake
        # ones, but that can only lose its own points: records are judged, not markers.
        started = _started(result, len(steps))
        finished = result.killed is None and result.steps[-1:] == ["end"]
        for index in started:
            if index in calls:
                _collect(scratch, records, index, calls[index])
            try:
                text = sandbox.read_artifact(scratch, f"records/{index}.cell.json", 64_000)
                cell_errors[steps[index].grade_id] = str(json.loads(text)["error"])[:400]
            except (OSError, ValueError, KeyError, TypeError):
                pass
        if warm is not None:
            warm.release()  # nothing of this run stays in its scratch
        completed = started if finished else started[:-1]
        done.update(index for index in completed if index in calls)
        if finished:
            break
        last = started[-1] if started else None
        what = _what_happened(result, steps, last)
        problems.append(what)
        if last is None or last in broken:
            break
        broken.add(last)
        if last in calls:
            missing[last] = what
        else:
            cell_errors[steps[last].grade_id] = f"this cell did not finish: {what}"
    for index in calls:
        missing.setdefault(index, "the notebook stopped before this cell")
    return records, missing, cell_errors, peak


def _started(result: sandbox.Result, count: int) -> list[int]:
    """The steps a run started, from its markers ("<index> <grade_id>", then "end")."""
    started = []
    for marker in result.steps:
        first = marker.split()[:1]
        if first and first[0].isdigit() and int(first[0]) < count:
            started.append(int(first[0]))
    return started


def _what_happened(result: sandbox.Result, steps, broken) -> str:
    where = f"in cell {steps[broken].grade_id}" if broken is not None else "at start-up"
    if result.killed:
        return f"{result.killed} ({where})"
    if result.returncode and result.returncode < 0:
        return f"kernel died {where}: signal {-result.returncode}"
    return f"kernel died {where} (exit code {result.returncode})"


def _collect(scratch, records, index, count):
    """Copy the records of one test cell out of the scratch folder, refusing tricks."""
    for number in range(count):
        stem = f"{index}.{number}"
        for suffix, limit in (
            (".json", artifacts.MAX_JSON_BYTES),
            (".npz", artifacts.MAX_NPZ_BYTES),
        ):
            try:
                data = sandbox.read_artifact(scratch, f"records/{stem}{suffix}", limit)
            except FileNotFoundError:
                continue
            except ValueError as error:
                data = json.dumps({"crash": f"record refused: {error}"}).encode()
                if suffix == ".npz":
                    continue
            (records / f"{stem}{suffix}").write_bytes(data)


def _check(steps, work, records, missing, options, warm=None):
    """Judge every test call in the checker's sandbox; return {grade_id: [verdicts]}.

    ``warm`` is a `warm_checker.WarmChecker` to try first (the batch workers keep one).
    """
    calls = []
    for index, step in enumerate(steps):
        for number, call in enumerate(step.calls):
            present = (records / f"{index}.{number}.json").exists()
            calls.append(
                {
                    "grade_id": step.grade_id,
                    "record": f"{index}.{number}" if present else None,
                    "missing": "the test could not run: "
                    + missing.get(index, "the notebook stopped before this cell"),
                    "test": call.test,
                    "kwargs": call.kwargs,
                    "hidden": call.hidden,
                }
            )
    verdicts = warm.judge(records, calls) if warm is not None else None
    if verdicts is None:
        verdicts = _check_once(work, records, calls, options)
    by_cell: dict[str, list] = {}
    for call, verdict in zip(calls, verdicts):
        by_cell.setdefault(call["grade_id"], []).append({**verdict, "hidden": call["hidden"]})
    return by_cell


def _check_once(work, records, calls, options) -> list:
    """Start a checker in its own sandbox for these calls; return its verdicts."""
    runner = _runner(work / "checker_runner", "checker.py", "artifacts.py")
    root = _root(work, options)
    scratch = work / "checker_scratch"
    scratch.mkdir()
    request = {
        "runner": root + RUNNER,
        "assignment": root + ASSIGNMENT,
        "workdir": root + sandbox.SCRATCH,
        "records": root + CHECKED,
        "result": f"{root}{sandbox.SCRATCH}/verdicts.json",
        "calls": calls,
    }
    binds = _binds(work, runner, options, dataset=False)
    binds[str(records)] = CHECKED
    box = _box(
        work,
        options,
        readonly=binds,
        scratch=scratch,
        limits=CHECKER_LIMITS,
        env=_environment(root),
    )
    result = box.run(
        [sys.executable, "-I", f"{root}{RUNNER}/checker.py"], input=json.dumps(request).encode()
    )
    try:
        return json.loads(sandbox.read_artifact(scratch, "verdicts.json", 16 * 2**20))
    except (OSError, ValueError) as error:
        raise RuntimeError(
            f"the checker failed ({result.killed or result.returncode}): {error}\n"
            f"{result.output[-3000:]}"
        ) from None


def grade(notebook, master, learner_files, root, options: Options = Options()) -> Outcome:
    """Grade ``notebook`` against ``master`` with the learner files (paths under ``root``).

    The set-up and test cells come from the master (see ``plan.steps``).
    """
    if options.sandboxed:
        sandbox.check_available()
    started = time.monotonic()
    steps = plan.steps(master, notebook)
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="alpaca-grade-") as temp:
        work = pathlib.Path(temp)
        _copy_files(learner_files, pathlib.Path(root), work / "assignment")
        kernel = checker = None
        if KEEP_WARM and options.sandboxed:
            from .warm_checker import WarmChecker
            from .warm_kernel import WarmKernel

            kernel = WarmKernel.for_course(learner_files, root, options)
            checker = WarmChecker.for_course(learner_files, root, options)
        records, missing, cell_errors, peak = _run_student(
            steps, work, options, started + options.total_seconds, problems, kernel
        )
        verdicts = _check(steps, work, records, missing, options, checker)
    return Outcome(verdicts, cell_errors, problems, time.monotonic() - started, peak)
