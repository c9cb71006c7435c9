"""Feedback: without the hidden tests' code, bounded, and safe to open.

`HideHiddenTests` is an nbgrader preprocessor, set in the course's
``c.GenerateFeedback.preprocessors`` (nbgrader shows the hidden tests' code:
jupyter/nbgrader#917). In each code cell it replaces every ``### BEGIN HIDDEN
TESTS`` ... ``### END HIDDEN TESTS`` block with one comment, and in each error
output it drops the traceback frames that quote a hidden line. The error's last
line ("AssertionError: alpaca_model: ...") is always kept, so the learner still
reads what is wrong.

`SanitizeStudentContent` is set in the course's autograde and feedback
preprocessors: the markdown a student wrote, and any HTML, SVG, JavaScript or
Markdown output, are cleaned with nbconvert's own sanitizer (bleach) before an
instructor's browser or a feedback file shows them. The locked cells, restored
from the master by nbgrader, are left as they are.

`generate()` renders one student's feedback in a process of its own, with limits
of processor time and memory (``grader.config``): a child forked for that student
alone by the grading process's warm renderer (``grader/renderer.py``, which imported
nbgrader once), so that a render costs well under a second. The markdown a student
hands over is hostile input too (a 330 KB markdown cell can take minutes to render). A notebook
too large or too slow to render gets a short plain feedback that says so, with its
points; the grade stands. Every path goes through it: the batch's workers call it,
and the course config makes `BoundedFeedback` the exporter of nbgrader's
``GenerateFeedback`` (``nbgrader generate_feedback`` and the formgrader's button),
which calls it too. In the child, `FeedbackHTML` renders in-process.

Every feedback page carries a Content-Security-Policy in its head (`FEEDBACK_POLICY`,
in a ``<meta>``, which holds when the file is opened from disk; the formgrader's
server also sends it as a header): no script runs in it at all, so neither does
MathJax, and math shows as its TeX source. The course's notebook has no math; a
student's math is shown as typed.
"""

from __future__ import annotations

import html
import os
import pathlib
import re
import resource
import signal

import jinja2
from nbconvert.exporters import HTMLExporter
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import List

from . import renderer
from .config import SETTINGS
from .course import ASSIGNMENT, HIDDEN_BEGIN, HIDDEN_END, NOTEBOOK, db_url, nbgrader_meta

PLACEHOLDER = "# Hidden tests ran here. Their code is not shown; their messages are below."
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def split_hidden(source: str) -> tuple[str, list[str]]:
    """Return ``(source without hidden blocks, [the hidden lines])``."""
    kept, hidden, inside = [], [], False
    for line in source.splitlines():
        marker = line.strip()
        if marker.startswith(HIDDEN_BEGIN):
            inside = True
            kept.append(line[: len(line) - len(line.lstrip())] + PLACEHOLDER)
        elif marker.startswith(HIDDEN_END):
            inside = False
        elif inside:
            hidden.append(line)
        else:
            kept.append(line)
    return "\n".join(kept), hidden


def significant(lines, public_text: str = "") -> list[str]:
    """Return the hidden lines worth hiding: stripped, not trivial, not also public."""
    found = []
    for line in lines:
        text = line.strip()
        if len(text) < 4 or not re.search(r"[A-Za-z0-9]", text) or text in public_text:
            continue
        found.append(text)
    return found


def clean_traceback(traceback: list[str], hidden: list[str], ename: str, evalue: str) -> list[str]:
    """Drop the traceback entries that quote a hidden line; keep the error line."""
    kept = [
        entry for entry in traceback if not any(line in _ANSI.sub("", entry) for line in hidden)
    ]
    if len(kept) < len(traceback):
        last = f"{ename}: {evalue}" if evalue else ename
        if not kept or ename not in _ANSI.sub("", kept[-1]):
            kept.append(last)
        kept.insert(0, "(Traceback lines that quote hidden tests are not shown.)")
    return kept


