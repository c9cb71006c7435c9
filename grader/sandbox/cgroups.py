"""A memory and a pids cgroup for each sandbox (v1 or v2), where one is writable."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
import uuid
from pathlib import Path

import psutil

from .limits import Limits
from .walls import is_under


def _cgroup_place(in_hierarchy, is_mount) -> tuple[Path, Path] | None:
    """``(mount point, our own folder)`` in the cgroup hierarchy that the predicates pick.

    ``in_hierarchy(hierarchy id, controllers)`` picks our line of /proc/self/cgroup,
    ``is_mount(fstype, mount options)`` the mount of that hierarchy in mountinfo.
    """
    own = None
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            if in_hierarchy(hierarchy, controllers.split(",")):
                own = path
    if own is None:
        return None
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if not is_mount(fields[sep + 1], fields[sep + 3].split(",")):
                continue
            root, mountpoint = fields[3], fields[4]
            rel = own[len(root) :] if root != "/" and is_under(own, root) else own
            return Path(mountpoint), Path(mountpoint + rel)
    return None


def _cgroup_v1_dir(controller: str) -> Path | None:
    """Our own folder in the v1 hierarchy of a controller, when mounted."""
    place = _cgroup_place(
        lambda _, controllers: controller in controllers,
        lambda fstype, options: fstype == "cgroup" and controller in options,
    )
    if place is None:
        return None
    mountpoint, own = place
    return own if own.is_dir() else mountpoint


def _cgroup_v2_dir() -> Path | None:
    place = _cgroup_place(
        lambda hierarchy, controllers: hierarchy == "0" and controllers == [""],
        lambda fstype, _: fstype == "cgroup2",
    )
    if place is None:
        return None
    return place[1] if place[1].is_dir() else None


def write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _remove_stale(parent: Path) -> None:
    """Remove empty sandbox cgroups left by a grader that died (their pid is gone)."""
    with contextlib.suppress(OSError):
        for child in parent.iterdir():
            m = re.fullmatch(r"grader-sandbox-(\d+)-[0-9a-f]+", child.name)
            if m and not psutil.pid_exists(int(m.group(1))):
                with contextlib.suppress(OSError):
                    child.rmdir()


class Cgroups:
    """The cgroups of one run: memory and pids, v1 or v2, whichever could be made."""

    def __init__(self, limits: Limits):
        self.name = f"grader-sandbox-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.memory: Path | None = None
        self.pids: Path | None = None
        self.version = ""
        self.dirs: list[Path] = []
        self._make(limits)

    def _mkdir(self, parent: Path | None) -> Path | None:
        if parent is None or not os.access(parent, os.W_OK):
            return None
        _remove_stale(parent)
        path = parent / self.name
        try:
            path.mkdir()
        except OSError:
            return None
        self.dirs.append(path)
        return path

    def _make(self, limits: Limits) -> None:
        memory_bytes = limits.memory_mb * 2**20
        mem = self._mkdir(_cgroup_v1_dir("memory"))
        if mem is not None:
            try:
                write(mem / "memory.limit_in_bytes", str(memory_bytes))
                if (mem / "memory.memsw.limit_in_bytes").exists():
                    write(mem / "memory.memsw.limit_in_bytes", str(memory_bytes))
                self.memory = mem
            except OSError:
                self._drop(mem)
        pids = self._mkdir(_cgroup_v1_dir("pids"))
        if pids is not None:
            try:
                write(pids / "pids.max", str(limits.processes))
                self.pids = pids
            except OSError:
                self._drop(pids)
        if self.memory or self.pids:
            self.version = "cgroup v1"
            return
        # cgroup v2: one folder holds both, when our cgroup delegates the controllers.
        parent = _cgroup_v2_dir()
        if parent is None:
            return
        try:
            enabled = _read(parent / "cgroup.subtree_control").split()
        except OSError:
            return
        if "memory" not in enabled and "pids" not in enabled:
            return
        both = self._mkdir(parent)
        if both is None:
            return
        with contextlib.suppress(OSError):
            write(both / "memory.max", str(memory_bytes))
            with contextlib.suppress(OSError):
                write(both / "memory.swap.max", "0")
            self.memory = both
        with contextlib.suppress(OSError):
            write(both / "pids.max", str(limits.processes))
            self.pids = both
        if self.memory or self.pids:
            self.version = "cgroup v2"
        else:
            self._drop(both)

    def _drop(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            path.rmdir()
        if path in self.dirs:
            self.dirs.remove(path)

    def add(self, pid: int) -> None:
        for d in self.dirs:
            write(d / "cgroup.procs", str(pid))

    def members(self) -> set[int]:
        pids: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                pids.update(int(x) for x in _read(d / "cgroup.procs").split())
        return pids

    def _events(self, path: Path | None, name: str) -> dict[str, int]:
        if path is None:
            return {}
        out = {}
        with contextlib.suppress(OSError):
            for line in _read(path / name).splitlines():
                key, _, value = line.partition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = int(value)
        return out

    def oom_kills(self) -> int:
        if self.version == "cgroup v1":
            return self._events(self.memory, "memory.oom_control").get("oom_kill", 0)
        return self._events(self.memory, "memory.events").get("oom_kill", 0)

    def pids_refused(self) -> int:
        return self._events(self.pids, "pids.events").get("max", 0)

    def tasks(self) -> int | None:
        if self.pids is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            return int(_read(self.pids / "pids.current"))
        return None

    def resident_bytes(self) -> int | None:
        """Anonymous and mapped memory of the cgroup (not its reclaimable page cache)."""
        if self.memory is None:
            return None
        st = self._events(self.memory, "memory.stat")
        if self.version == "cgroup v1":
            return (
                st.get("total_rss", 0) + st.get("total_mapped_file", 0) + st.get("total_shmem", 0)
            )
        return st.get("anon", 0) + st.get("file_mapped", 0) + st.get("shmem", 0)

    def kill_all(self) -> None:
        if self.version == "cgroup v2" and self.dirs:
            with contextlib.suppress(OSError):
                write(self.dirs[0] / "cgroup.kill", "1")
        for pid in self.members():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, timeout: float = 10.0) -> bool:
        """Kill what is left and remove the cgroups; False if something would not die."""
        deadline = time.monotonic() + timeout
        while self.members():
            if time.monotonic() > deadline:
                return False
            self.kill_all()
            time.sleep(0.01)
        for d in list(self.dirs):
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
        return True


def enforcement(*, cgroups: bool = True, limits: Limits | None = None) -> dict[str, str]:
    """How each limit would be enforced by a run here (creates and removes a test cgroup)."""
    cg = Cgroups(limits or Limits()) if cgroups else None
    try:
        return enforced_by(cg)
    finally:
        if cg is not None:
            cg.remove()


def enforced_by(cg: Cgroups | None) -> dict[str, str]:
    memory = f"{cg.version} memory" if cg and cg.memory else "watchdog of the resident memory"
    if cg and cg.pids:
        processes = f"{cg.version} pids"
    elif os.geteuid() != 0:
        processes = "watchdog of the thread count + RLIMIT_NPROC"
    else:
        processes = "watchdog of the thread count (root ignores RLIMIT_NPROC)"
    return {
        "memory": memory + " + RLIMIT_AS per process",
        "processes": processes,
        "cpu": "RLIMIT_CPU per process + watchdog",
        "file": "RLIMIT_FSIZE per file",
        "wall": "watchdog",
        "step": "watchdog",
        "scratch": "watchdog of the size and number of files",
        "output": "kept head and tail, the middle dropped",
    }
