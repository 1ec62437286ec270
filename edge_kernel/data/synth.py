"""A synthetic DICOM dataset for demos and tests.

By default every file is a real Secondary Capture instance (MONOCHROME2, 12 bits stored
in uint16, ``size`` x ``size``) whose label is learnable: a bright blob sits in the left
half (finding 0) or the right half (finding 1) over noise. The headers carry fake but
realistic identifiers and free text, so that a leak of any header value into a job, its
outputs or its errors is visible to a test that searches for them. The label lives in a
private tag block, as a site's own annotation tool would store it.

``SynthOptions`` makes what a PACS holds: images of several sizes (cycled record by
record), CT (CT Image Storage; stored unsigned with RescaleIntercept -1024 and slope 1,
so stored values map to real Hounsfield units: air -1000, fat -100, water 0, soft tissue
40, bone 700, a +80 HU lesion left or right; the header's windows are soft tissue 40/400
then lung -600/1500), MONOCHROME1 (stored inverted, so it shows the same image), multi-
frame objects (NumberOfFrames > 1, every frame with the record's label) and RLE Lossless,
which pydicom encodes without any extra codec. The default is unchanged, byte for byte.

CT volumes, for datasets whose records are series: ``slices`` > 1 writes each record as
a CT series of that many single-frame files (one SeriesInstanceUID per record, slices
2.5 mm apart along the patient's z axis, pixels 0.8 mm, the lesion a 3D blob), ``frames``
> 1 with CT one Enhanced CT object whose per-frame functional groups carry each frame's
position, rescale and window. In both, RescaleIntercept is -1024 and RescaleSlope
alternates 1 and 0.5 from slice to slice, as a scanner may choose per slice, so a reader
that takes one slice's rescale for the whole volume is visibly wrong. ``shuffle`` gives
the files names in a random order, so neither file names nor the folder walk follow the
slice order. JPEG syntaxes are not written: they need codecs pyproject does not install.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset as DicomDataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (UID, CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian,
                         MultiFrameGrayscaleWordSecondaryCaptureImageStorage, RLELossless, SecondaryCaptureImageStorage,
                         generate_uid)

from .registry import Dataset, FieldSpec
from .transforms import Transform

LABEL_CREATOR = "RAPHA SYNTH"
LABEL_GROUP = 0x0019
LABEL_ELEMENT = 0x10
BITS_STORED = 12
CT_INTERCEPT = -1024  # stored = HU + 1024: unsigned 12 bits hold -1024 to 3071 HU
CT_WINDOWS = ((40.0, 400.0), (-600.0, 1500.0))  # soft tissue, lung
MODALITIES = ("OT", "CT")
PHOTOMETRICS = ("MONOCHROME2", "MONOCHROME1")
TRANSFER_SYNTAXES = {"explicit": ExplicitVRLittleEndian, "rle": RLELossless}
MAX_FRAMES = 64
PIXEL_SPACING_MM = 0.8
SLICE_SPACING_MM = 2.5
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # ImageOrientationPatient of an axial slice
SLOPES = (1.0, 0.5)  # RescaleSlope of even and odd slices of a CT volume


@dataclass(frozen=True)
class SynthOptions:
    """What the records look like; the defaults write the original demo dataset."""

    sizes: tuple[tuple[int, int], ...] = ()  # (rows, columns) cycled over records; () = size x size
    modality: str = "OT"  # "OT" secondary capture, or "CT" in Hounsfield units
    photometric: str = "MONOCHROME2"
    frames: int = 1
    transfer_syntax: str = "explicit"  # or "rle" (RLE Lossless)
    slices: int = 1  # > 1: each record a CT series of this many single-frame files
    shuffle: bool = False  # file names in a random order, not the records' (and slices') order

    @property
    def volume_depth(self) -> int:
        """Slices per record when records are CT volumes (a series or an Enhanced CT), else 0."""
        if self.modality != "CT":
            return 0
        return self.slices if self.slices > 1 else self.frames if self.frames > 1 else 0

    def check(self) -> None:
        if any(rows < 8 or columns < 8 or rows * columns > 4096 * 4096 for rows, columns in self.sizes):
            raise ValueError("every size needs at least 8x8 and at most 4096x4096 pixels")
        if self.modality not in MODALITIES or self.photometric not in PHOTOMETRICS:
            raise ValueError(f"modality is one of {', '.join(MODALITIES)}, "
                             f"photometric one of {', '.join(PHOTOMETRICS)}")
        if not 1 <= self.frames <= MAX_FRAMES or self.transfer_syntax not in TRANSFER_SYNTAXES:
            raise ValueError(f"frames must be 1 to {MAX_FRAMES}, transfer syntax one of {', '.join(TRANSFER_SYNTAXES)}")
        if self.modality == "CT" and self.photometric != "MONOCHROME2":
            raise ValueError("CT is written MONOCHROME2")  # a MONOCHROME1 CT is not one a scanner writes
        if not 1 <= self.slices <= MAX_FRAMES or (self.slices > 1 and (self.modality != "CT" or self.frames > 1)):
            raise ValueError(f"slices (1 to {MAX_FRAMES}) make a CT series of single-frame files; "
                             "for one multi-frame CT object give frames instead")

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


def make_synthetic_dataset(path: Path, n: int, seed: int = 0, size: int = 32,
                           options: SynthOptions | None = None) -> None:
    """Write ``n`` DICOM files into ``path``; about a third of patients have several."""
    options = options or SynthOptions()
    if n < 1 or size < 8:
        raise ValueError("need at least one record of at least 8x8 pixels")
    options.check()
    sizes = options.sizes or ((size, size),)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patients = _patients(rng, n)
    if options.volume_depth:
        _write_volumes(path, n, rng, patients, sizes, options, seed)
        return
    names = _names(n, options, seed)
    for index in range(n):
        patient = patients[index % len(patients)]
        label = int(rng.integers(0, 2))
        pixels = _frames(rng, sizes[index % len(sizes)], label, options)
        ds = _instance(rng, patient, pixels, label, options)
        # File names are neutral: a name built from identifiers would itself leak.
        ds.save_as(path / names[index], enforce_file_format=True)


def _names(files: int, options: SynthOptions, seed: int) -> list[str]:
    """Neutral file names (a name built from identifiers would itself leak), in order or
    shuffled by their own generator, so the records' content does not depend on it."""
    order = np.random.default_rng([seed, 1]).permutation(files) if options.shuffle else np.arange(files)
    return [f"img{int(number):05d}.dcm" for number in order]


