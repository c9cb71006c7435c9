"""The learner's path, in a real JupyterLab driven through Debian's Chromium.

JupyterLab runs from this environment on 127.0.0.1, in a fresh copy of the
learner release, with the data and weights variables set and no token.
Playwright for Python drives /usr/bin/chromium (never a browser of its own): the
test opens the notebook, runs the set-up cell, runs Exercise 1's test cell on the
stub, types an answer into the editor, and reads the test cell's verdict in the
page. It saves screenshots in build/browser/ for a person to look at: the stub's
failure, the answer passing, and the page as the test left it.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import time

import nbformat
import pytest
from formgrader import chromium, free_port, wait_until_answers

from tools import build

SCREENSHOTS = build.ROOT / "build" / "browser"
NOTEBOOK = f"{build.ASSIGNMENT}.ipynb"
# Seconds a cell may take: generous, for 2 busy cores (importing TensorFlow alone: about 5 s).
CELL_TIMEOUT = 240

# Exercise 1 answered as a learner might: not the master's solution, but correct.
ANSWER = '''def data_augmenter():
    """Flip left-right, then rotate by up to 20% of a turn."""
    return tf.keras.Sequential([tfl.RandomFlip("horizontal"), tfl.RandomRotation(0.2)])
'''
SERVER_CONFIG = """\
from jupyterlab.galata import configure_jupyter_server

configure_jupyter_server(c)  # no token, no password, no XSRF check: for tests only
c.ServerApp.ip = "127.0.0.1"
c.ServerApp.port = {port}
c.ServerApp.root_dir = {root!r}
c.ServerApp.allow_root = {allow_root}
c.LabApp.news_url = None
"""
# JupyterLab settings: render every cell, not only those in view, so that the test
# finds each cell in the page; do not offer to fetch news.
SETTINGS = {
    "notebook-extension/tracker": '{"windowingMode": "none"}',
    "apputils-extension/notification": '{"fetchNews": "false"}',
}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A fresh learner release: the files nbgrader generates from the master."""
    course = build.copy_course(tmp_path_factory.mktemp("course") / "course")
    build.write(build.master_notebook(), course / "source" / build.ASSIGNMENT / NOTEBOOK)
    folder = build.generate_release(course)
    return folder


@pytest.fixture(scope="module")
def jupyterlab(release, tmp_path_factory, dataset_dir, weights_dir):
    """Start JupyterLab on the release; yield its URL; stop it."""
    home = tmp_path_factory.mktemp("jupyter")
    port = free_port()
    (home / "config").mkdir()
    (home / "tmp").mkdir()
    (home / "config" / "jupyter_server_config.py").write_text(
        SERVER_CONFIG.format(port=port, root=str(release), allow_root=os.geteuid() == 0)
    )
    for name, text in SETTINGS.items():
        path = home / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    env = dict(
        os.environ,
        ALPACA_DATASET=str(dataset_dir),
        ALPACA_WEIGHTS_DIR=str(weights_dir),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        IPYTHONDIR=str(home / "ipython"),
        # configure_jupyter_server() makes temporary folders: keep them in pytest's.
        TMPDIR=str(home / "tmp"),
        JUPYTERLAB_GALATA_ROOT_DIR=str(release),
        PATH=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    # The learner's kernel starts as it would on their machine, with TensorFlow's logs on.
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    log = home / "jupyterlab.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser"],
            cwd=release,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(server, f"{url}/api/status", log, "JupyterLab")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def page(jupyterlab, tmp_path_factory):
    """A page of Debian's Chromium, driven by Playwright."""
    with chromium(tmp_path_factory.mktemp("chromium-profile"), CELL_TIMEOUT) as page:
        try:
            yield page
        finally:
            # The page as the test left it, passed or failed, for a person to look at.
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "last_page.png"))


def cell_index(release, grade_id: str) -> int:
    notebook = nbformat.read(release / NOTEBOOK, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return index
    raise KeyError(grade_id)


def wait_for_idle_kernel(page):
    """Wait until the status bar shows the notebook's kernel started and idle."""
    page.locator("#jp-main-statusbar", has_text="Python 3 (ipykernel) | Idle").wait_for()
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for()


def run_cell(page, cell):
    """Select ``cell`` as a learner does, run it with Ctrl+Enter, wait until it is done."""
    prompt = cell.locator(".jp-InputArea-prompt")
    before = prompt.inner_text()
    prompt.click()
    page.keyboard.press("Escape")  # command mode: Ctrl+Enter runs the selected cell
    page.keyboard.press("Control+Enter")
    # The prompt shows [*] while the cell runs, then [n], a number it did not show before.
    deadline = time.monotonic() + CELL_TIMEOUT
    while not re.fullmatch(r"\[\d+\]:", now := prompt.inner_text().strip()) or now == before:
        if time.monotonic() > deadline:
            raise AssertionError(f"the cell did not finish in {CELL_TIMEOUT} s (prompt {now!r})")
        time.sleep(0.2)
    wait_for_idle_kernel(page)


def output_text(cell) -> str:
    return cell.locator(".jp-OutputArea").inner_text()


@pytest.mark.slow
def test_learner_solves_exercise_1_in_jupyterlab(release, jupyterlab, page):
    """In JupyterLab in Chromium, does a learner see the stub fail, then their answer pass?"""
    page.goto(f"{jupyterlab}/lab/tree/{NOTEBOOK}")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    wait_for_idle_kernel(page)
    cells = page.locator(".jp-Notebook .jp-Cell")

    setup = cells.nth(cell_index(release, "setup"))
    run_cell(page, setup)
    assert "TensorFlow 2." in output_text(setup)
    stderr = setup.locator("[data-mime-type='application/vnd.jupyter.stderr']")
    assert stderr.count() == 0, f"the set-up cell wrote to stderr: {stderr.all_inner_texts()}"

    answer = cells.nth(cell_index(release, "data_augmenter"))
    test = cells.nth(cell_index(release, "data_augmenter_test"))
    run_cell(page, answer)  # the stub, as released
    run_cell(page, test)
    failure = output_text(test)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "exercise_1_stub_fails.png"))
    assert "still raises NotImplementedError" in failure, failure
    lines = [line for line in failure.splitlines() if line.strip()]
    assert len(lines) <= 15, f"the failure takes {len(lines)} lines:\n{failure}"

    # Type the answer into the cell's editor, in place of the stub.
    answer.locator(".cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(ANSWER)
    typed = answer.locator(".cm-content").inner_text()
    assert "tfl.RandomRotation(0.2)" in typed and "NotImplementedError" not in typed, typed
    run_cell(page, answer)
    run_cell(page, test)
    verdict = output_text(test)

    page.screenshot(path=str(SCREENSHOTS / "exercise_1_passes.png"))
    assert "all tests passed" in verdict.lower(), verdict
    assert answer.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
