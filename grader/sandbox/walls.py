"""The walls of a sandbox: bubblewrap, what it binds, and what of /proc it covers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

from .scratch import SCRATCH, SHM, TMP

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


_available_lock = threading.Lock()
_available: tuple[bool, str, tuple[str, ...]] | None = None


def bwrap_path() -> str | None:
    return shutil.which("bwrap") or ("/usr/bin/bwrap" if os.path.exists("/usr/bin/bwrap") else None)


def _probe() -> tuple[bool, str, tuple[str, ...]]:
    """Try a trivial sandbox; return (ok, why not, the user-namespace flags that work)."""
    bwrap = bwrap_path()
    if bwrap is None:
        return False, "bubblewrap (bwrap) is not installed.", ()
    base = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    fs = mount_args({d: d for d in _SYSTEM_DIRS if os.path.lexists(d)})
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


def userns_flags() -> tuple[str, ...]:
    check_available()
    assert _available is not None
    return _available[2]


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
        if any(is_under(prefix, other) for other in binds if os.path.isdir(other)):
            continue  # already inside a bound folder (a system Python under /usr)
        binds[prefix] = prefix
    return binds


def is_under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def mount_args(readonly: dict[str, str]) -> list[str]:
    """bwrap arguments for read-only binds, parents first; same-path symlinks stay symlinks."""
    same = {host for host, inside in readonly.items() if host == inside}
    args: list[str] = []
    for host, inside in sorted(readonly.items(), key=lambda item: (item[1].count("/"), item[1])):
        if host == inside and os.path.islink(host):
            target = os.path.realpath(host)
            if any(is_under(target, other) for other in same if other != host):
                args += ["--symlink", os.readlink(host), inside]
                continue
        args += ["--ro-bind", host, inside]
    return args


# When the grader is root, the sandbox is uid 0 of the host, without capabilities; but the
# kernel lets uid 0 write sysctls (core_pattern, modprobe: ways out) and a few other /proc
# files by their mode alone, and bwrap leaves /proc/sys writable when its folder looks
# read-only. As container engines do, these are made read-only, and the rest is masked.
_PROC_READONLY = ("bus", "fs", "irq", "sys", "sysrq-trigger")
_PROC_MASKED_FILES = ("kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug")
_PROC_MASKED_DIRS = ("acpi", "asound", "scsi")


def proc_cover_args() -> list[str]:
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


# Where a warm parent's sandbox sees the host's /proc: a proc mount with nothing over it,
# which the kernel requires before a run may mount a /proc of its own (each run hides it).
HOST_PROC = "/.host-proc"
_RESERVED = (SCRATCH, "/proc", "/dev", HOST_PROC)


def checked_binds(binds: dict) -> dict[str, str]:
    """{host path: path inside}, absolute, existing, never over a place the sandbox makes."""
    checked: dict[str, str] = {}
    for host, inside in binds.items():
        host_s, inside_s = os.path.abspath(os.fspath(host)), os.path.normpath(inside)
        if not inside_s.startswith("/") or inside_s == "/":
            raise ValueError(f"bind destination {inside!r} must be an absolute path below /")
        if any(is_under(inside_s, reserved) for reserved in _RESERVED):
            raise ValueError(f"bind destination {inside!r} is reserved")
        if not os.path.exists(host_s):
            raise FileNotFoundError(f"bind source {host_s} does not exist")
        checked = {h: i for h, i in checked.items() if i != inside_s}  # last one wins
        checked[host_s] = inside_s
    return checked


def tmp_is_scratch(binds) -> bool:
    """/tmp is scratch's folder, unless something is bound below /tmp (a course there)."""
    return not any(is_under(inside, "/tmp") for inside in binds)


def bwrap_args(*, readonly, writable, scratch, cwd, env, nested, fds) -> list[str]:
    """The whole bwrap command line but the command (see the package's docstring).

    ``nested``: the sandbox of a warm parent, whose runs make their own user, pid, mount,
    IPC, network and UTS namespaces (``zygote.py``): nested user namespaces stay allowed
    (each run forbids them again before its code runs) and the host's /proc is bound, bare,
    at HOST_PROC.
    """
    info_fd, block_fd, seccomp_fd = fds
    path = bwrap_path()
    assert path is not None
    userns = tuple(flag for flag in userns_flags() if not (nested and flag == "--disable-userns"))
    args = [
        path,
        "--unshare-all",
        *userns,
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
        *mount_args(readonly),
    ]
    for host, inside in sorted(writable.items(), key=lambda item: item[1]):
        args += ["--bind", host, inside]
    if nested:
        # Not root inside (a run may map only its own id, and mapping root needs a
        # capability), and the host's /proc, bare.
        args += ["--uid", "1000", "--gid", "1000", "--ro-bind", "/proc", HOST_PROC]
    args += [
        "--proc",
        "/proc",
        *proc_cover_args(),
        "--dev",
        "/dev",
        "--bind",
        str(scratch),
        SCRATCH,
    ]
    if tmp_is_scratch([*readonly.values(), *writable.values()]):
        args += ["--bind", str(scratch / TMP), "/tmp"]
    args += [
        "--bind",
        str(scratch / SHM),
        "/dev/shm",
        "--remount-ro",
        "/dev",
        "--remount-ro",
        "/",
        "--chdir",
        cwd,
        "--clearenv",
    ]
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += ["--info-fd", str(info_fd), "--block-fd", str(block_fd)]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    return args
