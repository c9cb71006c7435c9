"""Everything a submission hands over is hostile input (issue 18): records the checker judges.

The records of a submission are written in the student's sandbox, in the process
where the student's code runs, so an attacker can write any record it likes. These
tests forge records the way a clever student would (tests/attacks.py, FORGE_RECORDS:
the answer stubs stay, the produce halves of the public tests are replaced), write
them with the driver's own ``artifacts.dump``, and hand them to the real checker
(``grader/checker.py --serve``, the warm checker's program), followed by the
records of a correct classmate. Each forged call must fail, with a message that
says what is wrong; the classmate must pass every call.

Other hostile records: a ``.npz`` whose header declares 2^40 floats, a record that
reaches Keras's global settings, a record too slow to check.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
import zipfile

import attacks
import numpy as np
import pytest
from catalogue import PUBLIC_CALLS

from grader import artifacts

ROOT = pathlib.Path(__file__).resolve().parents[1]
GRADER = ROOT / "grader"

# Every call of the master's test cells, hidden ones included: (test, kwargs).
CALLS = [call for calls in PUBLIC_CALLS.values() for call in calls]

PRODUCER = r"""
import json, os, sys
request = json.loads(sys.stdin.read())
sys.path[:0] = [request["root"], request["grader"], os.path.join(request["root"], "tests")]
import artifacts, catalogue, public_tests

def produce(folder, targets):
    os.makedirs(folder)
    for number, (test, kwargs) in enumerate(request["calls"]):
        half = public_tests.TESTS[test][0]
        target = targets.get(test)
        record = half(target, **public_tests.inputs_for(half, kwargs))
        artifacts.dump(record, os.path.join(folder, str(number)))

originals = dict(public_tests.TESTS)
for name, code in request["attacks"].items():
    exec(code, {"__name__": "__main__"})  # what the attacker's answer cell runs
    produce(os.path.join(request["out"], name), {})
    public_tests.TESTS.update(originals)
