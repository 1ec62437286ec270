"""Reading what a job left in ``out/``: every file is hostile input. Files are opened without
following links and must be plain files of bounded size; the error report is sanitised as it
is read (``error_report``). Only a completed job's weights, metrics and exported program are
read; a failed job's error report alone.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_rapha.protocol import bounded
from jupyter_rapha.protocol.contract import OUTPUT_LIMITS
from jupyter_rapha.protocol.errors import SandboxFault
from jupyter_rapha.protocol.jobspec import JobSpec

from ..wire.outputs import PROGRAM_FILE
from .error_report import error_report

PROGRAM_OVERHEAD_BYTES = 16 * 1024 * 1024  # the exported graph beside its copy of the weights


class OutputRefused(SandboxFault):
    """A file in out/ that the edge will not read (a link, not a plain file, too large)."""


class OutputTooLarge(OutputRefused):
    """A file in out/ past its size limit."""


@dataclass(frozen=True)
class JobOutputs:
    weights: bytes | None = None
    metrics: dict[str, list[float]] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    program: bytes | None = None


def read_outputs(workdir: Path, spec: JobSpec, *, completed: bool) -> JobOutputs:
    try:
        out = os.open(workdir / "out", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return JobOutputs()
    except OSError as exc:
        raise OutputRefused("the job's out/ is not a plain directory") from exc
    try:
        if not completed:
            return JobOutputs(error=error_report(read_plain(out, "error.json", OUTPUT_LIMITS.error_report_bytes),
                                                 spec.code, spec.cell_first_line))
        weights = read_plain(out, "weights.safetensors", spec.output_policy.max_weights_bytes)
        metrics = _metrics(read_plain(out, "metrics.json", OUTPUT_LIMITS.metrics_bytes))
        return JobOutputs(weights=weights, metrics=metrics,
                          program=_program(out, spec) if weights is not None else None)
    finally:
        os.close(out)


def read_plain(dir_fd: int, name: str, limit: int) -> bytes | None:
    """Read a job-written file as hostile: a symlink or hard link could point the edge,
    which can read the dataset, at a file the job cannot see; a FIFO would block."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputRefused(f"out/{name} is not a plain file") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise OutputRefused(f"out/{name} is not a plain file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OutputTooLarge(f"out/{name} is larger than allowed")
    return data


def _program(dir_fd: int, spec: JobSpec) -> bytes | None:
    """The exported program, read as hostile as the rest; one larger than its weights
    could ever make it is not read, and the membership check then finds none."""
    try:
        return read_plain(dir_fd, PROGRAM_FILE, 2 * spec.output_policy.max_weights_bytes + PROGRAM_OVERHEAD_BYTES)
    except OutputTooLarge:  # a link or a FIFO in out/ stays an attack, refused as such
        return None


def _metrics(raw: bytes | None) -> dict[str, list[float]]:
    if raw is None:
        return {}
    doc = bounded.loads(raw, what="out/metrics.json", error=OutputRefused)  # the job wrote it
    if not isinstance(doc, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(_is_number(x) for x in v) for k, v in doc.items()):
        raise OutputRefused("out/metrics.json must map names to lists of numbers")
    return {k: [float(x) for x in v] for k, v in doc.items()}


def _is_number(value: Any) -> bool:
    # NaN compares false; an integer past the largest float is refused, not overflowed by float()
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= sys.float_info.max
