"""A checker that stays warm between submissions, for the workers of the batch grader.

A one-shot checker (``grading.py``) imports TensorFlow and Keras for every
submission. A Dask worker grades many, so it keeps one checker running, still in
its own sandbox (no network, read-only files, nothing writable but its scratch):

    checker = WarmChecker.for_course(learner_files, root, options)
    verdicts = checker.judge(records_folder, calls)      # None: use a one-shot checker

The checker never runs student code, and sees one submission's records at a time:
they are copied into its read-only inbox, judged, and removed before the next. It
clears Keras's session after each submission and starts afresh after
``REQUESTS`` submissions. When it dies or does not answer in time, ``judge``
returns None and the caller falls back to a one-shot checker.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time

from . import sandbox

REQUESTS = 50  # submissions one warm checker judges before it starts afresh
ANSWER_SECONDS = 600  # the longest wait for one submission's verdicts
INBOX = "/inbox"


class WarmChecker:
    _by_course: dict[str, WarmChecker] = {}

    def __init__(self, learner_files, root, options):
        from . import grading

        self.work = pathlib.Path(tempfile.mkdtemp(prefix="alpaca-warm-checker-"))
        grading._copy_files(learner_files, pathlib.Path(root), self.work / "assignment")
        self.runner = grading._runner(self.work / "runner", "checker.py", "artifacts.py")
        self.inbox = self.work / "inbox"
        self.inbox.mkdir()
        self.scratch = self.work / "scratch"
        self.scratch.mkdir()
        self.binds = grading._binds(self.work, self.runner, options, dataset=False)
        self.binds[str(self.inbox)] = INBOX
        self.environment = grading._environment("")
        self.count = 0
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.last: sandbox.Result | None = None

    @classmethod
    def for_course(cls, learner_files, root, options) -> WarmChecker:
        """The warm checker of this course's learner files, started on first use."""
        from .grading import files_digest

        key = files_digest(learner_files, root)
        if key not in cls._by_course:
            cls._by_course[key] = cls(learner_files, root, options)
        return cls._by_course[key]

    def _serve(self) -> None:
        config = {
            "runner": "/runner",
            "assignment": "/assignment",
            "workdir": sandbox.SCRATCH,
            "inbox": INBOX,
            "requests": REQUESTS,
        }
        box = sandbox.Sandbox(
            readonly=self.binds,
            scratch=self.scratch,
            limits=sandbox.Limits(wall_seconds=7 * 86400, step_seconds=None, scratch_mb=256),
            env=self.environment,
            slack=5,  # it mostly waits for requests
        )
        self.last = box.run(
            [sys.executable, "-I", "/runner/checker.py", "--serve"],
            input=json.dumps(config).encode(),
        )

    def _ensure_running(self) -> None:
        if self.thread is None or not self.thread.is_alive():
            for stale in self.inbox.iterdir():
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
            self.thread = threading.Thread(target=self._serve, daemon=True)
            self.thread.start()

    def judge(self, records: pathlib.Path, calls: list[dict]) -> list | None:
        """Judge one submission's records; None when the warm checker could not."""
        with self.lock:
            self._ensure_running()
            self.count += 1
            name = str(self.count)
            shutil.copytree(records, self.inbox / name, copy_function=_link_or_copy)
            request = {
                "records": f"{INBOX}/{name}",
                "calls": calls,
                "result": f"{sandbox.SCRATCH}/{name}.json",
            }
            partial = self.inbox / f"{name}.request.part"
            partial.write_text(json.dumps(request), encoding="utf-8")
            os.replace(partial, self.inbox / f"{name}.request.json")
            try:
                return self._wait(name)
            finally:
                shutil.rmtree(self.inbox / name, ignore_errors=True)
                (self.inbox / f"{name}.request.json").unlink(missing_ok=True)

    def _wait(self, name: str) -> list | None:
        deadline = time.monotonic() + ANSWER_SECONDS
        while time.monotonic() < deadline:
            try:
                data = sandbox.read_artifact(self.scratch, f"{name}.json", 16 * 2**20)
            except FileNotFoundError:
                if not self.thread.is_alive():
                    return None
                time.sleep(0.05)
                continue
            except ValueError:
                return None
            (self.scratch / f"{name}.json").unlink(missing_ok=True)
            return json.loads(data)
        return None


def _link_or_copy(source, target):
    """Records are files the grader wrote itself: a hard link saves copying tens of MB."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
