"""One source of truth: the learner notebook is generated from the master and holds no solution."""

import ast
import re
import subprocess
import sys
import textwrap

import jupytext
import nbformat
import pytest

from tools import build

NOTEBOOKS = (build.MASTER_NOTEBOOK, build.LEARNER_NOTEBOOK)


def solution_lines(script_text: str) -> list[str]:
    """Return the code lines found only between the solution and hidden-test markers."""
    lines, given, inside = [], set(), False
    for line in script_text.splitlines():
        stripped = line.strip()
        if stripped in ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS"):
            inside = True
        elif stripped in ("### END SOLUTION", "### END HIDDEN TESTS"):
            inside = False
        elif inside and stripped and not stripped.startswith("#") and len(stripped) > 3:
            lines.append(stripped)
        elif not inside:
            given.add(stripped)
    # Lines such as `metrics=["accuracy"],` also stand in the given code: not secrets.
    return [line for line in lines if line not in given]


def test_generated_notebooks_do_not_drift():
    """Do the committed notebooks equal a fresh generation from the master script?"""
    result = subprocess.run(
        [sys.executable, "-m", "tools.build", "--check"],
        capture_output=True,
        text=True,
        cwd=build.ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_learner_notebook_has_no_solution():
    """Is no line of solution or hidden-test code left in the learner notebook's code cells?"""
    script = build.MASTER_SCRIPT.read_text(encoding="utf-8")
    secret = solution_lines(script)
    assert len(secret) > 20, "the master lost its solution markers"
    learner = nbformat.read(build.LEARNER_NOTEBOOK, as_version=4)
    code = "\n".join(c.source for c in learner.cells if c.cell_type == "code")
    code_lines = {line.strip() for line in code.splitlines()}
    leaked = [line for line in secret if line in code_lines]
    assert not leaked, f"solution lines in the learner notebook: {leaked}"
    assert "BEGIN SOLUTION" not in code and "HIDDEN TESTS" not in code
    assert code.count("raise NotImplementedError()") == 3


def test_every_exercise_ends_with_its_test_cell():
    """Is each exercise cell followed by its graded public test cell?"""
    learner = nbformat.read(build.LEARNER_NOTEBOOK, as_version=4)
    code_cells = [c for c in learner.cells if c.cell_type == "code"]
    for exercise in ("data_augmenter", "alpaca_model", "fine_tune"):
        index = next(
            i
            for i, c in enumerate(code_cells)
            if c.metadata.get("nbgrader", {}).get("grade_id") == exercise
        )
        following = code_cells[index + 1]
        assert following.metadata["nbgrader"]["grade"] is True
        assert re.search(rf"public_tests\.{exercise}_test\({exercise}\)", following.source)


def test_notebooks_are_committed_clean():
    """Are the notebooks free of outputs, with one kernelspec and stable cell ids?"""
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata.kernelspec.name == "python3"
        assert "jupytext" not in notebook.metadata
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path


def test_master_script_round_trips():
    """Does jupytext read the master's nbgrader metadata exactly as written in the script?"""
    notebook = jupytext.read(build.MASTER_SCRIPT)
    headers = re.findall(r"^# %% nbgrader=(\{.*\})$", build.MASTER_SCRIPT.read_text(), re.M)
    graded = [c.metadata["nbgrader"] for c in notebook.cells if "nbgrader" in c.metadata]
    assert len(graded) == len(headers) > 0
    points = {m["grade_id"]: m.get("points") for m in graded if m["grade"]}
    assert sum(points.values()) == 13, points


# --------------------------------------------------------------------------
# The release is for learners only
# --------------------------------------------------------------------------


def hidden_blocks() -> list[str]:
    """Return the code between each `### BEGIN HIDDEN TESTS` / `### END HIDDEN TESTS` of the master."""
    blocks = re.findall(
        r"^[ \t]*### BEGIN HIDDEN TESTS[ \t]*\n(.*?)^[ \t]*### END HIDDEN TESTS",
        build.MASTER_SCRIPT.read_text(encoding="utf-8"),
        re.M | re.S,
    )
    assert blocks, "the master lost its hidden tests"
    return [textwrap.dedent(block) for block in blocks]


def visible_master_text() -> str:
    """Return the master script without its hidden blocks: what learners may legitimately see."""
    return re.sub(
        r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS",
        "",
        build.MASTER_SCRIPT.read_text(encoding="utf-8"),
        flags=re.S,
    )


def hidden_inputs() -> dict[str, re.Pattern]:
    """Return ``{description: pattern}`` for every input the hidden tests pass to a call.

    Read from the master's hidden blocks, whatever form the calls take: tuples of
    numbers (image sizes), numbers given by keyword (`fine_tune_at=100`), strings and
    class names (`"RandomContrast"`, `tfl.RandomContrast`) that the visible master
    never uses.
    """
    visible = set(re.findall(r"\w+", visible_master_text()))
    found: dict[str, re.Pattern] = {}

    def number(value) -> str:
        return rf"(?<![\w.]){re.escape(repr(value))}(?![\w]|\.\d)"

    def collect(node, keyword=None):
        if isinstance(node, ast.Tuple) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, int | float) for e in node.elts
        ):
            numbers = [e.value for e in node.elts]
            if len(numbers) == 2:  # an image size: (96, 128), 96x128, 96 x 128
                a, b = (re.escape(repr(n)) for n in numbers)
                found[f"size {tuple(numbers)}"] = re.compile(rf"(?<!\d){a}\s*(?:,|x|×)\s*{b}(?!\d)")
            return
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str) and node.value not in visible:
                found[repr(node.value)] = re.compile(rf"\b{re.escape(node.value)}\b")
            elif (
                isinstance(node.value, int | float) and not isinstance(node.value, bool) and keyword
            ):
                # The keyword near its value: "fine_tune_at=100", "`fine_tune_at` (100)".
                name = r"[_ ]".join(re.escape(part) for part in keyword.split("_"))
                found[f"{keyword}={node.value!r}"] = re.compile(
                    rf"{name}\W{{0,12}}{number(node.value)}", re.I
                )
            return
        if isinstance(node, ast.Dict):  # {"factor": 0.1}: each value under its key
            for key, value in zip(node.keys, node.values):
                name = key.value if isinstance(key, ast.Constant) else None
                collect(value, name if isinstance(name, str) else keyword)
            return
        if isinstance(node, ast.Attribute) and node.attr[:1].isupper() and node.attr not in visible:
            found[node.attr] = re.compile(rf"\b{re.escape(node.attr)}\b")
        for field, child in ast.iter_fields(node):
            children = child if isinstance(child, list) else [child]
            for item in children:
                if isinstance(item, ast.keyword):
                    collect(item.value, item.arg)
                elif isinstance(item, ast.AST):
                    collect(item, keyword if field != "func" else None)

    for block in hidden_blocks():
        for call in (n for n in ast.walk(ast.parse(block)) if isinstance(n, ast.Call)):
            for argument in call.args:
                collect(argument)
            for keyword in call.keywords:
                collect(keyword.value, keyword.arg)
    return found


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Return ``{relative path: text}`` of every file of a fresh release."""
    course = build.copy_course(tmp_path_factory.mktemp("course") / "course")
    build.build(course, course / "source" / build.ASSIGNMENT / build.MASTER_NOTEBOOK.name)
    folder = course / "release" / build.ASSIGNMENT
    return {
        path.relative_to(folder).as_posix(): path.read_text(encoding="utf-8", errors="replace")
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix != ".png"
    }


def test_hidden_inputs_are_read_from_the_master():
    """Does the release test find the hidden tests' inputs (sizes, keyword values, layers)?"""
    inputs = hidden_inputs()
    assert any(key.startswith("size") for key in inputs), inputs
    assert any("=" in key for key in inputs), inputs
    assert len(inputs) >= 4, inputs


