"""Students' kernels that start warm: forked, one per run, from a parent that imported TensorFlow.

A batch worker grades many submissions. Importing TensorFlow costs about 3 s of CPU
for each; here it is paid once per sandbox instead:

    kernel = WarmKernel.for_course(learner_files, root, options)
    result = kernel.run(plan, limits)    # like sandbox.Sandbox.run, plus .scratch
    ...read the records in kernel.scratch...
    kernel.release()                     # empty scratch at once

One bubblewrap sandbox (all of ``sandbox.py``'s walls and its cgroup) runs
``zygote.py``, which imports the course's modules and then forks one child per run.
Each run is one student's kernel: a new process, which reads its plan itself. The
host watches it like ``Sandbox.run`` does: wall time, time per step, scratch and
output; memory and processes are the sandbox's own limits.

Nothing of one student may reach the next. Before each run this checks, and
otherwise throws the sandbox away and starts a new one:

- no process is left in the sandbox but its init and the zygote, both the ones it
  started with, and the zygote is not stopped;
- scratch is empty, and the folders behind ``/tmp``, ``/dev/shm`` and ``$HOME`` are
  the ones bound at the start (a run that renamed them would leave the next one
  without a ``/tmp``);
- at most ``RUNS`` runs per sandbox.

The zygote checks its own limits and priority before each fork (see ``zygote.py``);
System V IPC and message queues, which outlive a process, are refused by the
sandbox's seccomp filter. A run that hits a limit kills the whole sandbox.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time

import psutil

from . import sandbox

RUNS = 50  # runs one sandbox serves before a new one starts
INBOX = "/inbox"
OUTPUT = "output.log"
# The zygote imports these beyond TensorFlow and IPython: the learner files the set-up
# cell imports (their copies in the course, the same for every student).
MODULES = ("public_tests", "test_utils", "trainable_training")
# Extra memory for the sandbox: the zygote's own (TensorFlow imported), shared by each child.
ZYGOTE_MB = 1024
_PERIOD = 0.025  # how often a run is looked at (its output, its end, scratch)
SLACK = 5  # the sandbox's own watchdog (memory, processes) looks every 0.5 s
_KEPT = (sandbox._TMP, sandbox._SHM, sandbox._HOME)


@dataclasses.dataclass
class _Session:
    box: sandbox.Sandbox
    thread: threading.Thread | None = None  # runs the sandbox (box.run)
    runs: int = 0
    result: sandbox.Result | None = None
    init: psutil.Process | None = None
    zygote: psutil.Process | None = None
    folders: dict = dataclasses.field(default_factory=dict)  # kept folder -> (dev, inode)
    attributes: dict = dataclasses.field(default_factory=dict)  # the zygote's, at the start


class WarmKernel:
    _by_course: dict[str, WarmKernel] = {}

    def __init__(self, learner_files, root, options):
        from . import grading

        self.options = options
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="alpaca-warm-kernel-"))
        grading._copy_files(learner_files, pathlib.Path(root), self.work / "assignment")
        self.runner = grading._runner(
            self.work / "runner", "driver.py", "artifacts.py", "zygote.py"
        )
        self.inbox = self.work / "inbox"
        self.inbox.mkdir()
        self.scratch = self.work / "scratch"
        self.binds = grading._binds(self.work, self.runner, options)
        self.binds[str(self.inbox)] = INBOX
        self.environment = grading._environment("")
        self.session: _Session | None = None
        self.count = 0
        self.lock = threading.Lock()

    @classmethod
    def for_course(cls, learner_files, root, options) -> WarmKernel:
        """The warm kernel of this course's learner files and options, made on first use."""
        from .grading import files_digest

        key = files_digest(learner_files, root) + repr(options)
        if key not in cls._by_course:
            cls._by_course[key] = kernel = cls(learner_files, root, options)
            atexit.register(kernel.close)
        return cls._by_course[key]

    # ----------------------------------------------------------------------------------
    # The sandbox and its zygote

    def _start(self) -> _Session:
        sandbox.empty_scratch(self.scratch)
        for stale in self.inbox.iterdir():
            stale.unlink()
        limits = sandbox.Limits(
            wall_seconds=7 * 86400,
            step_seconds=None,
            memory_mb=self.options.memory_mb + ZYGOTE_MB,
        )
        box = sandbox.Sandbox(
            readonly=self.binds,
            scratch=self.scratch,
            limits=limits,
            env=self.environment,
            slack=SLACK,  # each run has its own watch (below): time, scratch, output
        )
        config = {
            "runner": "/runner",
            "assignment": "/assignment",
            "scratch": sandbox.SCRATCH,
            "inbox": INBOX,
            "output": OUTPUT,
            "modules": list(MODULES),
        }
        session = _Session(box=box)

        def serve():
            session.result = box.run(
                [sys.executable, "-I", "/runner/zygote.py"], input=json.dumps(config).encode()
            )

        session.thread = threading.Thread(target=serve, daemon=True)
        session.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and session.thread.is_alive():
            init = box.init_pid
            if init is not None:
                try:
                    children = psutil.Process(init).children()
                except psutil.Error:
                    children = []
                if len(children) == 1 and _is_zygote(children[0]):
                    session.init = psutil.Process(init)
                    session.zygote = children[0]
                    break
            time.sleep(0.01)
        if session.zygote is None:
            box.stop("the warm kernel did not start")
            session.thread.join(30)
            raise RuntimeError(
                "the warm kernel did not start: "
                + (session.result.output[-2000:] if session.result else "no output")
            )
        for name in _KEPT:
            st = os.stat(self.scratch / name, follow_symlinks=False)
            session.folders[name] = (st.st_dev, st.st_ino)
        session.attributes = _attributes(session.zygote)
        return session

    def _stop(self, why: str) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.box.stop(why)
            session.thread.join(30)

    def _clean(self, session: _Session) -> str | None:
        """Why this sandbox may not serve another student, or None."""
        if not session.thread.is_alive():
            return "the sandbox ended"
        if session.runs >= RUNS:
            return f"{RUNS} runs served"
        try:
            if session.zygote.status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE):
                return "the zygote is stopped"
            others = [
                p for p in session.init.children(recursive=True) if p.pid != session.zygote.pid
            ]
            alive = session.zygote.is_running() and session.init.is_running()
        except psutil.Error:
            return "the zygote is gone"
        if not alive:
            return "the zygote is gone"
        if others:
            return f"{len(others)} process(es) of the last run are still there"
        try:
            if _attributes(session.zygote) != session.attributes:
                return "the zygote's limits or priority were changed"
        except (psutil.Error, OSError):
            return "the zygote is gone"
        for name, identity in session.folders.items():
            try:
                st = os.stat(self.scratch / name, follow_symlinks=False)
            except OSError:
                return f"scratch/{name} is gone"
            if not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) != identity:
                return f"scratch/{name} was replaced"
        return None

    def _empty(self) -> None:
        """Empty scratch but keep the folders bound at /tmp, /dev/shm and $HOME (emptied).

        Called only when no process of the sandbox can run (nothing could swap a folder
        for a link meanwhile); nothing is followed anyway.
        """
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        self.scratch.mkdir(mode=0o700, exist_ok=True)
        top = os.open(self.scratch, flags)
        try:
            while True:
                names = [name for name in os.listdir(top) if not _is_dir(top, name, _KEPT)]
                if not names:
                    break
                for name in names:
                    sandbox._remove(top, name)
            for name in os.listdir(top):
                sandbox._openable(top, name)
                folder = os.open(name, flags, dir_fd=top)
                try:
                    while names := os.listdir(folder):
                        for child in names:
                            sandbox._remove(folder, child)
                finally:
                    os.close(folder)
        finally:
            os.close(top)
        for stale in self.inbox.iterdir():
            stale.unlink()

    # ----------------------------------------------------------------------------------
    # One run

    def run(self, plan: dict, limits: sandbox.Limits) -> sandbox.Result:
        """Run ``driver.run(plan)`` in a new child of the zygote; watch it like Sandbox.run."""
        with self.lock:
            session = self.session
            why = self._clean(session) if session is not None else "first run"
            if why is None:
                self._empty()
            else:
                self._stop(why)
                session = self.session = self._start()  # which empties scratch itself
            session.runs += 1
            self.count += 1
            job = str(self.count)
            output = os.open(
                self.scratch / OUTPUT, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
            )
            try:
                (self.inbox / f"{job}.plan.json").write_text(json.dumps(plan), encoding="utf-8")
                (self.inbox / f"{job}.job").write_text("", encoding="utf-8")
                return self._watch(session, job, output, limits)
            finally:
                os.close(output)

    def _watch(self, session: _Session, job: str, output: int, limits: sandbox.Limits):
        start = time.monotonic()
        out = sandbox._Output(limits.output_bytes)
        watch = sandbox._ScratchWatch(self.scratch, limits)
        clock = sandbox._Clock(limits, start)
        peak, killed, returncode = 0, None, None
        next_memory = start
        while True:
            _read_all(output, out)
            now = time.monotonic()
            clock.saw(out.markers, now)
            status = self._exit_status(job)
            if status == -signal.SIGXCPU:
                killed = session.box._cpu()  # the sandbox's RLIMIT_CPU, which the child has
                break
            if status == -signal.SIGKILL:
                # Killed by the kernel: when the sandbox's own watchdog saw why (out of
                # memory), it ends the sandbox within a moment and says so.
                session.thread.join(1)
                if session.result is not None and session.result.killed:
                    killed = session.result.killed
                    break
            if status is not None:
                returncode = status
                break
            if not session.thread.is_alive():
                result = session.result
                killed = (result.killed if result else None) or "the kernel's sandbox ended"
                break
            if clock.wall_over(now):
                killed = clock.wall_message()
            elif clock.step_over(now):
                killed = clock.step_message(out.steps)
            elif now >= watch.next_scan or watch.growing(now):
                killed = watch.scan(now)
            if killed:
                self._stop(killed)
                session.thread.join(30)
                if session.result is not None and session.result.killed not in (None, killed):
                    killed = session.result.killed  # the sandbox's own limit came first
                break
            if now >= next_memory:
                next_memory = now + 0.25
                peak = max(peak, _resident(session))
                if _stopped(session.zygote):  # it cannot report the end of the run
                    killed = "the kernel's parent process was stopped"
                    self._stop(killed)
                    break
            time.sleep(_PERIOD)
        _read_all(output, out)
        out.finish()
        return sandbox.Result(
            returncode=None if killed else returncode,
            killed=killed,
            output=out.text(),
            steps=out.steps,
            peak_mb=round(peak / 2**20, 1),
            seconds=round(time.monotonic() - start, 3),
            enforced=session.result.enforced if session.result else {},
        )

    def _exit_status(self, job: str) -> int | None:
        if not os.path.lexists(self.scratch / f"exit-{job}.json"):
            return None  # (one system call: this is asked 40 times a second)
        try:
            data = sandbox.read_artifact(self.scratch, f"exit-{job}.json", 1000)
            return int(json.loads(data)["returncode"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return 1

    def release(self) -> None:
        """Empty scratch now that the caller has read what it needs."""
        with self.lock:
            why = self._clean(self.session) if self.session is not None else None
            if why is not None:
                self._stop(why)
            self._empty()

    def close(self) -> None:
        with self.lock:
            self._stop("closed")
        shutil.rmtree(self.work, ignore_errors=True)


def _read_all(fd: int, out: sandbox._Output) -> None:
    """Feed ``out`` what was written to the run's output file since the last read."""
    while data := os.read(fd, 1 << 16):
        out.feed(data)


def _is_dir(top: int, name: str, among) -> bool:
    if name not in among:
        return False
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=top, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _is_zygote(process: psutil.Process) -> bool:
    try:
        return any(part.endswith("zygote.py") for part in process.cmdline())
    except psutil.Error:
        return False


def _attributes(process: psutil.Process) -> dict:
    """What a process of the same user could change in the zygote, read from outside."""
    limits = {}
    for name in dir(psutil):
        if name.startswith("RLIMIT_"):
            limits[name] = process.rlimit(getattr(psutil, name))
    return {
        "limits": limits,
        "nice": process.nice(),
        "affinity": sorted(process.cpu_affinity()),
        "ionice": tuple(process.ionice()),
        "policy": os.sched_getscheduler(process.pid),
    }


def _stopped(process: psutil.Process | None) -> bool:
    try:
        return process is not None and process.status() == psutil.STATUS_STOPPED
    except psutil.Error:
        return False


def _resident(session: _Session) -> int:
    total = 0
    try:
        family = [session.zygote, *session.zygote.children(recursive=True)]
    except psutil.Error:
        return 0
    for process in family:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total
