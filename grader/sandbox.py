"""Run untrusted code under bubblewrap, with limits, and read what it left behind safely.

The sandbox (one ``bwrap`` per run):

- new user, pid, network, ipc, uts and cgroup namespaces (``--unshare-all``): no network at
  all, not even loopback to the host (the sandbox has its own ``lo``); host processes are
  invisible and cannot be signalled; the host's keyrings are out of reach;
- all capabilities dropped, no new privileges, no nested user namespaces, a new session, and a
  seccomp filter (x86_64) that refuses io_uring, bpf, perf, userfaultfd, keyrings, ptrace, the
  kernel log, modules, mounts, System V IPC and message queues;
- a root filesystem that holds only the read-only binds it is given plus the Python runtime
  (:func:`python_runtime_binds`), a fresh ``/proc`` and a minimal ``/dev``; the root itself,
  ``/dev`` and every bind but the scratch folder are read-only;
- one writable folder, the host's ``scratch`` at ``/scratch``; ``/tmp``, ``/dev/shm`` and
  ``$HOME`` are folders inside it, so that nothing the code writes lands in machine RAM;
- a whole environment of the caller's choosing (``--clearenv``).

The grader talks to the code only through stdin, stdout/stderr (merged) and scratch.

Limits (:class:`Limits`; ``Result.enforced`` and :func:`enforcement` say which are in force):

- memory of the whole sandbox: a memory cgroup when one is writable (cgroup v1 or v2; it
  counts memory no process maps, like a memfd), else a watchdog that sums the resident memory
  of every process of the sandbox; plus ``RLIMIT_AS`` on every process;
- processes and threads: a pids cgroup when one is writable, else a watchdog that counts the
  sandbox's processes and threads, plus ``RLIMIT_NPROC`` when not root (root ignores it);
- CPU time per process: ``RLIMIT_CPU``, and the watchdog; file size: ``RLIMIT_FSIZE``;
  no core dumps;
- wall time, time between two step markers, scratch size, number of files and depth of
  folders: the watchdog of :meth:`Sandbox.run` (scratch is walked through folder descriptors,
  sooner when its file system fills fast);
- output: read incrementally; the first and the last part are kept, the middle is dropped.

The sandbox's init is held (``--block-fd``) until it is in its cgroups and under its rlimits;
the command itself runs behind a gate that waits for a "go" on stdin, so that if the grader
dies in between, the code does not run at all. Killing the sandbox kills the init of its pid
namespace, so the kernel kills every process it started, daemons and ``setsid`` children
included; bwrap's ``--die-with-parent`` does the same when the grader dies. With a cgroup, the
cgroup is then checked empty and removed.

:func:`read_artifact` reads a file the code left in scratch without following symlinks and
refuses anything that is not a small regular file; :func:`empty_scratch` empties scratch
however deep or strange its tree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path, PurePosixPath

import psutil

__all__ = [
    "STEP_MARKER",
    "Limits",
    "Result",
    "Sandbox",
    "SandboxUnavailable",
    "check_available",
    "empty_scratch",
    "enforcement",
    "python_runtime_binds",
    "read_artifact",
]

STEP_MARKER = "\x1e@step "
_MARK = STEP_MARKER.encode()

SCRATCH = "/scratch"
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
# Folders inside scratch that stand for /tmp, /dev/shm and $HOME.
_TMP, _SHM, _HOME = ".tmp", ".shm", ".home"

# Watchdog periods (seconds): limits checks, and the slowest scratch walk allowed.
_WATCH_PERIOD = 0.1
_SCRATCH_PERIOD = 0.5
# How often the file system's usage is looked at between two walks of scratch.
_QUICK_PERIOD = 0.02
# Without a memory cgroup, the sandbox is stopped when the machine has less than this left.
_MACHINE_RESERVE = 2**30
# Most processes the watchdog looks at one by one in one check.
_MAX_WATCHED = 2000
# Steps kept, and the length of one step's payload.
_MAX_STEPS = 10_000
_MAX_STEP_BYTES = 4096
# Room kept in Result.output for the note that says output was dropped.
_NOTE_ROOM = 200

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
# The part of /etc a Python program may read: the dynamic loader's cache, names, time zone.
# Not shadow, not ssh, not sudoers, not the machine's configuration.
_ETC_ENTRIES = (
    "alternatives",
    "fonts",
    "group",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "protocols",
    "services",
    "timezone",
)

_INSTALL_HINT = (
    "Student code runs under bubblewrap. Install it with `apt-get install bubblewrap` "
    "(Debian/Ubuntu; the Makefile's set-up does this), on a kernel that allows user "
    "namespaces. --no-sandbox exists for trusted notebooks only (your own solutions), "
    "never for submissions."
)


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create its namespaces here."""


