"""Generate every notebook of the project from the one hand-edited master script.

    course/source/<A>/<A>.py      the master: jupytext percent script, edited by hand
      -> course/source/<A>/<A>.ipynb   the master notebook nbgrader reads (generated)
      -> course/release/<A>/           nbgrader generate_assignment (not committed)
      -> <A>.ipynb at the top level    the learner notebook (generated)

Usage:
    python -m tools.build           regenerate the committed notebooks
    python -m tools.build --check   regenerate in a temporary folder and fail if the
                                    committed notebooks or the release file list differ

Both modes also refresh the symlinks that put the learner files into the nbgrader
source folder (nbgrader copies every file there into the release).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import jupytext
import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
ASSIGNMENT = "Transfer_learning_with_MobileNet"
COURSE = ROOT / "course"
SOURCE = COURSE / "source" / ASSIGNMENT
MASTER_SCRIPT = SOURCE / f"{ASSIGNMENT}.py"
MASTER_NOTEBOOK = SOURCE / f"{ASSIGNMENT}.ipynb"
LEARNER_NOTEBOOK = ROOT / f"{ASSIGNMENT}.ipynb"

# Files that the learner gets besides the notebook, as named in the release. Each is
# the file of the same path at the top level of the repository, except those in
# RENAMED. Everything in images/ is added to these.
LEARNER_FILES = [
    "utils.py",
    "trainable_training.py",
    "test_utils.py",
    "public_tests.py",
    "requirements.txt",
    "README.md",
    "dataset/README.md",
    "docs/trainable-vs-training.md",
]
# The learner's README is LEARNER_README.md in the repository, whose own README.md
# is for instructors and developers.
RENAMED = {"README.md": "LEARNER_README.md"}


def learner_files() -> list[str]:
    """Return the learner files (relative paths), the notebook excluded."""
    images = sorted(
        f"images/{p.name}" for p in (ROOT / "images").iterdir() if p.is_file() and p.suffix != ".md"
    )
    return LEARNER_FILES + images


def repository_path(relative: str) -> pathlib.Path:
    """Return the file of the repository that the release holds as ``relative``."""
    return ROOT / RENAMED.get(relative, relative)


def expected_release() -> list[str]:
    return sorted([f"{ASSIGNMENT}.ipynb", *learner_files()])


def link_learner_files(source: pathlib.Path = SOURCE) -> None:
    """Make ``source`` hold one relative symlink per learner file, and no stale ones."""
    wanted = set(learner_files())
    for path in source.rglob("*"):
        relative = path.relative_to(source).as_posix()
        if path.is_symlink() and relative not in wanted:
            path.unlink()
    for relative in wanted:
        link = source / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(repository_path(relative), link.parent)
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(target)


def normalise(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip outputs and jupytext metadata, and give cells stable ids."""
    notebook.metadata.pop("jupytext", None)
    notebook.metadata.pop("language_info", None)
    used = set()
    for index, cell in enumerate(notebook.cells):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        cell_id = grade_id if grade_id and grade_id not in used else f"cell-{index}"
        used.add(cell_id)
        cell["id"] = cell_id
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    return notebook


def copy_course(dest: pathlib.Path) -> pathlib.Path:
    """Copy the nbgrader course into ``dest`` (learner files as real files); return dest.

    The configs are linked, not copied: they import the grader package beside course/.
    """
    shutil.copytree(
        COURSE / "source",
        dest / "source",
        symlinks=False,
        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
    )
    for config in ("nbgrader_config.py", "jupyter_server_config.py"):
        (dest / config).symlink_to(COURSE / config)
    return dest


def master_notebook() -> nbformat.NotebookNode:
    notebook = jupytext.read(MASTER_SCRIPT, fmt="py:percent")
    notebook.nbformat, notebook.nbformat_minor = 4, 5
    return normalise(notebook)


def write(notebook: nbformat.NotebookNode, path: pathlib.Path) -> None:
    nbformat.validate(notebook)
    path.write_text(nbformat.writes(notebook) + "\n", encoding="utf-8")


def generate_release(course: pathlib.Path) -> pathlib.Path:
    """Run nbgrader generate_assignment in ``course`` and return the release folder."""
    env = dict(os.environ)
    env["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = [
        sys.executable,
        "-m",
        "nbgrader",
        "generate_assignment",
        ASSIGNMENT,
        "--force",
        "--no-db",
        "--log-level=WARN",
    ]
    result = subprocess.run(command, cwd=course, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"nbgrader generate_assignment failed:\n{result.stdout}\n{result.stderr}")
    return course / "release" / ASSIGNMENT


def release_files(release: pathlib.Path) -> list[str]:
    return sorted(p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file())


def build(course: pathlib.Path, master: pathlib.Path) -> tuple[str, str, list[str]]:
    """Write the master notebook into ``course`` and return (master, learner, release files)."""
    write(master_notebook(), master)
    release = generate_release(course)
    learner = normalise(nbformat.read(release / f"{ASSIGNMENT}.ipynb", as_version=4))
    write(learner, release / f"{ASSIGNMENT}.ipynb")
    return (
        master.read_text(encoding="utf-8"),
        (release / f"{ASSIGNMENT}.ipynb").read_text(encoding="utf-8"),
        release_files(release),
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if generated files drift")
    args = parser.parse_args(argv)
    link_learner_files()

    if not args.check:
        _, learner, files = build(COURSE, MASTER_NOTEBOOK)
        LEARNER_NOTEBOOK.write_text(learner, encoding="utf-8")
        print(f"Wrote {MASTER_NOTEBOOK.relative_to(ROOT)} and {LEARNER_NOTEBOOK.relative_to(ROOT)}")
        problems = [] if files == expected_release() else [f"release files: {files}"]
    else:
        with tempfile.TemporaryDirectory() as temporary:
            course = copy_course(pathlib.Path(temporary) / "course")
            master, learner, files = build(
                course, course / "source" / ASSIGNMENT / MASTER_NOTEBOOK.name
            )
        problems = []
        for name, fresh, path in (
            ("master", master, MASTER_NOTEBOOK),
            ("learner", learner, LEARNER_NOTEBOOK),
        ):
            committed = path.read_text(encoding="utf-8") if path.exists() else ""
            if fresh != committed:
                problems.append(
                    f"The {name} notebook {path.relative_to(ROOT)} differs from a fresh "
                    f"generation from {MASTER_SCRIPT.relative_to(ROOT)}."
                )
        if files != expected_release():
            problems.append(f"The release holds {files}, expected {expected_release()}.")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print("Edit only the master script, then run `make release` and commit.", file=sys.stderr)
        return 1
    print("Notebooks and release file list are up to date." if args.check else "Release OK.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