def test_no_released_file_mentions_a_hidden_input(release):
    """Does every released file keep quiet about the inputs of the hidden tests?"""
    leaks = [
        f"{name}: {description} ({pattern.search(text).group(0)!r})"
        for name, text in release.items()
        for description, pattern in hidden_inputs().items()
        if pattern.search(text)
    ]
    assert not leaks, leaks


def test_no_released_file_holds_instructor_documentation(release):
    """Is the released README the learner's, with no section of the instructors' README?"""
    assert release["README.md"] == (build.ROOT / "LEARNER_README.md").read_text(encoding="utf-8")
    readme = (build.ROOT / "README.md").read_text(encoding="utf-8")
    sections = re.findall(r"^#{2,4} +(.+?)\s*$", readme, re.M)
    assert "For instructors" in sections and "For developers" in sections, sections
    phrases = [*sections, "Known limits", "grader.batch", "formgrader", "gradebook"]
    found = [
        f"{name}: {phrase!r}"
        for name, text in release.items()
        for phrase in phrases
        if phrase.lower() in text.lower()
    ]
    assert not found, found


# --------------------------------------------------------------------------
# What the learner reads is true outside a hosted course too
# --------------------------------------------------------------------------

LEARNER_README = build.ROOT / "LEARNER_README.md"


def learner_markdown() -> str:
    learner = nbformat.read(build.LEARNER_NOTEBOOK, as_version=4)
    return "\n".join(c.source for c in learner.cells if c.cell_type == "markdown")