@dataclasses.dataclass(frozen=True)
class Limits:
    wall_seconds: float = 900  # whole run
    step_seconds: float | None = 300  # most time between two step markers
    memory_mb: int = 6144  # resident memory of the whole sandbox (all its processes)
    cpu_seconds: int = 1800  # CPU time per process (RLIMIT_CPU)
    processes: int = 512  # processes + threads inside the sandbox
    output_bytes: int = 1_000_000  # stdout+stderr kept
    scratch_mb: int = 512  # total size of the writable scratch folder
    file_mb: int = 256  # one file (RLIMIT_FSIZE)
    scratch_files: int = 50_000  # files and folders in scratch (an inode flood fills a disk too)
    # Address space of one process (RLIMIT_AS); None: memory_mb + 4 GiB, at least 8 GiB
    # (TensorFlow maps far more than it touches).
    address_space_mb: int | None = None

    def address_space(self) -> int:
        mb = self.address_space_mb
        if mb is None:
            mb = max(8192, self.memory_mb + 4096)
        return mb * 2**20


@dataclasses.dataclass
class Result:
    returncode: int | None  # None when the sandbox was killed
    killed: str | None  # why the sandbox was killed, or None
    output: str  # stdout+stderr, merged, truncated, without step-marker lines
    steps: list[str]  # payloads of the step markers, in order
    peak_mb: float  # highest resident memory of the sandbox seen
    seconds: float  # wall time of the run
    # How each limit was enforced in this run: {"memory": "cgroup v1", ...}.
    enforced: dict[str, str] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Availability


_available_lock = threading.Lock()
_available: tuple[bool, str, tuple[str, ...]] | None = None


def _bwrap() -> str | None:
    return shutil.which("bwrap") or ("/usr/bin/bwrap" if os.path.exists("/usr/bin/bwrap") else None)


