"""Benchmark the batch autograder (prints a table; nothing here is a test).

    python -m benchmarks.bench_autograde [--n 20] [--workers 1 2] [--anchor N]

Builds a temporary course from the master and hands in N copies of the solution.
In one run it measures:

- the anchor: plain ``nbgrader autograde`` of ``--anchor`` of them, one after the
  other, with nbgrader's own pipeline (``Execute`` runs every cell of the notebook
  in a kernel beside nbgrader, as the course did before the sandbox);
- ``grader.batch`` (sandboxed student run + separate checker) once per worker count,
  after a first run of one submission that pays the preflight (timed apart), so that
  each row finds it done.

Prints, per run: the wall time, the median seconds per submission (one autograde,
measured inside the worker), the throughput, the peak resident memory of one
worker's process tree, and the ratios to the anchor. Timings on a shared machine
are noisy: the load average is printed with them.

Then what a fresh sandbox costs per submission: the median time of an empty run of
the warm parents (a new child in namespaces of its own: fork, unshare, mounts, the
request, an IPython shell for the student's; the checker's with no call), against a
cold bubblewrap sandbox that imports TensorFlow, which a run would cost without them.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from grader import batch, grading, kernels, sandbox
from grader.course import ASSIGNMENT
from tests import sample

# A course config with nbgrader's own autograde pipeline (Execute), for the anchor.
PLAIN_CONFIG = """
c = get_config()
load_subconfig({course!r})
c.CourseDirectory.root = {root!r}
c.Autograde.autograde_preprocessors = [
    "nbgrader.preprocessors.Execute",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
c.Execute.timeout = 300
"""


def plain_nbgrader(course: pathlib.Path, folder: pathlib.Path, count: int) -> dict:
    """Autograde ``count`` submissions with plain nbgrader, one process after the other."""
    import psutil

    plain = folder / "plain"
    (plain / "source").mkdir(parents=True)
    (plain / "source" / ASSIGNMENT).symlink_to(course / "source" / ASSIGNMENT)
    for name in ("gradebook.db",):
        (plain / name).write_bytes((course / name).read_bytes())
    (plain / "nbgrader_config.py").write_text(
        PLAIN_CONFIG.format(course=str(course / "nbgrader_config.py"), root=str(plain))
    )
    seconds, peaks = [], []
    start = time.monotonic()
    for i in range(count):
        student = f"student{i:02d}"
        submitted = plain / "submitted" / student
        submitted.mkdir(parents=True)
        (submitted / ASSIGNMENT).symlink_to(folder / "in" / student / ASSIGNMENT)
        began = time.monotonic()
        process = psutil.Popen(
            [sys.executable, "-m", "nbgrader", "autograde", ASSIGNMENT, "--student", student],
            cwd=plain,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        peak = 0
        while process.poll() is None:
            try:
                family = [process, *process.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in family))
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.25)
        seconds.append(time.monotonic() - began)
        peaks.append(peak / 2**20)
    return {
        "workers": "nbgrader autograde (anchor)",
        "n": count,
        "wall": time.monotonic() - start,
        "median": statistics.median(seconds),
        "peak": max(peaks),
    }


class TreeMemory:
    """The peak resident memory of all this process's children (workers, sandboxes)."""

    def __enter__(self):
        import threading

        self.peak_mb, self.running = 0.0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        import psutil

        me = psutil.Process()
        while self.running:
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_mb = max(self.peak_mb, total / 2**20)
            time.sleep(0.25)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def fresh_sandbox_costs(repeat: int = 9) -> list[tuple[str, float]]:
    """Median seconds of one empty run of each warm parent, and of a cold sandbox."""
    files = [sample.ROOT / name for name in sample.LEARNER_FILES]
    parents = kernels.Kernels(files, sample.ROOT, grading.Options())
    empty_plan = {
        "runner": kernels.RUNNER,
        "assignment": kernels.ASSIGNMENT,
        "workdir": f"{sandbox.SCRATCH}/work",
        "records": f"{sandbox.SCRATCH}/records",
        "skip": [],
        "cell_errors": {},
        "steps": [{"grade_id": "cell", "source": "pass", "calls": []}],
    }
    empty_check = {
        "runner": kernels.RUNNER,
        "assignment": kernels.ASSIGNMENT,
        "workdir": sandbox.SCRATCH,
        "records": f"{sandbox.SCRATCH}/records",
        "result": f"{sandbox.SCRATCH}/verdicts.json",
        "calls": [],
    }
    limits = sandbox.Limits(wall_seconds=120, step_seconds=None)
    measured = []
    for name, parent, request in (
        ("student's run (fork, namespaces, mounts, IPython shell)", parents.student, empty_plan),
        ("checker's run (fork, namespaces, mounts)", parents.checker, empty_check),
    ):
        with parent.run(request, limits):
            pass  # the parent's own start, not counted
        times = []
        for _ in range(repeat):
            start = time.monotonic()
            with parent.run(request, limits) as run:
                assert run.result.returncode == 0, run.result.output
            times.append(time.monotonic() - start)
        measured.append((name, statistics.median(times)))
    parents.student.close()
    parents.checker.close()
    cold = []
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as scratch:
        box = sandbox.Sandbox(readonly={}, scratch=pathlib.Path(scratch), limits=limits)
        for _ in range(3):
            start = time.monotonic()
            result = box.run([sys.executable, "-c", "import tensorflow"])
            assert result.returncode == 0, result.output
            cold.append(time.monotonic() - start)
    measured.append(("a cold sandbox importing TensorFlow", statistics.median(cold)))
    return measured


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="submissions per run (default 20)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--anchor", type=int, default=None, help="submissions for the anchor (default: --n)"
    )
    args = parser.parse_args(argv)
    sample.environment()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-autograde-") as temporary:
        tmp = pathlib.Path(temporary)
        course = sample.make_course(tmp / "course")
        solution = sample.solution_notebook(course)
        for i in range(args.n):
            sample.write_submission(tmp / "in", f"student{i:02d}", solution)
        sample.write_submission(tmp / "one", "student00", solution)
        load = os.getloadavg()[0]
        anchor = plain_nbgrader(course, tmp, args.anchor or args.n)
        rows.append({**anchor, "load": load})
        # The first run of a configuration grades the course's own solution first (the
        # preflight), then keeps the result on disk: timed apart, on one submission, so
        # that every row below finds it done, as an instructor's later runs do. The cache
        # is the benchmark's own (the workers read it as they start), so the first run
        # pays the preflight whatever ran before.
        os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")
        start = time.monotonic()
        batch.run(tmp / "one", course, workers=1, force=True, out=tmp / "first", progress=False)
        first_run = time.monotonic() - start
        for workers in args.workers:
            load = os.getloadavg()[0]
            start = time.monotonic()
            with TreeMemory() as memory:
                results = batch.run(
                    tmp / "in",
                    course,
                    workers=workers,
                    force=True,
                    out=tmp / f"out{workers}",
                    progress=True,
                )
            wall = time.monotonic() - start
            graded = [r for r in results if r["status"] == batch.GRADED]
            if len(graded) != len(results):
                bad = {r["student"]: r["status"] for r in results if r not in graded}
                print(f"warning: not all graded normally: {bad}", file=sys.stderr)
            rows.append(
                {
                    "workers": workers,
                    "n": len(results),
                    "wall": wall,
                    "median": statistics.median(r["seconds"] for r in graded),
                    "peak": memory.peak_mb / workers,
                    "load": load,
                }
            )

    print()
    print(f"Batch autograde, {os.cpu_count()} cores (shared: timings are noisy)")
    print(
        "| run | submissions | wall s | s/submission, median, in its worker "
        "| s/submission/core (wall x cores / n) | submissions/min | throughput vs anchor "
        "| peak MiB per worker | load avg at start |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    anchor_rate = rows[0]["n"] / rows[0]["wall"]
    for r in rows:
        plain = isinstance(r["workers"], str)
        name = r["workers"] if plain else f"grader.batch, {r['workers']} worker(s)"
        cores = 1 if plain else r["workers"]
        rate = r["n"] / r["wall"]
        print(
            f"| {name} | {r['n']} | {r['wall']:.0f} | {r['median']:.1f} | "
            f"{r['wall'] * cores / r['n']:.1f} | {60 * rate:.2f} | {rate / anchor_rate:.2f}x | "
            f"{r['peak']:.0f} | {r['load']:.1f} |"
        )
    batches = rows[1:]
    if len(batches) >= 2:
        first, last = batches[0], batches[-1]
        print(
            f"\nWall time with {first['workers']} worker(s) / with {last['workers']}: "
            f"{first['wall'] / last['wall']:.2f}x"
        )
        # Once warm, a worker grades one submission per median: what a large class sees,
        # without the start-up (cluster, course, first TensorFlow imports) of a run.
        steady = [r["workers"] / r["median"] for r in (first, last)]
        start = [r["wall"] - r["n"] / r["workers"] * r["median"] for r in (first, last)]
        print(
            f"Warm throughput (workers / median s per submission) with {last['workers']} / "
            f"with {first['workers']}: {steady[1] / steady[0]:.2f}x; start-up of a run "
            f"(wall - submissions per worker x median): {start[0]:.0f} s and {start[1]:.0f} s"
        )
    print(
        f"First run of this configuration, 1 submission, 1 worker (the preflight grades the "
        f"course's solution first; the rows above find it done): {first_run:.0f} s wall"
    )
    print("\nWhat a fresh sandbox costs per submission (median seconds of an empty run):")
    print("| run | s |")
    print("|---|---|")
    for name, seconds in fresh_sandbox_costs():
        print(f"| {name} | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
