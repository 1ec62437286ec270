"""The launcher of a distributed job: ``python -m edge_kernel.inside.ranks --fds A,B ...``.

Runs inside the sandbox as the job's command (under the air-gap's init, in the job's own
network, PID and IPC namespaces) and starts one ``job_main`` per rank, each with its own
broker socket and shared arena, and the rendezvous address of the job's own loopback:
``MASTER_ADDR=127.0.0.1`` and a fixed port, free because the namespace holds nothing
else. It is not trusted: the edge meters each rank's channel and reads only ``out/``.

Only rank 0 writes ``out/``; rank N writes ``ranks/N/out``, which the edge never reads.
When a rank fails, the launcher kills the others at once (a rank blocked in a collective
would otherwise wait for its peer until the budget ran out) and exits with that rank's
status; the error report (type and line) written first, by whichever rank, becomes
``out/error.json``: a rank whose peer vanished under a collective fails too, later, and
its report names only the consequence.
Whatever the launcher leaves, the sandbox's init kills with it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from .parent import die_with_parent

MASTER_ADDR = "127.0.0.1"
MASTER_PORT = 29500
JOB_PYTHON_FLAGS = ("-P", "-s", "-B")  # as the runner's


def rank_out_dir(rank: int) -> Path:
    """Where a rank's results go: rank 0's are the job's; the others' are never read."""
    return Path("out") if rank == 0 else Path("ranks") / str(rank) / "out"


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.parent_pid is not None:
        die_with_parent(args.parent_pid)
    fds, shm_fds = _numbers(args.fds), _numbers(args.shm_fds) if args.shm_fds else []
    if not fds or (shm_fds and len(shm_fds) != len(fds)):
        print("ranks: one --fds entry per rank, and as many --shm-fds or none", file=sys.stderr)
        return 2
    ranks = [_start(rank, len(fds), fd, shm_fds[rank] if shm_fds else None, args.parent_pid)
             for rank, fd in enumerate(fds)]
    return _wait(ranks)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ranks")
    parser.add_argument("--fds", required=True, help="each rank's inherited broker socket, comma-separated")
    parser.add_argument("--shm-fds", default="", help="each rank's inherited shared arena, comma-separated")
    parser.add_argument("--parent-pid", type=int, default=None, help="die with this process (no air-gap only)")
    return parser.parse_args(argv)


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _start(rank: int, world_size: int, fd: int, shm_fd: int | None, parent_pid: int | None) -> subprocess.Popen[bytes]:
    command = [sys.executable, *JOB_PYTHON_FLAGS, "-m", "edge_kernel.inside.job_main", "--fd", str(fd),
               "--rank", str(rank), "--world-size", str(world_size)]
    passed = [fd]
    if shm_fd is not None:
        command += ["--shm-fd", str(shm_fd)]
        passed.append(shm_fd)
    if parent_pid is not None:
        command += ["--parent-pid", str(os.getpid())]  # ranks die with the launcher, which dies with the edge
    env = {**os.environ, "MASTER_ADDR": MASTER_ADDR, "MASTER_PORT": str(MASTER_PORT), "RANK": str(rank),
           "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_WORLD_SIZE": str(world_size)}
    return subprocess.Popen(command, pass_fds=passed, env=env)


def _wait(ranks: list[subprocess.Popen[bytes]]) -> int:
    by_pid = {process.pid: rank for rank, process in enumerate(ranks)}
    running = set(by_pid)
    while running:
        pid, status = os.wait()
        if pid not in running:
            continue  # an orphan re-parented to us (never without a PID namespace of our own)
        running.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            _stop(ranks, running)
            _take_first_error(len(ranks))
            return code if code > 0 else 128 - code
    return 0


def _stop(ranks: list[subprocess.Popen[bytes]], running: set[int]) -> None:
    for process in ranks:
        if process.pid in running:
            try:
                process.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass  # it ended on its own meanwhile
    for process in ranks:
        if process.pid in running:
            process.wait()


def _take_first_error(world_size: int) -> None:
    """The earliest error report of any rank stands for the job's."""
    reports = []
    for rank in range(world_size):
        report = rank_out_dir(rank) / "error.json"
        try:
            reports.append((report.stat().st_mtime_ns, rank, report))
        except FileNotFoundError:
            continue  # this rank wrote none (killed, or it had not failed)
    if reports:
        _, rank, first = min(reports)
        if rank != 0:
            os.replace(first, Path("out") / "error.json")


if __name__ == "__main__":
    sys.exit(main())