env = catalogue.namespace()
solution = {
    test: catalogue.load(target, env=env)
    for target, calls in catalogue.PUBLIC_CALLS.items() for test, _ in calls
}
produce(os.path.join(request["out"], "classmate"), solution)
"""


def run_checker(records: pathlib.Path, students: list[str], work: pathlib.Path, extra=None):
    """Judge each student's records with the warm checker's program; return {student: verdicts}."""
    inbox = work / "inbox"
    inbox.mkdir()
    config = {
        "runner": str(GRADER),
        "assignment": str(ROOT),
        "workdir": str(work),
        "inbox": str(inbox),
        "requests": len(students),
    }
    for number, student in enumerate(students, 1):
        request = {
            "records": str(records / student),
            "calls": [
                {"record": str(i), "missing": "", "test": test, "kwargs": kwargs}
                for i, (test, kwargs) in enumerate(CALLS)
            ],
            "result": str(work / f"{student}.verdicts.json"),
            **(extra or {}),
        }
        (inbox / f"{number}.request.json").write_text(json.dumps(request))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-I", str(GRADER / "checker.py"), "--serve"],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    verdicts = {s: json.loads((work / f"{s}.verdicts.json").read_text()) for s in students}
    return verdicts, time.monotonic() - started


@pytest.fixture(scope="module")
def forged(tmp_path_factory):
    """The records of each forging attacker and of a correct classmate, judged in one checker."""
    work = tmp_path_factory.mktemp("forged")
    records = work / "records"
    records.mkdir()
    students = [f"forge_{variant}" for variant in attacks.FORGED_VARIANTS]
    request = {
        "root": str(ROOT),
        "grader": str(GRADER),
        "out": str(records),
        "calls": CALLS,
        "attacks": {
            f"forge_{variant}": attacks.forge_records_code(variant)
            for variant in attacks.FORGED_VARIANTS
        },
    }
    result = subprocess.run(
        [sys.executable, "-c", PRODUCER],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=work,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    verdicts, _ = run_checker(records, [*students, "classmate"], work)
    return verdicts


# The message that each forgery must meet, by test.
EXPECTED = {
    "fake_base": {
        "data_augmenter_test": "layer 0 is Dense(units=1)",
        "alpaca_model_test": "the base model is not Keras's MobileNetV2",
        "frozen_base_test": "the base model is not Keras's MobileNetV2",
        "fine_tune_test": "trainable flags",
        "fine_tune_compile_test": "trainable flags",
    },
    "renamed_layers": {
        "alpaca_model_test": "its layer 2 is Conv2D; expected BatchNormalization",
        "frozen_base_test": "its layer 2 is Conv2D; expected BatchNormalization",
    },
    "partial_weights": {
        "alpaca_model_test": "does not have the ImageNet weights: the weights of its layer "
        "'bn_Conv1'",
        "frozen_base_test": "does not have the ImageNet weights: the weights of its layer "
        "'bn_Conv1'",
    },
    "claims": {
        "data_augmenter_test": "could not judge",
        "alpaca_model_test": "could not judge",
        "fine_tune_test": "trainable flags could not be read",
        "fine_tune_compile_test": "trainable flags could not be read",
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", attacks.FORGED_VARIANTS)
def test_forged_records_get_nothing(forged, variant):
    """Does every call judged on forged records fail (fake base, renamed layers, partial weights, claims without a model), saying why?"""
    verdicts = forged[f"forge_{variant}"]
    passed = [CALLS[i] for i, verdict in enumerate(verdicts) if verdict["passed"]]
    assert passed == [], f"{variant}: forged records passed {passed}"
    for (test, kwargs), verdict in zip(CALLS, verdicts):
        if test in EXPECTED[variant] and not kwargs:
            assert EXPECTED[variant][test] in verdict["message"], (test, verdict["message"])


@pytest.mark.slow
def test_classmate_after_forgers_passes(forged):
    """Does a correct classmate judged by the same warm checker after the forgers pass every call?"""
    verdicts = forged["classmate"]
    failed = [(CALLS[i], v["message"][:300]) for i, v in enumerate(verdicts) if not v["passed"]]
    assert failed == []


# --------------------------------------------------------------------------------------
# Records that attack the checker itself
# --------------------------------------------------------------------------------------


def npz_declaring(path: pathlib.Path, shape, dtype="<f4", data=b"\0" * 64):
    """A .npz whose single array's header declares ``shape`` but holds only ``data``."""
    header = {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
    text = repr(header).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    member = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a0.npy", member)


def test_npz_header_is_checked_before_allocating(tmp_path):
    """Is a .npz whose header declares 2^40 floats refused with a message, without a MemoryError?"""
    npz_declaring(tmp_path / "bomb.npz", (2**20, 2**20))
    with pytest.raises(artifacts.RecordError, match="declares 4,398,046,511,104 bytes"):
        artifacts.load(json.dumps({"model": {"__array__": "a0"}}).encode(), tmp_path / "bomb.npz")


def test_npz_object_arrays_are_refused(tmp_path):
    """Is an array of Python objects (pickle) refused from its header, before reading?"""
    npz_declaring(tmp_path / "objects.npz", (1,), dtype="|O")
    with pytest.raises(artifacts.RecordError, match="not numbers"):
        artifacts.load(b"{}", tmp_path / "objects.npz")


def test_arrays_round_trip(tmp_path):
    """Does a record written by dump() come back array for array (dtypes, shapes, Fortran order)?"""
    arrays = [
        np.arange(12, dtype="float32").reshape(3, 4),
        np.asfortranarray(np.arange(6, dtype="int64").reshape(2, 3)),
        np.array(True),
        np.zeros((0, 5), dtype="float16"),
    ]
    artifacts.dump({"weights": arrays}, str(tmp_path / "r"))
    record = artifacts.load((tmp_path / "r.json").read_bytes(), tmp_path / "r.npz")
    for got, want in zip(record["weights"], arrays):
        assert got.dtype == want.dtype and np.array_equal(got, want)


def slow_record(folder: pathlib.Path) -> None:
    """A data_augmenter record whose model has 20,000 layers: quick to forge, slow to rebuild.

    (Keras 3.15 rebuilds 2,000 such layers in 2.1 s and 5,000 in 7.2 s, here.)
    """
    dtype = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}}
    layers = [
        {
            "module": "keras.layers",
            "class_name": "Identity",
            "config": {"name": f"i{n}", "trainable": True, "dtype": dtype},
            "registered_name": None,
        }
        for n in range(20_000)
    ]
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "slow", "layers": layers},
        "registered_name": None,
    }
    record = {
        "returned": {"is_sequential": True},
        "model": {"config": json.dumps(config), "weights": [], "trainable": [True] * 20_001},
    }
    artifacts.dump(record, str(folder / "0"))


