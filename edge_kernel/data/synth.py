"""A synthetic DICOM dataset for demos and tests.

Every file is a real Secondary Capture instance (MONOCHROME2, 12 bits stored in uint16)
whose label is learnable: a bright blob sits in the left half (finding 0) or the right
half (finding 1) over noise. The headers carry fake but realistic identifiers and free
text, so that a leak of any header value into a job, its outputs or its errors is
visible to a test that searches for them. The label lives in a private tag block,
as a site's own annotation tool would store it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset as DicomDataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from .registry import Dataset, FieldSpec

LABEL_CREATOR = "RAPHA SYNTH"
LABEL_GROUP = 0x0019
LABEL_ELEMENT = 0x10
BITS_STORED = 12

# Every header keyword that carries something identifying or free text. Tests gather
# the values of these from the files and assert none of them ever crosses.
SYNTH_IDENTIFIER_TAGS = (
    "PatientName", "PatientID", "PatientBirthDate", "StudyDate", "StudyTime",
    "AccessionNumber", "InstitutionName", "ReferringPhysicianName",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
    "StudyDescription", "ImageComments",
)

_GIVEN = ("JANE", "JOHN", "AMIRA", "OLUWASEUN", "MARGARET", "TOBIAS", "PRIYA", "HENRIK")
_FAMILY = ("DOE", "SMITHFIELD", "KOWALCZYK", "ABERNATHY", "NAKAMURA", "OKONKWO", "LINDQVIST")
_INSTITUTIONS = ("ST SYNTHETIC GENERAL HOSPITAL", "NORTHWICK FAKE INFIRMARY")


def make_synthetic_dataset(path: Path, n: int, seed: int = 0, size: int = 32) -> None:
    """Write ``n`` DICOM files into ``path``; about a third of patients have several."""
    if n < 1 or size < 8:
        raise ValueError("need at least one record of at least 8x8 pixels")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patients = _patients(rng, n)
    for index in range(n):
        patient = patients[index % len(patients)]
        label = int(rng.integers(0, 2))
        pixels = _pixels(rng, size, label)
        ds = _instance(rng, patient, pixels, label)
        # File names are neutral: a name built from identifiers would itself leak.
        ds.save_as(path / f"img{index:05d}.dcm", enforce_file_format=True)


def synthetic_dataset_entry(name: str, location: str, *, size: int = 32, version: str = "1",
                            price_per_record: str = "0.01", max_records: int = 100_000) -> Dataset:
    """The registry entry that matches :func:`make_synthetic_dataset`."""
    return Dataset(
        name=name, version=version, source="dicom-folder", location=location,
        fields={
            "image": FieldSpec("float32", (1, size, size), "feature"),
            "finding": FieldSpec("int64", (), "label"),
        },
        labels={"finding": {"source": "dicom-private", "creator": LABEL_CREATOR,
                            "group": LABEL_GROUP, "element": LABEL_ELEMENT}},
        price_per_record=price_per_record, sensitivity="synthetic", max_records=max_records,
        description="Synthetic secondary-capture images: a bright blob left (0) or right (1).",
    )


def _patients(rng: np.random.Generator, n: int) -> list[dict[str, str]]:
    count = max(1, (2 * n) // 3)
    return [_patient(rng, i) for i in range(count)]


def _patient(rng: np.random.Generator, index: int) -> dict[str, str]:
    given, family = rng.choice(_GIVEN), rng.choice(_FAMILY)
    year, month, day = rng.integers(1935, 2005), rng.integers(1, 13), rng.integers(1, 29)
    study_day = f"2024{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
    return {
        "name": f"{family}^{given}",
        "id": f"MRN{rng.integers(10**6, 10**7)}{index:03d}",
        "birth": f"{year}{month:02d}{day:02d}",
        "study_date": study_day,
        "accession": f"ACC{rng.integers(10**7, 10**8)}",
        "institution": str(rng.choice(_INSTITUTIONS)),
        "referrer": f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}^^DR",
        "study_uid": _uid(rng),
        "series_uid": _uid(rng),
    }


def _uid(rng: np.random.Generator) -> str:
    # Seeded entropy keeps a dataset reproducible for a given seed.
    return str(generate_uid(entropy_srcs=[str(int(rng.integers(2**62)))]))


def _pixels(rng: np.random.Generator, size: int, label: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    half = size // 2
    cx = rng.uniform(half + size / 8, size - size / 8) if label else rng.uniform(size / 8, half - size / 8)
    cy = rng.uniform(size / 8, size - size / 8)
    radius = size / 10
    blob = 2000.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius ** 2))
    noise = rng.normal(400.0, 120.0, (size, size))
    return np.clip(blob + noise, 0, 2 ** BITS_STORED - 1).astype(np.uint16)


def _instance(rng: np.random.Generator, patient: dict[str, str], pixels: np.ndarray,
              label: int) -> DicomDataset:
    sop_uid = _uid(rng)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = DicomDataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, sop_uid
    ds.Modality, ds.ConversionType = "OT", "WSD"
    ds.PatientName, ds.PatientID = patient["name"], patient["id"]
    ds.PatientBirthDate, ds.PatientSex = patient["birth"], str(rng.choice(["F", "M"]))
    ds.StudyDate, ds.StudyTime = patient["study_date"], f"{rng.integers(7, 19):02d}{rng.integers(0, 60):02d}00"
    ds.AccessionNumber, ds.InstitutionName = patient["accession"], patient["institution"]
    ds.ReferringPhysicianName = patient["referrer"]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = patient["study_uid"], patient["series_uid"]
    ds.StudyDescription = f"CHEST SCREEN FOR {patient['name'].replace('^', ' ')}"
    ds.ImageComments = f"Reviewed with {patient['name'].replace('^', ' ')}, {patient['id']}"
    _pixel_module(ds, pixels)
    block = ds.private_block(LABEL_GROUP, LABEL_CREATOR, create=True)
    block.add_new(LABEL_ELEMENT, "IS", str(label))
    return ds


def _pixel_module(ds: DicomDataset, pixels: np.ndarray) -> None:
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, BITS_STORED, BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
