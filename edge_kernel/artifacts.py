"""Artifacts a researcher brings into a job: safetensors weights, stored by digest.

The bytes arrive on ``PUT /v1/artifacts/{sha256}`` (the request is signed over that
digest and checked before its body is read); they are hashed as they are written and
kept only if they are exactly those bytes, under ``state/artifacts/KEY_ID/SHA256``: one
researcher's uploads are never another's to name. A job spec then names artifacts by
name, sha256 and size. At submission each one must have been uploaded by the signer,
with that size, and pass the same hand-parsed safetensors checks as released weights
(nothing is unpickled or loaded on the edge); the policy gate judges the sizes against
the hospital's limit. When the job starts, the runner copies each into the job's
``inputs/`` folder, hashing it again on the way (a file changed on the edge's disk is
refused too), and the job reads them there, read-only.

Each researcher's uploads together are held to ``artifacts.max_stored_mib``: an upload
that would pass it is refused before its body is read (and one that sends more than it
declared is cut off at the limit), naming the limit. An artifact no job waiting to run
names, unused for ``artifacts.keep_unused_days`` (last uploaded, or staged for a job), is
deleted; the edge looks at each upload (that researcher's) and at start (everyone's).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO, cast

from jupyter_rapha.protocol.errors import BadInput, ReleaseDenied, SandboxFault
from jupyter_rapha.protocol.job_inputs import MAX_ARTIFACT_BYTES, ArtifactEntry
from jupyter_rapha.protocol.jobspec import JobSpec, OutputPolicy

from .release.weights import check_weights

# One upload's ceiling at the HTTP route: the policy's per-job limit decides a job, this
# bounds what an authenticated client can make the edge write before anyone judges it.
MAX_UPLOAD_BYTES = 4 * 1024**3
_CHUNK = 1024 * 1024
INPUTS_DIR = "inputs"
ARTIFACTS_SUBDIR = "artifacts"
CODE_SUBDIR = "code"
_MIB = 1024 * 1024
_DAY = 86400
# The states in which a job has yet to stage its artifacts: what they name is never pruned.
WAITING_STATES = ("submitted", "awaiting_approval")


class QuotaExceeded(BadInput):
    """An upload that would take a researcher's artifacts past the edge's limit (HTTP 413)."""


class Upload:
    """One artifact upload in progress: written to a private temporary file, hashed as it
    goes, kept only if its digest is the one the signed request named."""

    def __init__(self, store: ArtifactStore, key_id: str, sha256: str, max_bytes: int,
                 quota: Callable[[int], QuotaExceeded] | None = None) -> None:
        self.store, self.key_id, self.sha256, self.max_bytes = store, key_id, sha256, max_bytes
        self.quota = quota  # the refusal, by the size sent, when max_bytes is the quota's room
        store.incoming_dir.mkdir(parents=True, exist_ok=True)
        self.temp = store.incoming_dir / f"{secrets.token_hex(8)}.part"
        self._file: BinaryIO | None = open(self.temp, "xb")  # noqa: SIM115 (closed in finish/abort)
        self._hash = hashlib.sha256()
        self.size = 0

    @property
    def too_large(self) -> bool:
        return self.size > self.max_bytes

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._file is None or self.too_large:
            self.abort()  # over the limit: nothing more is kept, the answer says so at the end
            return
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self, before_keeping: Callable[[], object] | None = None) -> Path:
        """Keep the bytes if they are the ones named; ``before_keeping`` runs once they
        are known to be (the audit entry, written before the file is taken in: S7)."""
        if self.too_large:
            self.abort()
            if self.quota is not None:
                raise self.quota(self.size)
            raise BadInput(f"the artifact is larger than this edge's upload limit of {self.max_bytes} bytes")
        if self._file is None:
            raise BadInput("the upload was cut off")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        if self._hash.hexdigest() != self.sha256:
            self.temp.unlink(missing_ok=True)
            raise BadInput(f"the uploaded bytes do not have sha256 {self.sha256}",
                           hint="the file changed after it was hashed: run the cell again")
        if before_keeping is not None:
            before_keeping()
        return self.store.keep(self.temp, self.key_id, self.sha256)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.temp.unlink(missing_ok=True)


class ArtifactStore:
    def __init__(self, root: Path, max_stored_mib: int = 4096, keep_unused_days: int = 30) -> None:
        self.root = root
        self.incoming_dir = root / ".incoming"
        self.max_stored_mib, self.keep_unused_days = max_stored_mib, keep_unused_days

    @classmethod
    def of(cls, settings: Any) -> ArtifactStore:
        return cls(settings.state_dir / "artifacts", settings.artifacts.max_stored_mib,
                   settings.artifacts.keep_unused_days)

    def upload(self, key_id: str, sha256: str, max_bytes: int = MAX_UPLOAD_BYTES,
               declared: int | None = None) -> Upload:
        """An upload within what ``key_id`` has left of the quota (the same bytes again
        replace themselves, so they count once); refused now when ``declared`` (the
        request's Content-Length) is already past it."""
        room = self.max_stored_mib * _MIB - self.stored_bytes(key_id, besides=sha256)
        if declared is not None and declared > room:
            raise self._quota_refusal(key_id, sha256, declared)
        limit = min(max_bytes, MAX_ARTIFACT_BYTES)
        quota = (lambda size: self._quota_refusal(key_id, sha256, size)) if room < limit else None
        return Upload(self, key_id, sha256, min(limit, max(room, 0)), quota)

    def stored_bytes(self, key_id: str, besides: str = "") -> int:
        """What ``key_id``'s uploads take here, leaving out the one named ``besides``."""
        return sum(size for name, size, _ in self._files(key_id) if name != besides)

    def _quota_refusal(self, key_id: str, sha256: str, size: int) -> QuotaExceeded:
        stored = self.stored_bytes(key_id, besides=sha256)
        return QuotaExceeded(
            f"this artifact ({_mib(size)} MiB) would take your artifacts at this edge to {_mib(stored + size)} MiB, "
            f"past the {self.max_stored_mib} MiB it keeps per researcher (artifacts.max_stored_mib); "
            f"yours take {_mib(stored)} MiB now",
            hint=f"this edge deletes an artifact no waiting job names after {self.keep_unused_days} days unused "
                 "(artifacts.keep_unused_days), or the hospital can raise artifacts.max_stored_mib")

    def expired(self, in_use: Iterable[str], key_id: str | None = None, now: float | None = None) -> list[str]:
        """``KEY_ID/SHA256`` of the artifacts (``key_id``'s, or everyone's) that no waiting
        job names (``in_use``: their sha256s) and that were last used before the keep period."""
        keep = set(in_use)
        cutoff = (time.time() if now is None else now) - self.keep_unused_days * _DAY
        owners = [key_id] if key_id is not None else self._owners()
        return [f"{owner}/{name}" for owner in owners for name, _, used in self._files(owner)
                if name not in keep and used < cutoff]

    def remove(self, names: Iterable[str]) -> None:
        for name in names:
            owner, _, sha256 = name.partition("/")
            self.path(owner, sha256).unlink(missing_ok=True)

    def _owners(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p != self.incoming_dir)

    def _files(self, key_id: str) -> list[tuple[str, int, float]]:
        """(sha256, size, last used) of each artifact ``key_id`` uploaded."""
        folder = self.root / key_id
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            try:
                info = path.stat()
            except FileNotFoundError:  # pruned or replaced meanwhile
                continue
            found.append((path.name, info.st_size, info.st_mtime))
        return found

    def path(self, key_id: str, sha256: str) -> Path:
        return self.root / key_id / sha256

    def keep(self, temp: Path, key_id: str, sha256: str) -> Path:
        target = self.path(key_id, sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(temp, 0o444)
        os.replace(temp, target)  # the same bytes again simply replace themselves
        return target

    def check(self, spec: JobSpec, key_id: str) -> None:
        """Every artifact the spec names: uploaded by ``key_id``, of the size signed, and a
        safetensors file of numeric tensors. Refused with what to do, before the job is taken."""
        for entry in spec.artifacts:
            path = self.path(key_id, entry.sha256)
            if not path.is_file():
                raise BadInput(f"artifact {entry.name!r} (sha256 {entry.sha256[:12]}…) was not uploaded to this edge",
                               hint="upload it first (the client does: PUT /v1/artifacts/SHA256)")
            size = path.stat().st_size
            if size != entry.bytes:
                raise BadInput(f"artifact {entry.name!r} is {size} bytes here, the job spec says {entry.bytes}")
            with open(path, "rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                # mapped, not read: the parser reads the header and the sizes, never the tensors
                check_artifact_format(entry, cast(bytes, mapped))

    def stage(self, spec: JobSpec, key_id: str, job_dir: Path) -> dict[str, str]:
        """Copy each artifact into ``job_dir/inputs/artifacts/NAME.safetensors``, read-only,
        hashing it again; returns ``{name: path}`` for the job's ``job.json``."""
        folder = job_dir / INPUTS_DIR / ARTIFACTS_SUBDIR
        folder.mkdir(parents=True, exist_ok=True)
        staged = {}
        for entry in spec.artifacts:
            target = folder / f"{entry.name}.safetensors"
            source = self.path(key_id, entry.sha256)
            _copy_checked(source, target, entry)
            os.utime(source)  # used now: its keep period starts again
            staged[entry.name] = str(target)
        return staged


def artifacts_in_use(jobs: Iterable[Any]) -> set[str]:
    """The sha256s that ``jobs`` (job records of the waiting states) name: kept whatever their age."""
    return {str(a.get("sha256")) for job in jobs for a in (job.spec.get("artifacts") or [])
            if isinstance(a, dict)}


def _mib(size: int) -> str:
    return f"{size / _MIB:.1f}"


def check_artifact_format(entry: ArtifactEntry, data: bytes) -> None:
    try:
        check_weights(data, OutputPolicy(max_weights_bytes=max(len(data), 1)))
    except ReleaseDenied as refused:
        raise BadInput(f"artifact {entry.name!r} is not a safetensors file of numeric tensors: {refused.message}",
                       hint="save it with safetensors.torch.save_file(state_dict, path), numeric tensors only, "
                            "no metadata") from None


def _copy_checked(source: Path, target: Path, entry: ArtifactEntry) -> None:
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(target, "xb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    os.chmod(target, 0o444)
    if digest.hexdigest() != entry.sha256:
        target.unlink(missing_ok=True)
        raise SandboxFault(f"artifact {entry.name!r} changed on the edge's disk since it was uploaded")


def stage_includes(spec: JobSpec, job_dir: Path) -> str | None:
    """Write the included files under ``job_dir/inputs/code`` (their own paths), the
    folder the job puts on its import path; None when the job includes none."""
    if not spec.includes:
        return None
    root = job_dir / INPUTS_DIR / CODE_SUBDIR
    for item in spec.includes:
        target = root / item.path  # checked at parsing: relative names only, no '..'
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item.code, "utf-8")
        os.chmod(target, 0o444)
    return str(root)


def remove_inputs(job_dir: Path) -> None:
    shutil.rmtree(job_dir / INPUTS_DIR, ignore_errors=True)
