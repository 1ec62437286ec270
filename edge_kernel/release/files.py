"""A job's released outputs on disk: all three files or none, and never half a file.

The release directory is the durable point of a job: once it exists, what it holds is
what the researcher fetches and what the outbox anchors, and an edge that crashed after
writing it finishes the release from it on restart. So each file is written and synced in
a staging directory that is then renamed into place, and the renames are synced too: a
crash or a power cut leaves either the old state or the new one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RELEASE_FILES = ("weights.safetensors", "metrics.json", "receipt.json")
RECEIPT_FILE = "receipt.json"


@dataclass(frozen=True)
class Release:
    weights: bytes
    metrics: dict[str, Any]
    receipt: dict[str, Any]


def write_release(target: Path, weights: bytes, metrics: dict[str, Any], receipt: dict[str, Any]) -> None:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_synced(staging / "weights.safetensors", weights)
    write_synced(staging / "metrics.json", json.dumps(metrics).encode())
    write_synced(staging / RECEIPT_FILE, json.dumps(receipt, indent=2).encode())
    sync_dir(staging)
    if target.exists():  # a release written again replaces the old one whole
        old = target.with_name(target.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old)
    else:
        staging.rename(target)
    sync_dir(target.parent)


def read_release(target: Path) -> Release | None:
    """The release as written, or None when there is none (a crash before its rename)."""
    if not all((target / name).is_file() for name in RELEASE_FILES):
        return None
    return Release(weights=(target / "weights.safetensors").read_bytes(),
                   metrics=json.loads((target / "metrics.json").read_bytes()),
                   receipt=json.loads((target / RECEIPT_FILE).read_bytes()))


def write_atomically(path: Path, data: bytes) -> None:
    """Replace one file whole: written beside, synced, renamed, the rename synced."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.partial")
    write_synced(staging, data)
    os.replace(staging, path)
    sync_dir(path.parent)


def write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def sync_dir(path: Path) -> None:
    directory = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)  # the names in it survive a power cut, not only the data
    finally:
        os.close(directory)
