"""Decoded, preprocessed records kept on the edge's disk between epochs and jobs.

Trusted broker code. An entry is named by a digest of the record's content (the SHA-256
of its file, taken when the dataset was indexed) and of the reading (the granted fields'
dtypes, shapes, transforms and label mappings: ``reading_digest``), as MONAI's
PersistentDataset names its entries by transform hash: a changed file or a changed
preprocessing is a different name, never a stale hit. Names are digests only, so the
folder says nothing about a patient.

The store lives under the edge's state directory (``state/cache/DATASET-DIGEST/``), which
the air-gap covers like the datasets (the config directory is never visible to a job),
and its files and folders are the edge's alone (0600, 0700).

An entry is ``MAGIC | SHA-256 of the rest | header length | header JSON | array bytes``.
It is written to a temporary name and renamed, so a crash leaves no half entry under an
entry's name; an entry that does not match its own digest (a power loss, a bad disk, a
hand edit) is removed and the record decoded again, never served. The store is bounded
in bytes: the least recently used entries go first (a hit renews an entry's mtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import logging
import threading
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

import numpy as np

from .registry import Dataset, FieldSpec

log = logging.getLogger(__name__)

MAGIC = b"RAPHARC1"
_PREFIX = len(MAGIC) + 32 + 4
PARTIAL_SUFFIX = ".partial"
MAX_ENTRY_BYTES = 4 * 1024**3


def dataset_cache_dir(cache_root: Path, dataset: Dataset, location: Path | str) -> Path:
    """The dataset's folder in the edge's cache: named by a digest, never by the dataset
    (its name or location could say whose data it is)."""
    named = f"{dataset.name}\0{dataset.source}\0{location}".encode()
    return Path(cache_root) / hashlib.sha256(named).hexdigest()[:32]


def reading_digest(specs: dict[str, FieldSpec], labels: dict[str, dict[str, Any]]) -> bytes:
    """What, besides the file, decides a record's arrays: a change here renames every entry."""
    doc = {"format": MAGIC.decode(), "labels": labels,
           "fields": {name: {"dtype": s.dtype, "shape": list(s.shape), "kind": s.kind,
                             "transforms": [[t.op, t.params] for t in s.transforms]}
                      for name, s in sorted(specs.items())}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).digest()


def entry_name(content_digest: bytes, reading: bytes) -> str:
    return hashlib.sha256(b"rapha record\0" + content_digest + reading).hexdigest()


def encode_parts(arrays: dict[str, np.ndarray]) -> list[bytes | memoryview]:
    """An entry as the pieces that make it, the arrays' bytes not copied: hashed and
    written piece by piece (a decoded record is copied once fewer than by joining)."""
    header = json.dumps({name: [a.dtype.str, list(a.shape)] for name, a in arrays.items()}).encode()
    prefix = struct.pack("<I", len(header)) + header
    pixels = [np.ascontiguousarray(a).reshape(-1).view(np.uint8).data for a in arrays.values()]
    digest = hashlib.sha256(prefix)
    for part in pixels:
        digest.update(part)
    return [MAGIC, digest.digest(), prefix, *pixels]


def decode_entry(blob: bytes) -> dict[str, np.ndarray] | None:
    """The arrays of an entry, or None when it is not whole (checked by its digest)."""
    if len(blob) < _PREFIX or blob[:len(MAGIC)] != MAGIC:
        return None
    body = memoryview(blob)[len(MAGIC) + 32:]
    if hashlib.sha256(body).digest() != blob[len(MAGIC):len(MAGIC) + 32]:
        return None
    (length,) = struct.unpack_from("<I", body)
    try:
        header = json.loads(bytes(body[4:4 + length]))
        arrays, offset = {}, 4 + length
        for name, (dtype_str, shape) in header.items():
            dtype = np.dtype(dtype_str)
            count = int(np.prod(shape, dtype=np.int64))
            arrays[name] = np.frombuffer(body, dtype, count, offset).reshape(shape)
            offset += count * dtype.itemsize
    except (ValueError, TypeError, KeyError):
        return None  # a digest collision aside, unreachable: the digest matched
    return arrays if offset == len(body) else None


def read_entry(path: Path) -> tuple[dict[str, np.ndarray] | None, bool, int]:
    """(an entry's arrays or None, whether one was there but damaged: it is then removed,
    the entry's size). An entry that cannot be read is a miss: the record is decoded."""
    try:
        blob = path.read_bytes()
    except OSError:
        return None, False, 0
    arrays = decode_entry(blob)
    if arrays is None:
        path.unlink(missing_ok=True)
        return None, True, 0
    os.utime(path)  # least recently used goes first: a hit renews the entry
    return arrays, False, len(blob)


def write_entry(path: Path, arrays: dict[str, np.ndarray]) -> int:
    """Write an entry atomically; returns its size in bytes."""
    parts = encode_parts(arrays)
    write_parts(path, parts)
    return parts_size(parts)


def parts_size(parts: list[bytes | memoryview]) -> int:
    return sum(len(part) for part in parts)