def _probe() -> tuple[bool, str, tuple[str, ...]]:
    """Try a trivial sandbox; return (ok, why not, the user-namespace flags that work)."""
    bwrap = _bwrap()
    if bwrap is None:
        return False, "bubblewrap (bwrap) is not installed.", ()
    base = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    fs = _mount_args({d: d for d in _SYSTEM_DIRS if os.path.lexists(d)})
    fs += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/"]
    true = shutil.which("true", path="/usr/bin:/bin") or "/bin/true"
    last = ""
    # Prefer an explicit user namespace with nested ones disabled; older kernels or set-ups
    # may only allow the plain --unshare-all.
    for userns in (("--unshare-user", "--disable-userns"), ("--unshare-user",), ()):
        try:
            done = subprocess.run(
                [*base, *userns, *fs, "--", true],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=20,
                env={},
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            last = str(error)
            continue
        if done.returncode == 0:
            return True, "", userns
        last = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
    return False, f"bubblewrap cannot create its namespaces here: {last}", ()


def check_available() -> None:
    """Raise SandboxUnavailable unless bwrap runs here (tried once, then cached)."""
    global _available
    with _available_lock:
        if _available is None:
            _available = _probe()
        ok, why, _ = _available
    if not ok:
        raise SandboxUnavailable(f"{why} {_INSTALL_HINT}")


def _userns_flags() -> tuple[str, ...]:
    check_available()
    assert _available is not None
    return _available[2]


# --------------------------------------------------------------------------------------
# Binds


def python_runtime_binds() -> dict[str, str]:
    """Read-only binds that let this interpreter (sys.executable) run inside the sandbox.

    The system folders, a small part of /etc, the base Python prefix (resolved from
    sys.base_prefix and from the real path of sys.executable) and the virtual environment,
    each at its own path. Nothing else: not the repository, not $HOME, not /work.
    """
    binds: dict[str, str] = {}
    for d in _SYSTEM_DIRS:
        if os.path.lexists(d):
            binds[d] = d
    for entry in _ETC_ENTRIES:
        path = f"/etc/{entry}"
        if os.path.lexists(path):
            binds[path] = path
    exe = os.path.realpath(sys.executable)
    prefixes = {
        os.path.realpath(sys.base_prefix),
        os.path.realpath(sys.base_exec_prefix),
        os.path.dirname(os.path.dirname(exe)),
        os.path.abspath(sys.prefix),
        os.path.abspath(sys.exec_prefix),
    }
    if os.path.realpath(sys.prefix) != os.path.abspath(sys.prefix):
        prefixes.add(os.path.realpath(sys.prefix))
    for prefix in sorted(prefixes):
        if prefix in ("/", "") or not os.path.isdir(prefix):
            continue
        if any(_is_under(prefix, other) for other in binds if os.path.isdir(other)):
            continue  # already inside a bound folder (a system Python under /usr)
        binds[prefix] = prefix
    return binds


def _is_under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _mount_args(readonly: dict[str, str]) -> list[str]:
    """bwrap arguments for read-only binds, parents first; same-path symlinks stay symlinks."""
    same = {host for host, inside in readonly.items() if host == inside}
    args: list[str] = []
    for host, inside in sorted(readonly.items(), key=lambda item: (item[1].count("/"), item[1])):
        if host == inside and os.path.islink(host):
            target = os.path.realpath(host)
            if any(_is_under(target, other) for other in same if other != host):
                args += ["--symlink", os.readlink(host), inside]
                continue
        args += ["--ro-bind", host, inside]
    return args


# --------------------------------------------------------------------------------------
# /proc

# When the grader is root, the sandbox is uid 0 of the host, without capabilities; but the
# kernel lets uid 0 write sysctls (core_pattern, modprobe: ways out) and a few other /proc
# files by their mode alone, and bwrap leaves /proc/sys writable when its folder looks
# read-only. As container engines do, these are made read-only, and the rest is masked.
_PROC_READONLY = ("bus", "fs", "irq", "sys", "sysrq-trigger")
_PROC_MASKED_FILES = ("kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug")
_PROC_MASKED_DIRS = ("acpi", "asound", "scsi")


def _proc_cover_args() -> list[str]:
    args: list[str] = []
    for name in _PROC_READONLY:
        if os.path.exists(f"/proc/{name}"):
            args += ["--ro-bind", f"/proc/{name}", f"/proc/{name}"]
    for name in _PROC_MASKED_FILES:
        if os.path.exists(f"/proc/{name}"):
            args += ["--ro-bind", "/dev/null", f"/proc/{name}"]
    for name in _PROC_MASKED_DIRS:
        if os.path.isdir(f"/proc/{name}"):
            args += ["--tmpfs", f"/proc/{name}", "--remount-ro", f"/proc/{name}"]
    return args


# --------------------------------------------------------------------------------------
# Seccomp

# Syscalls the sandbox refuses (EPERM): kernel interfaces that grading never needs and that
# are where kernel exploits live (io_uring, bpf, perf, userfaultfd), the kernel keyrings, the
# kernel log, tracing, modules, mounts and namespaces. x86_64 numbers.
_BLOCKED_X86_64 = {
    # System V IPC and POSIX message queues: objects that outlive their process, so that one
    # student's could wait in the sandbox for the next (a warm kernel serves many, see
    # warm_kernel.py). Python's multiprocessing needs none of them (its semaphores are files
    # in /dev/shm, which is in scratch).
    "shmget": 29,
    "shmat": 30,
    "shmctl": 31,
    "semget": 64,
    "semop": 65,
    "semctl": 66,
    "shmdt": 67,
    "msgget": 68,
    "msgsnd": 69,
    "msgrcv": 70,
    "msgctl": 71,
    "semtimedop": 220,
    "mq_open": 240,
    "mq_unlink": 241,
    "mq_timedsend": 242,
    "mq_timedreceive": 243,
    "mq_notify": 244,
    "mq_getsetattr": 245,
    "ptrace": 101,
    "syslog": 103,
    "personality": 135,
    "pivot_root": 155,
    "acct": 163,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
}


def _seccomp_program() -> bytes | None:
    """A classic BPF seccomp filter: other ABIs get ENOSYS, the blocked syscalls EPERM.
    None on machines other than x86_64 (the other barriers still hold there)."""
    if os.uname().machine != "x86_64":
        return None
    import struct

    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, errno_ = 0x7FFF0000, 0x00050000
    arch_x86_64 = 0xC000003E

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k)

    blocked = sorted(_BLOCKED_X86_64.values())
    prog = [
        op(ld_abs, 4),  # seccomp_data.arch
        op(jeq, arch_x86_64, 1, 0),
        op(ret, errno_ | errno.ENOSYS),  # i386 via int 0x80
        op(ld_abs, 0),  # seccomp_data.nr
        op(jge, 0x40000000, 0, 1),
        op(ret, errno_ | errno.ENOSYS),  # the x32 ABI
    ]
    for i, nr in enumerate(blocked):
        prog.append(op(jeq, nr, len(blocked) - i, 0))
    prog.append(op(ret, allow))
    prog.append(op(ret, errno_ | errno.EPERM))
    return b"".join(prog)


_SECCOMP = _seccomp_program()


# --------------------------------------------------------------------------------------
# Cgroups


def _cgroup_place(in_hierarchy, is_mount) -> tuple[Path, Path] | None:
    """``(mount point, our own folder)`` in the cgroup hierarchy that the predicates pick.

    ``in_hierarchy(hierarchy id, controllers)`` picks our line of /proc/self/cgroup,
    ``is_mount(fstype, mount options)`` the mount of that hierarchy in mountinfo.
    """
    own = None
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            if in_hierarchy(hierarchy, controllers.split(",")):
                own = path
    if own is None:
        return None
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if not is_mount(fields[sep + 1], fields[sep + 3].split(",")):
                continue
            root, mountpoint = fields[3], fields[4]
            rel = own[len(root) :] if root != "/" and _is_under(own, root) else own
            return Path(mountpoint), Path(mountpoint + rel)
    return None


