"""The job process: ``python -m edge_kernel.inside.job_main --fd N``.

Runs inside the sandbox with the job directory as its working directory, holding
``cell.py`` and ``job.json``. It never receives a path to the data; records arrive only
over the inherited socket ``N`` from the broker. Results go to ``out/``: weights (by
``rapha.save``), ``metrics.json`` and, on an exception, ``error.json`` holding only the
exception's type and its line in the cell (S5), and its message only when that is one of
the runtime's own fixed texts (``messages.RUNTIME_MESSAGES``). Any other message is never
written: it can carry record values (``KeyError: 'DOE^JANE'``). stderr gets the traceback for the
hospital's own eyes; it never leaves the edge.

Nothing here is relied on: the cell can write error.json itself. The edge sanitises the
report once, as it reads it (``edge_kernel.release.error_report``); this process only
keeps a record value off the disk in the first place.

A rank of a distributed job (``--rank R --world-size W``, started by ``inside/ranks.py``)
joins the job's process group before the cell runs (gloo, or NCCL where CUDA is there,
meeting at ``MASTER_ADDR:MASTER_PORT`` on the job's own loopback); rank 0 writes ``out/``,
the others ``ranks/R/out``, which the edge never reads.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import socket
import sys
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from ..wire.channel import Channel, SharedArena
from .parent import die_with_parent
from ..wire.messages import public_message
from .private import PrivateRapha
from .ranks import rank_out_dir
from .runtime import MAX_BATCH_BYTES, Rapha

CELL_FILENAME = "<cell>"
# A job waiting for its next batch polls the socket this long before it sleeps: a batch
# is usually a fraction of that away, and waking a sleeping process costs both sides
# more than the batch's header (measured: about 8% of loader throughput on 2 cores).
WAIT_SPIN_SECONDS = 0.0005
OUT_DIR = Path("out")
RENDEZVOUS_SECONDS = 120  # every rank starts within this (imports of torch included)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.parent_pid is not None:
        die_with_parent(args.parent_pid)  # before the cell runs: exits if the edge is gone already
    torch.set_num_threads(2)  # a shared edge: the job must not take every core
    job = json.loads(Path("job.json").read_text("utf-8"))
    code = Path("cell.py").read_text("utf-8")
    out_dir = rank_out_dir(args.rank)
    out_dir.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(fileno=args.fd)
    shared = SharedArena.attach(args.shm_fd) if args.shm_fd is not None else None
    # On one core a polling job would only hold off the broker it waits for.
    spin = WAIT_SPIN_SECONDS if len(os.sched_getaffinity(0)) >= 2 else 0.0
    kind = PrivateRapha if job.get("mode") == "dp" else Rapha
    rapha = kind(Channel(sock, max_payload_bytes=MAX_BATCH_BYTES, spin_seconds=spin), job.get("params", {}),
                  job.get("schema", {}), out_dir, shared)
    rapha.rank, rapha.world_size = args.rank, args.world_size
    _take_inputs(job, rapha)
    rapha.gpus = _granted_gpus(job)
    try:
        _join_group(args.rank, args.world_size)
        _run_cell(code, rapha)
    except BaseException as exc:  # every failure leaves as type + line, nothing else
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            return _finish(rapha)
        traceback.print_exc()
        _write_json(out_dir / "error.json", {"type": public_type_name(exc), "line": cell_line(exc),
                                             "message": public_message(str(exc))})
        return 1
    finally:
        sock.close()
        _leave_group()
    return _finish(rapha)


def _granted_gpus(job: dict[str, Any]) -> int:
    gpus = job.get("gpus", 0)
    return gpus if isinstance(gpus, int) and not isinstance(gpus, bool) and gpus > 0 else 0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="job_main")
    parser.add_argument("--fd", type=int, required=True, help="inherited socket to the broker")
    parser.add_argument("--shm-fd", type=int, default=None, help="inherited shared arena for batches")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="die with this process, the edge: without the air-gap nothing else ties the job to it")
    parser.add_argument("--rank", type=int, default=0, help="this process's rank in a distributed job")
    parser.add_argument("--world-size", type=int, default=1, help="the distributed job's number of processes")
    return parser.parse_args(argv)


def _join_group(rank: int, world_size: int) -> None:
    """The process group of a distributed job, ready before the cell's first line."""
    if world_size == 1:
        return
    import datetime

    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    address = f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    dist.init_process_group(backend, init_method=address, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=RENDEZVOUS_SECONDS))


def _leave_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _take_inputs(job: dict[str, Any], rapha: Rapha) -> None:
    """The read-only inputs the edge staged: included files become importable under their
    own module names; artifacts are what ``rapha.artifact(NAME)`` reads."""
    rapha.artifacts = {str(k): str(v) for k, v in (job.get("artifacts") or {}).items()}
    code_path = job.get("code_path")
    if isinstance(code_path, str) and code_path:
        sys.path.insert(0, code_path)


def _run_cell(code: str, rapha: Rapha) -> None:
    compiled = compile(code, CELL_FILENAME, "exec")
    exec(compiled, {"__name__": "__main__", "__builtins__": builtins, "rapha": rapha})


def _finish(rapha: Rapha) -> int:
    _write_json(rapha.out_dir / "metrics.json", rapha.metrics)
    return 0


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, allow_nan=False), "utf-8")


def public_type_name(exc: BaseException) -> str:
    """The nearest built-in exception class name.

    A class the cell defines could be named after data (``type(secret, (Exception,), {})``),
    so only names of built-in exception classes leave.
    """
    for cls in type(exc).__mro__:
        if cls.__module__ == "builtins" and getattr(builtins, cls.__name__, None) is cls:
            return str(cls.__name__)
    return "BaseException"


def cell_line(exc: BaseException) -> int | None:
    """The line in the cell where the exception surfaced last, or None."""
    if isinstance(exc, SyntaxError) and exc.filename == CELL_FILENAME:
        return exc.lineno
    line = None
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == CELL_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


if __name__ == "__main__":
    sys.exit(main())
