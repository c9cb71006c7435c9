"""Feedback folders hold the feedback HTML only.

nbgrader's ``generate_feedback`` (the command, and the formgrader's button) copies
every file of ``autograded/<student>/<assignment>/`` into the feedback folder that
students receive: nbgrader's ``timestamp.txt``, the grader's ``grading.json`` and
any file the student handed in beside the notebook. `FeedbackHtmlOnly`, the last of
``c.GenerateFeedback.preprocessors`` in the course config, removes them before the
HTML is written.
"""

from __future__ import annotations

import pathlib

from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import List


class FeedbackHtmlOnly(NbGraderPreprocessor):
    """Remove from a student's feedback folder every file that is not feedback HTML."""

    # Set by nbconvert's HTML exporter for every preprocessor (see feedback.HideHiddenTests).
    display_data_priority = List().tag(config=True)

    def preprocess(self, nb, resources):
        info = resources.get("nbgrader", {})
        if info.get("student") and info.get("assignment"):
            coursedir = CourseDirectory(config=self.config)
            folder = pathlib.Path(
                coursedir.format_path(
                    coursedir.feedback_directory, info["student"], info["assignment"]
                )
            )
            if folder.is_dir():
                for path in sorted(folder.rglob("*"), reverse=True):
                    if path.is_dir() and not path.is_symlink():
                        if not any(path.iterdir()):
                            path.rmdir()
                    elif path.suffix != ".html":
                        self.log.debug("Not feedback, removed: %s", path)
                        path.unlink()
        return nb, resources
