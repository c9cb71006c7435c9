"""Everything a submission hands over is hostile input (issue 18): records the checker judges.

The records of a submission are written in the student's sandbox, in the process
where the student's code runs, so an attacker can write any record it likes. These
tests forge records the way a clever student would (tests/attacks.py, FORGE_RECORDS:
the answer stubs stay, the produce halves of the public tests are replaced), write
them with the driver's own ``artifacts.dump``, and hand them to the real checker
(``grader/inside/checker.py``, run as the grader runs it), and the records of a correct
classmate. Each forged call must fail, with a message that
says what is wrong; the classmate must pass every call.

Other hostile records: a ``.npz`` whose header declares 2^40 floats, a record that
reaches Keras's global settings, a record too slow to check.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import subprocess
import sys
import time
import zipfile

import attacks
import numpy as np
import pytest
from catalogue import PUBLIC_CALLS

from grader.inside import artifacts

ROOT = pathlib.Path(__file__).resolve().parents[1]
INSIDE = ROOT / "grader" / "inside"  # the scripts that run in the sandboxes

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


def check_records(records: pathlib.Path, calls: list[dict], result: pathlib.Path, **extra):
    """Run the checker program on one submission's records, as the grader does; its verdicts."""
    request = {
        "runner": str(INSIDE),
        "assignment": str(ROOT),
        "workdir": str(result.parent),
        "records": str(records),
        "result": str(result),
        "calls": calls,
        **extra,
    }
    run = subprocess.run(
        [sys.executable, "-I", str(INSIDE / "checker.py")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(result.read_text())


def run_checker(records: pathlib.Path, students: list[str], work: pathlib.Path):
    """Judge each student's records in a run of the checker of its own: {student: verdicts}."""
    calls = [
        {"record": str(i), "missing": "", "test": test, "kwargs": kwargs}
        for i, (test, kwargs) in enumerate(CALLS)
    ]
    return {
        student: check_records(records / student, calls, work / f"{student}.verdicts.json")
        for student in students
    }


@pytest.fixture(scope="module")
def forged(tmp_path_factory):
    """The records of each forging attacker and of a correct classmate, each judged in a run of the checker of its own."""
    work = tmp_path_factory.mktemp("forged")
    records = work / "records"
    records.mkdir()
    students = [f"forge_{variant}" for variant in attacks.FORGED_VARIANTS]
    request = {
        "root": str(ROOT),
        "grader": str(INSIDE),
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
    return run_checker(records, [*students, "classmate"], work)


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
    """Do the records of a correct classmate, judged like the forgers', pass every call?"""
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


def slow_record(folder: pathlib.Path, stem: str = "0") -> None:
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
    artifacts.dump(record, str(folder / stem))


@pytest.mark.slow
def test_checker_bounds_slow_and_global_records(tmp_path):
    """Does the checker cut a slow record at its check time limit, then judge the next record, and refuse one that reaches keras.config?"""
    records = tmp_path / "records"
    records.mkdir()
    slow_record(records)  # record 0
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
    artifacts.dump(record, str(records / "1"))
    calls = [
        {"record": str(n), "missing": "", "test": "data_augmenter_test", "kwargs": {}}
        for n in (0, 1)
    ]
    started = time.monotonic()
    slow, settings = check_records(records, calls, tmp_path / "verdicts.json", check_seconds=5)
    seconds = time.monotonic() - started
    assert not slow["passed"]
    assert "within 5 s" in slow["message"], slow["message"]
    assert seconds < 120, f"the checker took {seconds:.0f} s"
    assert not settings["passed"]
    assert "keras.config.set_floatx is not a Keras built-in layer" in settings["message"]


def test_checks_cannot_change_keras_settings(tmp_path, monkeypatch):
    """Are Keras's global settings (floatx, safe mode ...) put back after a check that changed them?"""
    import types

    import keras

    from grader.inside import checker

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


# --------------------------------------------------------------------------------------
# One batch: forgers, a markdown bomb, a script in markdown, and correct classmates
# --------------------------------------------------------------------------------------

# The markdown bomb of issue 18: an unmatched LaTeX environment, repeated (about 360 KB).
BOMB = "\\begin{equation} " * 21_000
SCRIPT = (
    '<script>fetch("/formgrader/api/grades").then(r => document.title = "pwned")</script>\n\n'
    '<img src="x" onerror="document.title=\'pwned\'">\n\n'
    "[click me](javascript:document.title='pwned')\n"
)


SCRIPT_RAISED = "raise ValueError(\"<script>document.title='pwned'</script>\")"


def with_markdown(notebook, text):
    import nbformat

    notebook = nbformat.from_dict(json.loads(nbformat.writes(notebook)))
    notebook.cells.append(nbformat.v4.new_markdown_cell(text))
    return notebook


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade forgers, a markdown bomb, a script in markdown and correct classmates in one batch."""
    import csv

    import sample

    from grader import batch

    sample.environment()
    tmp = tmp_path_factory.mktemp("hostile")
    course = sample.make_course(tmp / "course")
    release = sample.release_notebook(course)
    solution = sample.solution_notebook(course)
    handed_in = {
        "a0_ok": solution,
        "a1_forge_fake_base": attacks.forge_records(release, "fake_base"),
        "a2_forge_partial_weights": attacks.forge_records(release, "partial_weights"),
        "a3_bomb": with_markdown(solution, BOMB),
        "a4_script": with_markdown(solution, SCRIPT),
        "a5_ok": solution,
        # Exercise 3 raises an error whose message is a script: it reaches the outputs.
        "a6_script_output": sample.replace_in(
            solution, "fine_tune", "base_model = utils.get_base_model(model)", SCRIPT_RAISED
        ),
    }
    folder = tmp / "submissions"
    for student, notebook in handed_in.items():
        sample.write_submission(folder, student, notebook)
    out = tmp / "out"
    started = time.monotonic()
    batch.run(folder, course, workers=1, out=out, progress=False)
    seconds = time.monotonic() - started
    with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    print(f"\nhostile batch: {seconds:.0f} s")
    for student, row in rows.items():
        print(f"{student:26} {row['total']:>4} {row['seconds']:>6} s  {row['status'][:60]}")
    return {"course": course, "out": out, "rows": rows, "seconds": seconds, "folder": folder}


@pytest.mark.slow
def test_batch_grades_everyone_on_their_own_merits(graded):
    """Do forgers get 0/13, and the bomb, the script writer and the classmates 13/13, in grades.csv and in the gradebook?"""
    from nbgrader.api import Gradebook
    from sample import TOTAL

    expected = {
        "a0_ok": TOTAL,
        "a1_forge_fake_base": 0,
        "a2_forge_partial_weights": 0,
        "a3_bomb": TOTAL,
        "a4_script": TOTAL,
        "a5_ok": TOTAL,
        "a6_script_output": TOTAL - 5,  # fine_tune_test (3) and fine_tune_compile_test (2)
    }
    totals = {student: float(row["total"]) for student, row in graded["rows"].items()}
    assert totals == expected
    with Gradebook(f"sqlite:///{graded['course'] / 'gradebook.db'}") as gradebook:
        stored = {
            s.student_id: float(s.score)
            for s in gradebook.assignment_submissions("Transfer_learning_with_MobileNet")
        }
    assert stored == expected


@pytest.mark.slow
def test_markdown_bomb_gets_plain_feedback_quickly(graded):
    """Does the markdown bomb get a short plain feedback that says why, within the feedback time limit of its own row?"""
    from grader.config import SETTINGS

    page = (graded["out"] / "feedback" / "a3_bomb.html").read_text()
    assert "Your notebook is not shown here: rendering it took longer than" in page
    assert len(page) < 10_000
    rows = graded["rows"]
    others = max(float(rows[s]["seconds"]) for s in ("a0_ok", "a4_script", "a5_ok"))
    assert float(rows["a3_bomb"]["seconds"]) < others + SETTINGS.feedback_timeout + 15


@pytest.mark.slow
def test_feedback_is_not_cut_short_by_a_busy_machine(graded, monkeypatch):
    """Is a classmate's feedback still rendered in full when its process runs a fiftieth of the time (a busy machine), longer on the clock than the render's limit of processor time?"""
    import dataclasses
    import threading

    import psutil

    from grader import feedback
    from grader.config import SETTINGS
    from grader.course import db_url

    # The clock's limit is a backstop, out of the way here: the render's own process keeps
    # its limit of processor time, which is what is tested, made small enough (a render
    # from the warm renderer takes well under a second of it) for the clock to pass it.
    limits = dataclasses.replace(SETTINGS, feedback_timeout=600, feedback_cpu_seconds=3)
    monkeypatch.setattr(feedback, "SETTINGS", limits)

    # Stop the render 98 % of the time, without loading the machine: its wall time is then
    # about 50 times its processor time, past the limit of 3 s even on a fast machine. A
    # render is stopped within 5 ms of its start, not at the next round (a loop that looked
    # every 0.3 s and stopped it 90 % of the time let a fast machine's render end in 1.5 s).
    def starve(stop):
        me = psutil.Process()
        while not stop.is_set():
            stopped = {}
            until = time.monotonic() + 0.49
            while time.monotonic() < until and not stop.is_set():
                with contextlib.suppress(psutil.Error):  # a process that has just ended
                    for child in me.children(recursive=True):
                        if child.pid not in stopped and "grader.renderer" in " ".join(
                            child.cmdline()
                        ):
                            child.suspend()
                            stopped[child.pid] = child
                time.sleep(0.005)
            for render in stopped.values():
                with contextlib.suppress(psutil.Error):
                    render.resume()
            time.sleep(0.01)

    points, comments = feedback.scores(db_url(graded["course"]), "a0_ok")
    feedback.generate(
        graded["course"], "a0_ok", points, comments
    )  # the renderer warm, as in a worker
    stop = threading.Event()
    thread = threading.Thread(target=starve, args=(stop,), daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        page, short = feedback.generate(graded["course"], "a0_ok", points, comments)
    finally:
        stop.set()
        thread.join()
    seconds = time.monotonic() - started
    print(f"\nfeedback of a0_ok, stopped 98 % of the time: {seconds:.0f} s")
    assert short is None, short
    assert "data_augmenter_test" in page and "Your notebook is not shown here" not in page
    assert seconds > limits.feedback_cpu_seconds  # a limit on the clock would have cut it


@pytest.mark.slow
def test_script_in_markdown_is_inert_in_feedback_and_formgrader_notebook(graded):
    """Is the student's <script>, onerror and javascript: link inert in the feedback and in the autograded notebook the formgrader shows?"""
    from grader.course import ASSIGNMENT, NOTEBOOK

    autograded = graded["course"] / "autograded" / "a4_script" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    feedback = (graded["out"] / "feedback" / "a4_script.html").read_text()
    # Rendered in full, however busy the machine (the render's limit is processor time).
    assert "Your notebook is not shown here" not in feedback, feedback[-2000:]
    for page in (feedback, autograded.read_text()):
        assert "fetch(" in page  # the student's text is still there, as text
        assert "<script>fetch" not in page
        assert re.search(r"<img[^>]*onerror", page) is None
        assert "(javascript:" not in page and 'href="javascript:' not in page


@pytest.mark.slow
def test_script_in_an_output_is_inert(graded):
    """Is a script in an error message (an output of the test cells) shown as text in the feedback?"""
    page = (graded["out"] / "feedback" / "a6_script_output.html").read_text()
    assert "document.title=" in page
    assert "<script>document.title" not in page


# --------------------------------------------------------------------------------------
# The formgrader, opened in Debian's Chromium
# --------------------------------------------------------------------------------------

# nbgrader's formgrader alone, without the course's extension (grader/formgrader.py):
# the control that shows what a script that got past the sanitizer would do.
FORMGRADER_CONFIG = """\
c.ServerApp.ip = "127.0.0.1"
c.ServerApp.port = {port}
c.ServerApp.root_dir = {root!r}
c.ServerApp.allow_root = True
c.ServerApp.open_browser = False
c.IdentityProvider.token = ""
c.ServerApp.password = ""
c.ServerApp.jpserver_extensions = {{"nbgrader.server_extensions.formgrader": True}}
"""


@pytest.fixture(scope="module")
def bare_formgrader(graded, tmp_path_factory):
    """nbgrader's own formgrader (no Content-Security-Policy) on the graded course: URL, log."""
    from formgrader import free_port, wait_until_answers

    home = tmp_path_factory.mktemp("bare-formgrader")
    port = free_port()
    (home / "config").mkdir()
    (home / "config" / "jupyter_server_config.py").write_text(
        FORMGRADER_CONFIG.format(port=port, root=str(graded["course"]))
    )
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        PATH=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    log = home / "server.log"
    with open(log, "w") as handle:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "server"],
            cwd=graded["course"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(server, f"{url}/formgrader", log, "the formgrader")
        yield {"url": url, "log": log}
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def formgrader(graded, tmp_path_factory):
    """The formgrader as the README starts it (course/jupyter_server_config.py), on the graded course."""
    from formgrader import Formgrader

    home = tmp_path_factory.mktemp("formgrader")
    with Formgrader(graded["course"], home / "server.log") as server:
        yield server


def submission_id(course: pathlib.Path, student: str) -> str:
    from nbgrader.api import Gradebook

    from grader.course import ASSIGNMENT, NOTEBOOK

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        return gradebook.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student).id


def exported(graded) -> dict:
    """Every student's total in `nbgrader export`, run in the course folder."""
    import csv

    from grader.course import nbgrader

    target = graded["out"] / "export.csv"
    result = nbgrader(["export", "--to", str(target)], cwd=graded["course"])
    assert result.returncode == 0, result.stdout
    with open(target, newline="", encoding="utf-8") as handle:
        return {row["student_id"]: float(row["score"]) for row in csv.DictReader(handle)}


def graded_totals(graded) -> dict:
    return {student: float(row["total"]) for student, row in graded["rows"].items()}


# What a script would do in the instructor's browser: mark the page, and zero every grade
# of the submission shown, through the formgrader's API (nbgrader's page defines
# base_url and submission_id).
ATTACK = (
    "document.title = 'pwned';"
    " var xsrf = (document.cookie.match(/_xsrf=([^;]*)/) || [])[1];"
    " fetch(base_url + '/api/grades?submission_id=' + submission_id)"
    ".then(r => r.json()).then(grades => grades.forEach(g => fetch("
    "base_url + '/api/grade/' + g.id, {method: 'PUT', headers: {'X-CSRFToken': xsrf},"
    " body: JSON.stringify(Object.assign(g, {manual_score: 0}))})));"
)
CSP_REFUSED = "violates the following Content Security Policy directive"


@contextlib.contextmanager
def scripts_past_the_sanitizer(course: pathlib.Path, student: str):
    """Put ATTACK into ``student``'s autograded notebook, as if it had got past the sanitizer.

    In a markdown cell (a <script> and an onerror handler) and in an output; the notebook
    and the student's grades and comments are put back afterwards.
    """
    import nbformat
    from nbgrader.api import Gradebook

    from grader.course import ASSIGNMENT, NOTEBOOK

    path = course / "autograded" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    kept = path.read_text()
    notebook = nbformat.reads(kept, as_version=4)
    notebook.cells.append(
        nbformat.v4.new_markdown_cell(
            f'<script>{ATTACK}</script>\n\n<img src="x" onerror="{ATTACK}">\n'
        )
    )
    code = nbformat.v4.new_code_cell("show()")
    code.outputs = [
        nbformat.v4.new_output(
            "display_data", data={"text/html": f"<script>{ATTACK}</script>", "text/plain": "x"}
        )
    ]
    notebook.cells.append(code)
    path.write_text(nbformat.writes(notebook))
    try:
        yield
    finally:
        path.write_text(kept)
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
            submitted = gradebook.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student)
            for grade in submitted.grades:
                grade.manual_score = grade.extra_credit = None
            for comment in submitted.comments:
                comment.manual_comment = None
            gradebook.db.commit()


def manual_scores(course: pathlib.Path, student: str) -> dict:
    from nbgrader.api import Gradebook

    from grader.course import ASSIGNMENT, NOTEBOOK

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        submitted = gradebook.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student)
        grades = {g.name: g.manual_score for g in submitted.grades}
        comments = {c.name: c.manual_comment for c in submitted.comments}
    return {"grades": grades, "comments": comments}


