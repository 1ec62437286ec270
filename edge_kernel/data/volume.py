"""Series as records: the slices of one DICOM series checked and assembled into a volume.

Trusted broker code, numpy and pydicom only, shared by every DICOM source when a dataset
declares ``"options": {"records": "series"}``. A series is either single-frame instances
(one slice each) or one multi-frame object (enhanced CT/MR: one slice per frame, its
geometry and rescale in the per-frame or shared functional groups).

``plan`` works on headers alone (index time, and again when the series is read for a
job): slices are sorted by ImagePositionPatient projected on the slice normal (the cross
product of ImageOrientationPatient's row and column directions), never by file order or
InstanceNumber, and checked for one orientation, one size, one pixel spacing, and one
slice spacing without gaps. ``assemble`` decodes the pixels and runs the field's value
steps slice by slice, each with its own header (the modality LUT of every slice, since
slope and intercept may differ), then ``resize`` or ``spacing`` once over the volume.

A series that cannot be assembled is skipped with one of the fixed reasons below; a
reason never carries a UID, a position or a file name (S2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom

from . import preprocess
from .frames import frame_groups, frame_header, group_value
from .registry import FieldSpec
from .resize import resample_axis, resize_volume
from .source import Skip
from .transforms import GEOMETRIC, Transform

# Geometry read from headers is compared with a tolerance: scanners write positions and
# spacings as decimal strings, rounded differently from slice to slice.
ORIENTATION_TOLERANCE = 1e-4  # on the direction cosines
SPACING_RELATIVE_TOLERANCE = 0.01  # of the pixel or slice spacing
POSITION_TOLERANCE_MM = 1e-3
MAX_SLICES = 4096
DEFAULT_STEPS = (Transform("intensity", {"scale_to": [0.0, 1.0]}), Transform("invert_monochrome1"))

TOO_FEW = "too few slices for a volume"
NO_GEOMETRY = "slice position or orientation missing"
MIXED_OBJECTS = "a series mixes a multi-frame object with other instances"
MIXED_SIZES = "slice sizes differ in the series"
MIXED_ORIENTATIONS = "mixed orientations in the series"
MIXED_PIXEL_SPACING = "pixel spacing differs in the series"
MIXED_PHOTOMETRIC = "mixed photometric interpretations in the series"
DUPLICATE_POSITION = "duplicate slice position in the series"
MISSING_SLICE = "missing slice in the series"
UNEVEN_SPACING = "uneven slice spacing in the series"
LABEL_DIFFERS = "label differs between the slices of a series"


@dataclass(frozen=True)
class Slice:
    obj: int  # which object of the series it comes from
    frame: int | None  # its frame in a multi-frame object; None for a single-frame instance
    header: pydicom.Dataset  # what the value steps read: the instance, or the frame's own view
    position: tuple[float, float, float]
    orientation: tuple[float, ...]  # six direction cosines, row then column
    pixel_spacing: tuple[float, float]  # between rows, between columns (mm)
    rows: int
    columns: int


@dataclass(frozen=True)
class Plan:
    slices: tuple[Slice, ...]  # in order along the slice normal
    spacing: tuple[float, float, float]  # voxel size in mm: slice, row, column


def plan(objects: Sequence[pydicom.Dataset], spec: FieldSpec | None) -> Plan:
    """The slices of one series in order, checked against each other and the schema
    (``spec``: the image field, None when only labels are granted); raises ``Skip`` with
    a fixed reason."""
    multi = [ds for ds in objects if preprocess.frames_of(ds) > 1]
    if multi and len(objects) > 1:
        raise Skip(MIXED_OBJECTS)
    slices = frame_slices(multi[0]) if multi else [instance_slice(i, ds) for i, ds in enumerate(objects)]
    if len(slices) < 2:
        raise Skip(TOO_FEW)
    if len(slices) > MAX_SLICES:
        raise Skip("image too large")
    _consistent(slices)
    ordered, step = _ordered(slices)
    first = ordered[0]
    found = Plan(tuple(ordered), (step, first.pixel_spacing[0], first.pixel_spacing[1]))
    if spec is not None:
        _fits(found, spec)
        value_ranges(found, spec)  # every slice's header must serve every value step
    return found


def assemble(objects: Sequence[pydicom.Dataset], found: Plan, spec: FieldSpec) -> np.ndarray:
    """The volume of a planned series: decoded, each slice through the value steps, then
    resized or resampled, in the declared shape and dtype."""
    steps, ranges = value_steps(spec), value_ranges(found, spec)
    by_object = {obj: _decoded(objects[obj]) for obj in sorted({item.obj for item in found.slices})}
    volume = np.empty((len(found.slices), found.slices[0].rows, found.slices[0].columns), dtype=np.float64)
    for depth, item in enumerate(found.slices):
        raw = by_object[item.obj]
        values = (raw if item.frame is None else raw[item.frame]).reshape(1, item.rows, item.columns)
        volume[depth] = preprocess.run_steps(item.header, values, steps, ranges, spec)[0]
    if not spec.transforms:
        volume = np.clip(volume, 0.0, 1.0)  # as the default scaling of an instance record
    geometric = [step for step in spec.transforms if step.op in GEOMETRIC]
    target = volume_shape(spec)
    if geometric and geometric[0].op == "resize":
        volume = resize_volume(volume, target, geometric[0].params["interpolation"])
    elif geometric:
        volume = _resample(volume, found.spacing, geometric[0], target, _final_low(found, spec))
    return np.ascontiguousarray(volume.reshape(spec.shape), dtype=spec.dtype)


def volume_shape(spec: FieldSpec) -> tuple[int, int, int]:
    depth, rows, columns = spec.shape[-3:]
    return depth, rows, columns


def value_steps(spec: FieldSpec) -> tuple[Transform, ...]:
    """The steps run slice by slice: the declared ones but ``resize``/``spacing`` (none:
    stored values, as for an instance record), or the default scaling by bits stored
    (MONOCHROME1 inverted) when the field declares no transforms."""
    if not spec.transforms:
        return DEFAULT_STEPS
    return tuple(step for step in spec.transforms if step.op not in GEOMETRIC)


def value_ranges(found: Plan, spec: FieldSpec) -> list[preprocess.Range]:
    """The range before each value step over the whole volume (the union of the slices'
    ranges), so that an ``intensity`` scaling or an inversion is the same on every slice."""
    return preprocess.union_ranges([item.header for item in found.slices], value_steps(spec))


def labels_agree(values: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The series' labels: every object's labels must be the same."""
    first = values[0]
    if any(v.keys() != first.keys() or any(not np.array_equal(v[k], first[k]) for k in first) for v in values):
        raise Skip(LABEL_DIFFERS)
    return first


