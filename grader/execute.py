"""The nbgrader preprocessor that takes the place of ``Execute`` when autograding.

Set in the course's ``nbgrader_config.py``:

    c.Autograde.autograde_preprocessors = ["grader.execute.SandboxedExecute", ...]

so that ``nbgrader autograde``, the batch grader and the formgrader's autograde
button all grade the same way. Instead of running the notebook in a kernel beside
nbgrader, it calls ``grading.grade()``: the student's code runs in a sandbox, and
a separate checker decides each test call from what the code returned. The verdict
becomes each test cell's output, an error output when a call failed, so nbgrader's
``SaveAutoGrades`` scores the cells as usual and the gradebook, ``nbgrader export``,
feedback and the formgrader work unchanged. An answer cell that raised gets that
error as its output. Everything else of the lesson is not run and keeps no output.

How the run went (a crash, a hang, the sandbox off) is written beside the
autograded notebook as ``grading.json`` and logged.
"""

from __future__ import annotations

import json
import os
import pathlib
import re

import nbformat
from nbformat.v4 import new_output
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader.utils import find_all_files
from traitlets import Bool, Integer, List

from . import grading, plan, preflight
from .config import SETTINGS
from .course import grade_id

STATUS_FILE = "grading.json"
RED, PLAIN = "\x1b[0;31m", "\x1b[0m"


def error_output(message: str, ename: str = "AssertionError"):
    """An error output that shows ``message`` first, as the public tests do inline."""
    first, *rest = message.split("\n")
    return new_output(
        "error", ename=ename, evalue=message, traceback=[f"{RED}{ename}{PLAIN}: {first}", *rest]
    )


COULD_NOT_RUN = ("the test could not run", "the test's record is unusable")


def plain_sentence(message: str) -> str:
    """A failure the run caused (not the code): one plain sentence, with what still counts."""
    first, *rest = message.split("\n")
    if first.startswith(COULD_NOT_RUN):
        first = (
            f"This test cell could not run: {first.split(': ', 1)[-1].rstrip('.')}. "
            f"It scores 0; every other test cell was graded as usual."
        )
    return "\n".join([first, *rest])


def test_cell_outputs(verdicts: list[dict]) -> list:
    """The outputs of a test cell, up to its first failing call, as if it had run inline.

    A visible call shows what it printed ("...: all tests passed."); a hidden call
    shows nothing when it passes, and its message when it fails.
    """
    outputs, printed = [], ""
    for verdict in verdicts:
        if not verdict["hidden"]:
            printed += verdict["output"]
        if not verdict["passed"]:
            if printed:
                outputs.append(new_output("stream", name="stdout", text=printed))
            prefix = "Hidden test: " if verdict["hidden"] else ""
            outputs.append(error_output(prefix + plain_sentence(verdict["message"])))
            return outputs
    if printed:
        outputs.append(new_output("stream", name="stdout", text=printed))
    return outputs


