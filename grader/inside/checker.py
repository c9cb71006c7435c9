"""Decide every test call from the records alone (run as a script, never beside student code).

    checker.run(request)                 in a fresh run of the checker's warm parent
    python -I checker.py < request.json  the same, as a script

Either writes the verdicts to ``request["result"]``.

The request names the course's own copy of the learner files (``public_tests.py``
and its helpers), the folder of records copied out of the student's sandbox, and
the calls to judge: ``{"record": stem or null, "missing": why, "test": ...,
"kwargs": {...}}``. For each call it runs the *check* half of the public test on
the record, the same code the learner runs inline. A record that is missing,
damaged, too large or too slow to judge fails its call with a message; it never
stops the others.

What a record may claim, and how each claim is verified
--------------------------------------------------------
A record is written in the student's sandbox, by code that runs in the very
process of the student's code: every byte of it may be forged. The checker
trusts no claim it can verify, and a claim it cannot verify can only fail a test.

=====================  ==========================================================
claim                  how the checker treats it
=====================  ==========================================================
``error``, ``crash``   your code raised, the test crashed: the call fails. A
                       forged one only loses points.
``returned``           what the function returned (type, a model or not): used for
                       the message only. A test passes only on a model rebuilt
                       from ``model`` and verified, never on this description.
``model.config``       rebuilt by Keras in safe mode, after every class in it is
                       checked to come from Keras's own modules (no Lambda, no
                       ``keras.config``, nothing of the student's). Everything the
                       tests then read (layers, shapes, the ``training=False`` of
                       the base call, parameter counts) is read from the rebuilt
                       model; the frozen-base test runs one real training step
                       on it.
base model             compared with Keras's own MobileNetV2 built here for the
                       expected input shape, layer by layer: type, configuration
                       and connections, not names.
``model.weights``      set on the rebuilt model (shapes must fit). The base
                       model's weights, all of them, are compared with the
                       ImageNet weights file by SHA-256 digest (read here with
                       h5py from ``$ALPACA_WEIGHTS_DIR``, once per process).
``model.trainable``    a list of True/False, one per layer of the rebuilt model,
                       set on it; then judged by the flags and a training step.
fine-tuned model       not rebuilt from the record: the check builds the model
                       the test handed to fine_tune(), as it was handed over, and
                       applies only what fine_tune() may change: the trainable
                       flags, and the optimizer, loss and metrics of ``compile``.
``compile``            compiled into that model (Keras classes only, safe mode);
                       the settings judged are read back from the compiled model.
``same_model``,        whether fine_tune() returned the model it was given and
``new_optimizer``      compiled it anew: identities that exist only in the
                       student's process. False fails the test; True passes
                       nothing by itself, every other check must still pass on
                       the handed-over model. Forging them needs the very
                       settings that solving the exercise needs.
=====================  ==========================================================

Bounds. The records are read by ``artifacts.load`` (size limits, each array's
declared size and type checked before it is read, no pickle). Each check has
``CHECK_SECONDS`` (or the request's ``check_seconds``) and one request
``REQUEST_SECONDS`` in all (a timer in this process), so the checker answers
before its sandbox's wall limit (``grading.CHECKER_LIMITS``). Keras's global
settings (``keras.config``) are put back after every call, so one call cannot
change how the next is judged; each submission gets a fresh run. Run this in a
sandbox too (no network, nothing writable): it then holds nothing a crafted
record could steal or change.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import time

# Seconds one check may take (a correct one takes a few), and one request in all: the
# checker's sandbox is stopped after 600 s (grading.CHECKER_LIMITS).
CHECK_SECONDS = 60
REQUEST_SECONDS = 480


class CheckTimeout(BaseException):
    """Raised by the timer when a check runs out of time.

    Not an Exception: Keras wraps the exceptions raised while it rebuilds a model
    (and the tests catch them), so a timeout must pass through ``except Exception``.
    """


def _out_of_time(signum, frame):
    raise CheckTimeout


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise `CheckTimeout` in this (main) thread after ``seconds``."""
    previous = signal.signal(signal.SIGALRM, _out_of_time)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# Keras's global settings: (getter, setter or enable_/disable_ switch). A record must not
