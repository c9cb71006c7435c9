"""nbgrader configuration of the course (run nbgrader from this folder).

For a whole class, grade with `python -m grader.batch` (see the README): it runs
nbgrader autograde on Dask workers, survives broken submissions and writes grades.csv.
Student code always runs in a sandbox (SandboxedExecute below), here as there.
"""

c = get_config()  # noqa: F821 -- injected by nbgrader

# The grader is installed into the project's environment (`make` does it): no path edits.
import grader.config as grader_config  # noqa: E402
import grader.course as course  # noqa: E402

# nbgrader runs `alembic`: found beside this Python, also when the environment is not activated.
course.tools_on_path()
# nbgrader's own add_submission() makes SQLAlchemy warn "not in session" for every
# student it grades (the grades are stored all the same): keep the console clean.
course.quiet_gradebook_warnings()

c.CourseDirectory.course_id = "transfer-learning-mobilenet"
c.CourseDirectory.root = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
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
# Student code never runs beside nbgrader: SandboxedExecute takes the place of Execute.
# It runs the set-up and answer cells in a bubblewrap sandbox, and a separate checker
# decides every test cell from what the code returned (see grader/execute.py).
# A learner's copy of a graded cell must not stop grading (see grader/deduplicate.py).
c.Autograde.sanitize_preprocessors = [
    "nbgrader.preprocessors.ClearOutput",
    "grader.deduplicate.DeduplicateCells",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "nbgrader.preprocessors.OverwriteCells",
    "nbgrader.preprocessors.CheckCellMetadata",
]
c.Autograde.autograde_preprocessors = [
    "grader.execute.SandboxedExecute",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    # A run that did not finish normally is flagged, with a comment on the cell it broke.
    "grader.execute.FlagUnfinished",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
    "grader.feedback.SanitizeStudentContent",
]
# Limits of one submission. Grading runs the set-up and answer cells only (about 15 s
# for a correct notebook on 2 busy cores); a cell that runs longer than the timeout is
# killed with its sandbox, and the run goes on after it, so the other exercises count.
c.SandboxedExecute.cell_timeout = grader_config.SETTINGS.cell_timeout
c.SandboxedExecute.submission_timeout = int(grader_config.SETTINGS.submission_timeout)
c.SandboxedExecute.memory_mb = grader_config.SETTINGS.memory_mb
# A test cell that was deleted is put back (a locked cell that was edited is always
# restored by nbgrader from the gradebook).
c.OverwriteCells.add_missing_cells = True

# --- Feedback -----------------------------------------------------------------------
# nbgrader's feedback shows the hidden tests' code (jupyter/nbgrader#917): remove it,
# and every traceback frame that quotes it, keeping the error message readable.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "grader.feedback.HideHiddenTests",
    "grader.feedback.SanitizeStudentContent",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    # Students receive the feedback HTML only: no timestamp.txt, no grading.json.
    "grader.feedback_folder.FeedbackHtmlOnly",
]
# Feedback is rendered in a process of its own with a time and a memory limit, here (the
# command, the formgrader's button) as in the batch; a notebook too large or too slow to
# render gets a short plain page, and its grade stands. Every page carries a
# Content-Security-Policy that runs no script (grader/feedback.py).
c.GenerateFeedback.exporter_class = "grader.feedback.BoundedFeedback"

# --- What a student wrote is hostile input ------------------------------------------
# The autograded notebook (what the formgrader shows) and the feedback keep the student's
# markdown and outputs only cleaned by nbconvert's sanitizer (SanitizeStudentContent above);
# HTML outputs are cleaned again when rendered.
c.HTMLExporter.sanitize_html = True
