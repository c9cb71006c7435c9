"""Jupyter server configuration of the course: the formgrader (see the README).

The README's command loads this file (``--config=jupyter_server_config.py``, run in
this folder). Beside nbgrader's formgrader, ``grader.formgrader`` serves the pages that
show a student's work, and the feedback, with a Content-Security-Policy: nothing a
student wrote runs in the instructor's browser (grader/formgrader.py).
"""

c = get_config()  # noqa: F821 -- injected by Jupyter

c.ServerApp.jpserver_extensions = {
    "nbgrader.server_extensions.formgrader": True,
    "grader.formgrader": True,
}
