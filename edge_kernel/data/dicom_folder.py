"""A dataset source over a folder of DICOM files: one record per instance.

The source is trusted code inside the broker. It turns a file into the granted fields
only (pixels as float32 in [0, 1] or as declared transforms make them, labels from their
declared tags) plus the record's
pseudonym; nothing else of the header is ever copied out of the pydicom object.

Files that cannot be used are skipped and counted under a generic reason. Reasons are
fixed strings on purpose: a file name or a header value in a reason could identify a
patient (S2), and reasons end up in the job's summary.

Indexing reads each file once without decoding its pixels (and, with the edge's index
cache, only files added or changed since the last index); a record's pixels are decoded
when it is first handed over (``record_decoder.py``, run by the broker's decoder
processes: ``feeder.py``) and kept in bounded caches, in memory and on the edge's disk.

A dataset with ``"options": {"records": "series"}`` has one record per series instead
(``series.py``, ``volume.py``): every file's header is read, the instances are grouped by
patient and SeriesInstanceUID, and each group is checked as a volume; a ``limit`` then
counts series, so a sample never cuts a series short. Series are read by the broker thread
(not by the decoder processes) and their headers are read afresh at each index (the index
cache holds instance checks only).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path
from collections.abc import Iterable, Iterator

import numpy as np
import pydicom

from jupyter_rapha.protocol.errors import SandboxFault

from . import dicom_record, series
from .consent import OptOutList, consent_tag
from .index_cache import Checked, IndexCache
from .record_decoder import FolderDecoder
from .record_store import reading_digest
from .registry import Dataset
from .source import CONSENT_REASON, Index, RecordCache, RecordRef, Skip, granted_specs, sorted_index

MAX_FILE_BYTES = 512 * 1024 * 1024
FolderIndex = Index  # the foundation's name
__all__ = ["DicomFolderSource", "FolderIndex", "RecordRef", "CONSENT_REASON"]


class DicomFolderSource:
    def __init__(self, root: Path, dataset: Dataset, fields: Iterable[str], hmac_key: bytes,
                 consent: OptOutList | None = None, cache_dir: Path | None = None) -> None:
        self.root = Path(root)
        self.specs = granted_specs(dataset, fields)
        self.labels = dicom_record.check_specs(dataset, self.specs)
        self.hmac_key = hmac_key
        self.consent = consent or OptOutList.none()
        self.cache = RecordCache()
        self.series_records = dataset.series_records
        self.cache_dir = cache_dir  # the index cache's folder (the edge's state); None: none
        self.index_cache: IndexCache | None = None  # the last full index's, for its counters

    def index(self, limit: int | None = None) -> Index:
        """Read every file's header once (or the first ``limit`` files, a sample), so a
        record that enters a cohort can be delivered. With a ``cache_dir``, a file whose
        size and mtime are unchanged since the last index is not read again
        (``index_cache.py``); consent is applied afresh either way."""
        if not self.root.is_dir():
            raise SandboxFault("the dataset folder is missing", hint="check the dataset location")
        if self.series_records:
            return self._index_series(limit)  # series: no index cache (yet)
        cache = None
        if self.cache_dir is not None and limit is None:
            cache = IndexCache(self.cache_dir, reading_digest(self.specs, self.labels), self.hmac_key)
        opted_out = self.consent.tags(self.hmac_key)
        by_pseudonym: dict[bytes, RecordRef] = {}
        skipped: Counter[str] = Counter()
        excluded: list[RecordRef] = []
        for seen, path in enumerate(_files(self.root, skipped)):
            if limit is not None and seen >= limit:
                break
            checked = self._checked(path, cache)
            if checked.skip:
                skipped[checked.skip] += 1
                continue
            if checked.consent in opted_out:
                # dropped before counting: never in a cohort, never metered, never sent
                excluded.append(RecordRef(checked.pseudonym, checked.patient))
                continue
            if checked.pseudonym in by_pseudonym:
                skipped["duplicate instance"] += 1
                continue
            by_pseudonym[checked.pseudonym] = RecordRef(checked.pseudonym, checked.patient, str(path), checked.digest)
        if cache is not None:
            cache.save()
            self.index_cache = cache
        return sorted_index(by_pseudonym, skipped, excluded)

    def decoder(self) -> FolderDecoder | None:
        """What the broker's decoder processes run for this source's records (``feeder.py``);
        None for a series dataset, whose records the broker thread reads (a ``FolderDecoder``
        reads one instance, not a series)."""
        if self.series_records:
            return None
        return FolderDecoder(self.hmac_key, self.specs, self.labels, MAX_FILE_BYTES)

    def load(self, ref: RecordRef) -> dict[str, np.ndarray]:
        """The granted fields of one indexed record."""
        cached = self.cache.get(ref.pseudonym)
        if cached is not None:
            return cached
        if self.series_records:
            arrays = self._load_series(ref)
        else:
            arrays = FolderDecoder(self.hmac_key, self.specs, self.labels, MAX_FILE_BYTES).decode(ref)
        self.cache.put(ref.pseudonym, arrays)
        return arrays

    def _index_series(self, limit: int | None) -> Index:
        by_pseudonym: dict[bytes, RecordRef] = {}
        skipped: Counter[str] = Counter()
        excluded: list[RecordRef] = []
        groups: dict[series.SeriesKey, list[tuple[Path, pydicom.Dataset]]] = {}
        for path in _files(self.root, skipped):
            try:
                ds = self._series_member(path)
            except Skip as skip:
                skipped[skip.reason] += 1
                continue
            groups.setdefault(series.key_of(ds), []).append((path, ds))
        for checked, key in enumerate(sorted(groups)):
            if limit is not None and checked >= limit:
                break
            paths, objects = zip(*groups[key], strict=True)
            try:
                pseudonym, patient = series.pseudonyms(key, self.hmac_key)
                if self.consent.excludes(key[0]):
                    excluded.append(RecordRef(pseudonym, patient))  # never checked, counted or sent
                    continue
                series.check(objects, self.specs, self.labels)
            except Skip as skip:
                skipped[skip.reason] += 1
                continue
            location = "\0".join((series.members_digest(objects), *map(str, paths)))
            by_pseudonym[pseudonym] = RecordRef(pseudonym, patient, location)
        return sorted_index(by_pseudonym, skipped, excluded)

    def _series_member(self, path: Path) -> pydicom.Dataset:
        """One file of a series dataset, checked alone; kept without its pixel data, so
        the index of a large folder holds headers only."""
        if path.stat().st_size > MAX_FILE_BYTES:
            raise Skip("file too large")
        ds = dicom_record.parse(str(path), max_bytes=MAX_FILE_BYTES)
        dicom_record.guarded(series.key_of, ds)
        series.check_object(ds, self.specs, self.labels)
        if "PixelData" in ds:
            del ds.PixelData
        return ds

    def _load_series(self, ref: RecordRef) -> dict[str, np.ndarray]:
        digest, *paths = ref.location.split("\0")
        fault = SandboxFault("a record changed or vanished during the job")
        try:
            objects = [dicom_record.parse(path, max_bytes=MAX_FILE_BYTES) for path in paths]
            return series.read(objects, self.specs, self.labels, hmac_key=self.hmac_key, pseudonym=ref.pseudonym,
                               digest=digest)
        except (Skip, OSError) as exc:
            raise fault from exc

    def _checked(self, path: Path, cache: IndexCache | None) -> Checked:
        info = path.stat(follow_symlinks=False)
        found = cache.get(path, info) if cache is not None else None
        if found is not None:
            return found
        try:
            checked = self._check(path, info.st_size)
        except Skip as skip:
            checked = Checked(skip=skip.reason)
        if cache is not None:
            cache.put(path, info, checked)
        return checked

    def _check(self, path: Path, size: int) -> Checked:
        if size > MAX_FILE_BYTES:
            raise Skip("file too large")
        data = path.read_bytes()
        ds = dicom_record.parse(data, max_bytes=MAX_FILE_BYTES)
        pseudonym, patient, patient_id = dicom_record.guarded(dicom_record.identity, ds, self.hmac_key)
        dicom_record.guarded(dicom_record.check, ds, self.specs, self.labels)
        return Checked(pseudonym=pseudonym, patient=patient, consent=consent_tag(self.hmac_key, patient_id),
                       digest=hashlib.sha256(data).digest())


def _files(root: Path, skipped: Counter[str]) -> Iterator[Path]:
    """Regular files below root, in a stable order; symlinks are not followed, so a
    link cannot pull a file from outside the dataset into a job."""
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            ordered = sorted(entries, key=lambda e: e.name)
        for entry in ordered:
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                yield Path(entry.path)
            else:
                skipped["not a regular file"] += 1
