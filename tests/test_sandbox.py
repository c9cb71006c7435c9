"""Attacks on grader.sandbox, each written the way a clever student would, with real bwrap.

Every test asserts what happened afterwards on the host: the file is unchanged, the secret was
not read, the process is gone, the server got no connection. Each run is bounded by the
sandbox's own limits, and the few that need more are bounded here too.
"""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from grader import sandbox
from grader.sandbox import Limits, Sandbox

ROOT = Path(__file__).resolve().parents[1]
FAST = Limits(wall_seconds=20, step_seconds=None, memory_mb=512, processes=64)
# Both ways a limit can be enforced: the cgroup (when writable, as root here) and the
# watchdog that stands in for it elsewhere.
MODES = [pytest.param(True, id="cgroup"), pytest.param(False, id="watchdog")]


@pytest.fixture(autouse=True)
def _bubblewrap():
    sandbox.check_available()


@pytest.fixture
def scratch(tmp_path):
    path = tmp_path / "scratch"
    path.mkdir()
    return path


@pytest.fixture
def secret(tmp_path):
    """A secret file on the host, in a folder that is never bound."""
    folder = tmp_path / "host-only"
    folder.mkdir()
    path = folder / "secret.txt"
    path.write_text(f"SECRET-{uuid.uuid4().hex}\n")
    return path


def run_py(scratch, code, *, limits=FAST, readonly=None, cgroups=True, input=None, args=()):
    box = Sandbox(readonly=readonly or {}, scratch=scratch, limits=limits, cgroups=cgroups)
    return box.run([sys.executable, "-c", textwrap.dedent(code), *args], input=input)