def write_parts(path: Path, parts: list[bytes | memoryview]) -> None:
    """Write an encoded entry atomically: a temporary name, then a rename."""
    staging = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}{PARTIAL_SUFFIX}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            for part in parts:
                handle.write(part)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def entry_size(arrays: dict[str, np.ndarray]) -> int:
    """The bytes of the entry ``encode_parts`` makes of ``arrays``, without hashing them."""
    header = json.dumps({name: [a.dtype.str, list(a.shape)] for name, a in arrays.items()}).encode()
    return _PREFIX + len(header) + sum(a.nbytes for a in arrays.values())


WRITER_NICE = 19  # an idle writer's thread: the CPU the decoding does not want


class BackgroundWriter:
    """Hashes and writes entries in a thread of their own, for a decoder process (and the
    broker thread beside a pool): creating, writing and renaming a file mostly waits on
    the file system (1.5 ms of wall time per 256 KiB entry for 0.3 ms of CPU, measured),
    time the decoder spends on the next record instead. At most ``max_bytes`` wait.

    ``idle``: the thread runs at nice ``WRITER_NICE`` and an entry that finds the writer
    ``max_bytes`` behind is dropped, not waited for: filling the cache never takes a
    core from the decoding of the epoch being served (an entry cost a quarter of a
    record's decoding, measured), it uses what the decoding leaves, and a dropped entry
    is written when the record is next decoded. Otherwise ``put`` blocks beyond
    ``max_bytes``. An entry that cannot be written is dropped (a later decode, never a
    failed job); ``drain`` writes the rest, helped by the calling thread (whose
    priority is not lowered), and a process killed first leaves only temporary names
    (removed when the store next opens), never a half entry under an entry's name."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, *, idle: bool = False) -> None:
        self.max_bytes, self.idle = max_bytes, idle
        self._pending: deque[tuple[Path, dict[str, np.ndarray], int]] = deque()
        self._bytes = 0
        self._busy = 0  # entries being written
        self._closed = False
        self.dropped = 0  # entries not kept because the writer was behind
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="record-store-writer", daemon=True)
        self._thread.start()

    def put(self, path: Path, arrays: dict[str, np.ndarray]) -> int | None:
        """Queue an entry (arrays the caller no longer changes); its size, or None when it
        was dropped (closed, or an idle writer too far behind)."""
        size = entry_size(arrays)
        with self._changed:
            while not self.idle and self._pending and self._bytes + size > self.max_bytes and not self._closed:
                self._changed.wait()
            if self._closed or self.idle and self._pending and self._bytes + size > self.max_bytes:
                self.dropped += not self._closed
                return None
            self._pending.append((path, arrays, size))
            self._bytes += size
            self._changed.notify_all()
        return size

    def drain(self, timeout: float | None = None) -> bool:
        """Write every entry put (or drop it); False on a timeout. The calling thread
        writes entries too, so a low-priority writer's backlog is not left to it."""
        while self._write_one(block=False):
            pass
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float | None = None) -> None:
        """``drain``, then end the thread (entries still waiting after ``timeout`` are
        dropped)."""
        self.drain(timeout)
        with self._changed:
            self._closed = True
            self._pending.clear()
            self._changed.notify_all()

    def _run(self) -> None:
        if self.idle:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
            except OSError:
                pass  # not lowered: the entries are written all the same
        while self._write_one(block=True):
            pass

    def _write_one(self, *, block: bool) -> bool:
        """Write the oldest waiting entry; False when closed (or, not ``block``, none waits)."""
        with self._changed:
            if block:
                self._changed.wait_for(lambda: bool(self._pending) or self._closed)
            if self._closed or not self._pending:
                return False
            path, arrays, size = self._pending.popleft()
            self._busy += 1
        try:
            write_parts(path, encode_parts(arrays))
        except Exception as exc:  # a full or failing cache disk costs a later decode, never the job
            log.warning("a decoded record could not be kept in the disk cache: %s", type(exc).__name__)
        finally:
            with self._changed:
                self._bytes -= size
                self._busy -= 1
                self._changed.notify_all()
        return True


class RecordStore:
    """The accounting side, in the edge process: what the folder holds, and eviction.
    Entries are read and written by the decoders (``record_decoder.py``) by path."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root, self.max_bytes = Path(root), max_bytes
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        self._entries: OrderedDict[str, int] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._scan()
        self.evict()

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def used(self, name: str, size: int) -> None:
        """An entry was read or written: it is now the most recently used."""
        with self._lock:
            if name in self._entries:
                self._bytes -= self._entries.pop(name)
            self._entries[name] = size
            self._bytes += size

    def evict(self) -> None:
        with self._lock:
            while self._bytes > self.max_bytes and self._entries:
                name, size = self._entries.popitem(last=False)
                self._bytes -= size
                (self.root / name).unlink(missing_ok=True)

    def _scan(self) -> None:
        found = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name.endswith(PARTIAL_SUFFIX):  # left by a crash: never an entry
                    Path(entry.path).unlink(missing_ok=True)
                elif entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    found.append((info.st_mtime_ns, entry.name, info.st_size))
        for _, name, size in sorted(found):
            self._entries[name] = size
            self._bytes += size
