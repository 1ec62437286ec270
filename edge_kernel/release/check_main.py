"""The disclosure check process: ``python -m edge_kernel.release.check_main --dir DIR``.

Trusted edge code only, run after the job and before any release, in its own process
under ``rapha-airgap`` (no network, an unprivileged uid, time and memory limits): a check
that a hostile output makes crash, hang or exhaust memory takes only this process down,
and the runner refuses the release (S4). It never runs researcher Python: weights are read
as numbers from the safetensors bytes, the model for membership inference is the exported
program.

DIR holds what the edge put there: ``weights.safetensors`` and ``metrics.json`` (the held
outputs), ``used.npz`` and ``held_back.npz`` (the records the job used and the held-back
records, reloaded by the edge, one array per field with the records stacked on the first
axis), ``schema.json`` and, if the job exported its model, ``program.pt2``. Each check's
figures are printed as one JSON line when it finishes (the runner shows them as they come);
``checks.json`` in DIR is the whole result, written last.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

from .membership import capacity

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
           "U8": "u1", "BOOL": "?"}


def read_tensors(data: bytes) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as numpy arrays; bfloat16 widened to float32
    (its bits are the high half of a float32's, so nothing is lost)."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    body = memoryview(data)[8 + length:]
    tensors: dict[str, np.ndarray] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        raw = body[start:end]
        if entry["dtype"] == "BF16":
            array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, _DTYPES[entry["dtype"]])
        tensors[name] = array.reshape(entry["shape"])
    return tensors


def read_records(path: Path) -> list[dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as stacked:  # never pickle: the arrays only
        fields = {name: stacked[name] for name in stacked.files}
    count = min((len(a) for a in fields.values()), default=0)
    return [{name: array[i] for name, array in fields.items()} for i in range(count)]


def copy_figures(weights: dict[str, np.ndarray], metrics: dict[str, list[float]],
                 used: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    from .copies import released_numbers, scan_copies

    report = scan_copies(released_numbers(weights, metrics), used)
    return dict(report.figures())


def membership_check(directory: Path, used: list[dict[str, np.ndarray]], held_back: list[dict[str, np.ndarray]],
                     schema: dict[str, Any]) -> dict[str, Any]:
    from .membership import membership_figures

    started = time.monotonic()
    program = directory / "program.pt2"  # absent when the model could not be exported: not checkable
    figures = dict(membership_figures(program if program.is_file() else None, used, held_back, schema))
    figures.setdefault("seconds", time.monotonic() - started)
    return figures


def run_checks(directory: Path, emit: Any) -> dict[str, Any]:
    weights = read_tensors((directory / "weights.safetensors").read_bytes())
    metrics = json.loads((directory / "metrics.json").read_text("utf-8"))
    used = read_records(directory / "used.npz")
    held_back = read_records(directory / "held_back.npz")
    schema = json.loads((directory / "schema.json").read_text("utf-8"))
    checks: dict[str, Any] = {}
    steps: tuple[tuple[str, Callable[[], dict[str, Any]]], ...] = (
        ("capacity", lambda: capacity(weights, len(used))),
        ("record_copies", lambda: copy_figures(weights, metrics, used)),
        ("membership", lambda: membership_check(directory, used, held_back, schema)))
    for name, check in steps:
        checks[name] = check()
        emit(name, checks[name])
    return {"checks": checks, "holdback_size": len(held_back)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="check_main", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path)
    directory = parser.parse_args(argv).dir

    def emit(name: str, figures: dict[str, Any]) -> None:
        print(json.dumps({"check": name, "figures": figures}, allow_nan=False), flush=True)

    result = run_checks(directory, emit)
    staging = directory / "checks.json.partial"
    staging.write_text(json.dumps(result, allow_nan=False), "utf-8")
    os.replace(staging, directory / "checks.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