def test_learner_notebook_tells_nothing_of_grading_inside():
    """Does the learner notebook's text keep quiet about how grading works inside?"""
    text = re.sub(r"\s+", " ", learner_markdown()).lower()
    found = [w for w in ("autograd", "nbgrader", "hidden test", "sandbox", "checker") if w in text]
    assert not found, found


def pinned_requirements() -> dict[str, str]:
    """``{name: version}`` of every `name==version` line of requirements.txt for this platform."""
    from packaging.requirements import Requirement

    pins = {}
    for line in (build.ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            pins[requirement.name] = str(requirement.specifier).removeprefix("==")
    return pins


def test_python_versions_stated_are_those_the_pins_allow():
    """Do the README and requirements.txt name as oldest Python the newest minimum of the pinned packages?"""
    from importlib import metadata

    from packaging.specifiers import SpecifierSet

    minimums = {}
    for name, version in pinned_requirements().items():
        dist = metadata.distribution(name)
        assert dist.version == version, f"{name} {dist.version} installed, {version} pinned"
        requires = SpecifierSet(dist.metadata.get("Requires-Python") or "")
        minimums[name] = next(
            (3, minor) for minor in range(0, 30) if requires.contains(f"3.{minor}.0")
        )
    oldest = max(minimums.values())
    assert oldest == (3, 11), minimums  # numpy 2.4.6, keras 3.15.1, ...: Requires-Python >=3.11
    readme = LEARNER_README.read_text(encoding="utf-8")
    requirements = (build.ROOT / "requirements.txt").read_text(encoding="utf-8")
    stated = re.search(r"With Python (3\.\d+), (3\.\d+) or (3\.\d+)", readme)
    assert stated, "LEARNER_README.md does not say which Python versions to use"
    assert stated.group(1) == f"3.{oldest[1]}", stated.group(0)
    assert f"(Python {stated.group(1)} to {stated.group(3)})" in requirements
    here = f"3.{sys.version_info.minor}"
    assert here in stated.groups(), f"the tested Python {here} is not among {stated.groups()}"


def test_weights_come_from_where_keras_downloads_them():
    """Are the official file names and addresses those of Keras's own MobileNetV2 code?"""
    from keras.src.applications import imagenet_utils, mobilenet_v2

    import utils

    assert utils.KERAS_WEIGHTS_URL == mobilenet_v2.BASE_WEIGHT_PATH
    assert utils.KERAS_CLASS_INDEX_URL == imagenet_utils.CLASS_INDEX_PATH
    rows = utils.IMG_SIZE[0]
    assert utils.WEIGHT_FILES[False][1] == (
        f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{1.0}_{rows}_no_top.h5"
    )
    assert utils.WEIGHT_FILES[True][1] == (
        f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{1.0}_{rows}.h5"
    )


def test_learner_readme_says_where_weights_and_photos_come_from():
    """Does the learner's README name the official weight files, their address, where to put them offline, and what needs photos?"""
    import utils

    text = re.sub(r"\s+", " ", LEARNER_README.read_text(encoding="utf-8"))
    for needed in (
        utils.WEIGHT_FILES[False][1],
        utils.WEIGHT_FILES[True][1],
        utils.CLASS_INDEX_FILE,
        utils.KERAS_WEIGHTS_URL,
        utils.KERAS_CLASS_INDEX_URL,
        "~/.keras/models/",
        "imagenet_base_model/",
        utils.WEIGHTS_ENV,
        utils.DATASET_ENV,
        "The first cell, the three exercises and their test cells run without them",
        "Any folder that holds exactly two folders of photos works",
    ):
        assert needed in text, needed


def test_weights_error_says_where_they_come_from(tmp_path, monkeypatch):
    """Does the error for missing weights name the official file, its address and where to put it?"""
    import utils

    monkeypatch.setenv(utils.WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(utils.WeightsError) as error:
        utils.mobilenet_weights()
    message = str(error.value)
    official = utils.WEIGHT_FILES[False][1]
    assert f"{utils.KERAS_WEIGHTS_URL}{official}" in message, message
    assert "imagenet_base_model" in message and utils.WEIGHTS_ENV in message, message
    with pytest.raises(utils.WeightsError) as error:
        utils.imagenet_class_index()
    assert utils.KERAS_CLASS_INDEX_URL in str(error.value)


def test_dataset_error_says_what_needs_photos(tmp_path):
    """Does the error for missing photos say that any two classes work and what runs without them?"""
    import utils

    with pytest.raises(utils.DatasetError) as error:
        utils.check_dataset(tmp_path / "nowhere")
    message = str(error.value)
    assert "two folders of photos of any two classes" in message, message
    assert "the exercises and their test cells run without" in message, message
