"""A series as one record, for the DICOM sources (folder, DICOMweb): identity, the checks
at index time and the read during a job. The geometry and the pixels are ``volume.py``'s.

A series record is named by ``series_pseudonym(key, PatientID, SeriesInstanceUID)`` and
counted once by the meter, however many instances or frames it holds. Its location holds
a digest of its members' SOPInstanceUIDs, so that a series read for a job that gained,
lost or swapped an instance since it was indexed is a fault, not a different volume.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pydicom

from jupyter_rapha.protocol.errors import BadInput

from . import dicom_record, volume
from .pseudonym import patient_pseudonym, series_pseudonym
from .registry import FieldSpec
from .source import Skip

SeriesKey = tuple[str, str]  # (PatientID, SeriesInstanceUID); stays in the broker


def key_of(ds: pydicom.Dataset) -> SeriesKey:
    """The series an instance belongs to; raises ``Skip``."""
    patient_id, series_uid, instance_uid = (ds.get(k) for k in ("PatientID", "SeriesInstanceUID", "SOPInstanceUID"))
    if not patient_id or not series_uid or not instance_uid:
        raise Skip("missing patient id, series uid or instance uid")
    return str(patient_id), str(series_uid)


def pseudonyms(key: SeriesKey, hmac_key: bytes) -> tuple[bytes, bytes]:
    """(record pseudonym of the series, patient pseudonym); raises ``Skip``."""
    try:
        return series_pseudonym(hmac_key, *key), patient_pseudonym(hmac_key, key[0])
    except BadInput as exc:
        raise Skip("invalid patient id or series uid") from exc


def check_object(ds: pydicom.Dataset, specs: dict[str, FieldSpec], labels: dict[str, dict[str, Any]],
                 *, pixels_present: bool = True) -> None:
    """One instance of a series, alone: a greyscale image whose pixel data is all there
    (when ``pixels_present``; metadata may leave it out) and whose labels are readable."""
    dicom_record.guarded(_check_object, ds, specs, labels, pixels_present)


def _check_object(ds: pydicom.Dataset, specs: dict[str, FieldSpec], labels: dict[str, dict[str, Any]],
                  pixels_present: bool) -> None:
    if _image(specs) is not None:
        if pixels_present and "PixelData" not in ds:
            raise Skip("no pixel data")
        if ds.get("SamplesPerPixel", 1) != 1 or ds.get("PhotometricInterpretation") not in dicom_record.MONOCHROME:
            raise Skip("not a greyscale image")
        if pixels_present:
            dicom_record.check_pixel_bytes(ds)
    dicom_record.extract(ds, _labels(specs), labels)


def check(objects: Sequence[pydicom.Dataset], specs: dict[str, FieldSpec],
          labels: dict[str, dict[str, Any]]) -> volume.Plan:
    """The whole series from its headers (index time); raises ``Skip``."""
    found: volume.Plan = dicom_record.guarded(volume.plan, objects, _image(specs))
    dicom_record.guarded(_series_labels, objects, specs, labels)
    return found


def members_digest(objects: Sequence[pydicom.Dataset]) -> str:
    uids = sorted(str(ds.get("SOPInstanceUID", "")) for ds in objects)
    return hashlib.sha256("\0".join(uids).encode("utf-8")).hexdigest()


def read(objects: Sequence[pydicom.Dataset], specs: dict[str, FieldSpec], labels: dict[str, dict[str, Any]],
         *, hmac_key: bytes, pseudonym: bytes, digest: str) -> dict[str, np.ndarray]:
    """The granted fields of a series read for a job. Raises ``Skip`` when it is no longer
    the series that was indexed (other members, other identity) or cannot be assembled:
    the source turns that into its fault."""
    if not objects or members_digest(objects) != digest:
        raise Skip("the series changed")
    if any(pseudonyms(key_of(ds), hmac_key)[0] != pseudonym for ds in objects):
        raise Skip("the series changed")
    for ds in objects:
        check_object(ds, specs, labels)
    found = check(objects, specs, labels)
    arrays = dict(dicom_record.guarded(_series_labels, objects, specs, labels))
    image = _image(specs)
    if image is not None:
        name = next(name for name, spec in specs.items() if spec.kind != "label")
        arrays[name] = dicom_record.guarded(volume.assemble, objects, found, image)
    return {name: arrays[name] for name in specs}


def _series_labels(objects: Sequence[pydicom.Dataset], specs: dict[str, FieldSpec],
                   labels: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    return volume.labels_agree([dicom_record.extract(ds, _labels(specs), labels) for ds in objects])


def _image(specs: dict[str, FieldSpec]) -> FieldSpec | None:
    return next((spec for spec in specs.values() if spec.kind != "label"), None)


def _labels(specs: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
    return {name: spec for name, spec in specs.items() if spec.kind == "label"}