# ---- geometry from headers ----------------------------------------------------------

def instance_slice(obj: int, ds: pydicom.Dataset) -> Slice:
    return _slice(obj, None, ds, ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"),
                  ds.get("PixelSpacing"))


def frame_slices(ds: pydicom.Dataset) -> list[Slice]:
    """One slice per frame of a multi-frame object (PS3.3 C.7.6.16 functional groups)."""
    groups = frame_groups(ds)
    if groups is None:
        raise Skip(NO_GEOMETRY)
    slices = []
    for frame, (group, shared) in enumerate(groups):
        def found(sequence: str, keyword: str, group: pydicom.Dataset = group, shared: pydicom.Dataset = shared) -> Any:
            return group_value(group, shared, sequence, keyword)
        slices.append(_slice(0, frame, frame_header(ds, group, shared),
                             found("PlanePositionSequence", "ImagePositionPatient"),
                             found("PlaneOrientationSequence", "ImageOrientationPatient"),
                             found("PixelMeasuresSequence", "PixelSpacing")))
    return slices


def _slice(obj: int, frame: int | None, header: pydicom.Dataset, position: Any, orientation: Any,
           spacing: Any) -> Slice:
    try:
        ipp = tuple(float(v) for v in position)
        iop = tuple(float(v) for v in orientation)
        pixel = tuple(float(v) for v in spacing)
        rows, columns = int(header.Rows), int(header.Columns)
    except (TypeError, ValueError, AttributeError) as exc:
        raise Skip(NO_GEOMETRY) from exc
    row, column = np.array(iop[:3]), np.array(iop[3:])
    if len(ipp) != 3 or len(iop) != 6 or len(pixel) != 2 or not all(map(math.isfinite, ipp + iop + pixel)) \
            or min(pixel) <= 0 or abs(np.linalg.norm(row) - 1) > 0.01 or abs(np.linalg.norm(column) - 1) > 0.01 \
            or abs(float(row @ column)) > 0.01 or rows < 1 or columns < 1:
        raise Skip(NO_GEOMETRY)
    return Slice(obj, frame, header, (ipp[0], ipp[1], ipp[2]), iop, (pixel[0], pixel[1]), rows, columns)