# change them.
KERAS_SETTINGS = (
    ("floatx", "set_floatx"),
    ("epsilon", "set_epsilon"),
    ("image_data_format", "set_image_data_format"),
    ("max_epochs", "set_max_epochs"),
    ("max_steps_per_epoch", "set_max_steps_per_epoch"),
    ("is_traceback_filtering_enabled", "traceback_filtering"),
    ("is_interactive_logging_enabled", "interactive_logging"),
)


def keras_settings() -> dict:
    import keras
    from keras.src.backend.common import global_state

    found = {name: getattr(keras.config, name)() for name, _ in KERAS_SETTINGS}
    found["dtype_policy"] = keras.config.dtype_policy().name
    found["safe_mode"] = global_state.get_global_attribute("safe_mode_saving", None)
    return found


def restore_keras_settings(saved: dict) -> None:
    """Put Keras's global settings back as ``saved``; raise if they cannot be."""
    import keras
    from keras.src.backend.common import global_state

    for name, setter in KERAS_SETTINGS:
        if getattr(keras.config, name)() == saved[name]:
            continue
        if setter.startswith("set_"):
            getattr(keras.config, setter)(saved[name])
        else:  # a switch: enable_... or disable_...
            getattr(keras.config, ("enable_" if saved[name] else "disable_") + setter)()
    if keras.config.dtype_policy().name != saved["dtype_policy"]:
        keras.config.set_dtype_policy(saved["dtype_policy"])
    global_state.set_global_attribute("safe_mode_saving", saved["safe_mode"])
    if keras_settings() != saved:
        raise RuntimeError("Keras's global settings could not be put back")


def judge(call: dict, records: str, tests, seconds: float = CHECK_SECONDS) -> dict:
    """Return ``{"passed": bool, "output": printed text, "message": failure or ""}``.

    The check gets ``seconds``; Keras's global settings are put back afterwards.
    """
    saved = keras_settings()
    try:
        with time_limit(seconds):
            return _judge(call, records, tests)
    except CheckTimeout:
        return {
            "passed": False,
            "output": "",
            "message": f"the test could not judge what your code returned within "
            f"{seconds:.0f} s (a correct answer takes a few seconds)",
        }
    finally:
        restore_keras_settings(saved)


def _judge(call: dict, records: str, tests) -> dict:
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
    deadline = time.monotonic() + REQUEST_SECONDS
    verdicts = []
    for call in request["calls"]:
        left = deadline - time.monotonic()
        if left < 1:
            verdicts.append(
                {
                    "passed": False,
                    "output": "",
                    "message": f"the test could not run: judging this notebook's other "
                    f"tests took all of the checker's {REQUEST_SECONDS} s",
                }
            )
            continue
        seconds = min(request.get("check_seconds", CHECK_SECONDS), left)
        verdicts.append(judge(call, request["records"], tests, seconds))
    with open(request["result"] + ".part", "w", encoding="utf-8") as handle:
        json.dump(verdicts, handle)
    os.replace(request["result"] + ".part", request["result"])


def run(request: dict) -> None:
    """Judge one submission's records (in a run forked by ``zygote.py``)."""
    sys.path[:0] = [request["runner"], request["assignment"]]
    os.chdir(request["workdir"])
    import public_tests

    if "prepare" in request:  # a run that judges nothing: the course's own references
        shapes = [tuple(shape or public_tests.IMG_SIZE) + (3,) for shape in request["prepare"]]
        data = public_tests.tu.export_references(shapes)
        with open(request["result"] + ".part", "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(request["result"] + ".part", request["result"])
        return
    if request.get("references"):
        with open(request["references"], encoding="utf-8") as handle:
            public_tests.tu.import_references(json.load(handle))
    answer(request, public_tests)


def main() -> None:
    run(json.loads(sys.stdin.read()))


if __name__ == "__main__":
    main()
