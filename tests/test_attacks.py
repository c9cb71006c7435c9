"""Grading that cannot be fooled (issue 8): hostile notebooks against the real batch grader.

One batch, one worker, so that "after" is real: the students are graded in the
sorted order of their names, and a correct submission follows each attacker (or a
few attackers whose harm could only show on the next student). Each hostile
notebook (tests/attacks.py) starts from the untouched release and must end with
0/13; each correct one must get 13/13 in grades.csv and in the course gradebook.
After the batch, the course's files and the grading environment must be
byte-identical to before, no feedback may show a hidden test or a solution line,
the test's server on 127.0.0.1 must have had no connection, and the grader's
environment variables must not reach any output.

Honest but messy notebooks are graded in the same batch: os.chdir('/') in a scratch
cell, a duplicated test cell (both 13/13), a kernel that dies or hangs in the
fine_tune cell after Exercises 1 and 2 are solved (8/13, with a status that says so).
"""

from __future__ import annotations

import csv
import html
import os
import pathlib
import re
import socket
import sqlite3
import sys
import threading
import time
import uuid
import zipfile

import attacks
import nbformat
import pytest
import sample
from sample import POINTS, TOTAL

from grader import batch
from grader.course import ASSIGNMENT

ROOT = pathlib.Path(__file__).resolve().parents[1]
MASTER = ROOT / "course" / "source" / ASSIGNMENT / f"{ASSIGNMENT}.py"
# Exercises 1 and 2 solved, Exercise 3 lost.
FIRST_TWO = POINTS["data_augmenter_test"] + POINTS["alpaca_model_test"] + POINTS["frozen_base_test"]
CELL_TIMEOUT = 60  # a correct cell takes < 25 s here; the hanging one is cut off after this
SUBMISSION_TIMEOUT = 300

# (student, what they hand in), graded in this order. Each attacker is followed by the
# correct submission named in AFTER.
ORDER = [
    ("s01_noop_tests", "noop_tests"),
    ("s02_fake_modules", "fake_modules"),
    ("s03_ok_chdir", "chdir"),
    ("s04_ipython_hooks", "ipython_hooks"),
    ("s05_gradebook", "gradebook"),
    ("s06_ok_duplicated_test", "duplicated"),
    ("s07_master_and_leak", "master"),
    ("s08_classmate", "classmate"),
    ("s09_ok_classmate", "solution"),
    ("s10_tamper", "tamper"),
    ("s11_forge", "forge"),
    ("s12_kill_parent", "kill_parent"),
    ("s12_linger", "linger"),
    ("s12_ok", "solution"),
    ("s12_stop_parent", "stop_parent"),
    ("s13_ok", "solution"),
    ("s14_kernel_death", "kernel_death"),
    ("s15_hang", "hang"),
    # Warm workers: one student can never touch another (each attacker has two correct
    # classmates after it, each with a comment in their answers that only they wrote).
    ("s16_a_reach_others", "reach_others"),
    ("s16_b_thief", "thief"),
    ("s16_c_ok_marked", "marked"),
    ("s16_d_collector", "collector"),
    ("s16_e_checker_bomb", "checker_bomb"),
    ("s16_f_ok_marked", "marked"),
    ("s16_g_ok_marked", "marked"),
]
HOSTILE = [student for student, kind in ORDER if kind in attacks.HOSTILE]
CORRECT = [
    student for student, kind in ORDER if kind in ("chdir", "duplicated", "solution", "marked")
]
MARKED = [student for student, kind in ORDER if kind == "marked"]


def marker(student: str) -> str:
    """A comment only this student wrote: it must never show up in anyone else's files."""
    return f"answer-of-{student}-only-{uuid.uuid5(uuid.NAMESPACE_URL, student).hex[:12]}"


AFTER = {
    attacker: next(s for s in CORRECT if s > attacker)
    for attacker in HOSTILE
    if any(s > attacker for s in CORRECT)
}


