"""Writing a job's released outputs: all three files or none."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

RELEASE_FILES = ("weights.safetensors", "metrics.json", "receipt.json")


def write_release(target: Path, weights: bytes, metrics: dict[str, Any], receipt: dict[str, Any]) -> None:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _write(staging / "weights.safetensors", weights)
    _write(staging / "metrics.json", json.dumps(metrics).encode())
    _write(staging / "receipt.json", json.dumps(receipt, indent=2).encode())
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