def digest(path: Path) -> str:
    """A hash of every file under path (names, modes and bytes)."""
    h = hashlib.sha256()
    for p in sorted([path, *path.rglob("*")]) if path.is_dir() else [path]:
        st = p.lstat()
        h.update(f"{p}:{st.st_mode}:{st.st_size}".encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


def survivors(token: str) -> list[psutil.Process]:
    """Host processes whose command line holds token (processes the sandbox left behind)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != os.getpid() and token in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            pass
    return found


# --------------------------------------------------------------------------------------
# The normal case


def test_program_runs_and_its_output_exit_code_and_steps_come_back(scratch):
    """Does an ordinary program run, with its output, exit code, steps and input returned?"""
    result = run_py(
        scratch,
        """
        import sys
        print("hello from the sandbox")
        print("\\x1e@step exercise 1", flush=True)
        print("oops", file=sys.stderr, flush=True)
        print("\\x1e@step exercise 2")
        print("read:", sys.stdin.read())
        open("artifact.json", "w").write('{"ok": true}')
        sys.exit(7)
        """,
        input=b"the input",
    )
    assert result.killed is None, result.output
    assert result.returncode == 7
    assert "hello from the sandbox" in result.output
    assert "oops" in result.output
    assert "read: the input" in result.output
    assert "step" not in result.output and "\x1e" not in result.output
    assert result.steps == ["exercise 1", "exercise 2"]
    assert sandbox.read_artifact(scratch, "artifact.json", 100) == b'{"ok": true}'
    assert result.seconds < 10


def test_a_sandbox_that_cannot_start_says_why(scratch):
    """Does a run whose set-up fails come back with bwrap's message, not an exception?"""
    box = Sandbox(readonly={}, scratch=scratch, limits=FAST, cwd="/no/such/folder")
    result = box.run(["/bin/true"])
    assert result.returncode not in (0, None)
    assert "/no/such/folder" in result.output


def test_readonly_binds_are_visible_and_tmp_home_point_into_scratch(scratch, tmp_path):
    """Does code see the given binds, and do /tmp, /dev/shm and $HOME land in scratch?"""
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.txt").write_text("dataset")
    result = run_py(
        scratch,
        """
        import os, pathlib, multiprocessing
        print(open("/data/x.txt").read())
        pathlib.Path("/tmp/t").write_text("t")
        pathlib.Path("/dev/shm/s").write_text("s")
        pathlib.Path(os.environ["HOME"], "h").write_text("h")
        multiprocessing.Lock()  # POSIX semaphores need a writable /dev/shm
        print(os.getcwd(), os.environ["TMPDIR"])
        """,
        readonly={data: "/data"},
    )
    assert result.returncode == 0, result.output
    assert "dataset" in result.output
    assert "/scratch /scratch/.tmp" in result.output  # $TMPDIR is scratch's own, /tmp or not
    written = {p.name for p in scratch.rglob("*") if p.is_file()}
    assert {"t", "s", "h"} <= written


def test_a_course_under_tmp_is_bound_where_it_is(scratch, tmp_path):
    """A course (or its environment) checked out under /tmp: is it bound at its own path, with
    $TMPDIR still in scratch, where /tmp itself is left read-only?"""
    course = Path(tempfile.mkdtemp(prefix="course-", dir="/tmp"))
    try:
        (course / "utils.py").write_text("X = 1\n")
        result = run_py(
            scratch,
            f"""
            import os, pathlib, tempfile
            print(open({str(course / "utils.py")!r}).read().strip())
            pathlib.Path(tempfile.gettempdir(), "t").write_text("t")
            print("TMPDIR", tempfile.gettempdir())
            try:
                open("/tmp/elsewhere", "w")
                print("tmp writable")
            except OSError as error:
                print("tmp", type(error).__name__)
            """,
            readonly={course: str(course)},
        )
    finally:
        shutil.rmtree(course, ignore_errors=True)
    assert result.returncode == 0, result.output
    assert "X = 1" in result.output and "TMPDIR /scratch/.tmp" in result.output
    assert "tmp OSError" in result.output
    assert (scratch / ".tmp" / "t").read_text() == "t"


def test_env_is_only_what_the_caller_gives(scratch, monkeypatch):
    """Is a secret in the grader's environment invisible inside, even through /proc?"""
    monkeypatch.setenv("GRADER_FAKE_SECRET", "hunter2-" + uuid.uuid4().hex)
    box = Sandbox(readonly={}, scratch=scratch, limits=FAST, env={"GIVEN": "yes"})
    result = box.run(
        [
            sys.executable,
            "-c",
            "import os, glob\n"
            "print(dict(os.environ))\n"
            "for f in glob.glob('/proc/*/environ'):\n"
            "    try: print(open(f, 'rb').read())\n"
            "    except OSError as e: print(e)\n",
        ]
    )
    assert result.returncode == 0, result.output
    assert "hunter2" not in result.output
    assert "GRADER_FAKE_SECRET" not in result.output
    assert "'GIVEN': 'yes'" in result.output


def test_no_descriptor_of_the_grader_leaks_inside(scratch, secret):
    """Does the code inherit any open file of the grader (say, its gradebook)?"""
    fd = os.open(secret, os.O_RDONLY)
    os.set_inheritable(fd, True)
    try:
        result = run_py(
            scratch,
            """
            import os
            fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
            print("FDS", fds)
            for f in fds:
                try:
                    print(f, os.readlink(f"/proc/self/fd/{f}"), os.pread(f, 100, 0))
                except OSError as e:
                    print(f, type(e).__name__)
            """,
        )
    finally:
        os.close(fd)
    assert result.returncode == 0, result.output
    assert "FDS [0, 1, 2, 3]" in result.output  # 3: the listing itself
    assert secret.read_text().strip() not in result.output


# --------------------------------------------------------------------------------------
# Reading what is not bound


def test_host_files_outside_the_binds_cannot_be_read(scratch, secret):
    """Can code read a host secret, the repository, $HOME or /root by any path?"""
    result = run_py(
        scratch,
        """
        import os, sys, glob
        secret, repo = sys.argv[1], sys.argv[2]
        tries = [secret, f"/proc/1/root{secret}", f"/proc/self/root{secret}",
                 f"{repo}/README.md", f"{repo}/public_tests.py", "/root/.bash_history",
                 "/etc/shadow", "/etc/ssh/sshd_config", f"/proc/1/cwd{secret}",
                 "/var/run/docker.sock", "/run/systemd/private", "/sys/fs/cgroup/pids/tasks"]
        for path in tries:
            try:
                print("READ:", path, open(path).read()[:200])
            except OSError as e:
                print("refused", path, type(e).__name__)
        print("ROOT", sorted(os.listdir("/")))
        print("SLASHROOT", sorted(os.listdir("/root")) if os.path.isdir("/root") else [])
        print("WORK", sorted(os.listdir("/work")) if os.path.isdir("/work") else None)
        print("REPO", sorted(os.listdir(repo)) if os.path.isdir(repo) else None)
        print("ETC", sorted(os.listdir("/etc")))
        hits = []
        for folder, dirs, files in os.walk("/"):
            if folder == "/":
                dirs[:] = [d for d in dirs if d not in ("proc", "usr", "dev")]
            hits += [os.path.join(folder, f) for f in files if f == "secret.txt"]
        print("FOUND", hits)
        """,
        args=(str(secret), str(ROOT)),
    )
    assert result.returncode == 0, result.output
    assert secret.read_text().strip() not in result.output
    assert "READ:" not in result.output
    assert "FOUND []" in result.output
    # /root and the repository hold only the folders that lead to the Python runtime.
    binds = sandbox.python_runtime_binds()
    under_root = {Path(p).relative_to("/root").parts[0] for p in binds if p.startswith("/root/")}
    assert f"SLASHROOT {sorted(under_root)}" in result.output
    in_repo = {Path(p).relative_to(ROOT).parts[0] for p in binds if p.startswith(f"{ROOT}/")}
    assert f"REPO {sorted(in_repo) if in_repo else None}" in result.output
    assert "'shadow'" not in result.output


def test_python_runtime_binds_hold_nothing_but_the_runtime():
    """Do the runtime binds leave out the repository, $HOME and /work?"""
    binds = sandbox.python_runtime_binds()
    assert all(host == inside for host, inside in binds.items())
    home = os.path.expanduser("~")
    for host in binds:
        assert host not in ("/", "/etc", "/work", "/root", home, str(ROOT), "/tmp", "/run")
        if host.startswith(home + "/") or host.startswith("/work/"):
            # Only the interpreter's prefix and the virtual environment.
            assert host in (
                os.path.realpath(sys.base_prefix),
                os.path.abspath(sys.prefix),
                os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
            ), host


# --------------------------------------------------------------------------------------
# Writing


def test_readonly_binds_and_the_environment_cannot_be_changed(scratch, tmp_path):
    """Can code change a read-only bind, the installed packages or the root filesystem?"""
    course = tmp_path / "course"
    course.mkdir()
    (course / "public_tests.py").write_text("def test(): assert False\n")
    site = Path(psutil.__file__).parent  # an installed package of the grading environment
    before = digest(course), digest(site / "__init__.py")
    result = run_py(
        scratch,
        """
        import os, sys, shutil, psutil
        site = os.path.dirname(psutil.__file__)
        def rewrite(path):
            value = open(path).read()
            with open(path, "w") as f:
                f.write(value)
        attempts = {
            "append": lambda: open("/course/public_tests.py", "a").write("def test(): pass"),
            "truncate": lambda: open("/course/public_tests.py", "w"),
            "new file": lambda: open("/course/new.py", "w"),
            "rename": lambda: os.rename("/course/public_tests.py", "/course/x.py"),
            "unlink": lambda: os.unlink("/course/public_tests.py"),
            "chmod": lambda: os.chmod("/course/public_tests.py", 0o777),
            "utime": lambda: os.utime("/course/public_tests.py", (0, 0)),
            "site": lambda: open(os.path.join(site, "__init__.py"), "a").write("x"),
            "venv": lambda: open(os.path.join(sys.prefix, "evil.pth"), "w"),
            "root": lambda: open("/evil", "w"),
            "dev": lambda: open("/dev/evil", "w"),
            "etc": lambda: open("/etc/passwd", "a"),
            "usr": lambda: open("/usr/evil", "w"),
            "mount": lambda: os.system("mount -t tmpfs none /course 2>&1 || exit 1") and 1/0,
            "remount": lambda: os.system("mount -o remount,rw /course 2>&1") and 1/0,
            "userns": lambda: os.system("unshare -r -m true 2>&1") and 1/0,
            "hard link": lambda: os.link("/course/public_tests.py", "/scratch/linked.py"),
            # Each writes back the value it read: a failure here changes nothing on the host.
            "core_pattern": lambda: rewrite("/proc/sys/kernel/core_pattern"),
            "pid_max": lambda: rewrite("/proc/sys/kernel/pid_max"),
            "overcommit": lambda: rewrite("/proc/sys/vm/overcommit_memory"),
            "hostname": lambda: rewrite("/proc/sys/kernel/hostname"),
            "sysrq": lambda: open("/proc/sysrq-trigger", "w").write("s"),
            "kcore": lambda: open("/dev/core", "rb").read(1),
        }
        for name, attempt in attempts.items():
            try:
                attempt()
                print("WROTE", name)
            except Exception as e:
                print("refused", name, type(e).__name__)
        """,
        readonly={course: "/course"},
    )
    assert result.returncode == 0, result.output
    assert "WROTE" not in result.output, result.output
    assert result.output.count("refused") == 23
    assert (digest(course), digest(site / "__init__.py")) == before


# --------------------------------------------------------------------------------------
# Processes of the host


def test_host_processes_are_invisible_and_cannot_be_signalled(scratch):
    """Can code see, signal or reach the files of a host process through /proc?"""
    victim = subprocess.Popen(["sleep", "30"])
    try:
        result = run_py(
            scratch,
            """
            import os, signal, sys
            victim, grader = int(sys.argv[1]), int(sys.argv[2])
            pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            print("PIDS", pids)
            for pid in (victim, grader, 1):
                for what in ("environ", "cmdline", "root/etc/hostname", "mem"):
                    try:
                        open(f"/proc/{pid}/{what}", "rb").read(100)
                        print("OPENED", pid, what)
                    except OSError as e:
                        print("refused", pid, what, type(e).__name__)
            for pid in (victim, grader, -1):
                try:
                    os.kill(pid, signal.SIGKILL)
                    print("SIGNALLED", pid)
                except OSError as e:
                    print("refused kill", pid, type(e).__name__)
            """,
            args=(str(victim.pid), str(os.getpid())),
        )
        time.sleep(0.2)
        assert victim.poll() is None, "the host process was killed from inside"
    finally:
        victim.kill()
        victim.wait()
    pids_line = next(line for line in result.output.splitlines() if line.startswith("PIDS"))
    pids = eval(pids_line[5:])  # noqa: S307 - our own output
    assert max(pids) < 10, pids_line  # only the sandbox's own processes
    assert f"OPENED {victim.pid}" not in result.output
    assert f"OPENED {os.getpid()}" not in result.output
    assert f"SIGNALLED {victim.pid}" not in result.output
    assert f"SIGNALLED {os.getpid()}" not in result.output


def test_kernel_interfaces_for_exploits_are_refused(scratch):
    """Can code reach io_uring, bpf, perf, userfaultfd, the kernel log, the keyrings or System V IPC?"""
    result = run_py(
        scratch,
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        calls = {"io_uring_setup": 425, "bpf": 321, "perf_event_open": 298,
                 "userfaultfd": 323, "syslog": 103, "keyctl": 250, "add_key": 248,
                 "ptrace": 101, "unshare": 272, "mount": 165, "open_by_handle_at": 304,
                 "shmget": 29, "semget": 64, "msgget": 68, "mq_open": 240}
        for name, nr in calls.items():
            ctypes.set_errno(0)
            r = libc.syscall(nr, 0, 0, 0, 0, 0)
            print(name, "ALLOWED" if r >= 0 else "refused", os.strerror(ctypes.get_errno()))
        print("getpid", libc.syscall(39))
        """,
    )
    assert result.returncode == 0, result.output
    assert "ALLOWED" not in result.output, result.output
    assert result.output.count("refused") == 15
    assert "getpid 2" in result.output  # ordinary calls work; the code is pid 2 of its own


def test_the_grader_s_keyring_is_out_of_reach(scratch):
    """Can code read a secret key that the grader's user holds in its kernel keyring?"""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    value = uuid.uuid4().hex.encode()
    key = libc.syscall(248, b"user", b"grader-test-secret", value, len(value), -4)
    if key < 0:
        pytest.fail(f"add_key failed on the host: {os.strerror(ctypes.get_errno())}")
    try:
        result = run_py(
            scratch,
            """
            import ctypes, os
            libc = ctypes.CDLL(None, use_errno=True)
            for ring in (-4, -5, -3):  # user, user session, session keyrings
                k = libc.syscall(250, 10, ring, b"user", b"grader-test-secret", 0)
                buf = ctypes.create_string_buffer(100)
                n = libc.syscall(250, 11, k, buf, 100) if k > 0 else -1
                print("key", k, buf.raw[: max(n, 0)])
            """,
        )
    finally:
        libc.syscall(250, 3, key)  # KEYCTL_REVOKE
    assert value.decode() not in result.output
    assert result.output.count("key -1") == 3, result.output


# --------------------------------------------------------------------------------------
# Network


def test_no_network_not_even_loopback_to_the_host(scratch):
    """Can code reach a server on the host's 127.0.0.1, or an abstract unix socket?"""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = f"\0grader-sandbox-test-{uuid.uuid4().hex}"
    abstract.bind(name)
    abstract.listen(5)
    abstract.settimeout(0.2)
    try:
        result = run_py(
            scratch,
            """
            import socket, sys
            port, name = int(sys.argv[1]), sys.argv[2]
            for host in ("127.0.0.1", "localhost", "::1", "10.0.2.2", "172.17.0.1"):
                try:
                    socket.create_connection((host, port), timeout=1).send(b"hi")
                    print("CONNECTED", host)
                except OSError as e:
                    print("refused", host, type(e).__name__)
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect("\\0" + name)
                print("CONNECTED abstract")
            except OSError as e:
                print("refused abstract", type(e).__name__)
            print([line.split()[0] for line in open("/proc/net/dev").readlines()[2:]])
            """,
            args=(str(port), name[1:]),
        )
        accepted = []
        for sock in (server, abstract):
            try:
                accepted.append(sock.accept())
            except TimeoutError:
                pass
    finally:
        server.close()
        abstract.close()
    assert result.returncode == 0, result.output
    assert "CONNECTED" not in result.output
    assert accepted == []
    assert "['lo:']" in result.output  # its own loopback and nothing else


# --------------------------------------------------------------------------------------
# Limits


@pytest.mark.parametrize("cgroups", MODES)
def test_fork_bomb_is_contained_and_killed(scratch, cgroups):
    """Does a fork bomb stay inside, get killed, and leave no process behind?"""
    token = f"forkbomb-{uuid.uuid4().hex}"
    # Bounded even if every limit failed (a root without cgroups has only the watchdog):
    # 9 generations, 512 processes at most, each gone within 20 s.
    result = run_py(
        scratch,
        """
        import os, sys, time
        for generation in range(9):
            try:
                os.fork()
            except OSError:
                pass
        time.sleep(20)
        """,
        cgroups=cgroups,
        args=(token,),
    )
    assert result.killed and result.killed.startswith("too many processes:"), result
    assert result.returncode is None
    assert result.seconds < 10
    time.sleep(0.1)
    assert survivors(token) == []


def test_fork_bomb_does_not_starve_a_second_sandbox(tmp_path):
    """Does a well-behaved sandbox finish while another one runs a fork bomb?"""
    bomb_scratch, good_scratch = tmp_path / "bomb", tmp_path / "good"
    bomb_scratch.mkdir()
    good_scratch.mkdir()
    results = {}

    def bomb():
        results["bomb"] = run_py(
            bomb_scratch,
            """
            import os, time
            for generation in range(9):  # bounded here too: 512 processes at most
                try:
                    os.fork()
                except OSError:
                    pass
            start = time.time()
            while time.time() - start < 20:  # then spin on fork, reaping each child
                try:
                    if os.fork() == 0:
                        os._exit(0)
                    os.wait()
                except OSError:
                    pass
            """,
            limits=Limits(wall_seconds=3, step_seconds=None, processes=64),
        )

    thread = threading.Thread(target=bomb)
    thread.start()
    time.sleep(0.1)
    good = run_py(
        good_scratch,
        "import threading\n"
        "ts = [threading.Thread(target=sum, args=([1],)) for _ in range(40)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\nprint('done')",
        limits=Limits(wall_seconds=15, step_seconds=None, processes=64),
    )
    thread.join(30)
    assert good.killed is None and good.returncode == 0, good
    assert "done" in good.output
    assert results["bomb"].killed is not None


@pytest.mark.parametrize("cgroups", MODES)
def test_memory_bomb_is_killed(scratch, cgroups):
    """Is a program that eats memory, in one process or in several, killed at its limit?"""
    before = psutil.virtual_memory().available
    result = run_py(
        scratch,
        """
        import os
        for _ in range(3):
            if os.fork() == 0:
                break
        hoard = []
        while True:
            hoard.append(bytearray(16 * 2**20))  # touched: bytearray zero-fills
        """,
        limits=Limits(wall_seconds=20, step_seconds=None, memory_mb=256, processes=64),
        cgroups=cgroups,
    )
    assert result.killed and result.killed.startswith("out of memory:"), result
    assert result.returncode is None
    assert result.seconds < 15
    assert psutil.virtual_memory().available > before - 512 * 2**20


def test_one_huge_allocation_fails_inside(scratch):
    """Does one allocation beyond the address-space limit fail, not the host?"""
    result = run_py(
        scratch,
        """
        try:
            x = bytearray(64 * 2**30)
            print("ALLOCATED")
        except MemoryError:
            print("MemoryError")
        """,
    )
    assert "MemoryError" in result.output
    assert "ALLOCATED" not in result.output


def test_memory_that_no_process_maps_is_counted(scratch):
    """Is memory hidden from every RSS (a memfd written, never mapped) killed at the limit?"""
    result = run_py(
        scratch,
        """
        import os
        block = b"x" * 2**20
        fds = []
        while True:
            fd = os.memfd_create("hoard")
            for _ in range(32):
                os.write(fd, block)
            fds.append(fd)
        """,
        limits=Limits(wall_seconds=20, step_seconds=None, memory_mb=256, file_mb=64),
    )
    assert result.killed and result.killed.startswith("out of memory:"), result


def test_infinite_loop_hits_the_wall_timeout(scratch):
    """Is an endless loop killed at the wall-clock limit?"""
    token = f"loop-{uuid.uuid4().hex}"
    result = run_py(
        scratch,
        "while True: pass",
        limits=Limits(wall_seconds=1.5, step_seconds=None),
        args=(token,),
    )
    assert result.killed and result.killed.startswith("timeout:"), result
    assert 1.4 < result.seconds < 5
    assert survivors(token) == []


def test_a_step_that_hangs_hits_the_step_timeout(scratch):
    """Is a hang after some steps killed by the step clock, with the steps done kept?"""
    result = run_py(
        scratch,
        """
        import time
        for i in range(4):
            print(f"\\x1e@step {i}", flush=True)
            time.sleep(0.3)
        time.sleep(60)
        """,
        limits=Limits(wall_seconds=30, step_seconds=0.8),
    )
    assert result.killed and result.killed.startswith("step timeout:"), result
    assert "'3'" in result.killed
    assert result.steps == ["0", "1", "2", "3"]
    assert 1.6 < result.seconds < 5


def test_cpu_time_is_limited_per_process(scratch):
    """Is a process that ignores SIGXCPU killed at its CPU-time limit?"""
    result = run_py(
        scratch,
        """
        import signal
        signal.signal(signal.SIGXCPU, signal.SIG_IGN)
        while True: pass
        """,
        limits=Limits(wall_seconds=20, step_seconds=None, cpu_seconds=1),
    )
    assert result.killed and result.killed.startswith("timeout:"), result
    assert "CPU" in result.killed
    assert result.returncode is None
    assert 0.9 < result.seconds < 15


def test_output_flood_is_truncated_and_keeps_head_and_tail(scratch):
    """Does a flood of prints stay within output_bytes, with the start and the end kept?"""
    result = run_py(
        scratch,
        """
        import sys
        print("FIRST LINE")
        for i in range(200_000):
            print("spam" * 40)
        sys.stdout.write("x" * 5_000_000)  # one endless line
        print("\\x1e@step after the flood")
        print("LAST LINE")
        """,
        limits=Limits(wall_seconds=30, step_seconds=None, output_bytes=20_000),
    )
    assert result.returncode == 0, result.killed
    assert len(result.output.encode()) <= 20_000
    assert result.output.startswith("FIRST LINE")
    assert result.output.rstrip().endswith("LAST LINE")
    assert "bytes of output dropped" in result.output
    assert result.steps == ["after the flood"]


def test_a_flood_of_fake_step_markers_is_bounded(scratch):
    """Do a million step markers, or one endless one, keep memory bounded?"""
    result = run_py(
        scratch,
        """
        import sys
        w = sys.stdout.write
        for i in range(300_000):
            w("\\x1e@step s\\n")
        w("\\x1e@step " + "y" * 3_000_000 + "\\n")
        print("end")
        """,
        limits=Limits(wall_seconds=30, step_seconds=None, output_bytes=10_000),
    )
    assert result.returncode == 0
    assert len(result.steps) <= 10_000
    assert max(len(s) for s in result.steps) <= 4096
    assert "end" in result.output


@pytest.mark.parametrize("cgroups", MODES)
def test_filling_scratch_is_stopped(scratch, cgroups):
    """Is a program that fills scratch (many files, also via /tmp) killed at its limit?"""
    result = run_py(
        scratch,
        """
        import os
        block = os.urandom(2**20)
        i = 0
        while True:
            for folder in ("/scratch", "/tmp", "/dev/shm"):
                with open(f"{folder}/fill{i}", "wb") as f:
                    for _ in range(4):
                        f.write(block)
                i += 1
        """,
        limits=Limits(wall_seconds=20, step_seconds=None, scratch_mb=40, file_mb=8),
        cgroups=cgroups,
    )
    assert result.killed and result.killed.startswith("scratch full:"), result
    used = sum(p.stat().st_size for p in scratch.rglob("*") if p.is_file())
    assert used < 400 * 2**20


def test_filling_scratch_just_before_exiting_is_caught(scratch):
    """Is scratch filled in the last instant before a quick exit still caught?"""
    result = run_py(
        scratch,
        """
        block = b"x" * 2**20
        for i in range(6):
            with open(f"f{i}", "wb") as f:
                f.write(block * 7)
        """,
        limits=Limits(wall_seconds=20, step_seconds=None, scratch_mb=20, file_mb=8),
    )
    assert result.killed and result.killed.startswith("scratch full:"), result


def test_one_big_file_stops_at_file_mb(scratch):
    """Does writing one file beyond file_mb fail inside the sandbox?"""
    result = run_py(
        scratch,
        """
        try:
            with open("big", "wb") as f:
                f.write(b"x" * (9 * 2**20))
            print("WROTE")
        except OSError as e:
            print("refused", e.errno)
        """,
        limits=Limits(wall_seconds=20, step_seconds=None, file_mb=4),
    )
    assert "WROTE" not in result.output
    assert (scratch / "big").stat().st_size <= 4 * 2**20


def test_an_inode_flood_is_stopped(scratch):
    """Is a program that creates files without end killed at scratch_files?"""
    result = run_py(
        scratch,
        """
        import os
        i = 0
        while True:
            os.makedirs(f"d{i // 100}", exist_ok=True)
            open(f"d{i // 100}/{i}", "w").close()
            i += 1
        """,
        limits=Limits(wall_seconds=20, step_seconds=None, scratch_files=2000),
    )
    assert result.killed and result.killed.startswith("scratch full:"), result


def test_folders_nested_too_deep_to_walk_are_stopped_and_can_be_emptied(scratch):
    """Does a tree nested past PATH_MAX, to hide files from a walk, get caught and removed?"""
    result = run_py(
        scratch,
        """
        import os
        fd = os.open(".", os.O_RDONLY)
        for i in range(100_000):
            os.mkdir("d" * 200, dir_fd=fd)
            fd = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            with open(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as f:
                f.write(b"x" * 65536)
        """,
        limits=Limits(wall_seconds=20, step_seconds=None, scratch_mb=512),
    )
    assert result.killed and result.killed.startswith("scratch full:"), result
    sandbox.empty_scratch(scratch)
    assert list(scratch.iterdir()) == []


# --------------------------------------------------------------------------------------
# Nothing outlives the run


@pytest.mark.parametrize("cgroups", MODES)
def test_a_double_forked_daemon_dies_with_the_run(scratch, cgroups):
    """Does a setsid'd, double-forked daemon that ignores signals die when the run ends?"""
    token = f"daemon-{uuid.uuid4().hex}"
    result = run_py(
        scratch,
        """
        import os, signal, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                    signal.signal(s, signal.SIG_IGN)
                os.closerange(0, 3)
                while True:
                    with open("/scratch/heartbeat", "a") as f:
                        f.write(".")
                    time.sleep(0.02)
            os._exit(0)
        time.sleep(0.3)
        print("parent leaves")
        """,
        cgroups=cgroups,
        args=(token,),
    )
    assert result.returncode == 0 and result.killed is None, result
    assert "parent leaves" in result.output
    beat = scratch / "heartbeat"
    assert beat.exists()
    size = beat.stat().st_size
    time.sleep(0.3)
    assert beat.stat().st_size == size, "the daemon is still writing"
    assert survivors(token) == []


@pytest.mark.parametrize("when", ["while bwrap starts", "while the code runs"])
def test_a_killed_grader_takes_its_sandbox_with_it(tmp_path, when):
    """If the grader itself is killed, early or late, does its sandbox (and a daemon) die?"""
    token = f"orphan-{uuid.uuid4().hex}"
    scratch = tmp_path / "s"
    scratch.mkdir()
    grader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys
                sys.path.insert(0, sys.argv[1])
                from grader.sandbox import Sandbox, Limits
                box = Sandbox(readonly={}, scratch=sys.argv[2], limits=Limits(wall_seconds=60))
                code = (
                    "import os, time\\n"
                    "open('/scratch/started', 'w').close()\\n"
                    "if os.fork() == 0:\\n    os.setsid()\\n    time.sleep(60)\\n"
                    "time.sleep(60)"
                )
                box.run([sys.executable, "-c", code, sys.argv[3]])
                """
            ),
            str(ROOT),
            str(scratch),
            token,
        ]
    )
    try:
        deadline = time.monotonic() + 10
        if when == "while bwrap starts":
            # Kill the grader as soon as bwrap exists: before it placed the sandbox in its
            # cgroups and set its rlimits, the code must not run at all.
            while time.monotonic() < deadline:
                if any(p.name() == "bwrap" for p in psutil.Process(grader.pid).children()):
                    break
                time.sleep(0.001)
        else:
            while not (scratch / "started").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
            assert len(survivors(token)) >= 4  # grader, bwrap, its init, the code, a daemon
    finally:
        grader.kill()
        grader.wait()
    deadline = time.monotonic() + 5
    while survivors(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = survivors(token)
    for p in left:
        p.kill()
    assert left == []
    if when == "while bwrap starts":
        time.sleep(0.3)
        assert not (scratch / "started").exists(), "the code ran without its limits"


# --------------------------------------------------------------------------------------
# What the code leaves in scratch


def test_read_artifact_refuses_links_fifos_huge_files_and_dotdot(scratch, secret):
    """Does read_artifact refuse what a student planted in scratch to make the grader leak?"""
    result = run_py(
        scratch,
        """
        import os, sys
        secret = sys.argv[1]
        os.symlink(secret, "result.json")                 # a link to a host file
        os.symlink("/etc/passwd", "passwd.json")
        os.makedirs("real")
        open("real/ok.json", "w").write("{}")
        os.symlink(os.path.dirname(secret), "linkdir")    # a link to a host folder
        os.symlink("real", "inner")                      # a link in a middle component
        os.mkfifo("fifo.json")                           # would block a naive reader
        with open("huge.json", "wb") as f:
            f.truncate(10 * 2**20)
        open("other.json", "w").write("{}")
        os.link("other.json", "hard.json")
        """,
        args=(str(secret),),
    )
    assert result.returncode == 0, result.output
    assert sandbox.read_artifact(scratch, "real/ok.json", 100) == b"{}"
    refused = {
        "result.json": "symlink",
        "passwd.json": "symlink",
        "linkdir/secret.txt": "symlink",
        "inner/ok.json": "symlink",
        "fifo.json": "fifo",
        "huge.json": "larger",
        "hard.json": "hard link",
        "../host-only/secret.txt": "..",
        "real/../../host-only/secret.txt": "..",
        str(secret): "relative",
        "real": "folder",
    }
    for relative, why in refused.items():
        with pytest.raises(ValueError, match=why):
            sandbox.read_artifact(scratch, relative, 1000)
    with pytest.raises(FileNotFoundError):
        sandbox.read_artifact(scratch, "missing.json", 1000)


def test_a_planted_tmp_link_does_not_bind_a_host_folder_next_run(scratch, secret):
    """Does a run that replaces scratch/.tmp with a link to a host folder gain it next run?"""
    folder = secret.parent
    before = digest(folder)
    first = run_py(
        scratch,
        """
        import os, shutil, sys
        for name in (".tmp", ".home", ".shm"):
            shutil.rmtree(f"/scratch/{name}", ignore_errors=True)
            os.symlink(sys.argv[1], f"/scratch/{name}")
        """,
        args=(str(folder),),
    )
    assert first.returncode == 0, first.output
    second = run_py(
        scratch,
        """
        import os
        print(os.listdir("/tmp"), os.listdir("/dev/shm"), os.listdir(os.environ["HOME"]))
        for d in ("/tmp", "/dev/shm", os.environ["HOME"]):
            open(f"{d}/planted", "w").write("x")
        """,
    )
    assert second.returncode == 0, second.output
    assert "secret.txt" not in second.output
    assert digest(folder) == before
    assert (scratch / ".tmp").is_dir() and not (scratch / ".tmp").is_symlink()


def test_scratch_is_private_on_the_host(scratch):
    """Is a setuid file made in scratch out of reach of other host users?"""
    result = run_py(
        scratch,
        "import os, shutil\nshutil.copy('/bin/true', 'suid')\nos.chmod('suid', 0o4755)\n"
        "os.chmod('/scratch', 0o777)",
    )
    assert result.returncode == 0, result.output
    assert scratch.stat().st_mode & 0o077 == 0


def test_a_grader_that_is_not_root_still_enforces_its_limits(tmp_path):
    """Without root (no cgroup), are a fork bomb and a memory bomb still stopped?"""

    system_python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    setpriv = shutil.which("setpriv")
    site = [p for p in sys.path if p.endswith("site-packages") and Path(p, "psutil").is_dir()]
    if os.geteuid() != 0 or not setpriv or not os.path.exists(system_python) or not site:
        pytest.skip("needs root to switch to nobody, setpriv and a system Python like ours")
    folder = Path(tempfile.mkdtemp(prefix="sandbox-nobody-", dir="/tmp"))
    try:
        folder.chmod(0o777)
        script = folder / "run.py"
        script.write_text(
            textwrap.dedent(
                """
                import os, sys
                sys.path[:0] = [sys.argv[1], sys.argv[2]]
                from grader.sandbox import Limits, Sandbox
                scratch = os.path.join(sys.argv[3], "scratch")
                os.mkdir(scratch)
                limits = Limits(wall_seconds=20, step_seconds=None, processes=64, memory_mb=256)
                box = Sandbox(readonly={}, scratch=scratch, limits=limits)
                bomb = "import os, time\\nfor g in range(9):\\n    try: os.fork()\\n" \\
                    "    except OSError: pass\\ntime.sleep(20)"
                hog = "h = []\\nwhile True: h.append(bytearray(16 * 2**20))"
                for code in ("import os; print('uid', os.getuid())", bomb, hog):
                    r = box.run([sys.executable, "-c", code])
                    print("RESULT", r.killed, r.output.strip(), r.enforced["processes"])
                """
            )
        )
        done = subprocess.run(
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", system_python]
            + [str(script), str(ROOT), site[0], str(folder)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if "No module named" in done.stderr or "Permission denied" in done.stderr:
            pytest.skip(f"the repository is not readable by nobody here: {done.stderr[-300:]}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert len(lines) == 3, done.stdout + done.stderr
    assert "uid 65534" in lines[0] and "RLIMIT_NPROC" in lines[0]
    assert "too many processes:" in lines[1]
    assert "out of memory:" in lines[2]


# --------------------------------------------------------------------------------------
# TensorFlow


@pytest.mark.slow
def test_tensorflow_imports_with_the_default_limits(scratch):
    """Does `import tensorflow` work inside the sandbox with the default Limits?"""
    box = Sandbox(readonly={}, scratch=scratch, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    result = box.run(
        [
            sys.executable,
            "-c",
            "import tensorflow as tf\nprint('TF', tf.__version__, int(tf.reduce_sum(tf.ones(3))))",
        ]
    )
    assert result.killed is None, result
    assert result.returncode == 0, result.output
    assert "TF " in result.output and result.output.strip().endswith("3")