def _write_volumes(path: Path, n: int, rng: np.random.Generator, patients: list[dict[str, str]],
                   sizes: tuple[tuple[int, int], ...], options: SynthOptions, seed: int) -> None:
    depth = options.volume_depth
    names = iter(_names(n * (depth if options.slices > 1 else 1), options, seed))
    for index in range(n):
        patient = dict(patients[index % len(patients)], series_uid=_uid(rng))  # a series per record
        label = int(rng.integers(0, 2))
        hu = _ct_volume(rng, sizes[index % len(sizes)], depth, label)
        if options.slices > 1:
            for number, slice_hu in enumerate(hu):
                ds = _instance(rng, patient, _stored(slice_hu, SLOPES[number % 2]), label, options)
                _slice_geometry(ds, number, depth, SLOPES[number % 2])
                ds.save_as(path / next(names), enforce_file_format=True)
        else:
            slopes = [SLOPES[number % 2] for number in range(depth)]
            stored = np.stack([_stored(slice_hu, slope) for slice_hu, slope in zip(hu, slopes, strict=True)])
            ds = _instance(rng, patient, stored, label, options)
            _enhanced_geometry(ds, depth, slopes)
            ds.save_as(path / next(names), enforce_file_format=True)


def synthetic_dataset_entry(name: str, location: str, *, size: int = 32, version: str = "1",
                            price_per_record: str = "0.01", max_records: int = 100_000,
                            transforms: tuple[Transform, ...] = (), frames: int = 1, slices: int = 0) -> Dataset:
    """The registry entry that matches :func:`make_synthetic_dataset` (with ``transforms``
    declared on the image field, e.g. a resize for mixed sizes). ``slices`` > 0: records
    are series, the image a volume of that many slices."""
    shape = (slices, size, size) if slices else (frames, size, size)
    return Dataset(
        name=name, version=version, source="dicom-folder", location=location,
        fields={
            "image": FieldSpec("float32", shape, "feature", transforms),
            "finding": FieldSpec("int64", (), "label"),
        },
        labels={"finding": {"source": "dicom-private", "creator": LABEL_CREATOR,
                            "group": LABEL_GROUP, "element": LABEL_ELEMENT}},
        price_per_record=price_per_record, sensitivity="synthetic", max_records=max_records,
        description="Synthetic secondary-capture images: a bright blob left (0) or right (1).",
        options={"records": "series"} if slices else {},
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


def _uid(rng: np.random.Generator) -> UID:
    # Seeded entropy keeps a dataset reproducible for a given seed.
    return generate_uid(entropy_srcs=[str(int(rng.integers(2**62)))])


def _frames(rng: np.random.Generator, shape: tuple[int, int], label: int, options: SynthOptions) -> np.ndarray:
    """Stored pixels: (rows, columns), or (frames, rows, columns) for a multi-frame object."""
    make = _ct_pixels if options.modality == "CT" else _pixels
    frames = [make(rng, *shape, label) for _ in range(options.frames)]
    if options.photometric == "MONOCHROME1":  # stored inverted: it shows the same image
        frames = [(2 ** BITS_STORED - 1 - frame).astype(np.uint16) for frame in frames]
    return frames[0] if options.frames == 1 else np.stack(frames)


def _pixels(rng: np.random.Generator, rows: int, columns: int, label: int) -> np.ndarray:
    yy, xx = np.mgrid[0:rows, 0:columns]
    half = columns // 2
    margin = columns / 8
    cx = rng.uniform(half + margin, columns - margin) if label else rng.uniform(margin, half - margin)
    cy = rng.uniform(rows / 8, rows - rows / 8)
    radius = min(rows, columns) / 10
    blob = 2000.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius ** 2))
    noise = rng.normal(400.0, 120.0, (rows, columns))
    pixels: np.ndarray = np.clip(blob + noise, 0, 2 ** BITS_STORED - 1).astype(np.uint16)
    return pixels


