"""Runs the disclosure check process on a held job (``check_main``) and reads its answer.

The edge reloads the records the job used (and the held-back records) through the
dataset's own source, writes them with the held outputs into ``jobs/ID/checks/``, and
starts ``check_main`` there under ``rapha-airgap exec``: no network, uid 65534, the edge's
directory, datasets and host secrets covered, and limits on memory, CPU and wall time.
Each line it prints is one finished check; ``checks.json`` is the whole answer. A crash,
a timeout, a non-zero exit, a line or a file that is not the expected figures: the
release is refused (S4) with a reason that names no internals. The directory (it holds
record copies) is removed whatever happens.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Protocol
from collections.abc import Callable, Sequence

import numpy as np

from jupyter_rapha.protocol.errors import RaphaError

from ..sandbox.airgap import NOBODY, airgap_command, find_airgap_binary
from ..sandbox.launch import MAX_PROCESSES, exposed_paths, hidden_paths
from ..sandbox.runner import job_env
from ..settings import Settings
from ..store import JobRecord
from .checks import CheckFailed, ChecksInterrupted, parse_check, parse_checks
from .held import Held

log = logging.getLogger(__name__)

CHECK_SECONDS = 900  # wall clock for all checks of one job: copy scan, MIA, capacity
CHECK_MEMORY_BYTES = 16 * 1024**3  # address space: torch reserves far more than it touches
CHECK_FILE_BYTES = 64 * 1024**2  # what the check may write: checks.json and its stderr
MAX_LINE_BYTES = 64 * 1024
POLL_SECONDS = 0.2
_EXCEPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,79}")
Records = list[dict[str, np.ndarray]]


class RecordSource(Protocol):
    """The records a job used and the held-back ones, as the job saw them."""

    def reload(self, job: JobRecord) -> tuple[Records, Records, dict[str, Any]]: ...


class CheckProcess:
    def __init__(self, settings: Settings, records: RecordSource, *, timeout_s: float = CHECK_SECONDS,
                 memory_bytes: int = CHECK_MEMORY_BYTES, command: Sequence[str] | None = None) -> None:
        self.settings, self.records = settings, records
        self.timeout_s, self.memory_bytes = timeout_s, memory_bytes
        self.command = list(command) if command is not None else None  # tests stand in a crashing one
        self._stop = threading.Event()

    def stop(self) -> None:
        """The edge stops: a check running now is killed and left unanswered (the job stays held)."""
        self._stop.set()

    def run(self, job: JobRecord, held: Held, on_check: Callable[[str, dict[str, Any]], None]) -> dict[str, Any]:
        workdir = self.settings.jobs_dir / job.job_id / "checks"
        try:
            self._prepare(workdir, job, held)
            return self._supervise(workdir, on_check)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)  # record copies never stay behind

    # ---- inputs -------------------------------------------------------------------
    def _prepare(self, workdir: Path, job: JobRecord, held: Held) -> None:
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        try:
            used, held_back, schema = self.records.reload(job)
        except RaphaError as exc:
            raise CheckFailed(f"records could not be reloaded: {exc.diagnostics()}") from exc
        except Exception as exc:  # S4: a reload that breaks refuses; the type goes to the log
            log.exception("job %s: records could not be reloaded for the checks", job.job_id)
            raise CheckFailed(f"records could not be reloaded ({type(exc).__name__})") from exc
        (workdir / "weights.safetensors").write_bytes(held.weights)
        (workdir / "metrics.json").write_text(json.dumps(held.metrics), "utf-8")
        (workdir / "schema.json").write_text(json.dumps(schema), "utf-8")
        if held.program is not None:
            (workdir / "program.pt2").write_bytes(held.program)
        write_records(workdir / "used.npz", used)
        write_records(workdir / "held_back.npz", held_back)
        if not self.settings.sandbox.unsafe_no_airgap:
            for path in (workdir, *workdir.iterdir()):
                os.chown(path, NOBODY, NOBODY)

    # ---- the process --------------------------------------------------------------
    def _supervise(self, workdir: Path, on_check: Callable[[str, dict[str, Any]], None]) -> dict[str, Any]:
        python = self.settings.sandbox.python or sys.executable
        with open(workdir / "stderr.txt", "wb") as err:
            try:
                process = subprocess.Popen(self._command(workdir, python), env=job_env(workdir, python),
                                           cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=err, start_new_session=True,
                                           preexec_fn=self._limits if self.settings.sandbox.unsafe_no_airgap else None)
            except OSError as exc:
                raise CheckFailed(f"the check process could not be started ({type(exc).__name__})") from exc
            if process.stdout is None:  # stdout=PIPE always gives one; never read from nothing
                process.kill()
                raise CheckFailed("the check process has no output pipe")
            lines = _LineReader(process.stdout, on_check)
            try:
                self._wait(process)
            finally:
                _kill(process)
                lines.join()
        if lines.problem:
            raise CheckFailed(lines.problem)
        if process.returncode != 0:
            raise CheckFailed(f"the check process exited with {process.returncode}: {_tail(workdir / 'stderr.txt')}")
        try:
            document = json.loads((workdir / "checks.json").read_bytes())
        except (OSError, ValueError) as exc:
            raise CheckFailed(f"checks.json is missing or not JSON ({type(exc).__name__})") from exc
        return parse_checks(document)

    def _wait(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.timeout_s
        while process.poll() is None:
            if self._stop.is_set():
                raise ChecksInterrupted("the edge stopped while the disclosure checks ran")
            if time.monotonic() >= deadline:
                raise CheckFailed(f"the checks ran past {self.timeout_s:.0f} s")
            try:
                process.wait(timeout=POLL_SECONDS)
            except subprocess.TimeoutExpired:
                pass  # still checking: look at the clock and the stop flag again

    def _command(self, workdir: Path, python: str) -> list[str]:
        command = self.command or [python, "-P", "-s", "-B", "-m", "edge_kernel.release.check_main",
                                   "--dir", str(workdir)]
        if self.settings.sandbox.unsafe_no_airgap:
            log.warning("unsafe_no_airgap: the disclosure checks run WITHOUT the air-gap")
            return command
        hidden = hidden_paths(self.settings)
        seconds = int(self.timeout_s) + 1
        return airgap_command(find_airgap_binary(self.settings), command, workdir=workdir,
                              max_memory_bytes=self.memory_bytes, max_cpu_seconds=seconds * 4,
                              max_wall_seconds=seconds + 5, max_processes=MAX_PROCESSES,
                              max_file_bytes=CHECK_FILE_BYTES, hidden_paths=hidden,
                              exposed_paths=exposed_paths(hidden))

    def _limits(self) -> None:
        # Without the air-gap (which sets them itself) the limits still hold: a check never
        # takes the edge's memory or CPU whole.
        resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))
        cpu = int(self.timeout_s) * 4 + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))


class _LineReader:
    """Reads the check's lines as they come: each must be one check's figures."""

    def __init__(self, stream: IO[bytes], on_check: Callable[[str, dict[str, Any]], None]) -> None:
        self.stream, self.on_check, self.problem = stream, on_check, ""
        self.thread = threading.Thread(target=self._read, daemon=True, name="rapha-check-lines")
        self.thread.start()

    def _read(self) -> None:
        for line in iter(lambda: self.stream.readline(MAX_LINE_BYTES + 1), b""):
            if self.problem:
                continue  # drain: the process must not block on a full pipe
            try:
                if len(line) > MAX_LINE_BYTES:
                    raise CheckFailed("a check printed an over-long line")
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise CheckFailed("a check printed something that is not its figures")
                self.on_check(str(message.get("check")), parse_check(str(message.get("check")), message.get("figures")))
            except (ValueError, CheckFailed) as exc:
                self.problem = getattr(exc, "problem", "a check printed something that is not JSON")

    def join(self) -> None:
        self.thread.join(10)
        self.stream.close()


def write_records(path: Path, records: Records) -> None:
    """Records stacked per field (the schema fixes each field's shape)."""
    fields = sorted(records[0]) if records else []
    stacked: dict[str, Any] = {name: np.stack([np.asarray(r[name]) for r in records]) for name in fields}
    np.savez(path, **stacked)  # numpy's stub would read a key as its allow_pickle flag


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # ended between poll and kill
        process.wait()


def _tail(path: Path) -> str:
    """The exception type the check died of, for the edge's log and the audit (the
    researcher reads CHECK_FAILED). Its message stays in the check's stderr, which is
    removed with the directory: an error from numpy or torch may quote the arrays, and
    the arrays are records; the audit log is kept for ever."""
    try:
        lines = path.read_bytes()[-2048:].decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    last = lines[-1] if lines else ""
    kind = last.split(":", 1)[0].strip()
    return kind[:80] if _EXCEPTION_NAME.fullmatch(kind) else "no exception named"