@pytest.mark.slow
def test_formgrader_pages_run_no_student_script(graded, formgrader, tmp_path):
    """Opened in the formgrader in Chromium, do the script in markdown and the one in an output stay text, under a nonce-only policy, send nothing, and leave every grade of `nbgrader export` as graded?"""
    from formgrader import chromium

    sent = []
    with chromium(tmp_path / "profile", timeout_seconds=120) as page:
        formgrader.login(page)
        page.on("request", lambda request: sent.append((request.method, request.url)))
        for student in ("a4_script", "a6_script_output"):
            answer = page.goto(
                formgrader.url(
                    f"/formgrader/submissions/{submission_id(graded['course'], student)}/"
                )
            )
            policy = answer.headers.get("content-security-policy", "")
            assert re.search(r"script-src 'nonce-[\w-]{20,}'", policy), policy
            assert "unsafe-inline" not in policy.split("script-src", 1)[1].split(";")[0]
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(1000)
            assert page.title() != "pwned", student
            text = page.inner_text("body")
            # Shown, as text (and not an error page: the server log says why).
            assert "document.title" in text, (student, formgrader.log()[-3000:])
    writes = [(method, url) for method, url in sent if method not in ("GET", "HEAD")]
    assert writes == []
    assert exported(graded) == graded_totals(graded)


