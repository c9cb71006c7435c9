"""A warm parent whose every child runs in namespaces of its own (a script inside a sandbox).

    python -I zygote.py < config.json

It runs inside the outer sandbox of ``sandbox/warm.py`` and imports, once, what every run
of one kind imports (``config["modules"]``: TensorFlow, IPython, the learner files; and the
entry module: the student's driver or the checker). Then, for each job that appears in its inbox, it forks:

    zygote (outer namespaces; never runs student code, never reads a request)
      └─ monitor: unshare(user, mount, pid, ipc, net, uts); waits for pid 1, exits with its status
           └─ pid 1 of the new pid namespace: mounts a fresh read-only /proc, binds the run's
              own folder at /scratch (and /tmp, /dev/shm inside it), hides /runs, the inbox,
              the zygote's state and the host's /proc under empty read-only tmpfs, drops every
              capability, sets no_new_privs, installs the sandbox's seccomp filter, closes
              every descriptor, and only then reads its request and runs the entry module.

So each run has a pid, mount, IPC, network and UTS namespace and a user namespace of its own,
made after the fork for this run alone. Nothing outside them is visible: not the zygote, not
the monitor, not the sandbox's init, not the folders of other runs. When pid 1 exits, the
kernel kills every process of its pid namespace and waits for them before pid 1 can be
reaped: the monitor's wait returning means that every process the run ever started is dead.
Only then does the zygote write ``exit-<job>.json`` into its state folder, which no run sees.

This is the kernel's own mechanism (namespaces, mounts, capabilities, seccomp), the same as
bubblewrap's and nsjail's, applied after a fork instead of before an exec, so that the child
keeps what the zygote imported. The zygote is not dumpable.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import time

PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
SECCOMP_MODE_FILTER = 2
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
SYS_CAPSET = 126  # x86_64
CAPABILITY_VERSION_3 = 0x20080522
INSIDE_ID = 1000  # the run's uid and gid inside its user namespace (not root there)

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _mount(source, target, fstype, flags, data=None) -> None:
    _check(
        _libc.mount(
            source and source.encode(),
            target.encode(),
            fstype and fstype.encode(),
            ctypes.c_ulong(flags),
            data and data.encode(),
        ),
        f"mount {target}",
    )


def _bind(source: str, target: str) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV)


def _hide(target: str) -> None:
    """An empty, read-only folder that no one may enter, over ``target``."""
    _mount(
        "tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=000"
    )


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _drop_capabilities() -> None:
    for capability in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    header = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable; two words each
    _check(_libc.syscall(SYS_CAPSET, header, data), "capset")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _seccomp(program: bytes) -> None:
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    if not program:
        return
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")


def _preload(config: dict) -> None:
    """Import, once, what every run imports (TensorFlow's start-up notes hidden)."""
    sys.path[:0] = config["path"]
    os.chdir(config["state"])
    for name in config["modules"]:
        if name == "tensorflow":
            import utils

            with utils.tensorflow_startup_notes_hidden():
                import tensorflow  # noqa: F401
        else:
            __import__(name)
    __import__(config["entry"])


def _enter(config: dict, job: str) -> None:
    """In pid 1 of the run's namespaces: build its walls, then run the entry module."""
    folder = os.path.join(config["runs"], job)
    scratch = config["scratch"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("proc", "/proc", "proc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _bind(folder, scratch)
    for inside, target in config["inner_binds"].items():  # /tmp, /dev/shm: folders of scratch
        _bind(os.path.join(scratch, inside), target)
    for hidden in config["hide"]:  # the other runs' parent folder, the inbox, state, host /proc
        _hide(hidden)
    os.chdir(scratch)
    _drop_capabilities()
    _seccomp(bytes.fromhex(config["seccomp"]))
    output = os.open(
        os.path.join(scratch, config["output"]),
        os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
    )
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.closerange(3, 65536)
    with open(os.path.join(scratch, config["request"]), encoding="utf-8") as handle:
        request = json.load(handle)
    sys.modules[config["entry"]].run(request)


def _pid_one(config: dict, job: str) -> None:
    code = 1
    try:
        _enter(config, job)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # noqa: BLE001 -- report it like an uncaught error of a script
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def _monitor(config: dict, job: str) -> None:
    """Between the zygote and the run: make the run's namespaces, wait for its pid 1."""
    code = 1
    try:
        os.setsid()
        # The zygote is not dumpable, and a child inherits that; a process that is not
        # dumpable may not write its own uid_map. The monitor and the run are their own.
        _check(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")
        _write("/proc/self/oom_score_adj", "1000")  # under memory pressure, runs die first
        uid, gid = os.getuid(), os.getgid()
        _check(
            _libc.unshare(
                CLONE_NEWUSER
                | CLONE_NEWNS
                | CLONE_NEWPID
                | CLONE_NEWIPC
                | CLONE_NEWNET
                | CLONE_NEWUTS
            ),
            "unshare",
        )
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{INSIDE_ID} {uid} 1")
        _write("/proc/self/gid_map", f"{INSIDE_ID} {gid} 1")
        pid = os.fork()
        if pid == 0:
            _pid_one(config, job)
        os.closerange(3, 65536)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code  # killed by a signal: as a shell says it
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code & 0xFF)


def _report(config: dict, job: str, status: int) -> None:
    """Write the run's exit status where the host looks for it, whole or not at all."""
    code = os.waitstatus_to_exitcode(status)
    if code > 128:  # the monitor's way of saying "pid 1 was killed by signal code - 128"
        code = -(code - 128)
    path = os.path.join(config["state"], f"exit-{job}.json")
    with open(f"{path}.part", "w", encoding="utf-8") as handle:
        json.dump({"returncode": code}, handle)
    os.replace(f"{path}.part", path)


def main() -> None:
    config = json.loads(sys.stdin.read())
    _preload(config)
    # Keep the imported objects out of the children's garbage collections: a collection
    # writes to every object it visits, which would copy the zygote's memory page by page.
    gc.freeze()
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    with open(os.path.join(config["state"], "ready"), "w"):
        pass  # the host waits for this file before it sends the first job
    done: set[str] = set()
    while True:
        for name in sorted(os.listdir(config["inbox"])):
            job = name[: -len(".job")]
            if not name.endswith(".job") or not job.isdigit() or job in done:
                continue
            done.add(job)
            pid = os.fork()
            if pid == 0:
                _monitor(config, job)
            _, status = os.waitpid(pid, 0)
            _report(config, job, status)
        time.sleep(0.02)


if __name__ == "__main__":
    main()
