"""Grading settings shared by the course's nbgrader_config.py, the batch grader and its tests."""

# Seconds one cell (or one test cell's calls) may run before its sandbox is killed.
CELL_TIMEOUT = 300
# Seconds all the runs of one submission's sandbox may take.
SUBMISSION_TIMEOUT = 900
# Resident memory (MiB) of one submission's sandbox, all its processes together.
MEMORY_LIMIT_MB = 6144

# Feedback of one submission is rendered in a process of its own (grader/feedback.py):
# seconds and address space (MiB) it may use, and the largest autograded notebook (MiB)
# it renders. Past any of them the student gets a short plain feedback; the grade stands.
FEEDBACK_SECONDS = 20
FEEDBACK_MEMORY_MB = 2048
FEEDBACK_MAX_NOTEBOOK_MB = 8