@pytest.mark.slow
def test_csp_stops_a_script_past_the_sanitizer_and_grading_still_works(
    graded, formgrader, tmp_path
):
    """With scripts put straight into an autograded notebook, does the submission page refuse them (a CSP violation, no request, grades unchanged), and do a comment and a score typed in the page still save?"""
    from formgrader import chromium

    student = "a4_script"
    console, sent = [], []
    with (
        scripts_past_the_sanitizer(graded["course"], student),
        chromium(tmp_path / "profile", timeout_seconds=120) as page,
    ):
        formgrader.login(page)
        page.on("console", lambda message: console.append(message.text))
        page.on("request", lambda request: sent.append((request.method, request.url)))
        page.goto(
            formgrader.url(f"/formgrader/submissions/{submission_id(graded['course'], student)}/")
        )
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(1000)
        # The scripts are in the page as live markup: only the policy stops them.
        assert f"<script>{ATTACK[:20]}" in page.content()
        assert page.title() != "pwned"
        refused = [text for text in console if CSP_REFUSED in text]
        assert any("inline script" in text for text in refused), console
        assert any("inline event handler" in text for text in refused), console
        assert [(m, u) for m, u in sent if m not in ("GET", "HEAD")] == []
        assert exported(graded) == graded_totals(graded)

        # The formgrader's own scripts run: a comment and a score typed in the page save.
        page.locator(".comment").first.wait_for()
        comment = page.locator("textarea.comment").first
        comment_name = comment.get_attribute("id").removesuffix("-comment")
        with page.expect_response(lambda r: "/api/comment/" in r.url and r.request.method == "PUT"):
            comment.fill("Checked by hand.")
            comment.blur()
        score = page.locator("input.score").first
        score_name = score.get_attribute("id")
        with page.expect_response(lambda r: "/api/grade/" in r.url and r.request.method == "PUT"):
            score.fill("1")
            score.blur()
        stored = manual_scores(graded["course"], student)
        assert stored["comments"][comment_name] == "Checked by hand."
        assert stored["grades"][score_name] == 1
    assert manual_scores(graded["course"], student)["grades"][score_name] is None  # put back


