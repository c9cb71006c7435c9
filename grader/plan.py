"""What grading runs: the notebook's set-up and answer cells, and each test cell's calls.

Grading never runs a test cell's code. A test cell holds calls of the public
tests, visible ones and hidden ones:

    public_tests.alpaca_model_test(alpaca_model)
    ### BEGIN HIDDEN TESTS
    public_tests.alpaca_model_test(alpaca_model, image_shape=(128, 128))
    ### END HIDDEN TESTS

`test_calls()` reads them as data: the test's name, the learner's function it
tests, and literal keyword arguments. Any other statement in a test cell is an
error of the course, reported at once. `steps()` turns a notebook into the list of
what the student's sandbox runs, in notebook order, so that a crash keeps the
points of the exercises before it.
"""

from __future__ import annotations

import ast
import dataclasses

from .course import HIDDEN_BEGIN, HIDDEN_END, SETUP_CELLS, nbgrader_meta

TESTS_MODULE = "public_tests"


@dataclasses.dataclass(frozen=True)
class TestCall:
    test: str  # a public test, e.g. "alpaca_model_test"
    target: str  # the learner's function it is given, e.g. "alpaca_model"
    kwargs: dict  # literal keyword arguments (the hidden inputs, for a hidden call)
    hidden: bool

    __test__ = False  # not a pytest test class

    def as_data(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Step:
    grade_id: str
    source: str | None  # the code to run (set-up and answer cells); None for a test cell
    calls: tuple[TestCall, ...] = ()  # the calls of a test cell

    @property
    def is_test(self) -> bool:
        return self.source is None


def _split_hidden(source: str) -> tuple[str, str]:
    visible, hidden, inside = [], [], False
    for line in source.splitlines():
        marker = line.strip()
        if marker.startswith(HIDDEN_BEGIN):
            inside = True
        elif marker.startswith(HIDDEN_END):
            inside = False
        else:
            (hidden if inside else visible).append(line)
    return "\n".join(visible), "\n".join(hidden)


def _call(statement: ast.stmt, hidden: bool) -> TestCall:
    call = statement.value if isinstance(statement, ast.Expr) else None
    if (
        not isinstance(call, ast.Call)
        or not isinstance(call.func, ast.Attribute)
        or not isinstance(call.func.value, ast.Name)
        or call.func.value.id != TESTS_MODULE
        or len(call.args) != 1
        or not isinstance(call.args[0], ast.Name)
        or any(keyword.arg is None for keyword in call.keywords)
    ):
        raise ValueError(
            f"a test cell may only call public tests, as "
            f"`{TESTS_MODULE}.<test>(<function>, name=literal, ...)`; found: "
            f"{ast.unparse(statement)}"
        )
    kwargs = {}
    for keyword in call.keywords:
        try:
            kwargs[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            raise ValueError(
                f"the argument {keyword.arg}= of a test call must be a literal "
                f"(numbers, strings, tuples, lists, dicts); found: {ast.unparse(keyword.value)}"
            ) from None
    return TestCall(call.func.attr, call.args[0].id, kwargs, hidden)


def test_calls(source: str) -> list[TestCall]:
    """Return the calls of a test cell: the visible ones, then the hidden ones."""
    visible, hidden = _split_hidden(source)
    calls = [_call(s, False) for s in ast.parse(visible).body]
    calls += [_call(s, True) for s in ast.parse(hidden).body]
    if not calls:
        raise ValueError("a test cell calls no public test")
    return calls


OWN_CELL = "your-cell-"  # the grade_id of a student's own cell: "your-cell-7" (1-based)


def own_cell_number(name: str) -> int | None:
    """The position (1-based) in the notebook of a student's own cell step, or None."""
    if name.startswith(OWN_CELL) and name[len(OWN_CELL) :].isdigit():
        return int(name[len(OWN_CELL) :])
    return None


def own_cells(master, submission) -> dict[str | None, list[tuple[int, str]]]:
    """The code cells the student added or changed, grouped by the graded cell they precede.

    Returns ``{grade_id of the next cell with a grade_id (None after the last):
    [(position in the notebook, 1-based, source)]}``. A cell with the same code as one
    of the course's own cells without a grade_id (the lesson's display and training
    cells) is the course's, not the student's, and is left out; so are empty cells.
    """
    known = {nbgrader_meta(c).get("grade_id") for c in master.cells} - {None}
    course = {
        c.source.strip()
        for c in master.cells
        if c.cell_type == "code" and not nbgrader_meta(c).get("grade_id")
    }
    grouped: dict[str | None, list[tuple[int, str]]] = {}
    pending: list[tuple[int, str]] = []
    for position, cell in enumerate(submission.cells, start=1):
        if cell.cell_type != "code":
            continue
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id in known:
            if pending:
                grouped.setdefault(grade_id, []).extend(pending)
                pending = []
        elif cell.source.strip() and cell.source.strip() not in course:
            pending.append((position, cell.source))
    if pending:
        grouped[None] = pending
    return grouped


def steps(master, submission=None) -> list[Step]:
    """Return what grading runs: set-up, answer, test cells, and the student's own cells.

    The set-up and test cells come from ``master``: a learner who edits or deletes
    them changes nothing. The answer cells come from ``submission`` (by grade_id;
    a deleted one is left out) or, without it, from ``master`` itself. The cells the
    student added or changed (`own_cells`) run where they are in the notebook: just
    before the graded cell that follows them, as in the learner's own kernel. The
    course's unchanged display and training cells are not run, nor cells after the
    last graded cell (nothing is graded after them).
    """
    answers = {}
    for cell in (submission or master).cells:
        meta = nbgrader_meta(cell)
        if cell.cell_type == "code" and meta.get("solution") and meta.get("grade_id"):
            answers.setdefault(meta["grade_id"], cell.source)
    before = own_cells(master, submission) if submission is not None else {}
    found = []
    for cell in master.cells:
        meta = nbgrader_meta(cell)
        if cell.cell_type != "code" or not meta.get("grade_id"):
            continue
        grade_id = meta["grade_id"]
        found.extend(Step(f"{OWN_CELL}{n}", source) for n, source in before.get(grade_id, []))
        if meta.get("grade") and not meta.get("solution"):
            found.append(Step(grade_id, None, tuple(test_calls(cell.source))))
        elif meta.get("solution"):
            if grade_id in answers:
                found.append(Step(grade_id, answers[grade_id]))
        elif grade_id in SETUP_CELLS:
            found.append(Step(grade_id, cell.source))
    return found
