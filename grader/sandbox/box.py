"""One run of a command in a new bubblewrap sandbox, watched until it ends or must die."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from . import seccomp, walls
from .cgroups import Cgroups, enforced_by, write
from .limits import Limits, Result
from .output import Output
from .scratch import HOME, QUICK_PERIOD, SCRATCH, TMP, ScratchWatch, prepare
from .watch import Clock

# The command runs behind this gate, a shell that waits for the line "go" on its stdin, which
# the grader writes once the sandbox is in its cgroups and under its rlimits. bwrap's
# --block-fd (which holds the sandbox's init until then) lets it go on EOF too, when the grader
# dies at that moment: the gate then refuses to run the code (fail closed).
_GATE = (
    'read -r go && [ "$go" = go ] || '
    '{ echo "sandbox: its limits were not applied; refusing to run" >&2; exit 125; }; '
    'exec "$@"'
)
_GO = b"go\n"
# Watchdog period (seconds) of the limits checks.
_WATCH_PERIOD = 0.1
# Without a memory cgroup, the sandbox is stopped when the machine has less than this left.
_MACHINE_RESERVE = 2**30
# Most processes the watchdog looks at one by one in one check.
_MAX_WATCHED = 2000


def _user_tasks() -> int:
    """Threads of every process of our real uid (what RLIMIT_NPROC counts)."""
    uid = os.getuid()
    total = 0
    for proc in psutil.process_iter(["uids", "num_threads"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if proc.info["uids"].real == uid:
                total += proc.info["num_threads"] or 1
    return total


class Sandbox:
    def __init__(
        self,
        *,
        readonly: dict[str | Path, str],
        scratch: Path,
        limits: Limits | None = None,
        env: dict[str, str] | None = None,
        cwd: str = SCRATCH,
        runtime: bool = True,
        cgroups: bool = True,
        slack: float = 1.0,
        writable: dict[str | Path, str] | None = None,
        nested: bool = False,
    ):
        """readonly maps host paths to paths inside (bound read-only); the Python runtime
        (python_runtime_binds) is added unless runtime=False. scratch, a host folder the
        caller created and emptied, is bound read-write at /scratch; /tmp, /dev/shm and $HOME
        are folders inside it (``$TMPDIR`` is always scratch's; /tmp is bound to it unless
        something is bound below /tmp, as a course checked out there). env is the whole
        environment inside, with PATH, HOME and TMPDIR defaulted. cgroups=False forces the
        watchdog (as when no cgroup is writable). slack multiplies the watchdog's periods: a
        sandbox that lives long and mostly waits (a warm parent, ``warm.py``) costs less CPU
        with 5. ``writable`` and ``nested`` are for a warm parent only: more read-write binds,
        and what its runs need to make namespaces of their own (``walls.bwrap_args``)."""
        self.readonly = walls.checked_binds(
            {**(walls.python_runtime_binds() if runtime else {}), **readonly}
        )
        self.writable = walls.checked_binds(writable or {})
        self.scratch = Path(scratch).absolute()
        self.limits = limits or Limits()
        self.cwd = cwd
        self.cgroups = cgroups
        self.slack = slack
        self.nested = nested
        self._stop = threading.Event()
        self._stop_reason = ""
        # While run() runs: the host pid of the sandbox's init (the parent of the command).
        self.init_pid: int | None = None
        environment = dict(env or {})
        environment.setdefault("PATH", f"{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin")
        environment.setdefault("HOME", f"{SCRATCH}/{HOME}")
        environment.setdefault("TMPDIR", f"{SCRATCH}/{TMP}")
        self.env = environment

    def _args(self, info_fd: int, block_fd: int, seccomp_fd: int | None) -> list[str]:
        return walls.bwrap_args(
            readonly=self.readonly,
            writable=self.writable,
            scratch=self.scratch,
            cwd=self.cwd,
            env=self.env,
            nested=self.nested,
            fds=(info_fd, block_fd, seccomp_fd),
        )

    def stop(self, reason: str) -> None:
        """Make a run() in progress (in another thread) kill everything, with this reason."""
        self._stop_reason = reason
        self._stop.set()

    def _gate(self) -> list[str]:
        if any(inside in ("/usr", "/bin") for inside in self.readonly.values()):
            return ["/bin/sh", "-c", _GATE, "sandbox-gate"]
        return []  # no shell inside: rely on --block-fd alone

    def _rlimits(self, nproc: int | None) -> list[tuple[int, int]]:
        lim = self.limits
        out = [
            (resource.RLIMIT_AS, lim.address_space()),
            (resource.RLIMIT_CPU, int(lim.cpu_seconds)),
            (resource.RLIMIT_FSIZE, lim.file_mb * 2**20),
            (resource.RLIMIT_CORE, 0),
        ]
        if nproc is not None:
            out.append((resource.RLIMIT_NPROC, nproc))
        return out

    def run(self, argv: list[str], *, input: bytes | None = None) -> Result:
        """Run argv inside the sandbox and enforce every limit; see the module docstring.

        A line starting with STEP_MARKER restarts the step clock; the rest of the line is
        appended to Result.steps. On any limit, everything the sandbox started is killed and
        Result.killed says why.
        """
        if not argv:
            raise ValueError("argv is empty")
        walls.check_available()
        lim = self.limits
        start = time.monotonic()
        prepare(self.scratch)
        cg = Cgroups(lim) if self.cgroups else None
        enforced = enforced_by(cg)
        nproc = None
        if not (cg and cg.pids) and os.geteuid() != 0:
            nproc = _user_tasks() + lim.processes
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        seccomp_r = -1
        if seccomp.FILTER is not None:
            seccomp_r, seccomp_w = os.pipe()  # a few hundred bytes: fits in the pipe
            os.write(seccomp_w, seccomp.program(namespaces=self.nested))
            os.close(seccomp_w)
        out = Output(lim.output_bytes)
        killed: str | None = None
        peak = 0
        proc: subprocess.Popen | None = None
        init_pid: int | None = None
        try:
            proc = subprocess.Popen(
                [
                    *self._args(info_w, block_r, seccomp_r if seccomp_r >= 0 else None),
                    "--",
                    *self._gate(),
                    *argv,
                ],
                stdin=subprocess.PIPE if input is not None or self._gate() else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=tuple(fd for fd in (info_w, block_r, seccomp_r) if fd >= 0),
                env={},
                start_new_session=True,
            )
            for fd in (info_w, block_r, seccomp_r):
                if fd >= 0:
                    os.close(fd)
            info_w = block_r = seccomp_r = -1
            init_pid = _read_child_pid(info_r, proc)
            init_ctime = _create_time(init_pid)
            self.init_pid = init_pid
            if init_pid is None or init_ctime is None:
                # bwrap failed before its sandbox existed (its message is in the output):
                # the gate never gets its "go", so nothing runs.
                go = False
            else:
                # The sandbox's init waits on block_fd: put it in the cgroups and under the
                # rlimits before it starts the command, which inherits both. A failure here
                # raises, and the finally below kills the sandbox.
                try:
                    if cg is not None:
                        cg.add(init_pid)
                    for which, value in self._rlimits(nproc):
                        # CPU: SIGXCPU at the soft limit, SIGKILL 2 s later if it is ignored.
                        hard = value + 2 if which == resource.RLIMIT_CPU else value
                        now_hard = resource.prlimit(init_pid, which)[1]
                        if now_hard != resource.RLIM_INFINITY:  # cannot be raised unprivileged
                            value, hard = min(value, now_hard), min(hard, now_hard)
                        resource.prlimit(init_pid, which, (value, hard))
                    # Under memory pressure of the machine, the kernel kills the sandbox first.
                    with contextlib.suppress(OSError):
                        write(Path(f"/proc/{init_pid}/oom_score_adj"), "1000")
                    go = True
                except ProcessLookupError:
                    go = False  # bwrap's set-up failed and its init is gone
            if go:
                with contextlib.suppress(OSError):
                    os.write(block_w, b"go")
            else:
                # An EOF on block_fd would release the init too: kill bwrap first.
                with contextlib.suppress(OSError):
                    proc.kill()
            os.close(block_w)
            block_w = -1

            killed, peak = self._watch(proc, init_pid, cg, out, input if go else None, start, go)
            if killed:
                self._kill(proc, init_pid, init_ctime, cg)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._kill(proc, init_pid, init_ctime, cg)
                proc.wait(timeout=10)
            _drain(proc, out)
            if killed is None and cg is not None and cg.memory is not None and cg.oom_kills():
                killed = self._oom()
            if killed is None and proc.returncode == 128 + signal.SIGXCPU:
                killed = self._cpu()
        finally:
            for fd in (info_r, info_w, block_r, block_w, seccomp_r):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            if proc is not None and proc.poll() is None:
                self._kill(proc, init_pid, _create_time(init_pid), cg)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
            self.init_pid = None
            if proc is not None:
                for stream in (proc.stdin, proc.stdout):
                    if stream is not None:
                        with contextlib.suppress(OSError):
                            stream.close()
            if cg is not None:
                cg.remove()
            with contextlib.suppress(OSError):
                os.chmod(self.scratch, 0o700)  # the code may have opened it to everyone
        out.finish()
        return Result(
            returncode=None if killed else proc.returncode,
            killed=killed,
            output=out.text(),
            steps=out.steps,
            peak_mb=round(peak / 2**20, 1),
            seconds=round(time.monotonic() - start, 3),
            enforced=enforced,
        )

    def _watch(
        self,
        proc: subprocess.Popen,
        init_pid: int | None,
        cg: Cgroups | None,
        out: Output,
        input: bytes | None,
        start: float,
        go: bool = True,
    ) -> tuple[str | None, int]:
        """Pump output and input, and check the limits, until the sandbox ends or must die."""
        lim = self.limits
        sel = selectors.DefaultSelector()
        assert proc.stdout is not None
        stdout_fd = proc.stdout.fileno()
        os.set_blocking(stdout_fd, False)
        sel.register(stdout_fd, selectors.EVENT_READ)
        pending_input = memoryview((_GO if self._gate() and go else b"") + (input or b""))
        if proc.stdin is not None:
            stdin_fd = proc.stdin.fileno()
            os.set_blocking(stdin_fd, False)
            if pending_input:
                sel.register(stdin_fd, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
        clock = Clock(lim, start)
        next_watch = time.monotonic()
        next_scratch = time.monotonic() + 0.2
        scratch = ScratchWatch(self.scratch, lim, self.slack)
        peak = 0
        eof = False
        exited_at: float | None = None
        try:
            while True:
                now = time.monotonic()
                wake = min(clock.wake(), next_watch)
                quick = QUICK_PERIOD * self.slack
                for key, _ in sel.select(max(0.0, min(wake - now, quick))):
                    if key.fd == stdout_fd:
                        try:
                            data = os.read(stdout_fd, 1 << 16)
                        except BlockingIOError:
                            continue
                        if not data:
                            sel.unregister(stdout_fd)
                            eof = True
                        else:
                            out.feed(data)
                    else:
                        try:
                            n = os.write(key.fd, pending_input[:65536])
                            pending_input = pending_input[n:]
                        except BlockingIOError:
                            n = 0
                        except BrokenPipeError:
                            pending_input = memoryview(b"")
                        if not pending_input:
                            sel.unregister(key.fd)
                            assert proc.stdin is not None
                            with contextlib.suppress(OSError):
                                proc.stdin.close()
                now = time.monotonic()
                clock.saw(out.markers, now)
                if proc.poll() is not None:
                    # Everything in the pid namespace died with its init; drain what is left,
                    # and look at scratch one last time (it may have been filled at the end).
                    exited_at = exited_at or now
                    if eof or now - exited_at > 2:
                        return scratch.scan(now), peak
                    continue
                if clock.wall_over(now):
                    return clock.wall_message(), peak
                if self._stop.is_set():
                    return self._stop_reason, peak
                if clock.step_over(now):
                    return clock.step_message(out.steps), peak
                if now >= next_watch:
                    next_watch = now + _WATCH_PERIOD * self.slack
                    why, used = self._check(proc, cg)
                    peak = max(peak, used)
                    if why:
                        return why, peak
                if now >= next_scratch or scratch.growing(now):
                    why = scratch.scan(now)
                    next_scratch = scratch.next_scan
                    if why:
                        return why, peak
        finally:
            sel.close()

    def _check(self, proc: subprocess.Popen, cg: Cgroups | None) -> tuple[str | None, int]:
        """Memory, process and CPU limits: (why to kill or None, resident bytes now)."""
        lim = self.limits
        cg_memory = cg is not None and cg.memory is not None
        cg_pids = cg is not None and cg.pids is not None
        if cg is not None and cg_memory and cg.oom_kills():
            return self._oom(), cg.resident_bytes() or 0
        if cg is not None and cg_pids and cg.pids_refused():
            return (
                f"too many processes: the sandbox tried to run more than {lim.processes} "
                "processes and threads",
                cg.resident_bytes() or 0,
            )
        if cg is not None and cg_pids:
            procs = []
            for pid in sorted(cg.members())[:_MAX_WATCHED]:
                with contextlib.suppress(psutil.Error):
                    procs.append(psutil.Process(pid))
        else:
            procs = _tree(proc.pid)
            if len(procs) > lim.processes:
                return (
                    f"too many processes: the sandbox ran {len(procs)} processes, "
                    f"more than {lim.processes}",
                    0,
                )
        tasks = used = 0
        cpu = 0.0
        for p in procs[:_MAX_WATCHED]:
            with contextlib.suppress(psutil.Error), p.oneshot():
                times = p.cpu_times()
                cpu = max(cpu, times.user + times.system)
                if not cg_pids:
                    tasks += p.num_threads()
                if not cg_memory:
                    used += p.memory_info().rss
        if tasks > lim.processes:
            return (
                f"too many processes: the sandbox ran {tasks} processes and threads, "
                f"more than {lim.processes}",
                used,
            )
        if cpu > lim.cpu_seconds:
            return self._cpu(), used
        if cg is not None and cg_memory:
            return None, cg.resident_bytes() or 0
        # Without a memory cgroup, memory that no process maps (a memfd, pipes) escapes the
        # sum of RSS: stop the sandbox before the machine itself runs out.
        machine = psutil.virtual_memory()
        if machine.available < min(_MACHINE_RESERVE, machine.total // 20):
            return (
                f"out of memory: the machine has {machine.available / 2**20:.0f} MB left",
                used,
            )
        if used > lim.memory_mb * 2**20:
            return (
                f"out of memory: the sandbox used {used / 2**20:.0f} MB, "
                f"more than its {lim.memory_mb} MB",
                used,
            )
        return None, used

    def _oom(self) -> str:
        return (
            f"out of memory: the sandbox used more than its {self.limits.memory_mb} MB, "
            "and the kernel killed a process"
        )

    def _cpu(self) -> str:
        return f"timeout: a process used more than {self.limits.cpu_seconds} s of CPU time"

    def _kill(
        self,
        proc: subprocess.Popen,
        init_pid: int | None,
        init_ctime: float | None,
        cg: Cgroups | None,
    ) -> None:
        """Kill everything the sandbox started, and return once it is gone.

        SIGKILL to the init of the sandbox's pid namespace makes the kernel kill every process
        in it; that init exits only once they are all dead, and bwrap then exits too. Anything
        left in the cgroup, or in the process tree seen before, is killed as well.
        """
        if init_pid is not None and init_ctime is not None and _create_time(init_pid) == init_ctime:
            with contextlib.suppress(OSError):
                os.kill(init_pid, signal.SIGKILL)
        elif proc.poll() is None:
            # No known init: bwrap's --die-with-parent kills it when bwrap dies.
            with contextlib.suppress(OSError):
                proc.kill()
        # Processes still seen after that (none, normally) are killed one by one below.
        tree = _tree(proc.pid) if proc.poll() is None else []
        if cg is not None:
            cg.kill_all()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                proc.kill()
        # Normally the kernel has killed them all by now; make sure of it.
        left = [p for p in tree if _alive(p)]
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()  # psutil checks that the pid was not reused
        if left:
            psutil.wait_procs(left, timeout=5)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _tree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _create_time(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _read_child_pid(fd: int, proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """The host pid of the sandbox's init, from bwrap's --info-fd (None if bwrap failed)."""
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(0.05):
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
                try:
                    return int(json.loads(data)["child-pid"])
                except (ValueError, KeyError, TypeError):
                    continue
            elif proc.poll() is not None:
                break
    return None


def _drain(proc: subprocess.Popen, out: Output) -> None:
    """Read what is left in the output pipe once the sandbox is gone."""
    if proc.stdout is None or proc.stdout.closed:
        return
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        except OSError:
            return
        if not data:
            return
        out.feed(data)
