"""Grading settings shared by the course's nbgrader_config.py, the batch grader and its tests."""

# Seconds one cell may run before nbgrader interrupts it (Execute.timeout).
CELL_TIMEOUT = 300
# Seconds one whole submission may take before the batch grader kills it.
SUBMISSION_TIMEOUT = 900
# Resident memory (MiB) of one grading process tree before the batch grader kills it.
MEMORY_LIMIT_MB = 6144


# One stderr line that says nothing about the submission:
# - glog/absl lines from TensorFlow's C++ code: "I0000 00:00:1732... 123 port.cc:153] ...";
# - absl's "WARNING: All log messages before absl::InitializeLog() is called ...";
# - TensorFlow's CPU-feature banner and its continuation line;
# - a Python warning ("/path/x.py:12: UserWarning: ...") and its indented source line;
# - blank lines.
_NOISE_LINE = "|".join(
    [
        r"[IWEF]\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\][^\n]*",
        r"WARNING: All log messages before absl::InitializeLog\(\) is called[^\n]*",
        r"[^\n]*oneDNN custom operations are on[^\n]*",
        r"[^\n]*TensorFlow binary is optimized to use available CPU instructions[^\n]*",
        r"To enable the following instructions:[^\n]*",
        r"[^\n]*:\d+: \w*Warning: [^\n]*",
        r"[ \t]+[^\n]*",
        r"[ \t]*",
    ]
)
# IgnorePattern drops a stderr output when re.search() matches it: match only an
# output made entirely of noise lines, so that a real message is never dropped.
STDERR_NOISE_PATTERN = rf"\A(?:(?:{_NOISE_LINE})(?:\r?\n|\Z))+\Z"
