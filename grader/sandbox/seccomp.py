"""The seccomp filter of every sandbox: system calls that grading never needs are refused."""

from __future__ import annotations

import errno
import os

# Syscalls the sandbox refuses (EPERM): kernel interfaces that grading never needs and that
# are where kernel exploits live (io_uring, bpf, perf, userfaultfd), the kernel keyrings, the
# kernel log, tracing, modules, mounts and namespaces. x86_64 numbers.
BLOCKED_X86_64 = {
    # System V IPC and POSIX message queues: objects that outlive their process (a warm
    # parent's runs also have an IPC namespace each). Python's multiprocessing needs none of
    # them (its semaphores are files in /dev/shm, which is in scratch).
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


# What a run of a warm parent needs to make its own namespaces and mounts.
NAMESPACES = ("unshare", "mount", "umount2")
CLONE = 56
CLONE3 = 435
# clone() flags that make namespaces: a process may not make any (CLONE_NEWUSER above all,
# which would give it every capability in a namespace of its own).
CLONE_NAMESPACE_FLAGS = 0x7E020000


def program(*, namespaces: bool = False) -> bytes | None:
    """A classic BPF seccomp filter: other ABIs get ENOSYS, the blocked syscalls EPERM.
    None on machines other than x86_64 (the other barriers still hold there).

    clone() with a namespace flag gets EPERM, and clone3() ENOSYS (its flags are in memory
    that a filter cannot read; the C library then falls back to clone).

    ``namespaces=True`` is the filter of a warm parent's sandbox (``warm.py``), whose runs
    make their own namespaces: it lets unshare, mount and umount2 through, and each run
    installs the full filter for itself before any of its code runs."""
    if os.uname().machine != "x86_64":
        return None
    import struct

    ld_abs, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, errno_ = 0x7FFF0000, 0x00050000
    arch_x86_64 = 0xC000003E

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k)

    blocked = sorted(
        nr for name, nr in BLOCKED_X86_64.items() if not (namespaces and name in NAMESPACES)
    )
    prog = [
        op(ld_abs, 4),  # seccomp_data.arch
        op(jeq, arch_x86_64, 1, 0),
        op(ret, errno_ | errno.ENOSYS),  # i386 via int 0x80
        op(ld_abs, 0),  # seccomp_data.nr
        op(jge, 0x40000000, 0, 1),
        op(ret, errno_ | errno.ENOSYS),  # the x32 ABI
        op(jeq, CLONE3, 0, 1),
        op(ret, errno_ | errno.ENOSYS),
        op(jeq, CLONE, 0, 3),
        op(ld_abs, 16),  # the low half of seccomp_data.args[0]: clone's flags
        op(jset, CLONE_NAMESPACE_FLAGS, 0, 1),
        op(ret, errno_ | errno.EPERM),
        op(ld_abs, 0),  # seccomp_data.nr again
    ]
    for i, nr in enumerate(blocked):
        prog.append(op(jeq, nr, len(blocked) - i, 0))
    prog.append(op(ret, allow))
    prog.append(op(ret, errno_ | errno.EPERM))
    return b"".join(prog)


FILTER = program()
