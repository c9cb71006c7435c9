"""The batch grader on real Dask: a scheduler and workers on 127.0.0.1, faults included.

Two `dask worker` processes, each in its own folder, stand in for two machines. The
same six submissions are graded through `--scheduler` (one worker is killed with
SIGKILL while it grades) and by the embedded LocalCluster; the grades must agree.
"""

from __future__ import annotations

import csv
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest
import sample

from grader import batch

ROOT = pathlib.Path(__file__).resolve().parents[1]
CELL_TIMEOUT = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rows(out: pathlib.Path) -> list[dict]:
    with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def points(out: pathlib.Path) -> dict:
    """{student: (points of each test cell..., total)} from grades.csv."""
    return {
        row["student"]: tuple(v for k, v in row.items() if k not in ("source", "status", "seconds"))
        for row in rows(out)
    }


def submissions_of(course) -> dict:
    solution = sample.solution_notebook(course)
    wrong = sample.replace_in(
        solution, "data_augmenter", 'RandomFlip("horizontal")', 'RandomFlip("vertical")'
    )
    unfrozen_bn = sample.replace_in(solution, "fine_tune", " and not is_batch_norm", "")
    return {
        "ann": solution,
        "bob": sample.release_notebook(course),
        "cy": wrong,
        "dee": unfrozen_bn,
        "eve": solution,
        "fay": wrong,
    }


def readme_command(words: str) -> str:
    """The README's command line that contains ``words`` (its comment cut off)."""
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if words in line:
            return line.split("  #", 1)[0].strip()
    raise AssertionError(f"the README has no command with {words!r}")