# --------------------------------------------------------------------------------------
# What the attacks may reach, and how to see that they changed nothing
# --------------------------------------------------------------------------------------


def site_packages() -> pathlib.Path:
    import nbgrader

    return pathlib.Path(nbgrader.__file__).resolve().parents[1]


def repo_targets() -> list[pathlib.Path]:
    """The repository files an attack may reach (and where probes are cleaned up)."""
    return [
        ROOT / "public_tests.py",
        ROOT / "utils.py",
        ROOT / "test_utils.py",
        ROOT / "course" / "nbgrader_config.py",
        ROOT / "grader",
    ]


def probe_roots() -> list[pathlib.Path]:
    packages = site_packages()
    return [
        *repo_targets(),
        packages / "nbgrader",
        *[p for p in packages.iterdir() if p.is_file()],
    ]


def course_files(course: pathlib.Path) -> dict[str, str]:
    """Hash every file of the course except what grading legitimately writes."""

    def skip(relative):
        top = relative.split("/", 1)[0]
        return top in ("submitted", "autograded", "feedback", ".nbgrader.log") or top.startswith(
            "gradebook.db"
        )

    return attacks.snapshot(attacks.files_under(course, skip))


def environment_files() -> dict[str, str]:
    """Hash the installed nbgrader, the repository's modules and grader/, and list site-packages."""
    files = attacks.files_under(site_packages() / "nbgrader")
    files += attacks.files_under(ROOT / "grader", lambda r: "__pycache__" in r)
    files += [ROOT / "public_tests.py", ROOT / "utils.py", ROOT / "test_utils.py"]
    files += [ROOT / "course" / "nbgrader_config.py"]
    digests = attacks.snapshot(files)
    for entry in site_packages().iterdir():
        digests[f"site-packages entry: {entry.name}"] = "present"
    return digests


def new_bytecode(path: str) -> bool:
    """A .pyc that Python writes on first import is not tampering."""
    return "/__pycache__/" in path and path.endswith(".pyc")


