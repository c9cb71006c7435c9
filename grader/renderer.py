"""A warm process that renders feedback: nbgrader imported once, a limited child per student.

    returncode, output = renderer.shared().render(folder, student, seconds, cpu_seconds, memory_mb)

Importing nbgrader and nbconvert takes about 2 s, most of what one feedback costs. The
renderer (``python -m grader.renderer``, one per grading process) imports them once and
then serves one request per line on its standard input. For each request it forks a
child, which puts itself in a process group of its own, takes the limits of the request
(processor time, memory) and renders (``feedback.render_limited``); the renderer waits
for it, kills its whole group when it runs past the request's time on the clock, and
answers with its exit status (``None``: out of time). The renderer itself never reads a
notebook: what one student handed over is only ever processed in that student's child,
which is gone before the next request is read. It is single-threaded, so forking it is
safe.

A renderer that stopped answering is killed (`RendererGone`), and one that died is
started again, by the next `Renderer.render`.
"""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

# Seconds the caller waits beyond the render's own time-out before it gives up on the
# renderer (which should have answered by then) and starts a new one.
ANSWER_GRACE = 30
OUTPUT_BYTES = 64_000  # the end of a child's output that the caller gets back


class RendererGone(RuntimeError):
    """The renderer died or stopped answering (not the render running out of time)."""


class Renderer:
    """The caller's side: starts ``python -m grader.renderer`` and sends it requests."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.last_child: int | None = None  # the pid of the last render's child
        self.lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "grader.renderer"],
                cwd=pathlib.Path(__file__).resolve().parents[1],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self.process

    def start(self) -> None:
        """Start the renderer now: it imports nbgrader while the caller does other work."""
        with self.lock:
            self._start()

    def render(self, folder, student: str, seconds: float, cpu_seconds: int, memory_mb: int):
        """Render ``student``'s feedback in the course ``folder`` in a limited child.

        The child gets ``cpu_seconds`` of processor time and ``memory_mb`` of address
        space. Returns ``(exit status, the end of its output)``; the status is None when
        it ran past ``seconds`` on the clock: the child and its group are then dead.
        Raises `RendererGone` when the renderer itself did not answer.
        """
        with self.lock, tempfile.NamedTemporaryFile(prefix="alpaca-render-") as log:
            process = self._start()
            request = {
                "folder": str(folder),
                "student": student,
                "log": log.name,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "memory_mb": memory_mb,
            }
            try:
                process.stdin.write(json.dumps(request).encode() + b"\n")
                process.stdin.flush()
                answer = _read_line(process.stdout, seconds + ANSWER_GRACE)
            except (OSError, ValueError):
                answer = None
            if answer is None:  # the renderer died or hangs: a new one next time
                self.close()
                raise RendererGone("the feedback renderer stopped answering")
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - OUTPUT_BYTES))
            self.last_child = answer["pid"]
            return answer["returncode"], log.read().decode("utf-8", "replace")

    def close(self) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
            self.process = None


def _read_line(stream, seconds: float) -> dict | None:
    """One JSON line from ``stream`` within ``seconds``; None at end of file or time."""
    deadline = time.monotonic() + seconds
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            return None
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            return None
        data += chunk
    return json.loads(data)


_shared: Renderer | None = None


def shared() -> Renderer:
    """This process's renderer, started on first use and stopped when the process ends."""
    global _shared
    if _shared is None:
        _shared = Renderer()
        atexit.register(_shared.close)
    return _shared


# --------------------------------------------------------------------------------------
# The renderer's side
# --------------------------------------------------------------------------------------


def serve() -> None:
    """Answer one request per line of standard input until it ends."""
    from . import feedback

    feedback.preload()
    for line in sys.stdin.buffer:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(feedback, request)
        returncode = _wait(pid, request["seconds"])
        sys.stdout.write(json.dumps({"pid": pid, "returncode": returncode}) + "\n")
        sys.stdout.flush()


def _child(feedback, request: dict) -> None:
    """Render one request in this forked child, then exit (never returns)."""
    code = 1
    try:
        os.setsid()
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.stdin.close()
        feedback.render_limited(
            request["folder"], request["student"], request["cpu_seconds"], request["memory_mb"]
        )
        code = 0
    except BaseException:  # noqa: BLE001 -- reported through the log and the exit status
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int, seconds: float) -> int | None:
    """The child's exit status (negative: the signal), or None if it ran out of time."""
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            for kill in (os.killpg, os.kill):  # its group, or itself before setsid()
                try:
                    kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.waitpid(pid, 0)
            return None
        time.sleep(0.02)


if __name__ == "__main__":
    serve()
