"""nbgrader configuration of the course (run nbgrader from this folder).

For a whole class, grade with `python -m grader.batch` (see the README): it runs
nbgrader autograde in parallel, survives broken submissions and writes grades.csv.
"""

import pathlib
import sys

c = get_config()  # noqa: F821 -- injected by nbgrader

# The grader package sits beside course/. Resolve symlinks: the batch grader links this
# file into its temporary course copies.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import grader.config as grader_config  # noqa: E402
import grader.course as course  # noqa: E402

c.CourseDirectory.course_id = "transfer-learning-mobilenet"
c.CourseDirectory.root = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
c.CourseDirectory.db_assignments = [dict(name=course.ASSIGNMENT)]
# The master is written as a jupytext script; only the notebook made from it is released.
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints",
    "*.pyc",
    "__pycache__",
    "feedback",
    f"{course.ASSIGNMENT}.py",
]
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# --- Autograding --------------------------------------------------------------------
# Timeouts. Under NBGRADER_EXECUTION=autograde each training cell runs 1 epoch: about
# 10 s frozen and 30 s unfrozen on 2 busy cores. 300 s per cell passes a correct
# submission that is ten times slower than that; a cell that hangs is interrupted
# after 300 s, and the notebook goes on with the next cell.
c.Execute.timeout = grader_config.CELL_TIMEOUT
c.Execute.startup_timeout = 120
c.Execute.interrupt_on_timeout = True
# A test cell that was deleted is put back (a locked cell that was edited is always
# restored by nbgrader from the gradebook).
c.OverwriteCells.add_missing_cells = True
# TensorFlow and absl write log lines to stderr, and nbgrader scores a test cell with
# any stderr output as 0. Drop a stderr output when every line of it is such noise
# (or a Python warning); a stderr output with anything else in it is kept.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = grader_config.STDERR_NOISE_PATTERN

# --- Feedback -----------------------------------------------------------------------
# nbgrader's feedback shows the hidden tests' code (jupyter/nbgrader#917): remove it,
# and every traceback frame that quotes it, keeping the error message readable.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "grader.feedback.HideHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
