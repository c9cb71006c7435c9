"""Grading settings shared by the course's nbgrader_config.py, the batch grader and its tests."""

# Seconds one cell (or one test cell's calls) may run before its sandbox is killed.
CELL_TIMEOUT = 300
# Seconds all the runs of one submission's sandbox may take.
SUBMISSION_TIMEOUT = 900
# Resident memory (MiB) of one submission's sandbox, all its processes together.
MEMORY_LIMIT_MB = 6144