def _consistent(slices: list[Slice]) -> None:
    first = slices[0]
    for item in slices[1:]:
        if (item.rows, item.columns) != (first.rows, first.columns):
            raise Skip(MIXED_SIZES)
        if max(abs(a - b) for a, b in zip(item.orientation, first.orientation, strict=True)) > ORIENTATION_TOLERANCE:
            raise Skip(MIXED_ORIENTATIONS)
        if any(abs(a - b) > SPACING_RELATIVE_TOLERANCE * b for a, b in zip(item.pixel_spacing, first.pixel_spacing,
                                                                            strict=True)):
            raise Skip(MIXED_PIXEL_SPACING)
        if item.header.get("PhotometricInterpretation") != first.header.get("PhotometricInterpretation"):
            raise Skip(MIXED_PHOTOMETRIC)


def _ordered(slices: list[Slice]) -> tuple[list[Slice], float]:
    """Sorted along the normal, and the slice spacing; gaps and duplicates refused."""
    orientation = np.array(slices[0].orientation)
    normal = np.cross(orientation[:3], orientation[3:])
    depth = np.array([float(np.dot(item.position, normal)) for item in slices])
    order = np.argsort(depth, kind="stable")
    gaps = np.diff(depth[order])
    if float(gaps.min()) < POSITION_TOLERANCE_MM:
        raise Skip(DUPLICATE_POSITION)
    step = float(np.median(gaps))
    tolerance = SPACING_RELATIVE_TOLERANCE * step + POSITION_TOLERANCE_MM
    for gap in gaps:
        if abs(gap - step) <= tolerance:
            continue
        whole = round(gap / step)
        raise Skip(MISSING_SLICE if whole >= 2 and abs(gap - whole * step) <= whole * tolerance else UNEVEN_SPACING)
    return [slices[int(i)] for i in order], step


def _fits(found: Plan, spec: FieldSpec) -> None:
    depth, rows, columns = volume_shape(spec)
    first = found.slices[0]
    geometric = [step for step in spec.transforms if step.op in GEOMETRIC]
    if len(found.slices) * first.rows * first.columns > preprocess.MAX_PIXELS_PER_RECORD:
        raise Skip("image too large")
    if geometric and geometric[0].op == "spacing":
        resampled = _resampled_shape((len(found.slices), first.rows, first.columns), found.spacing, geometric[0])
        if math.prod(resampled) > preprocess.MAX_PIXELS_PER_RECORD:
            raise Skip("image too large")
    elif not geometric:
        if len(found.slices) != depth:
            raise Skip("slice count differs from the schema")
        if (first.rows, first.columns) != (rows, columns):
            raise Skip("image size differs from the schema")


# ---- pixels ---------------------------------------------------------------------------

def _decoded(ds: pydicom.Dataset) -> np.ndarray:
    frames, rows, columns = preprocess.frames_of(ds), int(ds.Rows), int(ds.Columns)
    try:
        raw = ds.pixel_array
    except Exception as exc:  # truncated or undecodable pixel data
        raise Skip("unreadable pixel data") from exc
    if raw.shape != ((frames,) if frames > 1 else ()) + (rows, columns):
        raise Skip("unreadable pixel data")
    pixels: np.ndarray = raw
    return pixels


def _final_low(found: Plan, spec: FieldSpec) -> float:
    """The lowest value after the value steps: what lies outside the scanned field."""
    return min(preprocess.range_after(item.header, value_steps(spec))[0] for item in found.slices)


def _resampled_shape(shape: tuple[int, int, int], spacing: tuple[float, float, float],
                     step: Transform) -> tuple[int, int, int]:
    sizes = [max(1, round(n * have / want)) for n, have, want in zip(shape, spacing, step.params["mm"], strict=True)]
    return sizes[0], sizes[1], sizes[2]


def _resample(volume: np.ndarray, spacing: tuple[float, float, float], step: Transform,
              target: tuple[int, int, int], pad: float) -> np.ndarray:
    """To the declared voxel size (linear or nearest along each axis, pixel centres at
    half-integer positions as in ``resize.py``), then centred in the declared shape."""
    interpolation = "bilinear" if step.params["interpolation"] == "linear" else "nearest"
    sizes = _resampled_shape((volume.shape[0], volume.shape[1], volume.shape[2]), spacing, step)
    for axis, size in enumerate(sizes):
        volume = resample_axis(volume, size, axis, interpolation)
    out = np.full(target, pad, dtype=np.float64)
    source, destination = [], []
    for have, want in zip(volume.shape, target, strict=True):
        start = abs(have - want) // 2
        source.append(slice(start, start + want) if have > want else slice(0, have))
        destination.append(slice(0, want) if have > want else slice(start, start + have))
    out[tuple(destination)] = volume[tuple(source)]
    return out