def _cgroup_v1_dir(controller: str) -> Path | None:
    """Our own folder in the v1 hierarchy of a controller, when mounted."""
    place = _cgroup_place(
        lambda _, controllers: controller in controllers,
        lambda fstype, options: fstype == "cgroup" and controller in options,
    )
    if place is None:
        return None
    mountpoint, own = place
    return own if own.is_dir() else mountpoint


def _cgroup_v2_dir() -> Path | None:
    place = _cgroup_place(
        lambda hierarchy, controllers: hierarchy == "0" and controllers == [""],
        lambda fstype, _: fstype == "cgroup2",
    )
    if place is None:
        return None
    return place[1] if place[1].is_dir() else None


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _remove_stale(parent: Path) -> None:
    """Remove empty sandbox cgroups left by a grader that died (their pid is gone)."""
    with contextlib.suppress(OSError):
        for child in parent.iterdir():
            m = re.fullmatch(r"grader-sandbox-(\d+)-[0-9a-f]+", child.name)
            if m and not psutil.pid_exists(int(m.group(1))):
                with contextlib.suppress(OSError):
                    child.rmdir()


class _Cgroups:
    """The cgroups of one run: memory and pids, v1 or v2, whichever could be made."""

    def __init__(self, limits: Limits):
        self.name = f"grader-sandbox-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.memory: Path | None = None
        self.pids: Path | None = None
        self.version = ""
        self.dirs: list[Path] = []
        self._make(limits)

    def _mkdir(self, parent: Path | None) -> Path | None:
        if parent is None or not os.access(parent, os.W_OK):
            return None
        _remove_stale(parent)
        path = parent / self.name
        try:
            path.mkdir()
        except OSError:
            return None
        self.dirs.append(path)
        return path

    def _make(self, limits: Limits) -> None:
        memory_bytes = limits.memory_mb * 2**20
        mem = self._mkdir(_cgroup_v1_dir("memory"))
        if mem is not None:
            try:
                _write(mem / "memory.limit_in_bytes", str(memory_bytes))
                if (mem / "memory.memsw.limit_in_bytes").exists():
                    _write(mem / "memory.memsw.limit_in_bytes", str(memory_bytes))
                self.memory = mem
            except OSError:
                self._drop(mem)
        pids = self._mkdir(_cgroup_v1_dir("pids"))
        if pids is not None:
            try:
                _write(pids / "pids.max", str(limits.processes))
                self.pids = pids
            except OSError:
                self._drop(pids)
        if self.memory or self.pids:
            self.version = "cgroup v1"
            return
        # cgroup v2: one folder holds both, when our cgroup delegates the controllers.
        parent = _cgroup_v2_dir()
        if parent is None:
            return
        try:
            enabled = _read(parent / "cgroup.subtree_control").split()
        except OSError:
            return
        if "memory" not in enabled and "pids" not in enabled:
            return
        both = self._mkdir(parent)
        if both is None:
            return
        with contextlib.suppress(OSError):
            _write(both / "memory.max", str(memory_bytes))
            with contextlib.suppress(OSError):
                _write(both / "memory.swap.max", "0")
            self.memory = both
        with contextlib.suppress(OSError):
            _write(both / "pids.max", str(limits.processes))
            self.pids = both
        if self.memory or self.pids:
            self.version = "cgroup v2"
        else:
            self._drop(both)

    def _drop(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            path.rmdir()
        if path in self.dirs:
            self.dirs.remove(path)

    def add(self, pid: int) -> None:
        for d in self.dirs:
            _write(d / "cgroup.procs", str(pid))

    def members(self) -> set[int]:
        pids: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                pids.update(int(x) for x in _read(d / "cgroup.procs").split())
        return pids

    def _events(self, path: Path | None, name: str) -> dict[str, int]:
        if path is None:
            return {}
        out = {}
        with contextlib.suppress(OSError):
            for line in _read(path / name).splitlines():
                key, _, value = line.partition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = int(value)
        return out

    def oom_kills(self) -> int:
        if self.version == "cgroup v1":
            return self._events(self.memory, "memory.oom_control").get("oom_kill", 0)
        return self._events(self.memory, "memory.events").get("oom_kill", 0)

    def pids_refused(self) -> int:
        return self._events(self.pids, "pids.events").get("max", 0)

    def tasks(self) -> int | None:
        if self.pids is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            return int(_read(self.pids / "pids.current"))
        return None

    def resident_bytes(self) -> int | None:
        """Anonymous and mapped memory of the cgroup (not its reclaimable page cache)."""
        if self.memory is None:
            return None
        st = self._events(self.memory, "memory.stat")
        if self.version == "cgroup v1":
            return (
                st.get("total_rss", 0) + st.get("total_mapped_file", 0) + st.get("total_shmem", 0)
            )
        return st.get("anon", 0) + st.get("file_mapped", 0) + st.get("shmem", 0)

    def kill_all(self) -> None:
        if self.version == "cgroup v2" and self.dirs:
            with contextlib.suppress(OSError):
                _write(self.dirs[0] / "cgroup.kill", "1")
        for pid in self.members():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, timeout: float = 10.0) -> bool:
        """Kill what is left and remove the cgroups; False if something would not die."""
        deadline = time.monotonic() + timeout
        while self.members():
            if time.monotonic() > deadline:
                return False
            self.kill_all()
            time.sleep(0.01)
        for d in list(self.dirs):
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
        return True


