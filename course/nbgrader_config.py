"""nbgrader configuration of the course (run nbgrader from this folder)."""

c = get_config()  # noqa: F821 -- injected by nbgrader

c.CourseDirectory.course_id = "transfer-learning-mobilenet"
c.CourseDirectory.root = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
c.CourseDirectory.db_assignments = [dict(name="Transfer_learning_with_MobileNet")]
# The master is written as a jupytext script; only the notebook made from it is released.
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints",
    "*.pyc",
    "__pycache__",
    "feedback",
    "Transfer_learning_with_MobileNet.py",
]
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
