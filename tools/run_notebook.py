"""The main job: execute the solution notebook end to end and write a report.

    python -m tools.run_notebook [--out build/run] [--timeout 1200]

It copies the master notebook (with solutions) and the learner files into the
output folder, executes the notebook in a real Jupyter kernel on the real data
and weights, and writes there:

- ``Transfer_learning_with_MobileNet.executed.ipynb``, the notebook with outputs;
- ``report.html``, the same as a web page;
- ``metrics.json``, the validation accuracy that ``fit()`` reports after both
  training phases, the accuracy of ``predict()`` on the validation set after
  each phase (read at probability 0.5, as the confusion matrix does), and the
  time each cell took.

In both the notebook and the report, stream outputs are shown as a terminal
would show them: Keras redraws its progress bars with carriage returns and
backspaces, which the HTML report would otherwise print as control characters.

It exits non-zero, naming the cell, if any cell fails.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import sys
import time

import nbclient
import nbconvert
import nbformat

from tools import build

# Run after the frozen phase, before fine-tuning changes the model.
FROZEN_PREDICT_CELL = """\
# Added by tools/run_notebook.py: the accuracy of predict() after the frozen phase.
_, _labels, _probabilities = utils.predict_dataset(model2, validation_dataset)
_predict_val_accuracy_frozen = float(np.mean((_probabilities > 0.5) == (_labels == 1)))
"""
METRICS_CELL = """\
# Added by tools/run_notebook.py: record the metrics of this run.
import json as _json
import resource as _resource
_json.dump(
    {
        "frozen": {key: [float(v) for v in values] for key, values in history.history.items()},
        "fine_tune": {key: [float(v) for v in values] for key, values in history_fine.history.items()},
        "tensorflow": tf.__version__,
        "keras": tf.keras.__version__,
        "kernel_peak_rss_mb": _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 1024,
        # The model's predictions on the validation set, read at probability 0.5.
        "predict_val_accuracy_frozen": _predict_val_accuracy_frozen,
        "predict_val_accuracy": float(np.mean((val_probabilities > 0.5) == (val_labels == 1))),
    },
    open("history.json", "w"),
)
"""


def prepare(out: pathlib.Path) -> pathlib.Path:
    """Copy the learner files and the master notebook into ``out``; return the notebook path."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for relative in build.learner_files():
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(build.repository_path(relative), target)
    notebook = build.master_notebook()
    frozen = next(
        index
        for index, cell in enumerate(notebook.cells)
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "train_frozen"
    )
    notebook.cells.insert(
        frozen + 1, nbformat.v4.new_code_cell(FROZEN_PREDICT_CELL, id="run-frozen-predict")
    )
    notebook.cells.append(nbformat.v4.new_code_cell(METRICS_CELL, id="run-metrics"))
    path = out / f"{build.ASSIGNMENT}.ipynb"
    build.write(notebook, path)
    return path


# One character of a stream as a terminal reads it: an ANSI escape sequence (colours,
# bold, which the HTML exporter turns into styles) or any single character.
TERMINAL_TOKEN = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|.", re.S)


def as_terminal_shows(text: str) -> str:
    """Return ``text`` as a terminal shows it: ``\\r`` starts the line again, ``\\b`` erases.

    Keras redraws its progress bar with backspaces and a carriage return; only the
    last drawing of each line is kept. Escape sequences take no room.
    """
    lines = []
    for line in text.split("\n"):
        shown: list[str] = []
        for token in TERMINAL_TOKEN.findall(line):
            if token == "\r":
                shown = []
            elif token == "\b":
                for index in range(len(shown) - 1, -1, -1):
                    if not shown[index].startswith("\x1b"):
                        del shown[index]
                        break
            else:
                shown.append(token)
        lines.append("".join(shown))
    return "\n".join(lines)


def clean_streams(notebook) -> None:
    """Merge consecutive stream outputs and show each as a terminal would."""
    for cell in notebook.cells:
        outputs = []
        for output in cell.get("outputs", []):
            if (
                output.output_type == "stream"
                and outputs
                and outputs[-1].output_type == "stream"
                and outputs[-1].name == output.name
            ):
                outputs[-1].text += output.text
            else:
                outputs.append(output)
        for output in outputs:
            if output.output_type == "stream":
                output.text = as_terminal_shows(output.text)
        if cell.cell_type == "code":
            cell.outputs = outputs


def cell_seconds(cell) -> float:
    timing = cell.metadata.get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not start or not end:
        return 0.0
    from datetime import datetime

    def parse(stamp):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    return (parse(end) - parse(start)).total_seconds()


def run(out: pathlib.Path, timeout: int = 1200) -> dict:
    """Execute the solution notebook in ``out`` and return the metrics."""
    path = prepare(out)
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(out)}}
    )
    started = time.perf_counter()
    error = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as failure:
        error = failure
    wall = time.perf_counter() - started
    clean_streams(notebook)
    executed = out / f"{build.ASSIGNMENT}.executed.ipynb"
    nbformat.write(notebook, executed)
    html, _ = nbconvert.HTMLExporter().from_notebook_node(notebook)
    (out / "report.html").write_text(html, encoding="utf-8")
    if error is not None:
        raise SystemExit(f"The solution notebook failed; see {executed}.\n{error}")

    history = json.loads((out / "history.json").read_text())
    cells = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            label = cell.metadata.get("nbgrader", {}).get("grade_id") or cell["id"]
            cells.append({"index": index, "cell": label, "seconds": round(cell_seconds(cell), 2)})
    metrics = {
        "wall_seconds": round(wall, 1),
        "tensorflow": history["tensorflow"],
        "keras": history["keras"],
        "val_accuracy_frozen": history["frozen"]["val_accuracy"][-1],
        "val_accuracy_fine_tuned": history["fine_tune"]["val_accuracy"][-1],
        "predict_val_accuracy_frozen": history["predict_val_accuracy_frozen"],
        "predict_val_accuracy": history["predict_val_accuracy"],
        "kernel_peak_rss_mb": round(history["kernel_peak_rss_mb"]),
        "epochs": len(history["frozen"]["val_accuracy"])
        + len(history["fine_tune"]["val_accuracy"]),
        "history": history,
        "cells": cells,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Execute the solution notebook and report.")
    parser.add_argument("--out", type=pathlib.Path, default=build.ROOT / "build" / "run")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    metrics = run(args.out.resolve(), args.timeout)
    slowest = sorted(metrics["cells"], key=lambda c: -c["seconds"])[:5]
    print(f"TensorFlow {metrics['tensorflow']}, Keras {metrics['keras']}")
    print(f"Whole notebook: {metrics['wall_seconds']} s")
    print(f"Validation accuracy after the frozen phase: {metrics['val_accuracy_frozen']:.3f}")
    print(f"Validation accuracy after fine-tuning:     {metrics['val_accuracy_fine_tuned']:.3f}")
    print(
        "Accuracy of predict() on the validation set, read at probability 0.5: "
        f"{metrics['predict_val_accuracy_frozen']:.3f} after the frozen phase, "
        f"{metrics['predict_val_accuracy']:.3f} after fine-tuning"
    )
    print("Slowest cells: " + ", ".join(f"{c['cell']} {c['seconds']} s" for c in slowest))
    print(f"Report: {args.out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