class HideHiddenTests(NbGraderPreprocessor):
    """Remove hidden tests, and traceback lines quoting them, from feedback notebooks."""

    # Set by nbconvert's HTML exporter for every preprocessor; configurable, so that
    # nbgrader does not warn that it is "not recognized".
    display_data_priority = List().tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or HIDDEN_BEGIN not in cell.source:
            return cell, resources
        cell.source, hidden_lines = split_hidden(cell.source)
        hidden = significant(hidden_lines, cell.source)
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                output.traceback = clean_traceback(
                    list(output.traceback), hidden, output.ename, output.evalue
                )
            elif output.output_type == "stream":
                output.text = "\n".join(
                    line for line in output.text.split("\n") if not any(h in line for h in hidden)
                )
        return cell, resources


# --------------------------------------------------------------------------------------
# What a student wrote, cleaned before anyone's browser shows it
# --------------------------------------------------------------------------------------

# Output types a browser would run or render as markup; cleaned, or dropped (JavaScript).
MARKUP_OUTPUTS = ("text/html", "image/svg+xml", "text/markdown")
SCRIPT_OUTPUTS = ("application/javascript", "text/javascript")


# A link to a script (markdown's own [text](javascript:...) needs no tag), however spelled.
_SCRIPT_SCHEME = re.compile(
    r"(javascript|vbscript|data)(\s|&#0*9;?|&tab;)*(:|&#0*58;?|&#x0*3a;?|&colon;)", re.I
)


def clean(text: str) -> str:
    """Return ``text`` with every tag, attribute and link a browser could run made inert."""
    from nbconvert.filters import clean_html

    return _SCRIPT_SCHEME.sub(r"blocked-\1-", clean_html(text))


class SanitizeStudentContent(NbGraderPreprocessor):
    """Clean the markdown cells a student may have written and every markup output."""

    # Set by nbconvert's HTML exporter for every preprocessor (see HideHiddenTests).
    display_data_priority = List().tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "markdown" and not nbgrader_meta(cell).get("locked"):
            if "<" in cell.source or _SCRIPT_SCHEME.search(cell.source):
                cell.source = clean(cell.source)
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            for kind in SCRIPT_OUTPUTS:
                data.pop(kind, None)
            for kind in MARKUP_OUTPUTS:
                if kind in data:
                    value = data[kind]
                    text = "".join(value) if isinstance(value, list) else str(value)
                    data[kind] = clean(text)
        for name in list(cell.get("attachments", {})):
            for kind in list(cell.attachments[name]):
                if kind in MARKUP_OUTPUTS + SCRIPT_OUTPUTS:
                    del cell.attachments[name][kind]
        return cell, resources


# --------------------------------------------------------------------------------------
# Rendering one student's feedback with a time and a memory limit
# --------------------------------------------------------------------------------------

# No script, plugin, frame, form or remote resource; the page's own styles and the
# outputs' images (data: URLs) only. The same policy as a <meta> in every feedback
# file and as a header where the formgrader's server sends one (grader/formgrader.py).
FEEDBACK_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'none'",
        "style-src 'unsafe-inline'",
        "img-src data:",
        "font-src data:",
        "base-uri 'none'",
        "form-action 'none'",
    ]
)
TEMPLATES = pathlib.Path(__file__).resolve().with_name("templates")


def nbgrader_templates() -> str:
    """nbgrader's own templates folder (its ``feedback`` and ``formgrade`` templates)."""
    import nbgrader.server_extensions.formgrader.handlers as handlers

    return handlers.template_path


