"""Warm parents (grader/sandbox/warm.py): every run a new process in namespaces of its own.

One real pair of warm parents of the course (bubblewrap outside, the zygote with TensorFlow
imported, the course's learner files), runs given as plans of plain cells. Each test asserts
what a run can see and reach, and what the next run sees.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil
import pytest
import sample

from grader import grading, kernels, sandbox
from grader.config import SETTINGS

pytestmark = pytest.mark.slow
MEMORY_MB = 1536  # a run's memory; the outer sandbox adds the zygote's (warm.PARENT_MB)
LIMITS = sandbox.Limits(wall_seconds=120, step_seconds=60, memory_mb=MEMORY_MB)


@pytest.fixture(scope="module")
def parents():
    sample.environment()
    sandbox.check_available()
    files = [sample.ROOT / name for name in sample.LEARNER_FILES]
    made = kernels.Kernels(files, sample.ROOT, grading.Options(memory_mb=MEMORY_MB))
    yield made
    made.student.close()
    made.checker.close()


@pytest.fixture
def kernel(parents):
    return parents.student


def run(kernel, code, limits=LIMITS):
    """Run one cell in a new run; return (result, what it printed as JSON on its last line)."""
    plan = {
        "runner": "/runner",
        "assignment": "/assignment",
        "workdir": f"{sandbox.SCRATCH}/work",
        "records": f"{sandbox.SCRATCH}/records",
        "skip": [],
        "cell_errors": {},
        "steps": [{"grade_id": "cell", "source": textwrap.dedent(code), "calls": []}],
    }
    with kernel.run(plan, limits) as done:
        result = done.result
        folder = done.folder
    assert not folder.exists()  # the run's folder is gone with the run
    lines = [line for line in result.output.splitlines() if line.startswith("{")]
    return result, (json.loads(lines[-1]) if lines else None)


def zygote(kernel) -> int | None:
    return kernel.session.zygote.pid if kernel.session is not None else None


LOOK = """
import json, os, sys
def listing(folder):
    try:
        return sorted(os.listdir(folder))
    except OSError as error:
        return type(error).__name__
def traces(folder, text=("SPY" + " = True").encode()):  # not this cell's own text
    found = []
    for where, _, names in os.walk(folder):
        for name in names:
            try:
                if text in open(os.path.join(where, name), "rb").read():
                    found.append(name)
            except OSError:
                pass
    return found
home = os.path.expanduser("~")
seen = {
    "pid": os.getpid(),
    "tensorflow": "tensorflow" in sys.modules,
    "tmp": listing("/tmp"), "home": sorted(set(listing(home)) - {".ipython"}),
    "history": traces(home),  # the last run's cells, in IPython's history
    "shm": listing("/dev/shm"), "scratch": sorted(set(listing("/scratch")) - {"work"}),
    "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "nice": os.getpriority(os.PRIO_PROCESS, 0),
    "spy": hasattr(__import__("utils"), "SPY"),
    "environ": os.environ.get("SPY"),
}
print(json.dumps(seen))
"""
# What a clean kernel sees: its output file, its records and the folders behind /tmp, /dev/shm, $HOME.
# What a clean run sees in its folder: its output, its request, its records and the
# folders behind /tmp, /dev/shm and $HOME.
CLEAN_SCRATCH = [".home", ".shm", ".tmp", "output.log", "records", "request.json"]


def test_each_run_is_pid_one_of_its_own_namespace_with_tensorflow_imported(kernel):
    """Are two runs two processes, each pid 1 of a pid namespace of its own, forked warm?"""
    first, seen = run(kernel, LOOK)
    parent = zygote(kernel)
    second, again = run(kernel, LOOK)
    assert first.returncode == 0 and second.returncode == 0, first.output + second.output
    assert seen["tensorflow"] and again["tensorflow"]
    assert seen["pid"] == again["pid"] == 1
    assert seen["processes"] == again["processes"] == [1]  # nothing else is visible
    assert zygote(kernel) == parent  # the same warm zygote served both


def test_nothing_a_run_leaves_reaches_the_next(kernel):
    """Do files in /tmp, $HOME, /dev/shm and scratch, a changed module and variable, die with their run?"""
    leave = """
    import os, utils
    for folder in ("/tmp", os.path.expanduser("~"), "/dev/shm", "/scratch"):
        with open(os.path.join(folder, "left-by-the-last-student"), "w") as handle:
            handle.write("my answers")
    utils.SPY = True
    os.environ["SPY"] = "yes"
    """
    result, _ = run(kernel, leave)
    assert result.returncode == 0, result.output
    parent = zygote(kernel)
    _, seen = run(kernel, LOOK)
    assert zygote(kernel) == parent
    assert seen["tmp"] == [] and seen["home"] == [] and seen["shm"] == [], seen
    assert seen["history"] == [], seen
    assert seen["scratch"] == CLEAN_SCRATCH, seen
    assert not seen["spy"] and seen["environ"] is None


DAEMON = """
import os, threading, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", ["sleep", "61.7"])
    os._exit(0)
