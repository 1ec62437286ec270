"""What a cell brings beside itself, read and checked here before anything leaves:
``--artifact NAME=PATH`` (safetensors weights) and ``--include PATH`` (Python files).

Only safetensors travel. A torch checkpoint (``.pt``/``.pth``, a zip of pickles) or any
pickle is refused by its content, whatever its name: unpickling is running code, and the
hospital must never be asked to. The refusal says how to convert it. The edge checks
every artifact again (digest, size, the same parser as released weights).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .protocol.errors import BadInput
from .protocol.job_inputs import (ARTIFACT_NAME, ARTIFACT_NAME_RULE, MAX_ARTIFACT_BYTES, MAX_ARTIFACTS,
                                  ArtifactEntry, IncludedFile, included_file, parse_includes)

CONVERT_HINT = ("convert it once: python -c \"import torch, safetensors.torch as st; "
                "st.save_file(torch.load('MODEL.pt', weights_only=True), 'MODEL.safetensors')\"")
_CHUNK = 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Artifact:
    """An artifact as checked here: the file, and the digest and size it had then."""

    name: str
    path: str
    sha256: str
    bytes: int

    def entry(self) -> ArtifactEntry:
        return ArtifactEntry(self.name, self.sha256, self.bytes)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "bytes": self.bytes}


def parse_artifact_args(items: list[str] | None) -> list[Artifact]:
    """``NAME=PATH`` pairs, each file checked (exists, safetensors, not a pickle)."""
    artifacts: list[Artifact] = []
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise BadInput(f"--artifact {item!r} must look like NAME=PATH, e.g. backbone=densenet.safetensors")
        if not ARTIFACT_NAME.fullmatch(name):
            raise BadInput(f"--artifact name {name!r} must be {ARTIFACT_NAME_RULE}")
        if any(a.name == name for a in artifacts):
            raise BadInput(f"--artifact {name} is given twice; give each artifact its own name")
        artifacts.append(check_artifact(name, path))
    if len(artifacts) > MAX_ARTIFACTS:
        raise BadInput(f"at most {MAX_ARTIFACTS} artifacts per job")
    return artifacts


def check_artifact(name: str, path: str) -> Artifact:
    file = Path(path).expanduser()
    if not file.is_file():
        raise BadInput(f"--artifact {name}: no file at {path}")
    size = file.stat().st_size
    if not 0 < size <= MAX_ARTIFACT_BYTES:
        raise BadInput(f"--artifact {name}: {path} is {size} bytes; an artifact is 1 to {MAX_ARTIFACT_BYTES} bytes")
    check_format(name, str(file), size)
    return Artifact(name, str(file.resolve()), file_sha256(file), size)


def check_format(name: str, path: str, size: int) -> None:
    """Not a pickle, and a safetensors header; run again just before an upload, so a file
    swapped since it was checked never leaves (its digest the edge checks too)."""
    try:
        with open(path, "rb") as stream:
            if os.fstat(stream.fileno()).st_size != size:
                raise BadInput(f"--artifact {name}: {path} changed since it was checked (its size differs)",
                               hint="run the cell again")
            head = stream.read(8)
            refuse_pickle(name, path, head)
            _check_safetensors_header(name, path, head, stream, size)
    except OSError as exc:
        raise BadInput(f"--artifact {name}: cannot read {path}") from exc


def refuse_pickle(name: str, path: str, head: bytes) -> None:
    """A pickle (protocol 2 and later starts 0x80 then its protocol number) or a zip
    (torch.save's format since 1.6: a zip holding a pickle) is refused by its bytes."""
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise BadInput(f"--artifact {name}: {path} is a pickle, which would run code when loaded; "
                       "only safetensors files travel", hint=CONVERT_HINT)
    if head[:4] == b"PK\x03\x04":
        raise BadInput(f"--artifact {name}: {path} is a zip file (torch.save's checkpoint format, which holds a "
                       "pickle); only safetensors files travel", hint=CONVERT_HINT)


def _check_safetensors_header(name: str, path: str, head: bytes, stream: Any, size: int) -> None:
    (length,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
    if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
        raise BadInput(f"--artifact {name}: {path} is not a safetensors file", hint=CONVERT_HINT)
    try:
        header = json.loads(stream.read(length))
    except (ValueError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict):
        raise BadInput(f"--artifact {name}: {path} is not a safetensors file (its header is not JSON)",
                       hint=CONVERT_HINT)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_includes(paths: list[str] | None) -> tuple[IncludedFile, ...]:
    """``--include`` files and folders: a file travels under its own name (``helpers.py``
    imports as ``helpers``); a folder's ``.py`` files under the folder's name
    (``mylib/nets.py`` imports as ``mylib.nets``)."""
    files: list[IncludedFile] = []
    for given in paths or []:
        path = Path(given).expanduser()
        if path.is_file():
            files.append(_read_one(path, path.name, given))
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*.py") if p.is_file() and "__pycache__" not in p.parts)
            if not found:
                raise BadInput(f"--include {given}: the folder holds no .py files")
            files += [_read_one(p, f"{path.name}/{p.relative_to(path).as_posix()}", given) for p in found]
        else:
            raise BadInput(f"--include {given}: no such file or folder")
    return parse_includes([f.to_dict() for f in files])  # the edge's own checks: collisions, total size


def _read_one(path: Path, relative: str, given: str) -> IncludedFile:
    if path.suffix != ".py":
        raise BadInput(f"--include {given}: {path.name} is not a .py file")
    try:
        code = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"--include {given}: cannot read {path.name} as UTF-8 text") from exc
    return included_file(relative, code)
