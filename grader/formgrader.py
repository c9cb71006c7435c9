"""The formgrader's pages that show a student's work, served with a Content-Security-Policy.

A Jupyter server extension, enabled beside nbgrader's formgrader by the course's
``jupyter_server_config.py`` (the README's command loads it). It serves, in place of
nbgrader's handlers:

- the submission page (``/formgrader/submissions/<id>/``), the one that shows a
  student's notebook for manual grading, with `page_policy()`: scripts run only if
  they carry this response's nonce, a new one per request. nbgrader's page is
  rendered with the course's copy of its macros (``grader/templates/formgrade_csp``),
  which puts the nonce on the formgrader's own scripts, and only on those: nothing
  adds it to what a student wrote, so a ``<script>`` that got past the sanitizer,
  an ``onerror`` or a ``javascript:`` link does not run;
- the files beside a submission (``/formgrader/submissions/<id>/<file>``, the
  images the page shows) and the course's ``feedback/``, ``autograded/`` and
  ``submitted/`` files under ``/files/``: with no script at all, in a sandbox
  (feedback pages: `grader.feedback.FEEDBACK_POLICY`, which they also carry in their
  head).

nbgrader's routes stay; these are put before them.
"""

from __future__ import annotations

import secrets

from jupyter_server.utils import url_path_join
from nbconvert.exporters import HTMLExporter
from nbgrader.server_extensions.formgrader import handlers as nbgrader_handlers

from .feedback import FEEDBACK_POLICY, TEMPLATES, nbgrader_templates

# MathJax 2.7.7 from cdnjs, as nbgrader's page loads it (configured without eval).
MATHJAX = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/"


def page_policy(nonce: str) -> str:
    """The submission page's policy: only scripts with ``nonce``, and MathJax's files."""
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'nonce-{nonce}' {MATHJAX}",
            f"style-src 'self' 'unsafe-inline' {MATHJAX}",
            f"font-src 'self' data: {MATHJAX}",
            "img-src 'self' data:",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'self'",
        ]
    )


# A file shown on its own (an image, a page a student handed in): nothing runs.
FILE_POLICY = f"{FEEDBACK_POLICY}; frame-ancestors 'self'; sandbox"


class NoncedExporter:
    """nbgrader's submission exporter, with this request's nonce in the page's resources."""

    def __init__(self, exporter: HTMLExporter, nonce: str):
        self.exporter, self.nonce = exporter, nonce

    def from_filename(self, filename, resources=None, **kw):
        resources = dict(resources or {}, csp_nonce=self.nonce, csp_mathjax=MATHJAX)
        return self.exporter.from_filename(filename, resources=resources, **kw)


class SubmissionPage(nbgrader_handlers.SubmissionHandler):
    """nbgrader's submission page, whose own scripts alone carry a nonce, and its policy."""

    @property
    def csp_nonce(self) -> str:
        # Asked first by set_default_headers(), as the handler is made: one per request.
        if not hasattr(self, "_csp_nonce"):
            self._csp_nonce = secrets.token_urlsafe(24)
        return self._csp_nonce

    @property
    def content_security_policy(self) -> str:
        return page_policy(self.csp_nonce)

    @property
    def exporter(self):
        config = self.settings["nbgrader_exporter"].config  # the formgrader's own config
        cached = self.settings.get("grader_submission_exporter")
        if cached is None or cached[0] is not config:
            exporter = HTMLExporter(
                config=config,
                template_name="formgrade_csp",
                extra_template_basedirs=[str(TEMPLATES), nbgrader_templates()],
            )
            cached = self.settings["grader_submission_exporter"] = (config, exporter)
        return NoncedExporter(cached[1], self.csp_nonce)


class SubmissionFiles(nbgrader_handlers.SubmissionFilesHandler):
    """The files beside a submission, shown with no script."""

    @property
    def content_security_policy(self) -> str:
        return FILE_POLICY


class StudentFiles:
    """Jupyter's ``/files/`` handler, for the course's student folders: nothing runs."""

    @property
    def content_security_policy(self) -> str:
        return FILE_POLICY


# Feedback and what students handed in, in the course folder (or one below the server's root).
STUDENT_FOLDERS = r"(?:[^/]+/)*(?:feedback|autograded|submitted)/.+"
NAVIGATION = r"(?P<action>next_incorrect|prev_incorrect|next|prev)"


def _jupyter_server_extension_points():
    return [{"module": "grader.formgrader"}]


def _load_jupyter_server_extension(serverapp):
    web_app = serverapp.web_app
    base = web_app.settings["base_url"]
    contents = serverapp.contents_manager
    files = type("StudentFiles", (StudentFiles, contents.files_handler_class), {})
    routes = [
        (r"/formgrader/submissions/([^/]+)/?", SubmissionPage, {}),
        (
            rf"/formgrader/submissions/(?P<submission_id>[^/]+)/{NAVIGATION}/?",
            nbgrader_handlers.SubmissionNavigationHandler,
            {},
        ),
        (r"/formgrader/submissions/(?!components/)(.*)", SubmissionFiles, {}),
        (rf"/files/({STUDENT_FOLDERS})", files, contents.files_handler_params),
    ]
    web_app.add_handlers(".*$", [(url_path_join(base, p), h, kw) for p, h, kw in routes])
    # add_handlers() puts a host's routes before the last rule, after those of the
    # extensions loaded before it (nbgrader's formgrader among them): move ours first.
    rules = web_app.default_router.rules
    rules.insert(0, rules.pop(-2))
    serverapp.log.info("grader.formgrader: submission pages and feedback served with a CSP")
