"""Every limit and time-out of grading, defined once and typed: ``SETTINGS``.

The course's ``nbgrader_config.py``, the batch grader's command line, the sandboxes and
the tests read them from here. Each name means one thing: a *cell* time-out is what one
cell (or the produce calls of one test cell) may take; a *submission* time-out is what
all the runs of one submission may take, together.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Settings:
    # One submission's student run.
    cell_timeout: int = 300  # s a cell may run before it is interrupted (as nbgrader does)
    interrupt_grace: int = 15  # s after that interrupt before a kernel that ignored it is killed
    submission_timeout: float = 900  # s all the runs of one submission may take
    memory_mb: int = 6144  # MiB of one submission's run, all its processes together
    restarts: int = 3  # runs started again after a cell that crashed or hung
    # One submission's checker run (the course's code on records of bounded size).
    checker_timeout: float = 600  # s
    checker_memory_mb: int = 4096  # MiB
    # A warm parent: its own memory (TensorFlow imported), added to a run's, and its start.
    parent_memory_mb: int = 1024
    parent_start_timeout: float = 180  # s
    # Feedback of one submission, rendered in a process of its own (grader/feedback.py);
    # past any of these the student gets a short plain feedback, and the grade stands.
    # The limit that stops a slow render is processor time, which a busy machine does
    # not use up (a correct notebook needs about 3 s); the wall-clock one is a backstop.
    feedback_cpu_seconds: int = 20  # s of processor time
    feedback_timeout: float = 60  # s of wall-clock time
    feedback_memory_mb: int = 2048  # MiB of address space
    feedback_max_notebook_mb: int = 8  # MiB of autograded notebook
    # What a submission may hand in (grader/submissions.py).
    max_notebook_mb: int = 64
    max_nested_zip_mb: int = 1024  # a student's own zip inside the class's


SETTINGS = Settings()
