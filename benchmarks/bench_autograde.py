"""Benchmark the batch autograder (prints a table; nothing here is a test).

    python benchmarks/bench_autograde.py [--n 20] [--workers 1 2]

Builds a temporary course from the master, hands in N copies of the solution, and
grades them with `grader.batch` once per worker count. Prints, per run: the wall
time, the median seconds per submission (one autograde + feedback, measured inside
the worker), the throughput, and the peak resident memory of one worker's process
tree (nbgrader + kernel). Timings on a shared machine are noisy: the load average
is printed with them.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from grader import batch, sample  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="submissions per run (default 20)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    sample.environment()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-autograde-") as temporary:
        tmp = pathlib.Path(temporary)
        course = sample.make_course(tmp / "course")
        solution = sample.solution_notebook(course)
        for i in range(args.n):
            sample.write_submission(tmp / "in", f"student{i:02d}", solution)
        for workers in args.workers:
            load = os.getloadavg()[0]
            start = time.monotonic()
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
                    "median": statistics.median(r["autograde_seconds"] for r in graded),
                    "median_all": statistics.median(r["seconds"] for r in graded),
                    "peak_median": statistics.median(r["peak_mb"] for r in graded),
                    "peak_max": max(r["peak_mb"] for r in results),
                    "load": load,
                }
            )

    print()
    print(f"Batch autograde, {os.cpu_count()} cores (shared: timings are noisy)")
    print(
        "| workers | submissions | wall s | autograde s/submission (median) "
        "| with feedback (median) | submissions/min | peak MiB per worker (median / max) "
        "| load avg at start |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['workers']} | {r['n']} | {r['wall']:.0f} | {r['median']:.1f} | "
            f"{r['median_all']:.1f} | "
            f"{60 * r['n'] / r['wall']:.2f} | {r['peak_median']:.0f} / {r['peak_max']:.0f} | "
            f"{r['load']:.1f} |"
        )
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        print(
            f"\nWall time with {first['workers']} worker(s) / with {last['workers']}: "
            f"{first['wall'] / last['wall']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
