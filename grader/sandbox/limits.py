"""What a run may use (``Limits``) and what came back (``Result``)."""

from __future__ import annotations

import dataclasses

from .. import config


@dataclasses.dataclass(frozen=True)
class Limits:
    wall_seconds: float = config.SETTINGS.submission_timeout  # whole run
    step_seconds: float | None = config.SETTINGS.cell_timeout  # most time between two step markers
    memory_mb: int = (
        config.SETTINGS.memory_mb
    )  # resident memory of the whole sandbox (all its processes)
    cpu_seconds: int = 1800  # CPU time per process (RLIMIT_CPU)
    processes: int = 512  # processes + threads inside the sandbox
    output_bytes: int = 1_000_000  # stdout+stderr kept
    scratch_mb: int = 512  # total size of the writable scratch folder
    file_mb: int = 256  # one file (RLIMIT_FSIZE)
    scratch_files: int = 50_000  # files and folders in scratch (an inode flood fills a disk too)
    # Address space of one process (RLIMIT_AS); None: memory_mb + 4 GiB, at least 8 GiB
    # (TensorFlow maps far more than it touches).
    address_space_mb: int | None = None

    def address_space(self) -> int:
        mb = self.address_space_mb
        if mb is None:
            mb = max(8192, self.memory_mb + 4096)
        return mb * 2**20


@dataclasses.dataclass
class Result:
    returncode: int | None  # None when the sandbox was killed
    killed: str | None  # why the sandbox was killed, or None
    output: str  # stdout+stderr, merged, truncated, without step-marker lines
    steps: list[str]  # payloads of the step markers, in order
    peak_mb: float  # highest resident memory of the sandbox seen
    seconds: float  # wall time of the run
    # How each limit was enforced in this run: {"memory": "cgroup v1", ...}.
    enforced: dict[str, str] = dataclasses.field(default_factory=dict)