@pytest.mark.slow
def test_checker_bounds_slow_and_global_records(tmp_path):
    """Does the checker cut a slow record at its check time limit, refuse a record that reaches keras.config, and judge the next submission with Keras's settings intact?"""
    records = tmp_path / "records"
    (records / "slow").mkdir(parents=True)
    slow_record(records / "slow")
    (records / "settings").mkdir()
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "aug",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "Activation",
                    "config": {
                        "name": "a",
                        "activation": {
                            "module": "keras.config",
                            "class_name": "set_floatx",
                            "config": {"value": "float16"},
                        },
                    },
                }
            ],
        },
    }
    record = {
        "returned": {"is_sequential": True},
        "model": {"config": json.dumps(config), "weights": [], "trainable": [True, True]},
    }
    artifacts.dump(record, str(records / "settings" / "0"))
    work = tmp_path / "work"
    work.mkdir()
    inbox = work / "inbox"
    inbox.mkdir()
    calls = [{"record": "0", "missing": "", "test": "data_augmenter_test", "kwargs": {}}]
    for number, student in enumerate(("slow", "settings"), 1):
        request = {
            "records": str(records / student),
            "calls": calls,
            "result": str(work / f"{student}.json"),
            "check_seconds": 5,
        }
        (inbox / f"{number}.request.json").write_text(json.dumps(request))
    serve = {"runner": str(GRADER), "assignment": str(ROOT), "workdir": str(work)}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-I", str(GRADER / "checker.py"), "--serve"],
        input=json.dumps({**serve, "inbox": str(inbox), "requests": 2}),
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    slow = json.loads((work / "slow.json").read_text())[0]
    assert not slow["passed"]
    assert "within 5 s" in slow["message"], slow["message"]
    assert seconds < 120, f"the checker took {seconds:.0f} s"
    settings = json.loads((work / "settings.json").read_text())[0]
    assert not settings["passed"]
    assert "keras.config.set_floatx is not a Keras built-in layer" in settings["message"]


def test_checks_cannot_change_keras_settings(tmp_path, monkeypatch):
    """Are Keras's global settings (floatx, safe mode ...) put back after a check that changed them?"""
    import types

    import keras

    from grader import checker

    def meddling_check(record):
        keras.config.set_floatx("float16")
        keras.config.set_epsilon(1.0)
        keras.config.enable_unsafe_deserialization()
        keras.config.disable_traceback_filtering()

    tests = types.SimpleNamespace(
        TESTS={"t": (None, meddling_check)}, inputs_for=lambda half, kwargs: {}
    )
    monkeypatch.setitem(sys.modules, "artifacts", artifacts)  # the checker's sibling module
    artifacts.dump({"returned": {}}, str(tmp_path / "0"))
    before = checker.keras_settings()
    verdict = checker.judge({"record": "0", "test": "t", "kwargs": {}}, str(tmp_path), tests)
    assert verdict["passed"]
    assert checker.keras_settings() == before
    assert keras.config.floatx() == "float32"
