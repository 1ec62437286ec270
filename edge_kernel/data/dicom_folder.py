"""A dataset source over a folder of DICOM files: one record per instance.

The source is trusted code inside the broker. It turns a file into the granted fields
only (pixels as float32 in [0, 1], labels from their declared tags) plus the record's
pseudonym; nothing else of the header is ever copied out of the pydicom object.

Files that cannot be used are skipped and counted under a generic reason. Reasons are
fixed strings on purpose: a file name or a header value in a reason could identify a
patient (S2), and reasons end up in the job's summary.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from jupyter_rapha.protocol.errors import BadInput, SandboxFault

from .pseudonym import record_pseudonym
from .registry import Dataset, FieldSpec

MAX_FILE_BYTES = 512 * 1024 * 1024
PIXEL_DTYPES = ("float32", "float64")
LABEL_SOURCES = ("dicom-private",)
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


class _Skip(Exception):
    """A file that cannot be a record; ``reason`` is a fixed, non-identifying string."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RecordRef:
    """Where a record lives. The path never leaves the broker."""

    pseudonym: bytes
    path: Path = field(repr=False)


@dataclass
class FolderIndex:
    records: list[RecordRef]  # sorted by pseudonym: independent of the folder's order
    skipped: dict[str, int]


class DicomFolderSource:
    def __init__(self, root: Path, dataset: Dataset, fields: Iterable[str], hmac_key: bytes) -> None:
        self.root = Path(root)
        self.specs = _granted_specs(dataset, list(fields))
        self.labels = {name: _label_mapping(dataset, name) for name, spec in self.specs.items()
                       if spec.kind == "label"}
        self.hmac_key = hmac_key

    def index(self) -> FolderIndex:
        """Read every file once, fully, so a record that enters a cohort can be delivered."""
        if not self.root.is_dir():
            raise SandboxFault("the dataset folder is missing", hint="check the dataset location")
        by_pseudonym: dict[bytes, RecordRef] = {}
        skipped: Counter[str] = Counter()
        for path in _files(self.root, skipped):
            try:
                pseudonym, _ = self._read(path)
            except _Skip as skip:
                skipped[skip.reason] += 1
                continue
            if pseudonym in by_pseudonym:
                skipped["duplicate instance"] += 1
                continue
            by_pseudonym[pseudonym] = RecordRef(pseudonym, path)
        records = [by_pseudonym[p] for p in sorted(by_pseudonym)]
        return FolderIndex(records, dict(skipped))

    def load(self, ref: RecordRef) -> dict[str, np.ndarray]:
        """The granted fields of one indexed record."""
        try:
            pseudonym, arrays = self._read(ref.path)
        except _Skip as skip:
            raise SandboxFault("a record changed or vanished during the job") from skip
        if pseudonym != ref.pseudonym:
            raise SandboxFault("a record changed or vanished during the job")
        return arrays

    def _read(self, path: Path) -> tuple[bytes, dict[str, np.ndarray]]:
        ds = _parse(path)
        try:
            return self._extract(ds)
        except _Skip:
            raise
        except Exception as exc:  # pydicom parses lazily: a damaged element fails on access
            raise _Skip("malformed DICOM element") from exc

    def _extract(self, ds: pydicom.Dataset) -> tuple[bytes, dict[str, np.ndarray]]:
        pseudonym = _pseudonym(ds, self.hmac_key)
        arrays: dict[str, np.ndarray] = {}
        for name, spec in self.specs.items():
            if spec.kind == "label":
                arrays[name] = _label(ds, self.labels[name], spec)
            else:
                arrays[name] = _pixels(ds, spec)
        return pseudonym, arrays


def _granted_specs(dataset: Dataset, fields: list[str]) -> dict[str, FieldSpec]:
    unknown = [name for name in fields if name not in dataset.fields]
    if unknown or not fields:
        raise BadInput("the granted fields must be declared by the dataset")
    specs = {name: dataset.fields[name] for name in fields}
    features = [name for name, spec in specs.items() if spec.kind != "label"]
    if len(features) > 1:
        raise BadInput("a DICOM folder offers one pixel field per record")
    for name in features:
        if specs[name].kind != "feature" or specs[name].dtype not in PIXEL_DTYPES:
            raise BadInput(f"field {name}: pixels are offered as {' or '.join(PIXEL_DTYPES)}")
    return specs


