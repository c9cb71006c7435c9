"""Watching a run: its clocks (wall time, time since its last step marker), and the one loop
body of every run whose output goes to a file (a warm parent's runs, plain runs).

``Sandbox.run`` reads its output from a pipe and pumps its input, in a loop of its own that
uses the same ``Clock`` and ``ScratchWatch``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .limits import Limits, Result
from .output import Output
from .scratch import ScratchWatch


class Clock:
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


class Follow:
    """A run that writes its output to a file: read it, and say when the run must die.

    follow = Follow(output_fd, limits, folder)
    while the run is alive:
        killed = follow.tick()      # the wall and step clocks, the run's folder
    result = follow.result(returncode=..., killed=...)
    """

    def __init__(self, output_fd: int, limits: Limits, folder: Path | None = None):
        self.fd = output_fd
        self.limits = limits
        self.start = time.monotonic()
        self.out = Output(limits.output_bytes)
        self.clock = Clock(limits, self.start)
        self.folder = ScratchWatch(folder, limits) if folder is not None else None

    def read(self) -> None:
        """Feed the output what was written since the last read."""
        while data := os.read(self.fd, 1 << 16):
            self.out.feed(data)

    def tick(self) -> str | None:
        """Read new output; return why the run must die now, or None."""
        self.read()
        now = time.monotonic()
        self.clock.saw(self.out.markers, now)
        if self.clock.wall_over(now):
            return self.clock.wall_message()
        if self.clock.step_over(now):
            return self.clock.step_message(self.out.steps)
        watch = self.folder
        if watch is not None and (now >= watch.next_scan or watch.growing(now)):
            return watch.scan(now)
        return None

    def result(self, *, returncode, killed, peak_bytes=0, enforced=None) -> Result:
        self.read()
        self.out.finish()
        return Result(
            returncode=None if killed else returncode,
            killed=killed,
            output=self.out.text(),
            steps=self.out.steps,
            peak_mb=round(peak_bytes / 2**20, 1),
            seconds=round(time.monotonic() - self.start, 3),
            enforced=enforced or {},
        )