@pytest.mark.slow
def test_formgrader_test_sees_a_live_script(graded, bare_formgrader, tmp_path):
    """Control: served by nbgrader's formgrader alone (no policy), do the same scripts run, and zero the grades (so the test above can fail)?"""
    from formgrader import chromium

    student = "a5_ok"
    with (
        scripts_past_the_sanitizer(graded["course"], student),
        chromium(tmp_path / "profile", timeout_seconds=120) as page,
    ):
        page.goto(
            f"{bare_formgrader['url']}/formgrader/submissions/"
            f"{submission_id(graded['course'], student)}/"
        )
        page.wait_for_load_state("networkidle")
        page.wait_for_function("() => document.title === 'pwned'", timeout=30_000)
        deadline = time.monotonic() + 30
        while set(manual_scores(graded["course"], student)["grades"].values()) != {0}:
            assert time.monotonic() < deadline, manual_scores(graded["course"], student)
            time.sleep(0.5)
    assert exported(graded) == graded_totals(graded)  # put back


@pytest.mark.slow
def test_feedback_runs_no_script(graded, formgrader, tmp_path):
    """Does every feedback page carry a policy that runs no script, so that a script past the sanitizer stays inert, opened from disk and from the server, while the page still shows the notebook?"""
    from formgrader import chromium

    from grader.course import ASSIGNMENT, NOTEBOOK
    from grader.feedback import FEEDBACK_POLICY

    for name in ("a0_ok", "a4_script", "a6_script_output", "a3_bomb"):
        page = (graded["out"] / "feedback" / f"{name}.html").read_text()
        head = page.split("</head>", 1)[0]
        assert 'http-equiv="Content-Security-Policy"' in head, name
        assert "script-src 'none'" in head, name
        assert "<script" not in page, name
    # A script that got past the sanitizer, in the feedback itself.
    injected = (
        (graded["out"] / "feedback" / "a4_script.html")
        .read_text()
        .replace("</body>", f'<script>{ATTACK}</script><img src="x" onerror="{ATTACK}"></body>', 1)
    )
    on_disk = tmp_path / "feedback.html"
    on_disk.write_text(injected)
    served = graded["course"] / "feedback" / "a4_script" / ASSIGNMENT / f"{NOTEBOOK}.html"
    served.parent.mkdir(parents=True, exist_ok=True)
    served.write_text(injected)
    console = []
    with chromium(tmp_path / "profile", timeout_seconds=120) as page:
        page.on("console", lambda message: console.append(message.text))
        page.goto(on_disk.as_uri())
        page.wait_for_timeout(1000)
        assert page.title() != "pwned"
        assert any(CSP_REFUSED in text for text in console), console
        text = page.inner_text("body")
        assert "data_augmenter_test" in text and "fetch(" in text  # the notebook, shown

        formgrader.login(page)
        answer = page.goto(
            formgrader.url(f"/files/feedback/a4_script/{ASSIGNMENT}/{NOTEBOOK}.html")
        )
        policy = answer.headers.get("content-security-policy", "")
        assert FEEDBACK_POLICY in policy and "sandbox" in policy, policy
        page.wait_for_timeout(1000)
        assert page.title() != "pwned"
        assert "data_augmenter_test" in page.inner_text("body")


