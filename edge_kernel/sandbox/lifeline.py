"""What ties a job's processes to the life of the edge that started them.

A job that outlives its edge runs beside the next one (an edge runs one job at a time:
it may use the whole appliance), unsupervised, writing into a directory nobody will
clean (its stdout may hold record data). Three layers stop that:

- the parent-death signal: the kernel SIGKILLs ``rapha-airgap`` (``--parent-pid``), and
  with it the job's PID namespace, when the edge dies, however it dies. In the unsafe
  no-air-gap mode the job process sets it on itself (``inside/parent.py``);
- the job's own process group (session), killed as a whole when the edge stops a job;
- a process file per running job, outside the directory the job may write: an edge that
  starts after a crash stops whatever is still running under it before it runs anything.

A pid alone is not an identity: after a crash the kernel may have handed it to an
unrelated process. The process file also names the boot and the process's start time,
and nothing is killed unless they match.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from jupyter_rapha.protocol.errors import SandboxFault

PROCESS_FILE = "process.json"
STOP_SECONDS = 10.0


@dataclass(frozen=True)
class JobProcess:
    """The leader of a job's process group (``rapha-airgap``, or the job process itself
    without the air-gap), named so that a reused pid never matches."""

    pid: int
    start_time: int  # clock ticks after boot, /proc/PID/stat field 22
    boot_id: str

    @classmethod
    def of(cls, pid: int) -> JobProcess:
        stat = _stat(pid)
        if stat is None:
            raise SandboxFault("the job process ended before it could be recorded")
        return cls(pid, stat.start_time, _boot_id())


@dataclass(frozen=True)
class _Stat:
    state: str
    pgrp: int
    start_time: int


def _stat(pid: int) -> _Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may hold anything: split after its last ")".
    fields = text[text.rindex(")") + 2:].split()
    return _Stat(state=fields[0], pgrp=int(fields[2]), start_time=int(fields[19]))


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def write_process_file(path: Path, process: JobProcess) -> None:
    staging = path.with_name(path.name + ".partial")
    with open(staging, "w", encoding="utf-8") as handle:
        json.dump(asdict(process), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)


def read_process_file(path: Path) -> JobProcess | None:
    try:
        doc = json.loads(path.read_text("utf-8"))
        return JobProcess(pid=int(doc["pid"]), start_time=int(doc["start_time"]), boot_id=str(doc["boot_id"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        # Written atomically by the edge: unreadable means tampered with. Running jobs
        # beside an unknown process would be worse than not starting.
        raise SandboxFault("a job's process file is unreadable; cannot tell whether the job still runs",
                           hint=f"check for a leftover job process, then remove {path}") from exc


def members(process: JobProcess) -> list[int]:
    """The live processes of the job's group. Empty after a reboot, and when the leader's
    pid now belongs to another process: the kernel does not hand out a pid while a process
    group of that number exists, so a reused pid means our group is gone."""
    if process.boot_id != _boot_id():
        return []
    leader = _stat(process.pid)
    if leader is not None and leader.start_time != process.start_time:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            if stat.pgrp == process.pid and stat.state != "Z" and stat.start_time >= process.start_time:
                found.append(int(entry))
    return found


def stop(process: JobProcess, timeout: float = STOP_SECONDS) -> bool:
    """SIGKILL the job's process group until none of it runs; False if some still does."""
    deadline = time.monotonic() + timeout
    while members(process):
        if time.monotonic() >= deadline:
            return False
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the group is ours: see members()
        except ProcessLookupError:
            pass  # ended between the scan and the kill
        time.sleep(0.05)
    return True


def stop_leftovers(jobs_dir: Path) -> list[str]:
    """Before an edge runs anything: stop every job process an earlier run left behind.
    Returns the ids of the jobs that still had processes. Raises SandboxFault, stopping
    the start, when one cannot be stopped: two jobs must never run at once."""
    stopped = []
    for path in sorted(Path(jobs_dir).glob(f"*/{PROCESS_FILE}")):
        process = read_process_file(path)
        if process is not None and members(process):
            if not stop(process):
                raise SandboxFault("a job process from before the restart could not be stopped",
                                   hint=f"stop process group {process.pid}, then start the edge again")
            stopped.append(path.parent.name)
        path.unlink(missing_ok=True)
    return stopped
