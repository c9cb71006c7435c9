"""Decide every test call from the records alone (run as a script, never beside student code).

    checker.run(request)                 in a fresh run of the checker's warm parent
    python -I checker.py < request.json  the same, as a script

Either writes the verdicts to ``request["result"]``.

The request names the course's own copy of the learner files (``public_tests.py``
and its helpers), the folder of records copied out of the student's sandbox, and
the calls to judge: ``{"record": stem or null, "missing": why, "test": ...,
"kwargs": {...}}``. For each call it runs the *check* half of the public test on
the record, the same code the learner runs inline. A record that is missing,
damaged or too large fails its call with a message; it never stops the others.

The records are hostile input: they are read by ``artifacts.load`` (size limits, no
pickle) and models are rebuilt by Keras in safe mode, which loads no code. Run this
in a sandbox too (no network, nothing writable): it then holds nothing a crafted
record could steal or change.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys


def judge(call: dict, records: str, tests) -> dict:
    """Return ``{"passed": bool, "output": printed text, "message": failure or ""}``."""
    import artifacts

    if call.get("record") is None:
        return {"passed": False, "output": "", "message": call["missing"]}
    stem = os.path.join(records, call["record"])
    try:
        with open(f"{stem}.json", "rb") as handle:
            data = handle.read(artifacts.MAX_JSON_BYTES + 1)
        npz = f"{stem}.npz" if os.path.exists(f"{stem}.npz") else None
        record = artifacts.load(data, npz)
    except (OSError, artifacts.RecordError) as error:
        return {"passed": False, "output": "", "message": f"the test's record is unusable: {error}"}
    if "crash" in record:
        return {
            "passed": False,
            "output": "",
            "message": f"the test could not run on your notebook: {record['crash']}",
        }
    check = tests.TESTS[call["test"]][1]
    kwargs = tests.inputs_for(check, call["kwargs"])
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            check(record, **kwargs)
    except AssertionError as failure:
        return {"passed": False, "output": printed.getvalue(), "message": str(failure)}
    except Exception as error:  # noqa: BLE001 -- a record no check expected
        text = (str(error).strip().splitlines() or [""])[0][:300]
        return {
            "passed": False,
            "output": printed.getvalue(),
            "message": f"the test could not judge what your code returned "
            f"({type(error).__name__}: {text})",
        }
    return {"passed": True, "output": printed.getvalue(), "message": ""}


def answer(request: dict, tests) -> None:
    """Judge the calls of one request and write the verdicts where it says (atomically)."""
    verdicts = [judge(call, request["records"], tests) for call in request["calls"]]
    with open(request["result"] + ".part", "w", encoding="utf-8") as handle:
        json.dump(verdicts, handle)
    os.replace(request["result"] + ".part", request["result"])


def run(request: dict) -> None:
    """Judge one submission's records (in a run forked by ``zygote.py``)."""
    sys.path[:0] = [request["runner"], request["assignment"]]
    os.chdir(request["workdir"])
    import public_tests

    answer(request, public_tests)


def main() -> None:
    run(json.loads(sys.stdin.read()))


if __name__ == "__main__":
    main()