class FeedbackHTML(HTMLExporter):
    """nbgrader's feedback page with `FEEDBACK_POLICY` in its head, rendered in this process.

    Its template (``grader/templates/feedback_csp``) is nbgrader's ``feedback``, whose
    ``mathjax()`` call, in the head before any cell, puts the policy's ``<meta>`` there
    instead of loading MathJax. Only the child process of `generate()` uses it.
    """

    def __init__(self, **kwargs):
        # Given here, they win over the config: nbgrader's GenerateFeedback sets both for
        # every HTMLExporter.
        kwargs["extra_template_basedirs"] = [str(TEMPLATES), nbgrader_templates()]
        kwargs["template_name"] = "feedback_csp"
        super().__init__(**kwargs)

    def _create_environment(self):
        environment = super()._create_environment()
        environment.globals["feedback_policy"] = FEEDBACK_POLICY
        environment.bytecode_cache = COMPILED_TEMPLATES
        return environment


class CompiledTemplates(jinja2.BytecodeCache):
    """Templates compiled once per process, kept in memory, by template and source digest.

    Each render makes a new exporter, whose Jinja environment would compile the feedback
    templates (nbconvert's and nbgrader's, files of the installation) again; the renderer
    compiles them in `preload()`, before it forks, and each child starts with them.
    """

    def __init__(self):
        self.compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket) -> None:
        if bucket.key in self.compiled:
            bucket.bytecode_from_string(self.compiled[bucket.key])  # Jinja checks the digest

    def dump_bytecode(self, bucket) -> None:
        self.compiled[bucket.key] = bucket.bytecode_to_string()


COMPILED_TEMPLATES = CompiledTemplates()


class BoundedFeedback(FeedbackHTML):
    """The exporter of nbgrader's GenerateFeedback in the course config: renders with limits.

    nbgrader hands it one autograded notebook; it renders the student's feedback with
    `generate()` (a child process with a time and a memory limit) and returns that page,
    or the plain one, for nbgrader to write. Nothing a student wrote is processed here.
    """

    def from_filename(self, filename, resources=None, **kw):
        info = (resources or {}).get("nbgrader", {})
        student = info.get("student")
        if not student or info.get("assignment") != ASSIGNMENT:
            raise ValueError(f"not a feedback of this course: {filename}")
        folder = getattr(getattr(self.parent, "coursedir", None), "root", None) or os.getcwd()
        points, comments = scores(info.get("db_url") or db_url(folder), student)
        page, short = generate(folder, student, points, comments)
        if short:
            self.log.warning("Feedback of %s is the plain page: %s", student, short)
        resources = self._init_resources(resources)
        resources["output_extension"] = self.file_extension
        return page, resources


