"""Grade one notebook: run it in the student's sandbox, then judge its records apart.

    outcome = grade(submission, master, learner_files, root, Options())

1. The student's run (``kernels.Kernels.student``: a child of a warm parent, in
   namespaces made for this run alone) runs ``driver.py`` on the plan of the notebook
   (its set-up and answer cells, and the produce half of each test call, hidden inputs
   given at run time). It sees a private read-only copy of the learner files, the
   weights, the dataset and the Python environment, and writes only its own folder.
2. The records it left are copied out with ``sandbox.read_artifact`` (no symlinks,
   size limits). When the run died or hung, a new run starts after the step that
   broke, so that every other exercise still counts.
3. The checker's run (``kernels.Kernels.checker``, fresh for each submission) runs
   ``checker.py``, which never runs student code: it judges each record with the
   course's own copy of the public tests.

The result is data: a verdict per test call, the error of each answer cell that
raised, and a status line. The nbgrader preprocessor (``execute.py``) turns it
into cell outputs; nothing here knows about nbgrader's files or gradebook.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import sys
import tempfile
import threading
import time

from . import kernels, plan, sandbox
from .config import SETTINGS
from .inside import artifacts, driver
from .kernels import ASSIGNMENT, RUNNER
from .sandbox.scratch import copy_in
from .sandbox.watch import Follow

REFERENCES = "references.json"  # the course's references, in a checker run's folder
RECORDS = f"{sandbox.SCRATCH}/records"  # where the student's run writes them, and the
# checker's run finds their copies
# The checker's own limits: it runs the course's code only, on records of bounded size.
CHECKER_LIMITS = sandbox.Limits(
    wall_seconds=SETTINGS.checker_timeout,
    step_seconds=None,
    memory_mb=SETTINGS.checker_memory_mb,
    scratch_mb=256,
)


@dataclasses.dataclass(frozen=True)
class Options:
    step_seconds: float = SETTINGS.cell_timeout  # one cell, or one test cell's produce calls
    total_seconds: float = SETTINGS.submission_timeout  # all runs of the student's sandbox
    memory_mb: int = SETTINGS.memory_mb
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

        with tempfile.NamedTemporaryFile() as log:
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
            reader = os.open(log.name, os.O_RDONLY)
            try:
                follow = Follow(reader, self.limits)
                killed = None
                while process.poll() is None and killed is None:
                    time.sleep(0.2)
                    killed = follow.tick()
                if killed:
                    family = psutil.Process(process.pid).children(recursive=True)
                    for member in [psutil.Process(process.pid), *family]:
                        member.kill()
                    process.wait()
                return follow.result(returncode=process.returncode, killed=killed)
            finally:
                os.close(reader)


def _root(work) -> str:
    """Where a plain run (--no-sandbox) finds the sandboxes' folders: a folder of links."""
    root = pathlib.Path(work) / "root"
    root.mkdir(exist_ok=True)
    return str(root)


class _Plain:
    """Runs like a ``WarmParent``, in plain processes: --no-sandbox, for trusted notebooks."""

    def __init__(self, work, scripts, entry, options, dataset=True):
        self.work, self.entry, self.root = work, entry, _root(work)
        self.scripts = kernels.runner(work / f"{entry}-scripts", *scripts)
        self.readonly = kernels.binds(work / "assignment", self.scripts, options, dataset)
        self.count = 0

    @contextlib.contextmanager
    def run(self, request, limits, files=None):
        self.count += 1
        folder = self.work / f"{self.entry}-{self.count}"
        folder.mkdir()
        copy_in(folder, files or {})
        box = Unsandboxed(
            readonly=self.readonly,
            scratch=folder,
            limits=limits,
            env=kernels.environment(self.root),
            root=self.root,
        )
        code = (
            f"import sys, json; sys.path.insert(0, {self.root + RUNNER!r}); "
            f"import {self.entry}; {self.entry}.run(json.load(sys.stdin))"
        )
        result = box.run([sys.executable, "-I", "-c", code], input=json.dumps(request).encode())
        yield sandbox.warm.Run(result=result, folder=folder)


def _run_student(steps, work, options, deadline, problems, parent, root=""):
    """Run the student's kernel, again after each broken step; copy the records out.

    ``parent`` is the warm parent of the students' runs (or ``_Plain``); ``root`` is where
    its runs find their folders ("" inside a sandbox).
    """
    records = work / "records"
    records.mkdir()
    calls = {i: len(s.calls) for i, s in enumerate(steps) if s.is_test}
    missing = {}  # {step index: why its records are missing}
    done: set[int] = set()  # test cells whose calls all ran
    broken: set[int] = set()  # cells that crashed or hung: never run again
    cell_errors = {}
    peak = 0.0
    for _attempt in range(SETTINGS.restarts + 1):
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
            "cell_seconds": options.step_seconds,
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
            step_seconds=options.step_seconds + SETTINGS.interrupt_grace,
            memory_mb=options.memory_mb,
        )
        with parent.run(request, limits) as run:
            result, scratch = run.result, run.folder
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
                    if cell_errors[steps[index].grade_id].startswith(driver.INTERRUPTED):
                        problems.append(
                            f"cell {steps[index].grade_id} timed out: interrupted after "
                            f"{options.step_seconds:g} s"
                        )
                except (OSError, ValueError, KeyError, TypeError):
                    pass
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