def _ct_pixels(rng: np.random.Generator, rows: int, columns: int, label: int) -> np.ndarray:
    """An axial slice in HU, stored as HU - intercept: air around a body of soft tissue
    with a fat layer, a vertebra, and a lesion in the left (0) or right (1) half."""
    yy, xx = np.mgrid[0:rows, 0:columns] + 0.5
    body = ((yy - rows / 2) / (0.42 * rows)) ** 2 + ((xx - columns / 2) / (0.45 * columns)) ** 2
    hu = np.full((rows, columns), -1000.0)
    hu[body <= 1.0] = -100.0  # subcutaneous fat
    hu[body <= 0.8] = 40.0  # soft tissue
    spine = ((yy - 0.75 * rows) / (0.08 * rows)) ** 2 + ((xx - columns / 2) / (0.08 * columns)) ** 2
    hu[spine <= 1.0] = 700.0
    cx = columns * (rng.uniform(0.58, 0.72) if label else rng.uniform(0.28, 0.42))
    cy = rows * rng.uniform(0.35, 0.6)
    radius = min(rows, columns) / 12
    hu += 80.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius ** 2))
    hu += rng.normal(0.0, 10.0, (rows, columns))
    pixels: np.ndarray = np.clip(np.rint(hu) - CT_INTERCEPT, 0, 2 ** BITS_STORED - 1).astype(np.uint16)
    return pixels


def _ct_volume(rng: np.random.Generator, shape: tuple[int, int], depth: int, label: int) -> np.ndarray:
    """Axial slices in HU (slices, rows, columns): the body of ``_ct_pixels`` in every
    slice, and a lesion that is a 3D blob, strongest in the middle slices."""
    rows, columns = shape
    yy, xx = np.mgrid[0:rows, 0:columns] + 0.5
    body = ((yy - rows / 2) / (0.42 * rows)) ** 2 + ((xx - columns / 2) / (0.45 * columns)) ** 2
    base = np.full((rows, columns), -1000.0)
    base[body <= 1.0] = -100.0
    base[body <= 0.8] = 40.0
    spine = ((yy - 0.75 * rows) / (0.08 * rows)) ** 2 + ((xx - columns / 2) / (0.08 * columns)) ** 2
    base[spine <= 1.0] = 700.0
    cx = columns * (rng.uniform(0.58, 0.72) if label else rng.uniform(0.28, 0.42))
    cy, cz = rows * rng.uniform(0.35, 0.6), depth * rng.uniform(0.35, 0.65)
    radius = min(rows, columns) / 12
    lesion = 80.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius ** 2))
    weights = np.exp(-((np.arange(depth) + 0.5 - cz) ** 2) / (2 * max(1.0, depth / 4) ** 2))
    volume: np.ndarray = base + weights[:, None, None] * lesion + rng.normal(0.0, 10.0, (depth, rows, columns))
    return volume


def _stored(hu: np.ndarray, slope: float) -> np.ndarray:
    stored: np.ndarray = np.clip(np.rint((hu - CT_INTERCEPT) / slope), 0, 2 ** BITS_STORED - 1).astype(np.uint16)
    return stored


