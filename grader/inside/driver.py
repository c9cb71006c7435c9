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
import sys
import traceback

STEP_MARKER = "\x1e@step "


def announce(text: str) -> None:
    try:
        os.write(1, f"\n{STEP_MARKER}{text}\n".encode())
    except OSError:  # the student closed the output: the step clock still runs
        pass


def not_defined(name: str, cell_errors: dict) -> dict:
    why = f" (its cell raised {cell_errors[name]})" if name in cell_errors else ""
    return {
        "error": {
            "type": "NameError",
            "message": f"name '{name}' is not defined{why}",
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
    made = {}  # the records made so far, by their inputs
    for index, step in enumerate(plan["steps"]):
        if index in plan["skip"]:
            continue
        announce(f"{index} {step['grade_id']}")
        if step["source"] is not None:
            result = shell.run_cell(step["source"], store_history=True)
            error = result.error_in_exec or result.error_before_exec
            if error is not None:
                text = f"{type(error).__name__}: {str(error).strip()[:300]}"
                cell_errors[step["grade_id"]] = text
                with open(os.path.join(records, f"{index}.cell.json"), "w") as handle:
                    json.dump({"error": text}, handle)
            continue
        for number, call in enumerate(step["calls"]):
            try:
                record = produce(call, shell.user_ns, cell_errors, made)
            except BaseException as error:  # noqa: BLE001 -- the tests' own code broke
                record = {
                    "crash": f"{type(error).__name__}: {str(error).strip()[:300]}",
                    "traceback": traceback.format_exc()[-4000:],
                }
            artifacts.dump(record, os.path.join(records, f"{index}.{number}"))
    announce("end")


if __name__ == "__main__":
    main()