class References:
    """The course's references for the checker, made once per warm checker and input shapes.

    MobileNetV2's architecture for each image size the tests use and the digests of the
    ImageNet weights depend on Keras and the weights file alone. A checker run that judges
    nothing (no record, no student) computes them; every later run of the same parent gets
    them as a file instead of building MobileNetV2 again (``test_utils.import_references``).
    The first grading asks for them before the student's run, which they then overlap.
    """

    def __init__(self, parent, folder: pathlib.Path):
        self.parent, self.folder = parent, folder
        self.made: dict[str, concurrent.futures.Future] = {}
        self.lock = threading.Lock()

    def for_calls(self, calls) -> pathlib.Path | None:
        """The references file for these calls; None when they could not be made (then
        each checker run computes what it needs, and says what is missing, by itself)."""
        return self.prepare(calls).result()

    def prepare(self, calls) -> concurrent.futures.Future:
        """Start making the references for these calls in the background, once; the
        future's result is what `for_calls` returns."""
        # The image shapes as the calls give them; null: the test's default, which only
        # the course's public_tests.py knows (the checker's run reads it there).
        shapes = sorted({json.dumps(c["kwargs"].get("image_shape")) for c in calls})
        key = hashlib.sha256(json.dumps(shapes).encode()).hexdigest()[:16]
        with self.lock:
            if key not in self.made:
                future = self.made[key] = concurrent.futures.Future()
                threading.Thread(target=self._make, args=(future, shapes, key), daemon=True).start()
            return self.made[key]

    def _make(self, future, shapes, key) -> None:
        try:
            request = _checker_request(
                "", prepare=[json.loads(shape) for shape in shapes], result=REFERENCES
            )
            path = self.folder / f"references-{key}.json"
            with self.parent.run(request, CHECKER_LIMITS) as run:
                try:
                    data = sandbox.read_artifact(run.folder, REFERENCES, 16 * 2**20)
                    json.loads(data)
                    path.write_bytes(data)
                except (OSError, ValueError):
                    path = None
            future.set_result(path)
        except BaseException as error:  # noqa: BLE001 -- raised again in the caller's thread
            future.set_exception(error)


def _checker_request(root: str, result: str, **fields) -> dict:
    """A request to the checker's run: where its files are, and where ``result`` goes."""
    return {
        "runner": root + RUNNER,
        "assignment": root + ASSIGNMENT,
        "workdir": f"{root}{sandbox.SCRATCH}",
        "result": f"{root}{sandbox.SCRATCH}/{result}",
        **fields,
    }


def _check(steps, records, missing, parent, root="", references=None):
    """Judge every test call in a fresh run of the checker; return {grade_id: [verdicts]}.

    ``references`` (a ``References``) hands the run the course's own references, made
    once by a run that judged nothing.
    """
    calls = []
    files = {}
    for index, step in enumerate(steps):
        for number, call in enumerate(step.calls):
            stem = f"{index}.{number}"
            present = (records / f"{stem}.json").exists()
            for suffix in (".json", ".npz"):
                if (records / f"{stem}{suffix}").exists():
                    files[f"records/{stem}{suffix}"] = records / f"{stem}{suffix}"
            calls.append(
                {
                    "grade_id": step.grade_id,
                    "record": stem if present else None,
                    "missing": "the test could not run: "
                    + missing.get(index, "the notebook stopped before this cell"),
                    "test": call.test,
                    "kwargs": call.kwargs,
                    "hidden": call.hidden,
                }
            )
    request = _checker_request(root, records=root + RECORDS, result="verdicts.json", calls=calls)
    made = references.for_calls(calls) if references is not None else None
    if made is not None:
        files[REFERENCES] = made
        request["references"] = f"{root}{sandbox.SCRATCH}/{REFERENCES}"
    with parent.run(request, CHECKER_LIMITS, files) as run:
        try:
            verdicts = json.loads(sandbox.read_artifact(run.folder, "verdicts.json", 16 * 2**20))
        except (OSError, ValueError) as error:
            result = run.result
            raise RuntimeError(
                f"the checker failed ({result.killed or result.returncode}): {error}\n"
                f"{result.output[-3000:]}"
            ) from None
    by_cell: dict[str, list] = {}
    for call, verdict in zip(calls, verdicts):
        by_cell.setdefault(call["grade_id"], []).append({**verdict, "hidden": call["hidden"]})
    return by_cell


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
        if options.sandboxed:
            parents = kernels.Kernels.of(learner_files, root, options)
            student, checker, inside = parents.student, parents.checker, ""
            if parents.references is None:
                parents.references = References(parents.checker, parents.work)
            references = parents.references
            references.prepare([{"kwargs": c.kwargs} for s in steps for c in s.calls])
        else:
            kernels.copy_files(learner_files, pathlib.Path(root), work / "assignment")
            student = _Plain(work, kernels.STUDENT_SCRIPTS, "driver", options)
            checker = _Plain(work, kernels.CHECKER_SCRIPTS, "checker", options, dataset=False)
            inside = _root(work)
            references = None
        records, missing, cell_errors, peak = _run_student(
            steps, work, options, started + options.total_seconds, problems, student, inside
        )
        verdicts = _check(steps, records, missing, checker, inside, references)
    return Outcome(verdicts, cell_errors, problems, time.monotonic() - started, peak)