os.wait()
threading.Thread(target=time.sleep, args=(61.8,)).start()  # a thread that would outlive me
"""


def test_a_process_left_behind_dies_with_its_run(kernel):
    """Is a double-forked, setsid daemon dead when its run ends, the zygote kept warm?"""
    run(kernel, "pass")
    parent = zygote(kernel)
    result, _ = run(kernel, DAEMON)
    assert result.returncode == 0, result.output
    sleepers = [
        p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "61.7"]
    ]
    assert sleepers == []
    assert kernel.session.zygote.children() == []
    after, seen = run(kernel, LOOK)
    assert after.returncode == 0 and seen["processes"] == [1], after.output
    assert zygote(kernel) == parent


REACH = """
import ctypes, json, os, signal
libc = ctypes.CDLL(None, use_errno=True)
found = {"ppid": os.getppid(), "uid": os.getuid()}
for path in ("/runs", "/inbox", "/.host-proc", "/proc/sys/kernel/core_pattern"):
    try:
        if os.path.isdir(path):
            found[path] = os.listdir(path)
        else:
            open(path, "w").write("|/bin/true")
            found[path] = "written"
    except OSError as error:
        found[path] = type(error).__name__
for name, call in (
    ("ptrace", lambda: libc.ptrace(16, 2, 0, 0)),  # PTRACE_ATTACH to pid 2
    ("unshare", lambda: libc.unshare(0x10000000)),  # CLONE_NEWUSER
    ("mount", lambda: libc.mount(b"tmpfs", b"/mnt", b"tmpfs", 0, None)),
    ("setns", lambda: libc.setns(0, 0)),
):
    found[name] = (call(), ctypes.get_errno())
blind = []
for pid in range(2, 4000):
    try:
        os.kill(pid, 0)
        blind.append(pid)
    except OSError:
        pass
