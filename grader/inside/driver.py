"""The program that runs a student's notebook inside the sandbox (run as a script there).

    python -I driver.py < plan.json

It runs the set-up and answer cells in an IPython shell, in notebook order, and at
each test cell calls the *produce* half of every public test of that cell, with
the visible and the hidden inputs the plan gives. Each record is written to the
records folder as soon as it exists (see ``artifacts.py``), so a crash later keeps
what came before. A line starting with the step marker announces each step.

Nothing here decides a grade, and nothing here is secret: the student's code runs
in this very process and can read or change all of it. The grade is decided
elsewhere, from the records alone.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import traceback

STEP_MARKER = "\x1e@step "
INTERRUPTED = "CellTimeout"  # how an interrupted cell's error starts in its record


class CellTimeout(KeyboardInterrupt):
    """Raised in a cell that runs past its time limit, as nbgrader's kernel interrupt.

    A KeyboardInterrupt, so that ``except Exception`` in the student's code does not
    swallow it; IPython stops the cell and keeps what it defined.
    """


_limit = {"seconds": 0.0}  # the time limit of one step, for the message


def _interrupt(signum, frame):
    raise CellTimeout(
        f"the cell timed out: it ran past its time limit ({_limit['seconds']:g} s) and was "
        f"interrupted; what it defined before stays"
    )


def arm(seconds: float | None) -> None:
    """Interrupt the running cell after ``seconds`` (0 or None: disarm)."""
    signal.setitimer(signal.ITIMER_REAL, max(seconds or 0, 0))


def announce(text: str) -> None:
    try:
        os.write(1, f"\n{STEP_MARKER}{text}\n".encode())
    except OSError:  # the student closed the output: the step clock still runs
        pass


def not_defined(name: str, cell_errors: dict) -> dict:
    """The record of a test whose function is missing: the learner's error, or a run's."""
    why = str(cell_errors.get(name, ""))
    unfinished = "this cell did not finish: "
    if why.startswith(unfinished):
        # The run broke there: say what happened, not "fix your code".
        return {
            "crash": f"{name} is not defined: its cell did not finish ({why[len(unfinished) :]})"
        }
    if why.startswith(INTERRUPTED):
        return {
            "crash": f"{name} is not defined: its cell timed out and was interrupted before "
            f"it defined {name}"
        }
    because = f" (its cell raised {why})" if why else ""
    return {
        "error": {
            "type": "NameError",
            "message": f"name '{name}' is not defined{because}",
            "not_implemented": False,
            "line": None,
            "code": None,
            "in_mobilenet": False,
            "traceback": "",
        }
    }


def produce(call: dict, namespace: dict, cell_errors: dict, made: dict) -> dict:
    """Call the produce half of a test; a call made before with the same inputs is reused.

    (alpaca_model_test and frozen_base_test, for one, both judge the model that
    alpaca_model() returns for the same inputs.)
    """
    target = namespace.get(call["target"])
    if target is None:
        return not_defined(call["target"], cell_errors)
    tests = importlib.import_module("public_tests")
    produce_half = tests.TESTS[call["test"]][0]
    kwargs = tests.inputs_for(produce_half, call["kwargs"])
    key = json.dumps([produce_half.__name__, call["target"], kwargs], sort_keys=True, default=str)
    if key not in made:
        made[key] = produce_half(target, **kwargs)
    return made[key]


def main() -> None:
    run(json.loads(sys.stdin.read()))


def run(plan: dict) -> None:
    """Run the plan's steps (called by ``main``, or in a process forked by ``zygote.py``)."""
    for folder in reversed((plan["runner"], plan["assignment"])):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    import artifacts  # beside this file, in the runner folder

    os.makedirs(plan["workdir"], exist_ok=True)
    os.chdir(plan["workdir"])
    os.makedirs(plan["records"], exist_ok=True)
    records = plan["records"]

    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    cell_errors = dict(plan["cell_errors"])  # what earlier runs saw go wrong
    # Each step is interrupted after this many seconds; the host kills the sandbox only
    # when a step outlives it by the host's grace (the student's code ignored it).
    cell_seconds = plan.get("cell_seconds")
    _limit["seconds"] = cell_seconds or 0
    signal.signal(signal.SIGALRM, _interrupt)
    made = {}  # the records made so far, by their inputs
    for index, step in enumerate(plan["steps"]):
        if index in plan["skip"]:
            continue
        announce(f"{index} {step['grade_id']}")
        if step["source"] is not None:
            arm(cell_seconds)
            try:
                result = shell.run_cell(step["source"], store_history=True)
            finally:
                arm(0)
            error = result.error_in_exec or result.error_before_exec
            if error is not None:
                text = f"{type(error).__name__}: {str(error).strip()[:300]}"
                cell_errors[step["grade_id"]] = text
                with open(os.path.join(records, f"{index}.cell.json"), "w") as handle:
                    json.dump({"error": text}, handle)
            continue
        deadline = time.monotonic() + (cell_seconds or 0)
        for number, call in enumerate(step["calls"]):
            try:
                # One time limit for all the calls of a test cell, as for one cell.
                arm(max(deadline - time.monotonic(), 0.01) if cell_seconds else 0)
                try:
                    record = produce(call, shell.user_ns, cell_errors, made)
                finally:
                    arm(0)
            except BaseException as error:  # noqa: BLE001 -- the tests' own code broke
                record = {
                    "crash": f"{type(error).__name__}: {str(error).strip()[:300]}",
                    "traceback": traceback.format_exc()[-4000:],
                }
            artifacts.dump(record, os.path.join(records, f"{index}.{number}"))
    announce("end")


if __name__ == "__main__":
    main()
