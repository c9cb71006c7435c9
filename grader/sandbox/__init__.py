"""Run untrusted code under bubblewrap, with limits, and read what it left behind safely.

One module a concept, as nsjail has one file a kernel mechanism:

=============  ===========================================================================
``walls``      bubblewrap's command line: namespaces, read-only binds, /proc covered
``seccomp``    the system calls every sandbox refuses
``limits``     what a run may use (``Limits``) and what came back (``Result``)
``cgroups``    the memory and pids cgroup of a sandbox
``scratch``    the one writable folder: made, watched, read (``read_artifact``), emptied
``output``     a run's output: step markers out, head and tail kept
``watch``      the clocks of a run (wall time, time since the last step)
``box``        ``Sandbox``: one command in a new bubblewrap sandbox, watched to its end
``warm``       ``WarmParent``: runs forked from a parent that imported TensorFlow once,
               each in namespaces made for it alone (``grader/inside/zygote.py`` inside)
=============  ===========================================================================

A sandbox (``Sandbox.run``, and the outer sandbox of a warm parent):

- new user, pid, network, ipc, uts and cgroup namespaces (``--unshare-all``): no network at
  all, not even loopback to the host (the sandbox has its own ``lo``); host processes are
  invisible and cannot be signalled; the host's keyrings are out of reach;
- all capabilities dropped, no new privileges, no nested user namespaces (but in a warm
  parent, whose runs make their own and then forbid them), a new session, and a seccomp filter
  (x86_64) that refuses io_uring, bpf, perf, userfaultfd, keyrings, ptrace, the kernel log,
  modules, mounts, namespaces, System V IPC and message queues;
- a root filesystem that holds only the read-only binds it is given plus the Python runtime
  (:func:`python_runtime_binds`), a fresh ``/proc`` and a minimal ``/dev``; the root itself,
  ``/dev`` and every bind but the scratch folder are read-only;
- one writable folder, the host's ``scratch`` at ``/scratch``; ``/tmp``, ``/dev/shm`` and
  ``$HOME`` are folders inside it, so that nothing the code writes lands in machine RAM;
- a whole environment of the caller's choosing (``--clearenv``).

Limits (``Limits``; ``Result.enforced`` and :func:`enforcement` say which are in force):
memory of the whole sandbox (a memory cgroup, else a watchdog of resident memory; plus
``RLIMIT_AS``), processes and threads (a pids cgroup, else a watchdog), CPU time per process
(``RLIMIT_CPU``), file size (``RLIMIT_FSIZE``), no core dumps; wall time, time between two
step markers, scratch size and file count (the watch); output (first and last part kept).

Killing the sandbox kills the init of its pid namespace, so the kernel kills every process
it started; bwrap's ``--die-with-parent`` does the same when the grader dies.
"""

from .box import Sandbox
from .cgroups import enforcement
from .limits import Limits, Result
from .output import STEP_MARKER
from .scratch import SCRATCH, empty_scratch, read_artifact
from .walls import SandboxUnavailable, check_available, python_runtime_binds

__all__ = [
    "SCRATCH",
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