def _position(number: int, depth: int, rows: int, columns: int) -> list[float]:
    """ImagePositionPatient of slice ``number``: the volume centred on the origin."""
    return [-columns * PIXEL_SPACING_MM / 2, -rows * PIXEL_SPACING_MM / 2,
            (number - depth / 2) * SLICE_SPACING_MM]


def _slice_geometry(ds: DicomDataset, number: int, depth: int, slope: float) -> None:
    ds.InstanceNumber = number + 1
    ds.ImagePositionPatient = _position(number, depth, ds.Rows, ds.Columns)
    ds.ImageOrientationPatient = list(AXIAL)
    ds.PixelSpacing = [PIXEL_SPACING_MM, PIXEL_SPACING_MM]
    ds.SliceThickness = SLICE_SPACING_MM
    ds.RescaleSlope = slope


def _enhanced_geometry(ds: DicomDataset, depth: int, slopes: list[float]) -> None:
    """Enhanced CT (PS3.3 A.38): geometry and rescale in functional groups, per frame."""
    for keyword in ("RescaleIntercept", "RescaleSlope", "RescaleType", "WindowCenter", "WindowWidth"):
        delattr(ds, keyword)
    measures = DicomDataset()
    measures.PixelSpacing, measures.SliceThickness = [PIXEL_SPACING_MM, PIXEL_SPACING_MM], SLICE_SPACING_MM
    orientation = DicomDataset()
    orientation.ImageOrientationPatient = list(AXIAL)
    shared = DicomDataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for number, slope in enumerate(slopes):
        position, rescale, window = DicomDataset(), DicomDataset(), DicomDataset()
        position.ImagePositionPatient = _position(number, depth, ds.Rows, ds.Columns)
        rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = CT_INTERCEPT, slope, "HU"
        window.WindowCenter, window.WindowWidth = CT_WINDOWS[0]
        group = DicomDataset()
        group.PlanePositionSequence, group.PixelValueTransformationSequence = [position], [rescale]
        group.FrameVOILUTSequence = [window]
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = frames


def _sop_class(options: SynthOptions) -> UID:
    if options.modality == "CT":
        return EnhancedCTImageStorage if options.frames > 1 else CTImageStorage
    return MultiFrameGrayscaleWordSecondaryCaptureImageStorage if options.frames > 1 else SecondaryCaptureImageStorage


def _instance(rng: np.random.Generator, patient: dict[str, str], pixels: np.ndarray,
              label: int, options: SynthOptions = SynthOptions()) -> DicomDataset:
    sop_uid, sop_class = _uid(rng), _sop_class(options)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = DicomDataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.Modality = options.modality
    if options.modality == "OT":
        ds.ConversionType = "WSD"
    ds.PatientName, ds.PatientID = patient["name"], patient["id"]
    ds.PatientBirthDate, ds.PatientSex = patient["birth"], str(rng.choice(["F", "M"]))
    ds.StudyDate, ds.StudyTime = patient["study_date"], f"{rng.integers(7, 19):02d}{rng.integers(0, 60):02d}00"
    ds.AccessionNumber, ds.InstitutionName = patient["accession"], patient["institution"]
    ds.ReferringPhysicianName = patient["referrer"]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = patient["study_uid"], patient["series_uid"]
    ds.StudyDescription = f"CHEST SCREEN FOR {patient['name'].replace('^', ' ')}"
    ds.ImageComments = f"Reviewed with {patient['name'].replace('^', ' ')}, {patient['id']}"
    _pixel_module(ds, pixels, options)
    block = ds.private_block(LABEL_GROUP, LABEL_CREATOR, create=True)
    block.add_new(LABEL_ELEMENT, "IS", str(label))
    if options.transfer_syntax != "explicit":
        # pydicom's own RLE encoder; the planted SOPInstanceUID is kept
        ds.compress(TRANSFER_SYNTAXES[options.transfer_syntax], generate_instance_uid=False)
    return ds


def _pixel_module(ds: DicomDataset, pixels: np.ndarray, options: SynthOptions = SynthOptions()) -> None:
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, options.photometric
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, BITS_STORED, BITS_STORED - 1
    ds.PixelRepresentation = 0
    if options.modality == "CT":
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = CT_INTERCEPT, 1, "HU"
        ds.WindowCenter = [center for center, _ in CT_WINDOWS]
        ds.WindowWidth = [width for _, width in CT_WINDOWS]
    ds.PixelData = pixels.tobytes()