@pytest.mark.slow
def test_generate_feedback_command_is_bounded(graded):
    """Does `nbgrader generate_feedback`, run in the course folder, give the markdown bomb the short plain page within the render's limit, keep its grade, and render a classmate in full?"""
    from grader.config import SETTINGS
    from grader.course import ASSIGNMENT, NOTEBOOK, nbgrader

    course = graded["course"]
    started = time.monotonic()
    result = nbgrader(
        ["generate_feedback", ASSIGNMENT, "--student", "a3_bomb", "--force"], cwd=course
    )
    seconds = time.monotonic() - started
    print(f"\nnbgrader generate_feedback, the markdown bomb: {seconds:.0f} s")
    assert result.returncode == 0, result.stdout[-3000:]
    page = (course / "feedback" / "a3_bomb" / ASSIGNMENT / f"{NOTEBOOK}.html").read_text()
    # Stopped by its processor-time limit (or, on a machine too busy, by the clock's).
    assert "Your notebook is not shown here: rendering it took longer than " in page
    assert "Your grade stands: <b>13</b> points" in page
    assert 'http-equiv="Content-Security-Policy"' in page
    assert seconds < SETTINGS.feedback_timeout + 30  # unbounded: about 100 s on an idle machine
    assert exported(graded)["a3_bomb"] == graded_totals(graded)["a3_bomb"]

    result = nbgrader(
        ["generate_feedback", ASSIGNMENT, "--student", "a4_script", "--force"], cwd=course
    )
    assert result.returncode == 0, result.stdout[-3000:]
    page = (course / "feedback" / "a4_script" / ASSIGNMENT / f"{NOTEBOOK}.html").read_text()
    assert "Your notebook is not shown here" not in page
    assert "fetch(" in page and "<script" not in page
    assert 'http-equiv="Content-Security-Policy"' in page.split("</head>", 1)[0]


