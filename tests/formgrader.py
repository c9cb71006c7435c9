"""nbgrader's formgrader, started exactly as the README says, and Debian's Chromium to drive it.

    with Formgrader(course) as server:          # `jupyter server` in the course folder
        with chromium() as page:
            page.goto(server.url("/formgrader"))  # the token in the link, as printed

The command is the README's line (section "The formgrader"), run by the shell in the
course folder with the port filled in; the token is read from what the server prints,
as an instructor reads it. Used by the formgrader's browser test, by the tests of
what a submission can put in front of an instructor (hostile HTML and markdown), and
(``chromium``, ``free_port``, ``wait_until_answers``) by the learner's JupyterLab test.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = pathlib.Path("/usr/bin/chromium")
# As root on these machines Chromium needs --no-sandbox, and without the networking
# flags it keeps trying to reach Google's hosts through the closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_TIMEOUT = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answers(server: subprocess.Popen, url: str, log: pathlib.Path, what: str) -> None:
    """Wait until ``url`` answers 200; fail with ``log`` when ``server`` exits or is too slow."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if server.poll() is not None:
            pytest.fail(f"{what} exited ({server.returncode}):\n{log.read_text()}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not answer in {STARTUP_TIMEOUT} s:\n{log.read_text()}")
        time.sleep(0.5)


def readme_command() -> str:
    """The README's command that starts the formgrader (run in the course folder)."""
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if "jupyter server" in line and "--port" in line:
            return line.split("  #", 1)[0].strip()
    raise AssertionError("the README has no `jupyter server ... --port` command")


class Formgrader:
    """A `jupyter server` with nbgrader's formgrader, in ``course``, as the README starts it."""

    def __init__(self, course: pathlib.Path, log: pathlib.Path, env: dict | None = None):
        self.course = pathlib.Path(course)
        self.log_path = pathlib.Path(log)
        self.env = dict(os.environ if env is None else env)
        self.port = free_port()
        self.process = None
        self.token = None

    def __enter__(self) -> Formgrader:
        command = readme_command().replace("8888", str(self.port))
        # The README's `../.venv/bin/jupyter` is relative to course/ inside this repository.
        command = command.replace("../.venv/bin/", f"{ROOT}/.venv/bin/")
        if os.geteuid() != 0:
            command = command.replace(" --allow-root", "")
        self._log = open(self.log_path, "w")  # noqa: SIM115 -- closed in __exit__
        self.process = subprocess.Popen(
            command,
            shell=True,
            cwd=self.course,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while self.token is None:
            if self.process.poll() is not None:
                pytest.fail(f"the formgrader's server exited:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the formgrader's server printed no link in time:\n{self.log()}")
            found = re.search(rf"http://127\.0\.0\.1:{self.port}/\S*\?token=(\w+)", self.log())
            if found:
                self.token = found.group(1)
            time.sleep(0.3)
        with contextlib.suppress(OSError):
            urllib.request.urlopen(self.url("/api/status"), timeout=30).close()
        return self

    def login(self, page) -> None:
        """Log ``page`` in as an instructor does: open the link the server printed.

        The link with the token sets the login cookie that the formgrader's own
        requests (its API) need; a token on a formgrader page's address alone does not.
        """
        page.goto(self.url("/tree"))
        page.wait_for_load_state()

    def url(self, path: str) -> str:
        """The address of ``path`` on this server, with the token as a query parameter."""
        joiner = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}{path}{joiner}token={self.token}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


@contextlib.contextmanager
def chromium(profile: pathlib.Path, timeout_seconds: float = 300):
    """A page of Debian's Chromium (a fresh --user-data-dir), driven by Playwright."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium. Install it "
            "with `sudo apt-get install chromium` (as root, `make test` installs it)."
        )
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        context.set_default_timeout(timeout_seconds * 1000)
        try:
            yield context.new_page()
        finally:
            context.close()
