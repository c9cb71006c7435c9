"""Runs that start warm, each in namespaces made for it alone: a zygote and its pool.

Importing TensorFlow costs about 3 s of CPU. A warm parent pays it once:

    parent = WarmParent(runner=..., path=[...], entry="driver", readonly=..., env=...)
    with parent.run(request, limits) as run:   # run.result: like Sandbox.run's
        ...read what the run left in run.folder, with read_artifact...
    # leaving the block removes the run's folder

One outer bubblewrap sandbox (every wall of ``walls.py``, its cgroup) runs
``grader/inside/zygote.py``, which imports the entry module and what it needs, and never runs the
code of a run. For each run it forks a child that makes new user, pid, mount, IPC, network
and UTS namespaces, mounts a fresh /proc, binds the run's own folder at /scratch, hides
everything else that is writable or that could name another run, drops every capability and
installs the seccomp filter before the run's code starts (see ``zygote.py``).

What two runs of one parent share, and why student code can reach none of it:

- the zygote, the sandbox's init and each run's monitor: in ancestor pid and user
  namespaces, so a run cannot see, signal, trace or open them through /proc;
- read-only files (the Python runtime, the course's files): read-only for everyone;
- nothing writable: a run's folder is made for it (``runs/<n>``) after the previous run's
  processes are all dead, and removed before the next is made.

The host learns that a run ended from ``exit-<n>.json``, which the zygote writes into its
own folder only once the run's pid 1 is reaped, which the kernel allows only after every
process of its pid namespace is dead. Before each run the host also checks that the zygote
has no child left. A run that hits a limit is killed from the host (SIGKILL to its pid 1);
memory and processes are the outer sandbox's cgroup limits.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import threading
import time

import psutil

from ..config import SETTINGS
from . import seccomp, walls
from .box import Sandbox
from .limits import Limits, Result
from .scratch import SCRATCH, SHM, TMP, copy_in, empty_scratch, prepare, read_artifact
from .watch import Follow

RUNS, INBOX = "/runs", "/inbox"  # where the outer sandbox sees the runs' folders and its inbox
OUTPUT, REQUEST = "output.log", "request.json"  # in each run's folder
_PERIOD = 0.025  # how often a run is looked at (its output, its end, its folder)
SLACK = 5  # the outer sandbox's own watchdog (memory, processes) looks every 0.5 s


@dataclasses.dataclass
class _Session:
    box: Sandbox
    thread: threading.Thread
    result: Result | None = None
    zygote: psutil.Process | None = None


@dataclasses.dataclass
class Run:
    result: Result
    folder: pathlib.Path  # the run's own folder on the host (its /scratch)


class WarmParent:
    def __init__(
        self,
        *,
        runner: pathlib.Path,
        path: list[str],
        entry: str,
        modules: tuple[str, ...] = (),
        readonly: dict[str, str],
        env: dict[str, str],
        memory_mb: int,
    ):
        """``runner`` holds ``zygote.py`` and the entry module (bound at /runner); ``path``
        goes first on the zygote's sys.path; ``entry.run(request)`` is what each run calls;
        ``modules`` are imported too. ``memory_mb`` is the most one run may use."""
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="alpaca-warm-"))
        self.state = self.work / "state"  # the outer sandbox's scratch: the zygote's own
        self.inbox = self.work / "inbox"
        self.runs = self.work / "runs"
        for folder in (self.state, self.inbox, self.runs):
            folder.mkdir(mode=0o700)
        self.readonly = {**readonly, str(runner): "/runner", str(self.inbox): INBOX}
        self.env = env
        self.memory_mb = memory_mb
        inner = {SHM: "/dev/shm"}
        # As the outer sandbox decides: a runtime or course bound below /tmp keeps /tmp.
        if walls.tmp_is_scratch([*walls.python_runtime_binds().values(), *self.readonly.values()]):
            inner[TMP] = "/tmp"
        self.config = {
            "path": ["/runner", *path],
            "modules": list(modules),
            "entry": entry,
            "state": SCRATCH,
            "runs": RUNS,
            "inbox": INBOX,
            "scratch": SCRATCH,
            "inner_binds": inner,
            "hide": [RUNS, INBOX, walls.HOST_PROC],
            "seccomp": (seccomp.FILTER or b"").hex(),
            "output": OUTPUT,
            "request": REQUEST,
        }
        self.session: _Session | None = None
        self.count = 0
        self.lock = threading.Lock()
        atexit.register(self.close)

    # ----------------------------------------------------------------------------------
    # The outer sandbox and its zygote

    def _start(self) -> _Session:
        empty_scratch(self.state)
        for stale in self.inbox.iterdir():
            stale.unlink()
        box = Sandbox(
            readonly=self.readonly,
            writable={str(self.runs): RUNS},
            scratch=self.state,
            limits=Limits(
                wall_seconds=7 * 86400,
                step_seconds=None,
                memory_mb=self.memory_mb + SETTINGS.parent_memory_mb,
            ),
            env=self.env,
            slack=SLACK,  # each run has its own watch (below): time, folder, output
            nested=True,
        )
        session = _Session(box=box, thread=threading.Thread(daemon=True))

        def serve():
            session.result = box.run(
                [sys.executable, "-I", "/runner/zygote.py"], input=json.dumps(self.config).encode()
            )

        session.thread = threading.Thread(target=serve, daemon=True)
        session.thread.start()
        deadline = time.monotonic() + SETTINGS.parent_start_timeout
        while time.monotonic() < deadline and session.thread.is_alive():
            if (self.state / "ready").exists() and box.init_pid is not None:
                with contextlib.suppress(psutil.Error):
                    children = psutil.Process(box.init_pid).children()
                    if len(children) == 1:
                        session.zygote = children[0]
                        return session
            time.sleep(0.02)
        box.stop("the warm parent did not start")
        session.thread.join(30)
        raise RuntimeError(
            "the warm parent did not start: "
            + (session.result.output[-2000:] if session.result else "no output")
        )

    def start_soon(self) -> None:
        """Start the zygote in the background, so that the first run finds it ready.

        A start that fails leaves nothing behind: the first run then starts the zygote
        again, and says why it cannot.
        """

        def start():
            with self.lock:
                if self.session is None:
                    with contextlib.suppress(Exception):
                        self.session = self._start()

        threading.Thread(target=start, daemon=True).start()

    def _stop(self, why: str) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.box.stop(why)
            session.thread.join(30)

    def _usable(self, session: _Session) -> str | None:
        """Why this zygote may not start another run, or None."""
        if not session.thread.is_alive():
            return "the sandbox ended"
        try:
            if session.zygote.status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE):
                return "the zygote is stopped"
            if session.zygote.children():
                return "a run of the zygote is still there"
        except psutil.Error:
            return "the zygote is gone"
        return None

    # ----------------------------------------------------------------------------------
    # One run

    @contextlib.contextmanager
    def run(self, request: dict, limits: Limits, files: dict[str, pathlib.Path] | None = None):
        """Run ``entry.run(request)`` in a new child of the zygote, in namespaces of its own;
        watch it like Sandbox.run. ``files`` ({path in the run's folder: host file}) are
        copied in first. The run's folder exists only inside the ``with`` block."""
        with self.lock:
            session = self.session
            why = self._usable(session) if session is not None else "first run"
            if why is not None:
                self._stop(why)
                session = self.session = self._start()
            self.count += 1
            job = str(self.count)
            folder = self.runs / job
            folder.mkdir(mode=0o700)
            try:
                prepare(folder)
                copy_in(folder, files or {})
                (folder / REQUEST).write_text(json.dumps(request), encoding="utf-8")
                output = os.open(
                    folder / OUTPUT, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
                )
                try:
                    partial = self.inbox / f"{job}.part"
                    partial.write_text("", encoding="utf-8")
                    os.replace(partial, self.inbox / f"{job}.job")
                    result = self._watch(session, job, folder, output, limits)
                finally:
                    os.close(output)
                    (self.inbox / f"{job}.job").unlink(missing_ok=True)
                yield Run(result=result, folder=folder)
            finally:
                empty_scratch(folder)
                folder.rmdir()
                (self.state / f"exit-{job}.json").unlink(missing_ok=True)

    def _watch(self, session, job, folder, output, limits: Limits) -> Result:
        follow = Follow(output, limits, folder)
        peak, killed, returncode = 0, None, None
        next_memory = follow.start
        while True:
            status = self._exit_status(job)
            if status == -signal.SIGXCPU:
                killed = f"timeout: a process used more than {limits.cpu_seconds} s of CPU time"
                break
            if status == -signal.SIGKILL:
                # Killed by the kernel: when the outer sandbox's watchdog saw why (out of
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
                killed = (result.killed if result else None) or "the run's sandbox ended"
                break
            killed = follow.tick()
            if killed:
                self._kill(session, job)
                break
            if time.monotonic() >= next_memory:
                next_memory = time.monotonic() + 0.25
                peak = max(peak, _resident(session.zygote))
            time.sleep(_PERIOD)
        return follow.result(
            returncode=returncode,
            killed=killed,
            peak_bytes=peak,
            enforced=session.result.enforced if session.result else {},
        )

    def _kill(self, session: _Session, job: str) -> None:
        """Kill the run (its pid 1 first: the kernel then kills its whole pid namespace) and
        wait until the zygote says it is gone; a zygote that does not ends the sandbox."""
        with contextlib.suppress(psutil.Error):
            for process in reversed(session.zygote.children(recursive=True)):
                with contextlib.suppress(psutil.Error):
                    process.kill()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._exit_status(job) is not None:
                return
            time.sleep(_PERIOD)
        self._stop("a run could not be ended")

    def _exit_status(self, job: str) -> int | None:
        if not os.path.lexists(self.state / f"exit-{job}.json"):
            return None  # (one system call: this is asked 40 times a second)
        try:
            data = read_artifact(self.state, f"exit-{job}.json", 1000)
            return int(json.loads(data)["returncode"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return 1

    def close(self) -> None:
        with self.lock:
            self._stop("closed")
        shutil.rmtree(self.work, ignore_errors=True)


def _resident(zygote: psutil.Process | None) -> int:
    """Resident memory of the zygote's runs (the zygote's own pages are shared, not counted)."""
    total = 0
    try:
        family = zygote.children(recursive=True) if zygote else []
    except psutil.Error:
        return 0
    for process in family:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total