def test_sanitizer_cleans_what_a_student_wrote_and_keeps_locked_cells():
    """Does SanitizeStudentContent make scripts, handlers and javascript: links inert in student markdown and outputs, and leave locked cells and plain text alone?"""
    import nbformat

    from grader.feedback import SanitizeStudentContent

    locked = nbformat.v4.new_markdown_cell("<b>course</b> text")
    locked.metadata["nbgrader"] = {"locked": True, "grade_id": "intro"}
    plain = nbformat.v4.new_markdown_cell("# A title\n\nplain **markdown**, $a^2$")
    code = nbformat.v4.new_code_cell("x")
    code.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={
                "text/html": "<p>ok</p><script>alert(1)</script>",
                "application/javascript": "alert(2)",
                "image/svg+xml": '<svg onload="alert(3)"></svg>',
                "text/plain": "<script>alert(4)</script>",
            },
        )
    ]
    notebook = nbformat.v4.new_notebook(
        cells=[locked, plain, nbformat.v4.new_markdown_cell(SCRIPT), code]
    )
    notebook, _ = SanitizeStudentContent().preprocess(notebook, {})
    assert notebook.cells[0].source == "<b>course</b> text"
    assert notebook.cells[1].source == "# A title\n\nplain **markdown**, $a^2$"
    student = notebook.cells[2].source
    assert "<script>" not in student and "&lt;script&gt;" in student
    assert re.search(r"<img[^>]*onerror", student) is None
    assert "(javascript:" not in student
    data = notebook.cells[3].outputs[0].data
    assert "<script>" not in data["text/html"] and "ok" in data["text/html"]
    assert "application/javascript" not in data
    assert "<svg" not in data["image/svg+xml"]  # escaped: inert
    assert data["text/plain"] == "<script>alert(4)</script>"  # shown as text, escaped by nbconvert


@pytest.mark.slow
def test_regrade_undoes_scores_a_script_could_set(graded, tmp_path):
    """After scores are set as the formgrader's API lets a script set them, does `grader.batch --force` put back the grader's own?"""
    import shutil

    from nbgrader.api import Gradebook

    from grader import batch
    from grader.course import ASSIGNMENT, NOTEBOOK

    student = "a1_forge_fake_base"
    url = f"sqlite:///{graded['course'] / 'gradebook.db'}"
    with Gradebook(url) as gradebook:  # what a script calling the formgrader's API can do
        for grade in gradebook.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student).grades:
            grade.manual_score = grade.max_score
            grade.extra_credit = 1.0
        gradebook.db.commit()
        assert gradebook.find_submission(ASSIGNMENT, student).score == 18
    again = tmp_path / "again"
    shutil.copytree(graded["folder"] / student, again / student)
    batch.run(again, graded["course"], workers=1, force=True, out=tmp_path / "out", progress=False)
    with Gradebook(url) as gradebook:
        notebook = gradebook.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student)
        assert [(g.manual_score, g.extra_credit) for g in notebook.grades] == [(None, None)] * 5
        assert gradebook.find_submission(ASSIGNMENT, student).score == 0