class SandboxedExecute(NbGraderPreprocessor):
    """Grade the notebook in a sandbox and a checker; write each verdict as cell output."""

    cell_timeout = Integer(
        SETTINGS.cell_timeout, help="Seconds one cell (or one test cell's calls) may run."
    ).tag(config=True)
    submission_timeout = Integer(
        int(SETTINGS.submission_timeout), help="Seconds all the runs of one submission may take."
    ).tag(config=True)
    memory_mb = Integer(
        SETTINGS.memory_mb, help="Resident memory (MiB) of the student's sandbox."
    ).tag(config=True)
    sandbox = Bool(
        True, help="Run student code under bubblewrap. False is for trusted notebooks only."
    ).tag(config=True)

    def _source(self, assignment: str, notebook: str):
        """The master notebook, and the learner files nbgrader copies beside a submission."""
        coursedir = CourseDirectory(config=self.config)
        source = coursedir.format_path(coursedir.source_directory, ".", assignment)
        master = nbformat.read(os.path.join(source, f"{notebook}.ipynb"), as_version=4)
        return master, find_all_files(source, coursedir.ignore + ["*.ipynb"]), source

    def grading_options(self) -> grading.Options:
        return grading.Options(
            step_seconds=self.cell_timeout,
            total_seconds=self.submission_timeout,
            memory_mb=self.memory_mb,
            sandboxed=self.sandbox,
        )

    def preflight(self, assignment: str, notebook: str) -> None:
        """Grade the course's own solution in this very configuration (see preflight.py).

        Raises `preflight.PreflightFailed` short of full marks: no student is graded.
        """
        master, files, root = self._source(assignment, notebook)
        preflight.check(master, files, root, self.grading_options())

    def preprocess(self, nb, resources):
        info = resources.get("nbgrader", {})
        assignment, notebook = info.get("assignment", ""), info.get("notebook", "")
        self.preflight(assignment, notebook)
        master, files, root = self._source(assignment, notebook)
        options = self.grading_options()
        outcome = grading.grade(nb, master, files, root, options)
        for cell in nb.cells:
            name = grade_id(cell)
            if cell.cell_type != "code":
                continue
            if name in outcome.verdicts:
                cell.outputs = test_cell_outputs(outcome.verdicts[name])
            elif name in outcome.cell_errors:
                cell.outputs = [error_output(outcome.cell_errors[name], "CellError")]
        # The errors of the cells the student added, on those cells.
        for name, error in outcome.cell_errors.items():
            number = plan.own_cell_number(name)
            if number and number <= len(nb.cells) and nb.cells[number - 1].cell_type == "code":
                nb.cells[number - 1].outputs = [error_output(error, "CellError")]
        resources.setdefault("grader", {})["problems"] = list(outcome.problems)
        unconfined = "" if self.sandbox else " (NO SANDBOX)"
        self.log.info("Graded in %.1f s: %s%s", outcome.seconds, outcome.status, unconfined)
        self._write_status(resources, outcome)
        return nb, resources

    def _write_status(self, resources, outcome) -> None:
        info = resources.get("nbgrader", {})
        if not info.get("student"):
            return
        coursedir = CourseDirectory(config=self.config)
        folder = pathlib.Path(
            coursedir.format_path(
                coursedir.autograded_directory, info["student"], info["assignment"]
            )
        )
        if folder.is_dir():
            record = {
                "status": outcome.status,
                "sandbox": self.sandbox,
                "problems": outcome.problems,
                "seconds": round(outcome.seconds, 1),
                "peak_mb": outcome.peak_mb,
            }
            (folder / STATUS_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")


class FlagUnfinished(NbGraderPreprocessor):
    """Flag in the gradebook a submission whose run did not finish normally.

    Set after ``SaveAutoGrades`` in the course config: the formgrader then shows the
    flag on the submission (Manual Grading), and each answer cell named in a problem
    gets the problem as its comment. `SandboxedExecute` leaves the problems in the
    resources; a run that finished normally changes nothing.
    """

    display_data_priority = List().tag(config=True)  # set by nbconvert's exporters

    def preprocess(self, nb, resources):
        from nbgrader.api import Gradebook

        problems = resources.get("grader", {}).get("problems")
        info = resources.get("nbgrader", {})
        if not problems or not info.get("student"):
            return nb, resources
        with Gradebook(info["db_url"]) as gradebook:
            notebook = gradebook.find_submission_notebook(
                info["notebook"], info["assignment"], info["student"]
            )
            notebook.flagged = True
            for comment in notebook.comments:
                said = [p for p in problems if re.search(rf"cell {re.escape(comment.name)}\b", p)]
                if said:
                    comment.auto_comment = "Grading: " + "; ".join(said)
            gradebook.db.commit()
        self.log.warning("Flagged for review: %s", "; ".join(problems))
        return nb, resources