def enforcement(*, cgroups: bool = True, limits: Limits = Limits()) -> dict[str, str]:
    """How each limit would be enforced by a run here (creates and removes a test cgroup)."""
    cg = _Cgroups(limits) if cgroups else None
    try:
        return _enforcement(cg)
    finally:
        if cg is not None:
            cg.remove()


def _enforcement(cg: _Cgroups | None) -> dict[str, str]:
    memory = f"{cg.version} memory" if cg and cg.memory else "watchdog of the resident memory"
    if cg and cg.pids:
        processes = f"{cg.version} pids"
    elif os.geteuid() != 0:
        processes = "watchdog of the thread count + RLIMIT_NPROC"
    else:
        processes = "watchdog of the thread count (root ignores RLIMIT_NPROC)"
    return {
        "memory": memory + " + RLIMIT_AS per process",
        "processes": processes,
        "cpu": "RLIMIT_CPU per process + watchdog",
        "file": "RLIMIT_FSIZE per file",
        "wall": "watchdog",
        "step": "watchdog",
        "scratch": "watchdog of the size and number of files",
        "output": "kept head and tail, the middle dropped",
    }


# --------------------------------------------------------------------------------------
# Output


class _Output:
    """Collect merged output incrementally: steps out, head and tail kept, middle dropped."""

    def __init__(self, limit: int):
        room = max(0, limit - _NOTE_ROOM) if limit > 4 * _NOTE_ROOM else limit
        self.head_cap = room * 3 // 4
        self.tail_cap = room - self.head_cap
        self.limit = limit
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_len = 0
        self.dropped = 0
        self.pending = bytearray()  # bytes that may be the start of a marker line
        self.skipping = False  # inside a too-long marker line: discard to its newline
        self.steps: list[str] = []
        self.markers = 0  # markers seen (also those past _MAX_STEPS)

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        take = min(len(data), self.head_cap - len(self.head))
        if take > 0:
            self.head += data[:take]
            data = data[take:]
        if not data:
            return
        self.tail.append(bytes(data))
        self.tail_len += len(data)
        while self.tail and self.tail_len - len(self.tail[0]) >= self.tail_cap:
            self.dropped += len(self.tail[0])
            self.tail_len -= len(self.tail[0])
            self.tail.popleft()

    def _step(self, payload: bytes) -> None:
        self.markers += 1
        if len(self.steps) < _MAX_STEPS:
            text = payload[:_MAX_STEP_BYTES].decode(errors="replace").rstrip("\r")
            self.steps.append(text)

    def feed(self, data: bytes) -> None:
        buf = self.pending + data
        self.pending = bytearray()
        pos = 0
        while pos < len(buf):
            if self.skipping:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    return
                self.skipping = False
                pos = nl + 1
                continue
            m = buf.find(_MARK, pos)
            if m < 0:
                # Keep a tail that could be the start of a marker split across reads.
                cut = len(buf)
                r = buf.rfind(_MARK[:1], max(pos, len(buf) - len(_MARK) + 1))
                if r >= 0 and _MARK.startswith(bytes(buf[r:])):
                    cut = r
                self._emit(bytes(buf[pos:cut]))
                self.pending = bytearray(buf[cut:])
                return
            self._emit(bytes(buf[pos:m]))
            nl = buf.find(b"\n", m)
            if nl < 0:
                if len(buf) - m > len(_MARK) + _MAX_STEP_BYTES:
                    self._step(bytes(buf[m + len(_MARK) :]))
                    self.skipping = True
                else:
                    self.pending = bytearray(buf[m:])
                return
            self._step(bytes(buf[m + len(_MARK) : nl]))
            pos = nl + 1

    def finish(self) -> None:
        if self.pending:
            if self.pending.startswith(_MARK):
                self._step(bytes(self.pending[len(_MARK) :]))
            else:
                self._emit(bytes(self.pending))
            self.pending = bytearray()

    def text(self) -> str:
        tail = b"".join(self.tail)
        if len(tail) > self.tail_cap:
            self.dropped += len(tail) - self.tail_cap
            tail = tail[len(tail) - self.tail_cap :]
            self.tail = deque([tail])
            self.tail_len = len(tail)
        out = bytes(self.head)
        if self.dropped:
            note = (
                f"\n[... {self.dropped} bytes of output dropped here: the sandbox keeps "
                f"{self.limit} bytes ...]\n"
            )
            out += note.encode()
        out += tail
        return out.decode(errors="replace")