def scores(url: str, student: str) -> tuple[dict, dict]:
    """``({test cell: points}, {cell: automatic comment})`` of ``student`` in the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(url) as gradebook:
        notebook = gradebook.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student)
        points = {g.name: float(g.score or 0) for g in notebook.grades}
        comments = {c.name: c.auto_comment for c in notebook.comments if c.auto_comment}
    return points, comments


def generate(folder, student: str, points: dict, comments: dict) -> tuple[str, str | None]:
    """Render ``student``'s feedback from the autograded notebook in the course ``folder``.

    Returns ``(html, None)``, or ``(plain html, why)`` when the notebook is too large
    or its rendering runs out of time or memory.
    """
    folder = pathlib.Path(folder)
    notebook = folder / "autograded" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    target = folder / "feedback" / student / ASSIGNMENT / f"{NOTEBOOK}.html"
    size = notebook.stat().st_size if notebook.is_file() else 0
    if size > SETTINGS.feedback_max_notebook_mb * 2**20:
        why = f"the notebook is larger than {SETTINGS.feedback_max_notebook_mb} MB"
        return plain_feedback(student, points, comments, why), why
    try:
        returncode, text = renderer.shared().render(
            folder.resolve(),
            student,
            seconds=SETTINGS.feedback_timeout,
            cpu_seconds=SETTINGS.feedback_cpu_seconds,
            memory_mb=SETTINGS.feedback_memory_mb,
        )
    except renderer.RendererGone as error:
        why = f"it could not be rendered ({error})"
        return plain_feedback(student, points, comments, why), why
    if returncode is None:
        why = f"rendering it took longer than {SETTINGS.feedback_timeout:g} s"
        return plain_feedback(student, points, comments, why), why
    if returncode == 0 and target.is_file():
        return target.read_text(encoding="utf-8"), None
    if returncode == -signal.SIGXCPU:  # the processor-time limit (render_limited())
        why = f"rendering it took longer than {SETTINGS.feedback_cpu_seconds} s of processor time"
    elif "MemoryError" in text or returncode < 0:
        why = f"rendering it needed more than {SETTINGS.feedback_memory_mb} MB"
    else:
        why = f"it could not be rendered ({(text.strip().splitlines() or ['no output'])[-1][:200]})"
    return plain_feedback(student, points, comments, why), why


def plain_feedback(student: str, points: dict, comments: dict, why: str) -> str:
    """A short feedback page of plain text: the points of each test cell and why it is short."""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{score:g}</td>"
        f"<td><pre>{html.escape(comments.get(name, '') or '')}</pre></td></tr>"
        for name, score in points.items()
    )
    total = sum(points.values())
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(FEEDBACK_POLICY, quote=False)}">'
        f"<title>Feedback: {html.escape(ASSIGNMENT)}</title></head><body>"
        f"<h1>Feedback: {html.escape(ASSIGNMENT)} ({html.escape(student)})</h1>"
        f"<p>Your notebook is not shown here: {html.escape(why)}. Your grade stands: "
        f"<b>{total:g}</b> points.</p>"
        f"<table><tr><th>test cell</th><th>points</th><th>comment</th></tr>{rows}</table>"
        "</body></html>\n"
    )


def _render(folder: str, student: str) -> None:
    """Run nbgrader's GenerateFeedback for one student of the course in ``folder``."""
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=folder).load_config()
    config.CourseDirectory.root = folder
    coursedir = CourseDirectory(config=config)
    coursedir.assignment_id = ASSIGNMENT
    coursedir.student_id = student
    # Rendered here, in this limited process: not BoundedFeedback, which would start another.
    config.GenerateFeedback.exporter_class = FeedbackHTML
    converter = GenerateFeedback(coursedir=coursedir, config=config)
    converter.force = True
    os.chdir(folder)
    converter.start()


def preload() -> None:
    """Import, and warm, what rendering needs (the renderer does, once, before it forks).

    Besides the imports, each render would also import the gradebook's SQLite dialect,
    pygments' lexers and mistune's plugins, and compile their patterns and the feedback
    templates, again in every child. Here they are used once, on text written here (never
    a student's), so that the children inherit them ready.
    """
    import nbformat
    import sqlalchemy.dialects.sqlite  # noqa: F401 -- the gradebook
    from bs4 import BeautifulSoup
    from nbconvert.filters.highlight import Highlight2HTML
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory

    from . import feedback_folder  # noqa: F401

    # The feedback templates, compiled into COMPILED_TEMPLATES by an exporter made as
    # GenerateFeedback.start() makes it (GenerateFeedback's config says where its templates
    # are, its bootstrap CSS among them), on a notebook written here.
    converter = GenerateFeedback(coursedir=CourseDirectory())
    FeedbackHTML(parent=converter, config=converter.config).from_notebook_node(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]),
        resources={
            "nbgrader": {"notebook": NOTEBOOK, "score": 0, "max_score": 0, "late_penalty": 0}
        },
    )
    Highlight2HTML(pygments_lexer="ipython3")("import numpy as np\nx = np.ones(3)  # a\n")
    BeautifulSoup(
        markdown2html_mistune("# A\n\n*b* `c` [d](e.html)\n\n- [ ] f\n\n| g |\n|---|\n| h |\n"),
        features="html.parser",
    ).select("img:not([alt])")


def render_limited(folder: str, student: str, cpu_seconds: int, memory_mb: int) -> None:
    """Render one student's feedback under these limits (in a child of the renderer)."""
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # SIGXCPU at the limit ends the process (SIGKILL 5 s later, were it ignored).
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    _render(folder, student)
