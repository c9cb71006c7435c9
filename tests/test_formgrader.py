"""The formgrader, started as the README says, driven in Debian's Chromium.

An instructor's path: open the formgrader, autograde a submission with its button,
see its score and its flag (the kernel died in one cell), and open its feedback, which
says in one plain sentence per test cell what happened and runs no script. Screenshots go
to build/formgrader/.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import sample
from formgrader import Formgrader, chromium
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from grader.course import ASSIGNMENT, NOTEBOOK
from grader.course import nbgrader as run_nbgrader
from tools import build

SCREENSHOTS = build.ROOT / "build" / "formgrader"


def kernel_death_in_fine_tune(solution):
    """Exercises 1 and 2 solved; the fine_tune cell kills the kernel: 8 of 13 points."""
    notebook = copy.deepcopy(solution)
    cell = sample.cell(notebook, "fine_tune")
    cell.source = "import os\n\nos._exit(1)\n\n\n" + cell.source
    return notebook


@pytest.mark.slow
def test_formgrader_autogrades_flags_and_shows_feedback(tmp_path):
    """In the formgrader, does the autograde button grade 8/13, flag it, and feedback say why?"""
    sample.environment()
    course = sample.make_course(tmp_path / "course")
    sample.write_submission(
        course / "submitted", "ann", kernel_death_in_fine_tune(sample.solution_notebook(course))
    )
    added = run_nbgrader(["db", "student", "add", "ann", "--last-name=Lee"], cwd=course)
    assert added.returncode == 0, added.stdout
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    expected = (
        sample.TOTAL - sample.POINTS["fine_tune_test"] - sample.POINTS["fine_tune_compile_test"]
    )

    with (
        Formgrader(course, tmp_path / "server.log") as server,
        chromium(tmp_path / "chromium-profile") as page,
    ):
        server.login(page)  # the printed link, as an instructor opens it
        page.goto(server.url(f"/formgrader/manage_submissions/{ASSIGNMENT}"))
        row = page.locator("tr", has=page.locator(".student-id", has_text="ann"))
        row.locator(".autograde a").click()
        page.locator("#success-modal, #error-modal").first.wait_for()
        page.screenshot(path=str(SCREENSHOTS / "autograded.png"))
        assert page.locator("#success-modal").count() == 1, (
            f"{page.locator('#error-modal').inner_text()}\n{server.log()[-3000:]}"
        )
        page.locator("#success-modal button").first.click()

        # Manual grading: the score and the flag.
        page.goto(server.url(f"/formgrader/gradebook/{ASSIGNMENT}/{NOTEBOOK}"))
        submission = page.locator("tbody tr").first
        submission.locator(".score").filter(has_text="/").wait_for()
        page.screenshot(path=str(SCREENSHOTS / "flagged.png"))
        assert submission.locator(".score").inner_text().strip() == f"{expected} / {sample.TOTAL}"
        assert submission.locator(".flagged .glyphicon-flag").count() == 1, submission.inner_html()

        # The submission's page: the broken answer cell carries the reason as its comment.
        submission.locator(".name a.name-hidden").click()
        page.locator(".cell").first.wait_for()
        # nbgrader shows a cell's automatic comment as its comment box's placeholder.
        with contextlib.suppress(PlaywrightTimeout):  # the comments load after the page
            page.wait_for_function(
                "() => [...document.querySelectorAll('textarea')]"
                ".some(t => t.placeholder.includes('Grading:'))",
                timeout=60_000,
            )
        comments = " ".join(
            page.locator("textarea").evaluate_all("nodes => nodes.map(n => n.placeholder)")
        )
        page.screenshot(path=str(SCREENSHOTS / "submission.png"), full_page=True)
        assert "kernel died in cell fine_tune" in comments, comments

        # Feedback: generated with the button, opened from the server.
        page.goto(server.url(f"/formgrader/manage_submissions/{ASSIGNMENT}"))
        row = page.locator("tr", has=page.locator(".student-id", has_text="ann"))
        row.locator(".generate-feedback a").click()
        page.locator("#success-modal, #error-modal").first.wait_for()
        assert page.locator("#success-modal").count() == 1, server.log()[-3000:]
        answer = page.goto(server.url(f"/files/feedback/ann/{ASSIGNMENT}/{NOTEBOOK}.html"))
        policy = answer.headers.get("content-security-policy", "")
        text = page.locator("body").inner_text()
        page.screenshot(path=str(SCREENSHOTS / "feedback.png"), full_page=True)
    assert "This test cell could not run" in text, text[-3000:]
    assert "kernel died in cell fine_tune" in text, text[-3000:]
    assert "every other test cell was graded as usual" in text
    feedback = course / "feedback" / "ann" / ASSIGNMENT
    assert sorted(p.name for p in feedback.iterdir()) == [f"{NOTEBOOK}.html"]
    # Made by the button through grader.feedback.generate(): no script runs in it.
    assert "script-src 'none'" in policy and "sandbox" in policy, policy
    head = (feedback / f"{NOTEBOOK}.html").read_text().split("</head>", 1)[0]
    assert 'http-equiv="Content-Security-Policy"' in head and "script-src 'none'" in head
