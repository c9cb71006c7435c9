"""Time the public tests on the solution: import time, then each test (median of 3 runs).

Run from the repository root:

    .venv/bin/python benchmarks/bench_public_tests.py

Not a timed test: it prints a table and exits 0. The budget is about 5 s per
test on 2 CPU cores, TensorFlow's import excluded.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import statistics
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
os.environ.setdefault("ALPACA_DATASET", str(SHARED / "data" / "alpaca"))
os.environ.setdefault("ALPACA_WEIGHTS_DIR", str(SHARED / "weights"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RUNS = 3


def main():
    start = time.perf_counter()
    import tensorflow  # noqa: F401

    tf_seconds = time.perf_counter() - start
    start = time.perf_counter()
    import public_tests

    import_seconds = time.perf_counter() - start

    from tests import catalogue

    env = catalogue.namespace()
    rows = [
        ("import tensorflow", f"{tf_seconds:.2f}", ""),
        ("import public_tests (after TF)", f"{import_seconds:.2f}", ""),
    ]
    for grade_id, calls in catalogue.PUBLIC_CALLS.items():
        function = catalogue.load(grade_id, env=env)
        for name, kwargs in calls:
            times = []
            for _ in range(RUNS):
                call = catalogue.call_kwargs(kwargs)
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    getattr(public_tests, name)(function, **call)
                times.append(time.perf_counter() - start)
            label = name + ("(" + ", ".join(f"{k}=..." for k in kwargs) + ")" if kwargs else "()")
            rows.append(
                (label, f"{statistics.median(times):.2f}", " ".join(f"{t:.2f}" for t in times))
            )
    width = max(len(r[0]) for r in rows)
    print(f"{'what':{width}}  median s  runs (s)")
    print(f"{'-' * width}  --------  --------")
    for label, median, runs in rows:
        print(f"{label:{width}}  {median:>8}  {runs}")
    print(
        f"\n{os.cpu_count()} CPU(s) visible; {RUNS} runs per test; TensorFlow import "
        f"excluded from the per-test times."
    )


if __name__ == "__main__":
    main()