class Listener:
    """A TCP server on 127.0.0.1 that records every connection a notebook makes."""

    def __init__(self):
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.server.settimeout(0.5)
        self.port = self.server.getsockname()[1]
        self.connections: list[tuple[str, bytes]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                connection, peer = self.server.accept()
            except OSError:
                continue
            connection.settimeout(2)
            data = b""
            try:
                while len(data) < 1_000_000:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            connection.close()
            self.connections.append((str(peer), data))

    def stop(self):
        self.stopped.set()
        self.thread.join(timeout=5)
        self.server.close()


# --------------------------------------------------------------------------------------
# The notebooks and the batch
# --------------------------------------------------------------------------------------


def notebooks(release, solution, scope) -> dict:
    honest = {
        "solution": lambda: solution,
        "chdir": lambda: attacks.chdir_scratch(solution),
        "duplicated": lambda: attacks.duplicated_test(solution),
        "kernel_death": lambda: attacks.kernel_death_after_two(solution, release),
        "hang": lambda: attacks.hang_after_two(solution, release),
    }
    built = {}
    for student, kind in ORDER:
        if kind in attacks.HOSTILE:
            built[student] = attacks.HOSTILE[kind](release, scope)
        elif kind == "marked":
            built[student] = attacks.marked(solution, marker(student))
        else:
            built[student] = honest[kind]()
    return built


def read_page(path: pathlib.Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    """Grade every notebook of ORDER in one batch (1 worker), with snapshots around it."""
    sample.environment()
    tmp = tmp_path_factory.mktemp("attacks")
    course = sample.make_course(tmp / "course")
    release = sample.release_notebook(course)
    solution = sample.solution_notebook(course)
    listener = Listener()
    packages = site_packages()
    scope = attacks.Scope(
        allowed=[os.path.realpath(tmp)],
        precious=[
            os.path.realpath(p)
            for p in (ROOT, sys.prefix, ROOT.parent / "shared", pathlib.Path.home())
        ]
        + ["/usr", "/etc"],
        probe_ok=[os.path.realpath(p) for p in (*repo_targets(), packages)],
        protected=attacks.protected_pids(),
        port=listener.port,
    )
    handed_in = notebooks(release, solution, scope)
    folder = tmp / "submissions"
    for student, notebook in handed_in.items():
        sample.write_submission(folder, student, notebook)
    archive = tmp / "submissions.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in folder.rglob("*"):
            handle.write(path, pathlib.Path("submitted") / path.relative_to(folder))

    secret = f"grader-secret-{uuid.uuid4().hex}"
    course_before, environment_before = course_files(course), environment_files()
    out = tmp / "out"
    os.environ["GRADER_TEST_SECRET"] = secret
    earlier = _batch_processes()  # warm parents of other test modules in this process
    start = time.monotonic()
    try:
        batch.run(
            archive,
            course,
            workers=1,
            out=out,
            submission_timeout=SUBMISSION_TIMEOUT,
            cell_timeout=CELL_TIMEOUT,
            progress=False,
        )
    finally:
        seconds = time.monotonic() - start
        del os.environ["GRADER_TEST_SECRET"]
        listener.stop()
        left_running = [found for found in _batch_processes() if found not in earlier]
        course_after, environment_after = course_files(course), environment_files()
        probes = attacks.clean_up(probe_roots())

    with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    summary = "\n".join(
        f"{s:24} {rows[s]['total']:>4}  {rows[s]['status'][:90]}" if s in rows else f"{s}: no row"
        for s, _ in ORDER
    )
    print(f"\nattack batch: {seconds:.0f} s\n{summary}")
    return {
        "course": course,
        "out": out,
        "rows": rows,
        "handed_in": handed_in,
        "secret": secret,
        "connections": listener.connections,
        "course_changes": attacks.differences(course_before, course_after),
        "environment_changes": attacks.differences(
            environment_before, environment_after, ignore_new=new_bytecode
        ),
        "probes": probes,
        "left_running": left_running,
        "seconds": seconds,
        "summary": summary,
    }


def _batch_processes() -> list[str]:
    """What of the batch is still alive after it: the thief's daemon (which names itself
    alpaca-loot), or a sandbox, zygote or run below this test process."""
    import psutil

    found = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        if process.info["name"] == "alpaca-loot" and process.info["status"] != "zombie":
            found.append(f"{process.pid}: the thief's daemon")
    for process in psutil.Process().children(recursive=True):
        try:
            command = " ".join(process.cmdline())
            if process.status() != "zombie" and ("zygote.py" in command or "bwrap" in command):
                found.append(f"{process.pid}: {command[:200]}")
        except psutil.Error:
            pass
    return found


def total(attacked, student) -> float:
    return float(attacked["rows"][student]["total"])


def stored_scores(course: pathlib.Path) -> dict[str, float]:
    """Each student's total as nbgrader stored it in the course gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        return {
            submission.student_id: float(submission.score)
            for submission in gradebook.assignment_submissions(ASSIGNMENT)
        }


def significant(lines, public: str) -> list[str]:
    """The lines worth hiding: not trivial, and not in the release."""
    found = []
    for line in lines:
        text = line.strip()
        if len(text) >= 6 and re.search(r"[A-Za-z0-9]", text) and text not in public:
            found.append(text)
    return found


def solution_lines() -> list[str]:
    lines, inside = [], False
    for line in MASTER.read_text(encoding="utf-8").splitlines():
        if line.strip() == "### BEGIN SOLUTION":
            inside = True
        elif line.strip() == "### END SOLUTION":
            inside = False
        elif inside:
            lines.append(line)
    return lines


# --------------------------------------------------------------------------------------
# Fast: the notebooks are well formed
# --------------------------------------------------------------------------------------


def toy_notebook():
    """A notebook with one cell per grade_id the builders look for."""
    cells = [nbformat.v4.new_code_cell("import os")]
    for grade_id in (*attacks.ANSWERS, *attacks.TESTS):
        solution = grade_id in attacks.ANSWERS
        cells.append(
            nbformat.v4.new_code_cell(
                f"def {grade_id}():\n    raise NotImplementedError()\n"
                if solution
                else f"public_tests.{grade_id}({grade_id})",
                metadata={"nbgrader": {"grade_id": grade_id, "solution": solution}},
            )
        )
    return nbformat.v4.new_notebook(cells=cells)


def test_every_attack_notebook_is_valid_python():
    """Does every hostile and messy notebook parse, so that a failure is the grader's, not a typo's?"""
    import ast

    scope = attacks.Scope(["/nonexistent"], ["/work"], [], [1], 1)
    toy = toy_notebook()
    built = [build(toy, scope) for build in attacks.HOSTILE.values()]
    built += [attacks.chdir_scratch(toy), attacks.duplicated_test(toy)]
    built += [attacks.kernel_death_after_two(toy, toy), attacks.hang_after_two(toy, toy)]
    for notebook in built:
        nbformat.validate(notebook)
        for source in attacks.python_sources(notebook):
            ast.parse(source)


def test_clean_up_removes_probes_only(tmp_path):
    """Does clean_up() strip an appended probe and delete a probe file, and leave the rest?"""
    kept = tmp_path / "public_tests.py"
    kept.write_text("x = 1\n")
    before = kept.read_bytes()
    with open(kept, "a") as handle:
        handle.write(f"\n# {attacks.MARK}\n")
    probe = tmp_path / f"{attacks.PROBE_PREFIX}utils.py"
    probe.write_text(f"# {attacks.MARK}\n")
    other = tmp_path / "other.py"
    other.write_text("y = 2\n")
    assert sorted(attacks.clean_up([tmp_path])) == sorted([str(kept), str(probe)])
    assert kept.read_bytes() == before and not probe.exists() and other.read_text() == "y = 2\n"


# --------------------------------------------------------------------------------------
# Slow: the batch
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_student_has_a_row(attacked):
    """Does grades.csv have a row for every student, attackers included?"""
    assert sorted(attacked["rows"]) == sorted(s for s, _ in ORDER), attacked["summary"]


@pytest.mark.slow
@pytest.mark.parametrize("attacker", HOSTILE)
def test_attacker_scores_zero(attacked, attacker):
    """Does each hostile notebook, built on the untouched release, score 0/13 in grades.csv and in nbgrader's gradebook?"""
    row = attacked["rows"][attacker]
    assert {name: float(row[name]) for name in POINTS} == dict.fromkeys(POINTS, 0.0), (
        f"{attacker}: {row}"
    )
    assert total(attacked, attacker) == 0
    assert stored_scores(attacked["course"]).get(attacker, 0.0) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("attacker", sorted(AFTER))
def test_correct_submission_after_attacker_gets_full_marks(attacked, attacker):
    """Does the correct submission graded after each attacker get 13/13, in grades.csv and in the gradebook?"""
    student = AFTER[attacker]
    row = attacked["rows"][student]
    assert {name: float(row[name]) for name in POINTS} == POINTS, (
        f"after {attacker}, {student}: {row}"
    )
    assert total(attacked, student) == TOTAL
    assert stored_scores(attacked["course"])[student] == TOTAL
    assert not row["status"].startswith(("autograde failed", "kernel died", "timeout"))


@pytest.mark.slow
def test_gradebook_agrees_with_grades_csv_and_has_no_triggers(attacked):
    """Does the course gradebook hold exactly grades.csv's totals, 13 points in all, and no trigger or edited max score?"""
    course = attacked["course"]
    assert stored_scores(course) == {s: total(attacked, s) for s in attacked["rows"]}
    with sqlite3.connect(course / "gradebook.db") as db:
        triggers = db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
        maximum = db.execute("SELECT SUM(max_score) FROM grade_cells").fetchone()[0]
    assert triggers == [], triggers
    assert maximum == TOTAL


@pytest.mark.slow
def test_course_files_are_unchanged(attacked):
    """Are source/, release/ and the config of the course byte-identical after the batch?"""
    assert attacked["course_changes"] == [], "\n".join(attacked["course_changes"])


@pytest.mark.slow
def test_environment_is_unchanged(attacked):
    """Are the installed nbgrader, site-packages, the repository's modules and grader/ byte-identical, with no probe left behind?"""
    changes = attacked["environment_changes"]
    assert changes == [], f"{len(changes)} files changed:\n" + "\n".join(changes[:40])
    assert attacked["probes"] == [], "probes left behind:\n" + "\n".join(attacked["probes"])


@pytest.mark.slow
def test_no_network(attacked):
    """Did no notebook reach the test's server on 127.0.0.1?"""
    peers = [(peer, data[:200]) for peer, data in attacked["connections"]]
    assert peers == [], f"{len(peers)} connections: {peers[:3]}"


@pytest.mark.slow
def test_grader_environment_is_secret(attacked):
    """Does no output (feedback, autograded notebooks, grades.csv) show the grader's environment variables?"""
    secret, course, out = attacked["secret"], attacked["course"], attacked["out"]
    outputs = [
        *(out / "feedback").glob("*.html"),
        *(course / "feedback").rglob("*.html"),
        *(course / "autograded").rglob("*.ipynb"),
        out / "grades.csv",
    ]
    leaked = [str(p) for p in outputs if secret in p.read_text(encoding="utf-8", errors="replace")]
    assert leaked == [], "the grader's secret environment variable is in:\n" + "\n".join(leaked)


@pytest.mark.slow
def test_feedback_for_everyone_without_hidden_or_solution_lines(attacked):
    """Does every student get feedback, and does no page show a hidden test line or a solution line the student did not write?"""
    out, course = attacked["out"], attacked["course"]
    public = nbformat.writes(sample.release_notebook(course))
    hidden = significant(sample.hidden_lines(), public)
    solutions = significant(solution_lines(), public)
    assert len(hidden) >= 5 and len(solutions) >= 10
    problems = []
    for student, _ in ORDER:
        page = out / "feedback" / f"{student}.html"
        if not page.is_file():
            problems.append(f"{student}: no feedback")
            continue
        text = read_page(page)
        own = "\n".join(attacks.python_sources(attacked["handed_in"][student]))
        leaked = [line for line in hidden + solutions if line in text and line not in own]
        if leaked:
            problems.append(f"{student}: shows {len(leaked)} hidden/solution lines: {leaked[:3]}")
    assert problems == [], "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("attacker", HOSTILE)
def test_attacker_feedback_says_zero(attacked, attacker):
    """Does each attacker's feedback exist and say 0 out of 13?"""
    page = attacked["out"] / "feedback" / f"{attacker}.html"
    assert page.is_file(), attacked["rows"][attacker]["status"]
    assert re.search(r"Score: 0(\.0)? / 13(\.0)?", read_page(page))


@pytest.mark.slow
def test_messy_but_correct_notebooks_keep_full_marks(attacked):
    """Do os.chdir('/') in a scratch cell and a duplicated test cell still get 13/13, graded normally?"""
    for student in ("s03_ok_chdir", "s06_ok_duplicated_test"):
        row = attacked["rows"][student]
        assert total(attacked, student) == TOTAL, f"{student}: {row}"
        assert not row["status"].startswith("autograde failed"), row["status"]
        page = read_page(attacked["out"] / "feedback" / f"{student}.html")
        assert re.search(r"Score: 13(\.0)? / 13(\.0)?", page)


@pytest.mark.slow
def test_kernel_death_keeps_exercises_one_and_two(attacked):
    """Does a notebook that kills its kernel in the fine_tune cell keep 8 points, with a status and feedback that say the kernel died?"""
    row = attacked["rows"]["s14_kernel_death"]
    assert total(attacked, "s14_kernel_death") == FIRST_TWO, row
    assert float(row["fine_tune_test"]) == 0 and float(row["fine_tune_compile_test"]) == 0
    assert "kernel died" in row["status"].lower(), row["status"]
    assert stored_scores(attacked["course"])["s14_kernel_death"] == FIRST_TWO
    page = attacked["out"] / "feedback" / "s14_kernel_death.html"
    assert page.is_file()
    assert re.search(r"died|crash", read_page(page), re.I)


@pytest.mark.slow
def test_hang_keeps_exercises_one_and_two(attacked):
    """Does a notebook that loops forever in the fine_tune cell keep 8 points, with a status and feedback that say it timed out?"""
    row = attacked["rows"]["s15_hang"]
    assert total(attacked, "s15_hang") == FIRST_TWO, row
    assert re.search(r"time ?out|timed out|cut off", row["status"], re.I), row["status"]
    page = attacked["out"] / "feedback" / "s15_hang.html"
    assert page.is_file()
    assert re.search(r"time ?out|timed out|cut off", read_page(page), re.I)


@pytest.mark.slow
def test_kill_parent_spares_the_grader(attacked):
    """Is the batch still whole after a notebook kills its parent: the next student graded normally, the test run alive?"""
    after = attacked["rows"][AFTER["s12_kill_parent"]]
    assert after["status"].startswith("graded"), after
    for pid in attacks.protected_pids():
        os.kill(pid, 0)  # raises if it was killed


# --------------------------------------------------------------------------------------
# Warm workers: one student can never touch another (issue 15)
# --------------------------------------------------------------------------------------

WARM_ATTACKERS = [
    s for s, kind in ORDER if kind in ("reach_others", "thief", "collector", "checker_bomb")
]


@pytest.mark.slow
@pytest.mark.parametrize("attacker", WARM_ATTACKERS)
def test_every_classmate_after_a_warm_attacker_gets_full_marks(attacked, attacker):
    """Do the (at least two) correct classmates graded after each attacker on the same warm worker all get 13/13?"""
    later = [s for s in CORRECT if s > attacker]
    assert len(later) >= 2
    scores = stored_scores(attacked["course"])
    for student in later:
        row = attacked["rows"][student]
        assert float(row["total"]) == TOTAL and row["status"].startswith("graded"), (
            f"after {attacker}, {student}: {row}"
        )
        assert scores[student] == TOTAL, (attacker, student)


def _everything_of(attacked, student) -> str:
    """Every file the grader wrote for one student: feedback, log, result, autograded notebook."""
    out, course = attacked["out"], attacked["course"]
    paths = [
        *out.glob(f"feedback/{student}.*"),
        *out.glob(f"logs/{student}.*"),
        *out.glob(f"results/{student}.*"),
        *(course / "autograded" / student).rglob("*"),
        *(course / "feedback" / student).rglob("*"),
    ]
    return "\n".join(
        path.read_text(encoding="utf-8", errors="replace") for path in paths if path.is_file()
    )


@pytest.mark.slow
def test_no_classmate_answer_reaches_anyone_else(attacked):
    """Does each marked classmate's own comment appear only in their own files, the thief's and collector's included?"""
    everything = {student: _everything_of(attacked, student) for student, _ in ORDER}
    for owner in MARKED:
        assert marker(owner) in everything[owner]  # the files hold the answers: the check can fail
        holders = [s for s, text in everything.items() if s != owner and marker(owner) in text]
        assert holders == [], f"{owner}'s answer reached {holders}"


@pytest.mark.slow
def test_nothing_of_the_batch_is_left_running(attacked):
    """After the batch, is no sandbox, zygote or daemon of any student still alive?"""
    assert attacked["left_running"] == []
