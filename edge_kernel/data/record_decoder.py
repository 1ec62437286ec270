"""Turning one indexed DICOM file into its granted arrays: the unit of work that the
broker's decoder processes (``feeder.py``) run, and that the broker thread runs itself
when there are none.

Trusted code, outside the sandbox: it reads the dataset's file, checks that it still is
the file that was indexed and counted (its SHA-256, then its pseudonym), decodes and
preprocesses it (``dicom_record.extract``, ``preprocess.apply``), and keeps the result in
the disk cache (``record_store.py``; a decoder process writes there in a background
thread, ``BackgroundWriter``). It never runs researcher code. A decoder is a
plain picklable value, so a decoder process receives it once, when it starts.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jupyter_rapha.protocol.errors import SandboxFault

from . import dicom_record
from .record_store import BackgroundWriter, entry_name, read_entry, reading_digest, write_entry
from .registry import FieldSpec
from .source import RecordRef

log = logging.getLogger(__name__)

CHANGED = "a record changed or vanished during the job"


@dataclass(frozen=True)
class Prepared:
    """A record's arrays, and how they were had (edge-side counters, never released)."""

    arrays: dict[str, np.ndarray]
    entry: str | None = None  # the disk cache entry read or written
    entry_bytes: int = 0
    decoded: bool = True  # False: read from the disk cache
    damaged: bool = False  # a damaged cache entry was found, removed and decoded again


@dataclass(frozen=True)
class FolderDecoder:
    key: bytes = field(repr=False)
    specs: dict[str, FieldSpec]
    labels: dict[str, dict[str, Any]]
    max_bytes: int
    reading: bytes = b""  # record_store.reading_digest of specs and labels
    store_root: Path | None = None  # the disk cache; None: none

    def with_store(self, root: Path) -> FolderDecoder:
        return FolderDecoder(self.key, self.specs, self.labels, self.max_bytes,
                             reading_digest(self.specs, self.labels), root)

    def prepare(self, ref: RecordRef, writer: BackgroundWriter | None = None) -> Prepared:
        """The record's arrays, from the disk cache or decoded (and then kept there: by
        ``writer`` in the background if given, else before returning)."""
        name = entry_name(ref.digest, self.reading) if self.store_root is not None and ref.digest else None
        damaged = False
        if name is not None and self.store_root is not None:
            cached, damaged, size = read_entry(self.store_root / name)
            if cached is not None:
                return Prepared(cached, name, size, decoded=False)
        arrays = self.decode(ref)
        if name is None or self.store_root is None:
            return Prepared(arrays)
        if writer is not None:
            queued = writer.put(self.store_root / name, arrays)  # hashed and written by the writer's thread
            if queued is None:  # dropped: the writer was behind; kept when next decoded
                return Prepared(arrays, damaged=damaged)
            return Prepared(arrays, name, queued, decoded=True, damaged=damaged)
        try:
            size = write_entry(self.store_root / name, arrays)
        except OSError:  # a full or failing cache disk costs a later decode, never the job
            log.warning("a decoded record could not be kept in the disk cache")
            return Prepared(arrays, damaged=damaged)
        return Prepared(arrays, name, size, decoded=True, damaged=damaged)

    def decode(self, ref: RecordRef) -> dict[str, np.ndarray]:
        try:
            path = Path(ref.location)
            if path.is_symlink() or path.stat().st_size > self.max_bytes:
                raise SandboxFault(CHANGED)
            data = path.read_bytes()
        except OSError as exc:
            raise SandboxFault(CHANGED) from exc
        if ref.digest and hashlib.sha256(data).digest() != ref.digest:
            raise SandboxFault(CHANGED)  # not the file that was indexed: its record may differ
        return dicom_record.reload(data, max_bytes=self.max_bytes, key=self.key, specs=self.specs,
                                   labels=self.labels, pseudonym=ref.pseudonym, fault=SandboxFault(CHANGED))
