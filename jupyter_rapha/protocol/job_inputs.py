"""What a job brings beside its cell: artifacts (safetensors weights, by digest) and
included Python files (by text). Both are part of the signed job spec.

An artifact travels by reference: the spec names its sha256 and size, and the bytes are
uploaded beforehand to ``PUT /v1/artifacts/{sha256}`` (signed over that digest), so a
file changed after the spec was signed is refused by digest. An included file travels in
the spec itself, so it is scanned, hashed and signed like the cell. The receipt's code
digest is over a canonical listing of the cell and every included file (``code_listing``).

Pure: no I/O. Parsing follows ``jobspec``: anything malformed is a ``BadInput`` that says
what to fix.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from typing import Any

from .canonical import canonical_json
from .errors import BadInput

ARTIFACT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
ARTIFACT_NAME_RULE = "letters, digits, '_', '.' or '-', starting with a letter, at most 64"
MAX_ARTIFACTS = 16
# The protocol's ceiling for one artifact; the hospital's policy sets the job's own limit
# (data.hospital.artifacts.max_artifact_bytes), far lower by default.
MAX_ARTIFACT_BYTES = 2**34
MAX_INCLUDES = 64
MAX_INCLUDE_BYTES = 1024 * 1024  # all included files together; the request body holds 2 MiB
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
CELL_PATH = "<cell>"  # the cell's own entry in the code listing


@dataclass(frozen=True)
class ArtifactEntry:
    name: str
    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class IncludedFile:
    path: str  # relative, "/"-separated, ending ".py": "helpers.py", "mylib/nets.py"
    code: str
    sha256: str

    @property
    def module(self) -> str:
        """The name it imports under: ``mylib.nets``, ``mylib`` for ``mylib/__init__.py``."""
        parts = self.path[:-3].split("/")
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    @property
    def top_module(self) -> str:
        return self.path.split("/")[0].removesuffix(".py")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "code": self.code}


def include_digest(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def included_file(path: str, code: str) -> IncludedFile:
    """An included file, its path checked (the edge checks it again)."""
    return IncludedFile(check_include_path(path), code, include_digest(code))


def check_include_path(path: str) -> str:
    """A relative module path whose every part is a Python name. Refused: absolute paths,
    '..', and a top-level name that is a standard-library module (it would shadow it for
    the whole job, ``socket`` or ``json`` included)."""
    parts = path.split("/") if isinstance(path, str) else []
    if not parts or not path.endswith(".py") or not all(_SEGMENT.fullmatch(p) for p in [*parts[:-1], parts[-1][:-3]]):
        raise BadInput(f"included file {str(path)[:80]!r} must be a relative path of Python names ending in .py "
                       "(like helpers.py or mylib/nets.py)")
    top = parts[0].removesuffix(".py")
    if top in sys.stdlib_module_names or top in ("rapha", "torch", "numpy", "safetensors", "edge_kernel",
                                                 "jupyter_rapha"):
        raise BadInput(f"included module {top!r} has the name of a module the job already imports",
                       hint="rename the file or folder")
    return path


def code_listing(cell_sha256: str, includes: tuple[IncludedFile, ...]) -> list[dict[str, str]]:
    """The cell and every included file, by path and sha256, sorted by path (the cell first)."""
    return [{"path": CELL_PATH, "sha256": cell_sha256},
            *({"path": f.path, "sha256": f.sha256} for f in sorted(includes, key=lambda f: f.path))]


def code_listing_digest(listing: list[dict[str, str]]) -> str:
    return hashlib.sha256(canonical_json(listing)).hexdigest()


def parse_artifacts(value: Any) -> tuple[ArtifactEntry, ...]:
    if not isinstance(value, list) or len(value) > MAX_ARTIFACTS:
        raise BadInput(f"'artifacts' must be a list of at most {MAX_ARTIFACTS} entries")
    entries = tuple(_artifact(item) for item in value)
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise BadInput("'artifacts' names an artifact twice: give each --artifact its own NAME")
    return entries


def _artifact(item: Any) -> ArtifactEntry:
    if not isinstance(item, dict) or set(item) != {"name", "sha256", "bytes"}:
        raise BadInput("an artifact entry must be {\"name\", \"sha256\", \"bytes\"}")
    name, digest, size = item["name"], item["sha256"], item["bytes"]
    if not isinstance(name, str) or not ARTIFACT_NAME.fullmatch(name):
        raise BadInput(f"an artifact name must be {ARTIFACT_NAME_RULE}")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise BadInput(f"artifact {name!r}: sha256 must be 64 lowercase hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_ARTIFACT_BYTES:
        raise BadInput(f"artifact {name!r}: bytes must be a whole number from 1 to {MAX_ARTIFACT_BYTES}")
    return ArtifactEntry(name, digest, size)


def parse_includes(value: Any) -> tuple[IncludedFile, ...]:
    if not isinstance(value, list) or len(value) > MAX_INCLUDES:
        raise BadInput(f"'includes' must be a list of at most {MAX_INCLUDES} files")
    files = tuple(_include(item) for item in value)
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths):
        raise BadInput("'includes' holds a path twice")
    modules = [f.module for f in files]
    if len(set(modules)) != len(modules):  # helpers.py beside helpers/__init__.py
        raise BadInput("two included files import under the same module name")
    if sum(len(f.code.encode("utf-8")) for f in files) > MAX_INCLUDE_BYTES:
        raise BadInput(f"the included files are larger than {MAX_INCLUDE_BYTES} bytes together")
    return files


def _include(item: Any) -> IncludedFile:
    if not isinstance(item, dict) or set(item) != {"path", "sha256", "code"}:
        raise BadInput("an included file must be {\"path\", \"sha256\", \"code\"}")
    path, code, digest = item["path"], item["code"], item["sha256"]
    check_include_path(path)
    if not isinstance(code, str):
        raise BadInput(f"included file {path}: code must be text")
    try:
        actual = include_digest(code)
    except UnicodeEncodeError as exc:
        raise BadInput(f"included file {path} is not valid Unicode text") from exc
    if digest != actual:
        raise BadInput(f"included file {path}: sha256 does not match its code",
                       hint="the file changed after it was hashed")
    return IncludedFile(path, code, digest)
