"""A finished job's outputs while their release is decided: ``state/jobs/ID/held/``.

The held directory is the durable point between a job's end and its release (S5): its
weights, metrics and the unsigned receipt predicate are written whole (each file synced,
a staging directory renamed into place, the rename synced) before the job is ``held``, so
an edge that stops while a job is held finds it again, still held. The job process can
never reach it: its work directory is ``jobs/ID/work`` and it is dead before this is
written. Later steps add, each replaced whole: ``checks.json`` (the disclosure checks'
figures), ``decision.json`` (the release policy's answer) and ``reviews.json`` (the
output checkers' signed decisions). Nothing here is ever sent to the researcher: a
release signs the receipt and writes ``release/``; a refusal removes the directory.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_rapha.protocol.errors import StorageFault

from .files import sync_dir, write_atomically, write_synced

HELD_FILES = ("weights.safetensors", "metrics.json", "predicate.json")
CHECKS_FILE = "checks.json"
DECISION_FILE = "decision.json"
REVIEWS_FILE = "reviews.json"
PROGRAM_FILE = "program.pt2"  # where check_runner takes it from


@dataclass(frozen=True)
class Held:
    """What a held job waits with: its checked outputs and the receipt predicate to sign."""

    weights: bytes
    metrics: dict[str, Any]
    predicate: dict[str, Any]
    # the exported program (rapha.save) for the membership check, never released; None
    # when the model could not be exported
    program: bytes | None = None


def held_dir(jobs_dir: Path, job_id: str) -> Path:
    return jobs_dir / job_id / "held"


def write_held(target: Path, held: Held) -> None:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    staging.chmod(0o700)  # the edge's alone: never the job's uid
    write_synced(staging / "weights.safetensors", held.weights)
    write_synced(staging / "metrics.json", json.dumps(held.metrics).encode())
    write_synced(staging / "predicate.json", json.dumps(held.predicate).encode())
    if held.program is not None:
        write_synced(staging / PROGRAM_FILE, held.program)
    sync_dir(staging)
    if target.exists():  # written again after a crash between write and transition: replaced whole
        shutil.rmtree(target)
    staging.rename(target)
    sync_dir(target.parent)


def read_held(target: Path) -> Held | None:
    """The held outputs, or None when there are none (a crash before the rename)."""
    if not all((target / name).is_file() for name in HELD_FILES):
        return None
    try:
        return Held(weights=(target / "weights.safetensors").read_bytes(),
                    metrics=json.loads((target / "metrics.json").read_bytes()),
                    predicate=json.loads((target / "predicate.json").read_bytes()),
                    program=(target / PROGRAM_FILE).read_bytes() if (target / PROGRAM_FILE).is_file() else None)
    except ValueError as exc:  # written whole and synced: a bad file is damage, never "no outputs"
        raise StorageFault("a held job's files are damaged") from exc


def write_part(target: Path, name: str, value: Any) -> None:
    """One of checks.json, decision.json, reviews.json, replaced whole."""
    if name not in (CHECKS_FILE, DECISION_FILE, REVIEWS_FILE):
        raise StorageFault(f"no held file {name}")
    write_atomically(target / name, json.dumps(value, indent=2, allow_nan=False).encode())


def read_part(target: Path, name: str) -> Any | None:
    path = target / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_bytes())
    except ValueError as exc:
        raise StorageFault(f"a held job's {name} is damaged") from exc


def remove_held(target: Path) -> None:
    """After a release (``release/`` written) or a refusal: the held copy goes."""
    shutil.rmtree(target.with_name(target.name + ".partial"), ignore_errors=True)
    if target.exists():
        shutil.rmtree(target)
        sync_dir(target.parent)