# --------------------------------------------------------------------------------------
# Scratch


def _prepare_scratch(scratch: Path) -> None:
    """Make scratch private and give it real folders for /tmp, /dev/shm and $HOME.

    A folder left by an earlier run may be a symlink planted by its code: bwrap resolves bind
    sources on the host, so each is checked without following links and replaced if needed.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    os.chmod(scratch, 0o700)
    fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in (_TMP, _SHM, _HOME):
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None and not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=fd)
                st = None
            if st is None:
                os.mkdir(name, 0o700, dir_fd=fd)
    finally:
        os.close(fd)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _walk(root: Path, max_depth: int):
    """Yield (parent fd, entry name, lstat, depth) for everything under root, children before
    their folder, through folder descriptors: any path length, never following a link.
    Raises RecursionError when folders nest deeper than max_depth."""
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    # Each frame: (fd of a folder, its entries not yet visited, name in parent, parent lstat).
    stack = [(top, None, None, None)]
    try:
        while stack:
            fd, pending, name, st = stack[-1]
            if pending is None:
                try:
                    with os.scandir(fd) as it:
                        pending = [e.name for e in it]
                except OSError:
                    pending = []
                stack[-1] = (fd, pending, name, st)
            if not pending:
                stack.pop()
                os.close(fd)
                if stack:
                    yield stack[-1][0], name, st, len(stack)
                continue
            child = pending.pop()
            try:
                cst = os.stat(child, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(cst.st_mode):
                yield fd, child, cst, len(stack)
                continue
            if len(stack) > max_depth:
                raise RecursionError(f"folders nested deeper than {max_depth} levels")
            try:
                cfd = os.open(child, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                yield fd, child, cst, len(stack)
                continue
            stack.append((cfd, None, child, cst))
    finally:
        for fd, *_ in stack:
            with contextlib.suppress(OSError):
                os.close(fd)


_MAX_DEPTH = 100


def _scratch_usage(root: Path, max_entries: int) -> tuple[int, int]:
    """(bytes allocated, entries) under root, stopping once entries pass max_entries.
    Raises RecursionError for folders nested too deep to be walked safely."""
    total = entries = 0
    for _, _, st, _ in _walk(root, _MAX_DEPTH):
        entries += 1
        total += st.st_blocks * 512
        if entries > max_entries:
            break
    return total, entries


def empty_scratch(scratch: Path) -> None:
    """Remove everything in scratch, however deep or strange (links are removed, never
    followed), and leave it an empty private folder."""
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    os.chmod(scratch, 0o700)
    top = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        while True:
            names = os.listdir(top)
            if not names:
                return
            for name in names:
                _remove(top, name)
    finally:
        os.close(top)


def _openable(parent: int, name: str) -> None:
    """Give back a folder its owner's rights (the code may have chmod'ed it to 000), so that
    a grader that is not root can empty it. Only ever called on a folder just checked with
    lstat, once nothing of the sandbox runs."""
    with contextlib.suppress(OSError):
        os.chmod(name, 0o700, dir_fd=parent)


def _remove(top: int, name: str) -> None:
    """Remove top/name; folders deeper than _MAX_DEPTH are moved up to top for a later pass,
    so that few descriptors are open at once."""
    try:
        st = os.stat(name, dir_fd=top, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=top)
        return
    _openable(top, name)
    stack = [(os.open(name, _DIR_FLAGS, dir_fd=top), top, name)]
    try:
        while stack:
            fd, parent, here = stack[-1]
            descended = False
            for child in os.listdir(fd):
                cst = os.stat(child, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(cst.st_mode):
                    os.unlink(child, dir_fd=fd)
                elif len(stack) >= _MAX_DEPTH:
                    os.rename(child, f"deep-{uuid.uuid4().hex}", src_dir_fd=fd, dst_dir_fd=top)
                else:
                    _openable(fd, child)
                    stack.append((os.open(child, _DIR_FLAGS, dir_fd=fd), fd, child))
                    descended = True
                    break
            if not descended:
                stack.pop()
                os.close(fd)
                os.rmdir(here, dir_fd=parent)
    finally:
        for fd, _, _ in stack:
            with contextlib.suppress(OSError):
                os.close(fd)


def _fs_used(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class _Clock:
    """The wall time of a run, and the time since its last step marker."""

    def __init__(self, limits: Limits, start: float):
        self.limits = limits
        self.deadline = start + limits.wall_seconds
        self.step_deadline = time.monotonic() + limits.step_seconds if limits.step_seconds else None
        self.markers = 0

    def wake(self) -> float:
        return min(self.deadline, self.step_deadline or self.deadline)

    def saw(self, markers: int, now: float) -> None:
        """A new step marker restarts the step clock."""
        if markers != self.markers:
            self.markers = markers
            if self.limits.step_seconds:
                self.step_deadline = now + self.limits.step_seconds

    def wall_over(self, now: float) -> bool:
        return now >= self.deadline

    def step_over(self, now: float) -> bool:
        return self.step_deadline is not None and now >= self.step_deadline

    def wall_message(self) -> str:
        return f"timeout: the run took more than {self.limits.wall_seconds:g} s"

    def step_message(self, steps: list[str]) -> str:
        what = f"after step {steps[-1]!r}" if steps else "before the first step"
        return f"step timeout: more than {self.limits.step_seconds:g} s {what}"


class _ScratchWatch:
    """Walks scratch every _SCRATCH_PERIOD, and sooner when its file system fills fast.

    A walk costs time with many files, so between walks the disk usage of the whole file
    system (one statvfs) stands for the growth of scratch: it overestimates (other writers
    count too), and only ever triggers a walk, never a kill by itself.
    """

    def __init__(self, root: Path, limits: Limits, slack: float = 1.0):
        self.root = root
        self.limits = limits
        self.quick = _QUICK_PERIOD * slack
        self.period = _SCRATCH_PERIOD * slack
        self.size = 0
        self.fs_at_scan = _fs_used(root)
        self.took = 0.0
        self.last = 0.0
        self.next_scan = time.monotonic() + 0.2
        self.next_quick = 0.0

    def growing(self, now: float) -> bool:
        if now < self.next_quick:
            return False
        self.next_quick = now + self.quick
        if now - self.last < max(self.quick, 10 * self.took):
            return False
        grown = _fs_used(self.root) - self.fs_at_scan
        return self.size + grown > self.limits.scratch_mb * 2**20

    def scan(self, now: float) -> str | None:
        lim = self.limits
        fs = _fs_used(self.root)
        try:
            self.size, entries = _scratch_usage(self.root, lim.scratch_files)
        except RecursionError as error:
            return f"scratch full: {error}"
        self.fs_at_scan = fs
        self.last = time.monotonic()
        self.took = self.last - now
        self.next_scan = self.last + max(self.period, 10 * self.took)
        if self.size > lim.scratch_mb * 2**20:
            return f"scratch full: the scratch folder holds more than {lim.scratch_mb} MB"
        if entries > lim.scratch_files:
            return (
                f"scratch full: the scratch folder holds more than {lim.scratch_files} "
                "files and folders"
            )
        return None


def read_artifact(scratch: Path, relative: str, max_bytes: int) -> bytes:
    """Read a regular file that sandboxed code left in scratch, without trusting it.

    Every component of ``relative`` is opened with O_NOFOLLOW below ``scratch``: a symlink
    anywhere, "..", an absolute path, a fifo, a device, a socket, a file with several hard
    links or one over ``max_bytes`` raise ValueError. A missing file raises FileNotFoundError.
    """
    rel = PurePosixPath(relative)
    parts = [p for p in rel.parts if p not in (".", "")]
    if rel.is_absolute() or not parts:
        raise ValueError(f"artifact path {relative!r} must be relative to the scratch folder")
    if ".." in parts:
        raise ValueError(f"artifact path {relative!r} must not contain '..'")
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts[:-1]):
            where = "/".join(parts[: i + 1])
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                raise FileNotFoundError(f"artifact folder {where!r} does not exist") from None
            if not stat.S_ISDIR(st.st_mode):
                kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a folder"
                raise ValueError(f"artifact path {relative!r}: {where!r} is {kind}; refused")
            try:
                nfd = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ValueError(
                        f"artifact path {relative!r}: {where!r} is a symlink; refused"
                    ) from None
                raise
            os.close(fd)
            fd = nfd
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"artifact {relative!r} does not exist") from None
        _check_regular(relative, st, max_bytes)
        try:
            ffd = os.open(name, flags | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=fd)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise ValueError(f"artifact {relative!r} is a symlink; refused") from None
            raise
        try:
            st2 = os.fstat(ffd)
            if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
                raise ValueError(f"artifact {relative!r} changed while it was opened; refused")
            _check_regular(relative, st2, max_bytes)
            chunks = []
            size = 0
            while True:
                chunk = os.read(ffd, min(1 << 20, max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise ValueError(
                        f"artifact {relative!r} is larger than {max_bytes} bytes; refused"
                    )
            return b"".join(chunks)
        finally:
            os.close(ffd)
    finally:
        os.close(fd)


def _check_regular(relative: str, st: os.stat_result, max_bytes: int) -> None:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        raise ValueError(f"artifact {relative!r} is a symlink; refused")
    if not stat.S_ISREG(mode):
        kind = (
            "a fifo"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a folder"
            if stat.S_ISDIR(mode)
            else "not a regular file"
        )
        raise ValueError(f"artifact {relative!r} is {kind}, not a regular file; refused")
    if st.st_nlink > 1:
        raise ValueError(f"artifact {relative!r} has {st.st_nlink} hard links; refused")
    if st.st_size > max_bytes:
        raise ValueError(
            f"artifact {relative!r} is {st.st_size} bytes, larger than {max_bytes}; refused"
        )


# --------------------------------------------------------------------------------------
# The sandbox


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
        limits: Limits = Limits(),
        env: dict[str, str] | None = None,
        cwd: str = SCRATCH,
        runtime: bool = True,
        cgroups: bool = True,
        slack: float = 1.0,
    ):
        """readonly maps host paths to paths inside (bound read-only); the Python runtime
        (python_runtime_binds) is added unless runtime=False. scratch, a host folder the
        caller created and emptied, is bound read-write at /scratch, the only writable place;
        /tmp, /dev/shm and $HOME are folders inside it. env is the whole environment inside,
        with PATH, HOME and TMPDIR defaulted. cgroups=False forces the watchdog (as when no
        cgroup is writable). slack multiplies the watchdog's periods: a sandbox that lives
        long and mostly waits (warm_kernel.py, warm_checker.py) costs less CPU with 5."""
        binds: dict[str, str] = {}
        for host, inside in {**(python_runtime_binds() if runtime else {}), **readonly}.items():
            host_s, inside_s = os.path.abspath(os.fspath(host)), os.path.normpath(inside)
            if not inside_s.startswith("/") or inside_s == "/":
                raise ValueError(f"bind destination {inside!r} must be an absolute path below /")
            if any(
                _is_under(inside_s, reserved) for reserved in (SCRATCH, "/proc", "/dev", "/tmp")
            ):
                raise ValueError(f"bind destination {inside!r} is reserved")
            if not os.path.exists(host_s):
                raise FileNotFoundError(f"read-only bind source {host_s} does not exist")
            binds = {h: i for h, i in binds.items() if i != inside_s}  # last one wins
            binds[host_s] = inside_s
        self.readonly = binds
        self.scratch = Path(scratch).absolute()
        self.limits = limits
        self.cwd = cwd
        self.cgroups = cgroups
        self.slack = slack
        self._stop = threading.Event()
        self._stop_reason = ""
        # While run() runs: the host pid of the sandbox's init (the parent of the command).
        self.init_pid: int | None = None
        environment = dict(env or {})
        environment.setdefault("PATH", f"{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin")
        environment.setdefault("HOME", f"{SCRATCH}/{_HOME}")
        environment.setdefault("TMPDIR", "/tmp")
        self.env = environment

    def _args(self, info_fd: int, block_fd: int, seccomp_fd: int | None) -> list[str]:
        bwrap = _bwrap()
        assert bwrap is not None
        args = [
            bwrap,
            "--unshare-all",
            *_userns_flags(),
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--hostname",
            "sandbox",
            *_mount_args(self.readonly),
            "--proc",
            "/proc",
            *_proc_cover_args(),
            "--dev",
            "/dev",
            "--bind",
            str(self.scratch),
            SCRATCH,
            "--bind",
            str(self.scratch / _TMP),
            "/tmp",
            "--bind",
            str(self.scratch / _SHM),
            "/dev/shm",
            "--remount-ro",
            "/dev",
            "--remount-ro",
            "/",
            "--chdir",
            self.cwd,
            "--clearenv",
        ]
        for key, value in self.env.items():
            args += ["--setenv", key, value]
        args += ["--info-fd", str(info_fd), "--block-fd", str(block_fd)]
        if seccomp_fd is not None:
            args += ["--seccomp", str(seccomp_fd)]
        return args

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
        check_available()
        lim = self.limits
        start = time.monotonic()
        _prepare_scratch(self.scratch)
        cg = _Cgroups(lim) if self.cgroups else None
        enforced = _enforcement(cg)
        nproc = None
        if not (cg and cg.pids) and os.geteuid() != 0:
            nproc = _user_tasks() + lim.processes
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        seccomp_r = -1
        if _SECCOMP is not None:
            seccomp_r, seccomp_w = os.pipe()  # a few hundred bytes: fits in the pipe
            os.write(seccomp_w, _SECCOMP)
            os.close(seccomp_w)
        out = _Output(lim.output_bytes)
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
                        _write(Path(f"/proc/{init_pid}/oom_score_adj"), "1000")
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
        cg: _Cgroups | None,
        out: _Output,
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
        clock = _Clock(lim, start)
        next_watch = time.monotonic()
        next_scratch = time.monotonic() + 0.2
        scratch = _ScratchWatch(self.scratch, lim, self.slack)
        peak = 0
        eof = False
        exited_at: float | None = None
        try:
            while True:
                now = time.monotonic()
                wake = min(clock.wake(), next_watch)
                quick = _QUICK_PERIOD * self.slack
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

    def _check(self, proc: subprocess.Popen, cg: _Cgroups | None) -> tuple[str | None, int]:
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
        cg: _Cgroups | None,
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


def _drain(proc: subprocess.Popen, out: _Output) -> None:
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