def _label_mapping(dataset: Dataset, name: str) -> dict[str, Any]:
    mapping = dataset.labels.get(name)
    if not isinstance(mapping, dict) or mapping.get("source") not in LABEL_SOURCES:
        raise BadInput(f"label {name} needs a mapping with source one of {', '.join(LABEL_SOURCES)}")
    if not isinstance(mapping.get("creator"), str) or not all(
            isinstance(mapping.get(k), int) for k in ("group", "element")):
        raise BadInput(f"label {name} needs creator, group and element")
    if mapping["group"] % 2 != 1 or not 0x10 <= mapping["element"] <= 0xFF:
        raise BadInput(f"label {name}: group must be odd (private) and element 0x10-0xFF")
    return mapping


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


def _parse(path: Path) -> pydicom.Dataset:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise _Skip("file too large")
        return pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise _Skip("not a DICOM file") from exc
    except _Skip:
        raise
    except Exception as exc:  # pydicom raises many kinds on damaged files; each one skips
        raise _Skip("unreadable DICOM header") from exc


def _pseudonym(ds: pydicom.Dataset, key: bytes) -> bytes:
    patient_id = ds.get("PatientID")
    instance_uid = ds.get("SOPInstanceUID")
    if not patient_id or not instance_uid:
        raise _Skip("missing patient id or instance uid")
    try:
        return record_pseudonym(key, str(patient_id), str(instance_uid))
    except BadInput as exc:
        raise _Skip("invalid patient id or instance uid") from exc


def _pixels(ds: pydicom.Dataset, spec: FieldSpec) -> np.ndarray:
    if "PixelData" not in ds:
        raise _Skip("no pixel data")
    if ds.get("SamplesPerPixel", 1) != 1 or ds.get("PhotometricInterpretation") not in _MONOCHROME:
        raise _Skip("not a greyscale image")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise _Skip("more than one frame")
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if not rows or not columns or rows * columns != int(np.prod(spec.shape)) or spec.shape[-2:] != (rows, columns):
        raise _Skip("image size differs from the schema")
    try:
        raw = ds.pixel_array
    except Exception as exc:  # truncated or undecodable pixel data; the record is skipped
        raise _Skip("unreadable pixel data") from exc
    if raw.shape != (rows, columns):
        raise _Skip("unreadable pixel data")
    return _scaled(ds, raw).reshape(spec.shape).astype(spec.dtype, copy=False)


def _scaled(ds: pydicom.Dataset, raw: np.ndarray) -> np.ndarray:
    bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 16))
    top = float(2 ** bits - 1)
    offset = float(2 ** (bits - 1)) if ds.get("PixelRepresentation", 0) == 1 else 0.0
    scaled = np.clip((raw.astype(np.float64) + offset) / top, 0.0, 1.0)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        scaled = 1.0 - scaled  # MONOCHROME1 shows low values as white
    return scaled


def _label(ds: pydicom.Dataset, mapping: dict[str, Any], spec: FieldSpec) -> np.ndarray:
    try:
        element = ds.private_block(mapping["group"], mapping["creator"])[mapping["element"]]
    except KeyError as exc:
        raise _Skip("label missing") from exc
    value = element.value
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) or value is None or value == "":
        raise _Skip("label invalid")
    try:
        number = float(value) if spec.dtype.startswith("float") else int(value)
    except (TypeError, ValueError) as exc:
        raise _Skip("label invalid") from exc
    if not spec.dtype.startswith("float") and not _fits(number, spec.dtype):
        raise _Skip("label invalid")
    return np.asarray(number, dtype=spec.dtype).reshape(spec.shape)


def _fits(value: float | int, dtype: str) -> bool:
    if dtype == "bool":
        return value in (0, 1)
    info = np.iinfo(np.dtype(dtype))
    return info.min <= value <= info.max
