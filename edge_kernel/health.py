"""The health of the edge's storage: what failed, and whether the edge takes jobs.

A full disk, an I/O error or a damaged database is reported here by whoever met it (the
database, the job manager, the audit head file). While any problem stands the edge takes
no new job: a job started on failing storage could lose what it writes, including audit
entries (S7). Problems that can heal (space freed, a device back) are re-checked by
writing a probe file into each state directory, at most every ``recheck_seconds``, when
someone asks; a damaged database stays reported until an operator restarts the edge.

Problem texts leave the edge (``GET /v1/edge``), so they are generic: never a path.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

FULL = "the edge's storage is full"
IO_ERROR = "the edge's storage reports I/O errors"
READ_ONLY = "the edge's storage is read-only"
DAMAGED = "the edge database is damaged"
HEALABLE = (FULL, IO_ERROR, READ_ONLY)
PROBE_BYTES = 256 * 1024  # room for a few SQLite pages and a job's first files

_ERRNO_PROBLEMS = {errno.ENOSPC: FULL, errno.EDQUOT: FULL, errno.EIO: IO_ERROR, errno.EROFS: READ_ONLY}


def os_error_problem(exc: BaseException) -> str | None:
    """The storage problem an OSError stands for; None for any other error."""
    return _ERRNO_PROBLEMS.get(exc.errno) if isinstance(exc, OSError) and exc.errno is not None else None


class StorageHealth:
    def __init__(self, probe_dirs: tuple[Path, ...] = (), recheck_seconds: float = 2.0) -> None:
        self.probe_dirs = probe_dirs
        self.recheck_seconds = recheck_seconds
        self._problems: list[str] = []
        self._checked = 0.0
        self._lock = threading.Lock()

    def report(self, problem: str) -> None:
        with self._lock:
            if problem not in self._problems:
                self._problems.append(problem)
                log.error("storage problem: %s; the edge takes no new jobs", problem)

    def problems(self) -> list[str]:
        """The problems standing now, after a re-check of those that can heal (throttled)."""
        with self._lock:
            if any(p in HEALABLE for p in self._problems) and time.monotonic() - self._checked >= self.recheck_seconds:
                self._checked = time.monotonic()
                self._recheck()
            return list(self._problems)

    def accepting_jobs(self) -> bool:
        return not self.problems()

    def _recheck(self) -> None:
        try:
            for directory in self.probe_dirs:
                _probe(directory)
        except OSError as exc:
            log.warning("storage still failing: %s", exc.strerror or type(exc).__name__)
            return
        healed = [p for p in self._problems if p in HEALABLE]
        self._problems = [p for p in self._problems if p not in HEALABLE]
        for problem in healed:
            log.warning("storage recovered (%s no longer); the edge takes jobs again", problem)


def _probe(directory: Path) -> None:
    """Write, sync and remove a probe file: proof that the directory takes writes now."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f".storage-probe.{os.getpid()}"
    try:
        with open(path, "wb") as handle:
            handle.write(b"\0" * PROBE_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        path.unlink(missing_ok=True)
