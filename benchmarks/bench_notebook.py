"""Benchmark of the assignment on this machine (a table; nothing here is a test).

    python benchmarks/bench_notebook.py [--repeats 3]

Rows:
- the whole solution notebook, executed in a real kernel (one run) and the kernel's
  peak memory;
- importing TensorFlow and the public tests, then running all five public tests on
  the solution, in a fresh interpreter (median of the repeats);
- training throughput in images/s, frozen and fine-tuning (median over epochs 2-5 of
  one run, training images only, no validation), and that process's peak memory.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

PUBLIC_TESTS = """
import time, sys, json, resource
start = time.perf_counter()
from tools import master
namespace = master.solution_namespace()
imported = time.perf_counter() - start
import public_tests
calls = [
    (public_tests.data_augmenter_test, "data_augmenter"),
    (public_tests.alpaca_model_test, "alpaca_model"),
    (public_tests.frozen_base_test, "alpaca_model"),
    (public_tests.fine_tune_test, "fine_tune"),
    (public_tests.fine_tune_compile_test, "fine_tune"),
]
times = {{}}
for test, name in calls:
    t = time.perf_counter()
    test(namespace[name])
    times[test.__name__] = time.perf_counter() - t
print("RESULT", json.dumps({{"import": imported, "tests": times,
      "total": time.perf_counter() - start}}))
"""

THROUGHPUT = """
import time, sys, json, resource
import utils
from tools import master
import tensorflow as tf
namespace = master.solution_namespace()
train, _ = utils.load_datasets()
images = sum(int(labels.shape[0]) for _, labels in train)

class Clock(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)

def epoch_seconds(model, epochs=5):
    clock = Clock(); clock.seconds = []
    model.fit(train, epochs=epochs, verbose=0, callbacks=[clock])
    return clock.seconds

model = namespace["alpaca_model"]()
model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
              loss=tf.keras.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"])
frozen = epoch_seconds(model)
model = namespace["fine_tune"](model)
fine = epoch_seconds(model)
print("RESULT", json.dumps({{"images": images, "frozen": frozen, "fine_tune": fine,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def run_python(code: str) -> dict:
    script = code.format()  # the templates double their braces
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT
    )
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import run_notebook

    rows = []
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        metrics = run_notebook.run(pathlib.Path(out))
        rows.append(("whole solution notebook (1 run)", f"{time.perf_counter() - started:.1f} s"))
        rows.append(
            (
                "  of which training cells",
                f"{sum(c['seconds'] for c in metrics['cells'] if c['cell'].startswith('train_')):.1f} s",
            )
        )
        rows.append(("  kernel peak memory", f"{metrics['kernel_peak_rss_mb']} MB"))
        rows.append(
            (
                "  validation accuracy frozen / fine-tuned",
                f"{metrics['val_accuracy_frozen']:.3f} / {metrics['val_accuracy_fine_tuned']:.3f}",
            )
        )

    runs = [run_python(PUBLIC_TESTS) for _ in range(args.repeats)]
    rows.append(
        (
            f"import TF + public tests + solution (median of {args.repeats})",
            f"{statistics.median(r['import'] for r in runs):.1f} s",
        )
    )
    for name in runs[0]["tests"]:
        rows.append(
            (
                f"  {name} on the solution",
                f"{statistics.median(r['tests'][name] for r in runs):.2f} s",
            )
        )
    rows.append(
        (
            "  import and all public tests, in all",
            f"{statistics.median(r['total'] for r in runs):.1f} s",
        )
    )

    speed = run_python(THROUGHPUT)
    for phase in ("frozen", "fine_tune"):
        seconds = statistics.median(speed[phase][1:])
        rows.append(
            (
                f"training throughput, {phase.replace('_', '-')} (median epochs 2-5)",
                f"{speed['images'] / seconds:.0f} images/s ({seconds:.2f} s/epoch)",
            )
        )
    ratio = statistics.median(speed["fine_tune"][1:]) / statistics.median(speed["frozen"][1:])
    rows.append(("  fine-tuning epoch / frozen epoch", f"{ratio:.2f}x"))
    rows.append(("  training process peak memory", f"{speed['peak_rss_mb']:.0f} MB"))

    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}} | value")
    print(f"{'-' * width}-|------")
    for name, value in rows:
        print(f"{name:<{width}} | {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