found["signalable"] = blind
found["visible"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
found["status"] = {
    line.split(":")[0]: line.split(":")[1].strip()
    for line in open("/proc/self/status")
    if line.startswith(("Cap", "NoNewPrivs", "Seccomp"))
}
found["tasks"] = sorted(int(t) for p in found["visible"] for t in os.listdir(f"/proc/{p}/task"))
try:
    fd = os.open("/proc/1/mem", os.O_RDWR)
    found["own mem"] = "opened"
    os.close(fd)
except OSError as error:
    found["own mem"] = type(error).__name__
print(json.dumps(found))
"""


def test_a_run_reaches_no_process_and_no_folder_but_its_own(kernel):
    """From inside: no parent, no other pid, no other run's folder, no inbox, no host /proc, no way out."""
    result, found = run(kernel, REACH)
    assert result.returncode == 0, result.output
    assert found["ppid"] == 0 and found["uid"] == 1000
    for hidden in ("/runs", "/inbox", "/.host-proc"):
        assert found[hidden] == "PermissionError", found
    assert found["/proc/sys/kernel/core_pattern"] in ("OSError", "PermissionError"), found
    for name in ("ptrace", "unshare", "mount", "setns"):
        assert found[name][0] == -1, (name, found)
    # The only ids it can signal are its own: the threads of pid 1 (TensorFlow's and IPython's).
    assert set(found["signalable"]) <= set(found["tasks"]), found
    status = found["status"]
    assert all(status[f"Cap{kind}"] == "0" * 16 for kind in ("Inh", "Prm", "Eff", "Bnd", "Amb"))
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", status
    assert int(status["Seccomp_filters"]) >= 2, status  # the sandbox's, then the run's own
    assert found["own mem"] == "OSError"  # /proc is read-only: not even its own memory


def test_a_run_past_its_step_limit_is_killed_and_the_next_one_runs(kernel):
    """Is a hanging run killed by its step limit, and is the next run fine?"""
    limits = sandbox.Limits(wall_seconds=60, step_seconds=3, memory_mb=MEMORY_MB)
    result, _ = run(kernel, "import time\ntime.sleep(30)\n", limits)
    assert result.killed and result.killed.startswith("step timeout"), result
    assert result.seconds < 20
    after, seen = run(kernel, LOOK)
    assert after.returncode == 0 and seen["processes"] == [1], after.output


def test_an_exit_code_comes_back(kernel):
    """Does os._exit(7) in a run give returncode 7?"""
    result, _ = run(kernel, "import os\nos._exit(7)\n")
    assert result.killed is None and result.returncode == 7, result


def test_a_memory_bomb_is_killed_and_the_next_run_is_fine(kernel):
    """Is a run that fills memory past its limit killed as out of memory, and the next run fine?"""
    bomb = "import numpy\nblocks = [numpy.ones(2**27) for _ in range(8)]  # 8 GiB\n"
    result, _ = run(kernel, bomb)
    assert result.killed and result.killed.startswith("out of memory"), result
    after, seen = run(kernel, LOOK)
    assert after.returncode == 0 and seen["processes"] == [1], after.output


def test_both_zygotes_start_before_any_run_asks(tmp_path):
    """Does making a course's Kernels start both zygotes in the background, ready before any
    run, and does the first run then use the zygote started so?"""
    files = [sample.ROOT / name for name in sample.LEARNER_FILES]
    made = kernels.Kernels(files, sample.ROOT, grading.Options(memory_mb=MEMORY_MB + 1))
    try:
        deadline = time.monotonic() + SETTINGS.parent_start_timeout
        while time.monotonic() < deadline and None in (made.student.session, made.checker.session):
            time.sleep(0.2)
        ready = [parent.session for parent in (made.student, made.checker)]
        assert None not in ready, "a zygote was not started in the background"
        assert made.student.count == made.checker.count == 0  # no run was asked for
        first = zygote(made.student)
        result, seen = run(made.student, LOOK)
        assert result.returncode == 0 and seen["processes"] == [1], result.output
        assert zygote(made.student) == first
    finally:
        made.student.close()
        made.checker.close()


def test_the_checker_answers_each_request_in_a_fresh_run(parents):
    """Does each checker request get a run of its own, which answers, and leaves no folder?"""
    request = {
        "runner": "/runner",
        "assignment": "/assignment",
        "workdir": sandbox.SCRATCH,
        "records": f"{sandbox.SCRATCH}/records",
        "result": f"{sandbox.SCRATCH}/verdicts.json",
        "calls": [],
    }
    seen = []
    for _ in range(2):
        with parents.checker.run(request, grading.CHECKER_LIMITS) as done:
            assert done.result.returncode == 0, done.result.output
            seen.append(json.loads(sandbox.read_artifact(done.folder, "verdicts.json", 1000)))
        assert not done.folder.exists()
        assert parents.checker.session.zygote.children() == []
    assert seen == [[], []]


def test_the_course_references_are_made_once_and_are_what_a_run_computes(parents, tmp_path):
    """Are the checker's references made by one run per set of image shapes, and equal to what
    a checker computes for itself (MobileNetV2's rows, the ImageNet digests)?"""
    import test_utils

    references = grading.References(parents.checker, tmp_path)
    calls = [{"kwargs": {}}, {"kwargs": {"image_shape": (128, 128)}}]
    started = references.prepare(calls)  # asked early: made meanwhile
    made = references.for_calls(calls)
    assert made is not None and made.is_file()
    assert started.result() == made
    assert references.for_calls([*reversed(calls), {"kwargs": {"image_shape": [128, 128]}}]) == made
    assert len(references.made) == 1
    data = json.loads(made.read_text(encoding="utf-8"))
    by_shape = {tuple(shape): rows for shape, rows in data["architectures"]}
    assert sorted(by_shape) == [(128, 128, 3), (160, 160, 3)]  # (160, 160): the tests' default
    computed = json.loads(json.dumps(test_utils.reference_architecture((128, 128, 3))))
    assert by_shape[(128, 128, 3)] == computed
    assert [tuple(pair) for pair in data["digests"]] == list(test_utils.imagenet_digests())


PROBE = """
import json, os
def run(request):
    found = {"pid": os.getpid(), "uid": os.getuid(), "ppid": os.getppid()}
    found["processes"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    for path in ("/runs", "/inbox"):
        try:
            found[path] = os.listdir(path)
        except OSError as error:
            found[path] = type(error).__name__
    if os.fork() == 0:
        os.setsid()
        os.execv("/bin/sleep", ["sleep", "61.9"])
    print(json.dumps(found), flush=True)
"""

AS_NOBODY = """
import json, os, pathlib, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from grader.sandbox import Limits
from grader.sandbox.warm import WarmParent
folder = pathlib.Path(sys.argv[3])
parent = WarmParent(
    runner=folder / "runner", path=[], entry="probe", readonly={}, env={}, memory_mb=256
)
for _ in range(2):
    with parent.run({}, Limits(wall_seconds=60, step_seconds=None, memory_mb=256)) as run:
        print("RESULT", run.result.returncode, (run.result.output.strip().splitlines() or [""])[-1])
parent.close()
"""


def test_a_grader_that_is_not_root_runs_each_run_in_namespaces_of_its_own(tmp_path):
    """As an ordinary user (nobody), is each run still pid 1 of its own namespaces, its daemon dead after it?"""
    system_python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    setpriv = shutil.which("setpriv")
    site = [
        p for p in sys.path if p.endswith("site-packages") and pathlib.Path(p, "psutil").is_dir()
    ]
    assert os.geteuid() == 0 and setpriv and os.path.exists(system_python) and site, (
        "this test switches to nobody: it needs root, setpriv and a system Python like ours"
    )
    folder = pathlib.Path(tempfile.mkdtemp(prefix="warm-nobody-", dir="/tmp"))
    try:
        runner = folder / "runner"
        runner.mkdir(parents=True)
        shutil.copyfile(sample.ROOT / "grader" / "inside" / "zygote.py", runner / "zygote.py")
        (runner / "probe.py").write_text(PROBE)
        (folder / "as_nobody.py").write_text(AS_NOBODY)
        for path in (folder, runner, *runner.iterdir(), folder / "as_nobody.py"):
            path.chmod(0o755)
        done = subprocess.run(
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", system_python]
            + [str(folder / "as_nobody.py"), str(sample.ROOT), site[0], str(folder)],
            capture_output=True,
            text=True,
            timeout=180,
            env={"PATH": "/usr/bin:/bin", "HOME": str(folder)},
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert len(lines) == 2, done.stdout + done.stderr[-3000:]
    for line in lines:
        code, printed = line.split(" ", 2)[1:]
        found = json.loads(printed)
        assert code == "0" and found["pid"] == 1 and found["ppid"] == 0, line
        assert found["processes"] == [1] and found["uid"] == 1000, line
        assert found["/runs"] == found["/inbox"] == "PermissionError", line
    sleepers = [
        p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "61.9"]
    ]
    assert sleepers == []
