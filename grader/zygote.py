"""A warm parent for students' kernels (run as a script inside the sandbox of warm_kernel.py).

    python -I zygote.py < config.json

It imports what every notebook of the course imports (IPython, NumPy, Matplotlib,
TensorFlow and the learner files), then waits. For each job that appears in its
read-only inbox it forks one child, and the child runs the student's plan with
``driver.run``. So a student's kernel is a new process that starts with TensorFlow
already imported, instead of paying for the import again.

What keeps one student away from the next (the host side checks the rest, see
``warm_kernel.py``):

- this process never runs student code and never reads a plan or an output: the
  child reads its plan itself, after the fork; a child's memory dies with it;
- it is not dumpable, so a child cannot read or write its memory or its file
  descriptors through ``/proc``. (A child can still change its limits and priority,
  as any process of the same user can: the host compares them between runs.)

Inbox: ``<n>.plan.json`` (the plan of ``driver.py``), then ``<n>.job`` (its name says
"go"). The child writes its output to ``<scratch>/output.log``, and the exit status
goes to ``<scratch>/exit-<n>.json`` once the child is gone.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import time

PR_SET_DUMPABLE = 4


def _preload(config: dict) -> None:
    sys.path[:0] = [config["runner"], config["assignment"]]
    os.chdir(config["scratch"])
    import driver  # noqa: F401
    import IPython.core.interactiveshell  # noqa: F401
    import matplotlib.pyplot  # noqa: F401
    import numpy  # noqa: F401

    import utils

    with utils.tensorflow_startup_notes_hidden():
        import tensorflow  # noqa: F401
    for name in config.get("modules", ()):
        __import__(name)


def _child(config: dict, job: str) -> None:
    """In the forked child: take the job's output as stdout and stderr, run the plan, exit."""
    code = 1
    try:
        os.setsid()
        output = os.open(
            os.path.join(config["scratch"], config["output"]),
            os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
        )
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.closerange(3, 65536)
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        with open(os.path.join(config["inbox"], f"{job}.plan.json"), encoding="utf-8") as handle:
            plan = json.load(handle)
        import driver

        driver.run(plan)
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


def _report(config: dict, job: str, status: int) -> None:
    """Write the child's exit status where the host looks for it (never through a link)."""
    if os.WIFSIGNALED(status):
        code = -os.WTERMSIG(status)
    else:
        code = os.WEXITSTATUS(status)
    path = os.path.join(config["scratch"], f"exit-{job}.json")
    partial = f"{path}.part"
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"returncode": code}, handle)
        # Whole or not at all: the host reads the file as soon as it exists.
        os.replace(partial, path)
    except OSError:
        return  # the run put something there itself: the host reads that (its own loss)


def main() -> None:
    config = json.loads(sys.stdin.read())
    _preload(config)
    # Keep the imported objects out of the children's garbage collections: a collection
    # writes to every object it visits, which would copy the zygote's memory page by page.
    gc.freeze()
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    done: set[str] = set()
    while True:
        jobs = sorted(
            (name[: -len(".job")] for name in os.listdir(config["inbox"]) if name.endswith(".job")),
            key=lambda job: int(job) if job.isdigit() else -1,
        )
        for job in jobs:
            if job in done or not job.isdigit():
                continue
            done.add(job)
            pid = os.fork()
            if pid == 0:
                _child(config, job)
            _, status = os.waitpid(pid, 0)
            _report(config, job, status)
        time.sleep(0.05)


if __name__ == "__main__":
    main()
