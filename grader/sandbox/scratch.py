"""The one writable folder of a sandbox: made, watched, read safely and emptied.

Nothing in it is trusted: it is walked through folder descriptors, never following a link,
and a file is read out of it only by :func:`read_artifact`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import time
import uuid
from pathlib import Path, PurePosixPath

from .limits import Limits

# Where scratch is inside every sandbox.
SCRATCH = "/scratch"
# Folders inside scratch that stand for /tmp, /dev/shm and $HOME.
TMP, SHM, HOME = ".tmp", ".shm", ".home"
# The slowest walk of scratch allowed, and how often the file system's usage is looked at
# between two walks.
_SCRATCH_PERIOD = 0.5
QUICK_PERIOD = 0.02


def prepare(scratch: Path) -> None:
    """Make scratch private and give it real folders for /tmp, /dev/shm and $HOME.

    A folder left by an earlier run may be a symlink planted by its code: bwrap resolves bind
    sources on the host, so each is checked without following links and replaced if needed.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    os.chmod(scratch, 0o700)
    fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in (TMP, SHM, HOME):
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None and not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=fd)
                st = None
            if st is None:
                os.mkdir(name, 0o700, dir_fd=fd)
    finally:
        os.close(fd)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _walk(root: Path, max_depth: int):
    """Yield (parent fd, entry name, lstat, depth) for everything under root, children before
    their folder, through folder descriptors: any path length, never following a link.
    Raises RecursionError when folders nest deeper than max_depth."""
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    # Each frame: (fd of a folder, its entries not yet visited, name in parent, parent lstat).
    stack = [(top, None, None, None)]
    try:
        while stack:
            fd, pending, name, st = stack[-1]
            if pending is None:
                try:
                    with os.scandir(fd) as it:
                        pending = [e.name for e in it]
                except OSError:
                    pending = []
                stack[-1] = (fd, pending, name, st)
            if not pending:
                stack.pop()
                os.close(fd)
                if stack:
                    yield stack[-1][0], name, st, len(stack)
                continue
            child = pending.pop()
            try:
                cst = os.stat(child, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(cst.st_mode):
                yield fd, child, cst, len(stack)
                continue
            if len(stack) > max_depth:
                raise RecursionError(f"folders nested deeper than {max_depth} levels")
            try:
                cfd = os.open(child, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                yield fd, child, cst, len(stack)
                continue
            stack.append((cfd, None, child, cst))
    finally:
        for fd, *_ in stack:
            with contextlib.suppress(OSError):
                os.close(fd)


_MAX_DEPTH = 100


def _scratch_usage(root: Path, max_entries: int) -> tuple[int, int]:
    """(bytes allocated, entries) under root, stopping once entries pass max_entries.
    Raises RecursionError for folders nested too deep to be walked safely."""
    total = entries = 0
    for _, _, st, _ in _walk(root, _MAX_DEPTH):
        entries += 1
        total += st.st_blocks * 512
        if entries > max_entries:
            break
    return total, entries


def copy_in(folder: Path, files: dict) -> None:
    """Copy ``files`` ({path relative to folder: host file}) into a run's folder before it runs."""
    for relative, source in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / relative)


def empty_scratch(scratch: Path) -> None:
    """Remove everything in scratch, however deep or strange (links are removed, never
    followed), and leave it an empty private folder."""
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    os.chmod(scratch, 0o700)
    top = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        while True:
            names = os.listdir(top)
            if not names:
                return
            for name in names:
                remove(top, name)
    finally:
        os.close(top)


def openable(parent: int, name: str) -> None:
    """Give back a folder its owner's rights (the code may have chmod'ed it to 000), so that
    a grader that is not root can empty it. Only ever called on a folder just checked with
    lstat, once nothing of the sandbox runs."""
    with contextlib.suppress(OSError):
        os.chmod(name, 0o700, dir_fd=parent)


def remove(top: int, name: str) -> None:
    """Remove top/name; folders deeper than _MAX_DEPTH are moved up to top for a later pass,
    so that few descriptors are open at once."""
    try:
        st = os.stat(name, dir_fd=top, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=top)
        return
    openable(top, name)
    stack = [(os.open(name, _DIR_FLAGS, dir_fd=top), top, name)]
    try:
        while stack:
            fd, parent, here = stack[-1]
            descended = False
            for child in os.listdir(fd):
                cst = os.stat(child, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(cst.st_mode):
                    os.unlink(child, dir_fd=fd)
                elif len(stack) >= _MAX_DEPTH:
                    os.rename(child, f"deep-{uuid.uuid4().hex}", src_dir_fd=fd, dst_dir_fd=top)
                else:
                    openable(fd, child)
                    stack.append((os.open(child, _DIR_FLAGS, dir_fd=fd), fd, child))
                    descended = True
                    break
            if not descended:
                stack.pop()
                os.close(fd)
                os.rmdir(here, dir_fd=parent)
    finally:
        for fd, _, _ in stack:
            with contextlib.suppress(OSError):
                os.close(fd)


def _fs_used(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class ScratchWatch:
    """Walks scratch every _SCRATCH_PERIOD, and sooner when its file system fills fast.

    A walk costs time with many files, so between walks the disk usage of the whole file
    system (one statvfs) stands for the growth of scratch: it overestimates (other writers
    count too), and only ever triggers a walk, never a kill by itself.
    """

    def __init__(self, root: Path, limits: Limits, slack: float = 1.0):
        self.root = root
        self.limits = limits
        self.quick = QUICK_PERIOD * slack
        self.period = _SCRATCH_PERIOD * slack
        self.size = 0
        self.fs_at_scan = _fs_used(root)
        self.took = 0.0
        self.last = 0.0
        self.next_scan = time.monotonic() + 0.2
        self.next_quick = 0.0

    def growing(self, now: float) -> bool:
        if now < self.next_quick:
            return False
        self.next_quick = now + self.quick
        if now - self.last < max(self.quick, 10 * self.took):
            return False
        grown = _fs_used(self.root) - self.fs_at_scan
        return self.size + grown > self.limits.scratch_mb * 2**20

    def scan(self, now: float) -> str | None:
        lim = self.limits
        fs = _fs_used(self.root)
        try:
            self.size, entries = _scratch_usage(self.root, lim.scratch_files)
        except RecursionError as error:
            return f"scratch full: {error}"
        self.fs_at_scan = fs
        self.last = time.monotonic()
        self.took = self.last - now
        self.next_scan = self.last + max(self.period, 10 * self.took)
        if self.size > lim.scratch_mb * 2**20:
            return f"scratch full: the scratch folder holds more than {lim.scratch_mb} MB"
        if entries > lim.scratch_files:
            return (
                f"scratch full: the scratch folder holds more than {lim.scratch_files} "
                "files and folders"
            )
        return None


def read_artifact(scratch: Path, relative: str, max_bytes: int) -> bytes:
    """Read a regular file that sandboxed code left in scratch, without trusting it.

    Every component of ``relative`` is opened with O_NOFOLLOW below ``scratch``: a symlink
    anywhere, "..", an absolute path, a fifo, a device, a socket, a file with several hard
    links or one over ``max_bytes`` raise ValueError. A missing file raises FileNotFoundError.
    """
    rel = PurePosixPath(relative)
    parts = [p for p in rel.parts if p not in (".", "")]
    if rel.is_absolute() or not parts:
        raise ValueError(f"artifact path {relative!r} must be relative to the scratch folder")
    if ".." in parts:
        raise ValueError(f"artifact path {relative!r} must not contain '..'")
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts[:-1]):
            where = "/".join(parts[: i + 1])
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                raise FileNotFoundError(f"artifact folder {where!r} does not exist") from None
            if not stat.S_ISDIR(st.st_mode):
                kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a folder"
                raise ValueError(f"artifact path {relative!r}: {where!r} is {kind}; refused")
            try:
                nfd = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ValueError(
                        f"artifact path {relative!r}: {where!r} is a symlink; refused"
                    ) from None
                raise
            os.close(fd)
            fd = nfd
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"artifact {relative!r} does not exist") from None
        _check_regular(relative, st, max_bytes)
        try:
            ffd = os.open(name, flags | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=fd)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise ValueError(f"artifact {relative!r} is a symlink; refused") from None
            raise
        try:
            st2 = os.fstat(ffd)
            if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
                raise ValueError(f"artifact {relative!r} changed while it was opened; refused")
            _check_regular(relative, st2, max_bytes)
            chunks = []
            size = 0
            while True:
                chunk = os.read(ffd, min(1 << 20, max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise ValueError(
                        f"artifact {relative!r} is larger than {max_bytes} bytes; refused"
                    )
            return b"".join(chunks)
        finally:
            os.close(ffd)
    finally:
        os.close(fd)


def _check_regular(relative: str, st: os.stat_result, max_bytes: int) -> None:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        raise ValueError(f"artifact {relative!r} is a symlink; refused")
    if not stat.S_ISREG(mode):
        kind = (
            "a fifo"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a folder"
            if stat.S_ISDIR(mode)
            else "not a regular file"
        )
        raise ValueError(f"artifact {relative!r} is {kind}, not a regular file; refused")
    if st.st_nlink > 1:
        raise ValueError(f"artifact {relative!r} has {st.st_nlink} hard links; refused")
    if st.st_size > max_bytes:
        raise ValueError(
            f"artifact {relative!r} is {st.st_size} bytes, larger than {max_bytes}; refused"
        )