class Cluster:
    """A `dask scheduler` and `dask worker` "machines", started exactly as the README says.

    Each command is the README's line, run by the shell from the top-level folder,
    with SCHEDULER, the port and CORES filled in, and no variable the README does
    not mention: no PYTHONPATH, the environment not activated.
    """

    def __init__(self, folder: pathlib.Path, workers: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        env = sample.instructor_environment()
        scheduler = readme_command("dask scheduler").replace("8786", str(self.port))
        self.scheduler = subprocess.Popen(
            scheduler,
            shell=True,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        worker = readme_command("dask worker")
        worker = worker.replace("tcp://SCHEDULER:8786", self.address).replace("CORES", "1")
        self.logs = []
        self.workers = []
        for number in range(workers):
            log = open(folder / f"machine{number}.log", "wb")  # noqa: SIM115 -- closed in close()
            self.logs.append(log)
            self.workers.append(
                subprocess.Popen(
                    worker,
                    shell=True,
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        self.wait_for_workers(workers)

    def wait_for_workers(self, count: int, timeout: float = 90) -> None:
        from distributed import Client

        with Client(self.address, timeout="30s") as client:
            client.wait_for_workers(count, timeout=timeout)

    def kill(self, process) -> None:
        """Kill a process and everything in its session, as a machine that dies."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)

    def close(self) -> None:
        for process in [*self.workers, self.scheduler]:
            self.kill(process)
        for log in self.logs:
            log.close()


def grading_worker_pid(address: str) -> int | None:
    """The pid of a worker that is running a grading task right now, if any."""
    from distributed import Client

    with Client(address, timeout="10s") as client:
        processing = client.processing()
        busy = [worker for worker, keys in processing.items() if keys]
        if not busy:
            return None
        return client.run(os.getpid, workers=busy[:1])[busy[0]]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade six submissions twice: LocalCluster, then a real scheduler with a worker killed."""
    sample.environment()
    tmp = tmp_path_factory.mktemp("distributed")
    course = sample.make_course(tmp / "course")
    for student, notebook in submissions_of(course).items():
        sample.write_submission(tmp / "in", student, notebook)
    options = {"cell_timeout": CELL_TIMEOUT, "progress": False}
    batch.run(tmp / "in", course, workers=2, out=tmp / "local", **options)

    cluster = Cluster(tmp / "machines", workers=2)
    try:
        command = [sys.executable, "-m", "grader.batch", str(tmp / "in"), "--course"]
        command += [str(course), "--out", str(tmp / "remote"), "--scheduler", cluster.address]
        command += ["--cell-timeout", str(CELL_TIMEOUT)]
        client = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Kill a worker, with all it started, while it grades.
        killed = None
        deadline = time.monotonic() + 300
        while killed is None and time.monotonic() < deadline and client.poll() is None:
            pid = grading_worker_pid(cluster.address)
            if pid is not None:
                time.sleep(3)  # well inside the grading of that submission
                victim = next(p for p in cluster.workers if pid in _family(p.pid))
                cluster.kill(victim)
                killed = pid
            else:
                time.sleep(0.5)
        out, err = client.communicate(timeout=900)
    finally:
        cluster.close()
    return {
        "tmp": tmp,
        "course": course,
        "killed": killed,
        "returncode": client.returncode,
        "stdout": out.decode(),
        "stderr": err.decode(),
    }


def _family(pid: int) -> set[int]:
    import psutil

    try:
        process = psutil.Process(pid)
        return {pid, *(child.pid for child in process.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


@pytest.mark.slow
def test_scheduler_grades_equal_local_cluster_grades(graded):
    """Do two `dask worker` machines behind a `dask scheduler` give the LocalCluster's grades?"""
    assert graded["returncode"] == 0, graded["stderr"][-3000:]
    local, remote = points(graded["tmp"] / "local"), points(graded["tmp"] / "remote")
    assert sorted(local) == ["ann", "bob", "cy", "dee", "eve", "fay"]
    assert remote == local
    assert local["ann"][-1] == "13" and local["bob"][-1] == "0"
    assert local["cy"][-1] == "11" and local["dee"][-1] == "10"


@pytest.mark.slow
def test_killed_worker_loses_no_row(graded):
    """When a worker dies mid-grade (SIGKILL), is its submission graded again, with one row each?"""
    assert graded["killed"] is not None, "no worker was seen grading"
    students = [row["student"] for row in rows(graded["tmp"] / "remote")]
    assert sorted(students) == sorted(set(students)) == ["ann", "bob", "cy", "dee", "eve", "fay"]
    statuses = {row["student"]: row["status"] for row in rows(graded["tmp"] / "remote")}
    assert all(status == "graded" for status in statuses.values()), statuses


@pytest.mark.slow
def test_ctrl_c_then_rerun_completes_without_duplicates(graded, tmp_path):
    """Does Ctrl-C leave a consistent grades.csv, and does the next run finish it with no duplicate?"""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "grader.batch", str(graded["tmp"] / "in"), "--course"]
    command += [str(graded["course"]), "--out", str(out), "--workers", "1"]
    command += ["--cell-timeout", str(CELL_TIMEOUT)]
    run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:
        if len(list((out / "results").glob("*.json"))) >= 1:
            break
        time.sleep(0.5)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 130, err.decode()[-2000:]
    first = rows(out)
    assert 1 <= len(first) < 6
    assert len({row["student"] for row in first}) == len(first)
    expected = points(graded["tmp"] / "local")
    assert {row["student"]: points(out)[row["student"]] for row in first} == {
        row["student"]: expected[row["student"]] for row in first
    }
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{len(first)} student(s) already graded: skipped" in again.stderr
    assert points(out) == expected
    assert len(rows(out)) == 6


def test_unreachable_scheduler_fails_fast(tmp_path):
    """Does a scheduler address where nothing listens give a clear error within seconds?"""
    sample.write_submission(tmp_path / "in", "ann", "{}")
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "grader.batch", str(tmp_path / "in"), "--course"]
        + [str(ROOT / "course"), "--out", str(tmp_path / "out")]
        + ["--scheduler", f"tcp://127.0.0.1:{free_port()}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "Cannot reach the Dask scheduler" in result.stderr
    assert time.monotonic() - start < 60
