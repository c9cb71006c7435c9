"""Warm kernels (grader/warm_kernel.py): a new process per run, and nothing of one run for the next.

One real WarmKernel (bubblewrap, the zygote with TensorFlow imported, the course's
learner files), runs given as plans of plain cells. Each test asserts what the next
run sees, and whether the sandbox had to be started again.
"""

from __future__ import annotations

import json
import textwrap

import psutil
import pytest
import sample

from grader import grading, sandbox
from grader.warm_kernel import WarmKernel

pytestmark = pytest.mark.slow
LEARNER_FILES = ("utils.py", "public_tests.py", "test_utils.py", "trainable_training.py")
MEMORY_MB = 1536  # a run's memory; the sandbox adds the zygote's (warm_kernel.ZYGOTE_MB)
LIMITS = sandbox.Limits(wall_seconds=120, step_seconds=60, memory_mb=2048)


@pytest.fixture(scope="module")
def kernel():
    sample.environment()
    sandbox.check_available()
    files = [sample.ROOT / name for name in LEARNER_FILES]
    kernel = WarmKernel(files, sample.ROOT, grading.Options(memory_mb=MEMORY_MB))
    yield kernel
    kernel.close()


def run(kernel, code, limits=LIMITS):
    """Run one cell in a new kernel; return (result, what it printed as JSON on its last line)."""
    plan = {
        "runner": "/runner",
        "assignment": "/assignment",
        "workdir": f"{sandbox.SCRATCH}/work",
        "records": f"{sandbox.SCRATCH}/records",
        "skip": [],
        "cell_errors": {},
        "steps": [{"grade_id": "cell", "source": textwrap.dedent(code), "calls": []}],
    }
    result = kernel.run(plan, limits)
    kernel.release()
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
def traces(folder, text=b"SPY = True"):
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
CLEAN_SCRATCH = [".home", ".shm", ".tmp", "output.log", "records"]


def test_each_run_is_a_new_process_that_starts_with_tensorflow_imported(kernel):
    """Are two runs two processes, children of one zygote that imported TensorFlow?"""
    first, seen = run(kernel, LOOK)
    parent = zygote(kernel)
    second, again = run(kernel, LOOK)
    assert first.returncode == 0 and second.returncode == 0, first.output + second.output
    assert seen["tensorflow"] and again["tensorflow"]
    assert seen["pid"] != again["pid"]
    assert zygote(kernel) == parent
    assert again["processes"] == [1, 2, again["pid"]]  # bwrap's init, the zygote, the kernel


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
    assert zygote(kernel) == parent  # a clean run keeps the warm sandbox
    assert seen["tmp"] == [] and seen["home"] == [] and seen["shm"] == [], seen
    assert seen["history"] == [], seen
    assert seen["scratch"] == CLEAN_SCRATCH, seen
    assert not seen["spy"] and seen["environ"] is None


def test_a_process_left_behind_costs_the_warm_sandbox(kernel):
    """Does a daemon left by a run make the next run start in a new sandbox, with the daemon dead?"""
    leave = """
    import os
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv("/bin/sleep", ["sleep", "61.7"])
        os._exit(0)
    os.wait()
    """
    run(kernel, "pass")
    parent = zygote(kernel)
    result, _ = run(kernel, leave)
    assert result.returncode == 0, result.output
    assert kernel.session is None  # release() saw the daemon and ended the sandbox
    after, seen = run(kernel, LOOK)
    assert after.returncode == 0, after.output
    assert zygote(kernel) != parent
    assert seen["processes"] == [1, 2, seen["pid"]]
    sleepers = [
        p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "61.7"]
    ]
    assert sleepers == []


def test_the_zygote_cannot_be_read_and_ipc_is_refused(kernel):
    """Can a run read its parent's memory, environment or descriptors, or leave System V IPC?"""
    probe = """
    import ctypes, json, os
    parent = os.getppid()
    found = {}
    for name in ("environ", "mem", "fd/1", "maps"):
        try:
            open(f"/proc/{parent}/{name}", "rb").read(1)
            found[name] = "read"
        except OSError as error:
            found[name] = type(error).__name__
    libc = ctypes.CDLL(None, use_errno=True)
    found["shmget"] = libc.shmget(0x7C1E, 4096, 0o1666)
    print(json.dumps(found))
    """
    result, found = run(kernel, probe)
    assert result.returncode == 0, result.output
    assert found == {
        "environ": "PermissionError",
        "mem": "PermissionError",
        "fd/1": "PermissionError",
        "maps": "PermissionError",
        "shmget": -1,
    }


@pytest.mark.parametrize(
    "harm",
    [
        "os.setpriority(os.PRIO_PROCESS, os.getppid(), 15)",
        "resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (10, 10))",
        "os.sched_setaffinity(os.getppid(), {0})",
        "os.rename('/scratch/.tmp', '/scratch/tmp-gone')",
    ],
    ids=["renice", "prlimit", "affinity", "tmp-renamed"],
)
def test_a_changed_zygote_or_scratch_is_thrown_away(kernel, harm):
    """Does a run that lowers its parent's priority or limits, or moves /tmp, cost the warm sandbox only?"""
    run(kernel, "pass")
    parent = zygote(kernel)
    result, _ = run(kernel, f"import os, resource\n{harm}\n")
    assert result.returncode == 0, result.output
    after, seen = run(kernel, LOOK + "open('/tmp/works', 'w').write('x')\n")
    assert after.returncode == 0, after.output
    assert zygote(kernel) != parent
    assert seen["nice"] == 0 and seen["tmp"] == []


def test_stopping_the_zygote_ends_the_run(kernel):
    """Does a run that SIGSTOPs its parent end at once, and the next run get a new sandbox?"""
    result, _ = run(kernel, "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\n")
    assert result.killed == "the kernel's parent process was stopped", result
    after, seen = run(kernel, LOOK)
    assert after.returncode == 0 and seen["tmp"] == [], after.output


def test_a_run_past_its_step_limit_is_killed_and_the_next_one_runs(kernel):
    """Is a hanging run killed by its step limit, and is the next run fine?"""
    limits = sandbox.Limits(wall_seconds=60, step_seconds=3, memory_mb=2048)
    result, _ = run(kernel, "import time\ntime.sleep(30)\n", limits)
    assert result.killed and result.killed.startswith("step timeout"), result
    assert result.seconds < 20
    after, seen = run(kernel, LOOK)
    assert after.returncode == 0 and seen["processes"] == [1, 2, seen["pid"]], after.output


def test_an_exit_code_comes_back(kernel):
    """Does os._exit(7) in a run give returncode 7, and a crash of the driver a non-zero one?"""
    result, _ = run(kernel, "import os\nos._exit(7)\n")
    assert result.killed is None and result.returncode == 7, result


def test_a_memory_bomb_is_killed_and_the_next_run_is_fine(kernel):
    """Is a run that fills memory past the sandbox's limit killed as out of memory, and the next run fine?"""
    bomb = "import numpy\nblocks = [numpy.ones(2**27) for _ in range(8)]  # 8 GiB\n"
    result, _ = run(kernel, bomb)
    assert result.killed and result.killed.startswith("out of memory"), result
    after, seen = run(kernel, LOOK)
    assert after.returncode == 0 and seen["processes"] == [1, 2, seen["pid"]], after.output
