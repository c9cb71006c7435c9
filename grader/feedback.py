"""Feedback without the hidden tests' code (nbgrader shows it: jupyter/nbgrader#917).

`HideHiddenTests` is an nbgrader preprocessor, set in the course's
``c.GenerateFeedback.preprocessors``. In each code cell it replaces every
``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` block with one comment, and
in each error output it drops the traceback frames that quote a hidden line. The
error's last line ("AssertionError: alpaca_model: ...") is always kept, so the
learner still reads what is wrong.
"""

from __future__ import annotations

import re

from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import List

from .course import HIDDEN_BEGIN, HIDDEN_END

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
