"""The host's process table, read from /proc, for tests that prove nothing outlives
what it belongs to. A process is named by (pid, start time) so that a pid the kernel
reused for an unrelated process is never mistaken for the one a test saw."""

from __future__ import annotations

import os
import time
from pathlib import Path

Process = tuple[int, int]  # (pid, start time in clock ticks since boot)


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name is in parentheses and may hold spaces: split after its last ")"
    return text[text.rindex(")") + 2:].split()


def start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def running(process: Process) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    fields = _stat(process[0])
    return fields is not None and fields[0] != "Z" and int(fields[19]) == process[1]


def descendants(pid: int) -> set[Process]:
    """Every process below ``pid`` (pid namespaces included: /proc shows host pids)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), list(children.get(pid, []))
    while todo:
        child = todo.pop()
        started = start_time(child)
        if started is not None:
            found.add((child, started))
            todo.extend(children.get(child, []))
    return found


def wait_for_descendants(pid: int, count: int, timeout: float = 60) -> set[Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = descendants(pid)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"expected {count} processes below {pid}, found {descendants(pid)}")


def survivors(processes: set[Process], timeout: float = 10) -> set[Process]:
    """Those of ``processes`` still running after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    alive = {p for p in processes if running(p)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {p for p in alive if running(p)}
    return alive
