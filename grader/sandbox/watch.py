"""The clocks of a run: its wall time and the time since its last step marker."""

from __future__ import annotations

import time

from .limits import Limits


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
