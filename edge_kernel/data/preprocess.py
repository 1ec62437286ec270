"""Carrying out a field's declared transforms (``transforms.py``) on one DICOM record.

Trusted broker code, numpy and pydicom only: the edge service never imports torch (see
docs/internals.md). Two entry points share one walk over the steps:

- ``check_header`` at index time, on the header alone: the frame count and image size
  against the schema, a bound on the pixel count, and everything a step needs from the
  header (a usable rescale, a window when the header's is asked for). A record that
  fails is skipped with a fixed reason then, never met mid-job.
- ``apply`` when the record is handed over: stored pixels -> the declared shape and dtype.

Each step carries the value range along (stored range from bits stored, then through
the modality LUT, [0, 1] after a window, the target after ``scale_to``), so that
``intensity`` without a clip and ``invert_monochrome1`` know the range to work in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pydicom
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

from .frames import frame_headers
from .registry import FieldSpec
from .source import Skip
from .transforms import Transform

# One record's pixels are held as float64 while they are transformed: 2**27 pixels is
# 1 GiB. A header claiming more (a decompression bomb or a whole volume) is skipped.
MAX_PIXELS_PER_RECORD = 2**27
Range = tuple[float, float]


def frames_of(ds: pydicom.Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def check_header(ds: pydicom.Dataset, spec: FieldSpec) -> None:
    """Index-time checks of a record whose field declares transforms; raises ``Skip``."""
    frames, rows, columns = frames_of(ds), int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if not rows or not columns or frames < 1:
        raise Skip("image size differs from the schema")
    if frames != int(np.prod(spec.shape[:-2])):
        raise Skip("frame count differs from the schema")
    if not _resizes(spec) and (rows, columns) != tuple(spec.shape[-2:]):
        raise Skip("image size differs from the schema")
    if frames * rows * columns > MAX_PIXELS_PER_RECORD:
        raise Skip("image too large")
    for header in frame_headers(ds) or [ds]:
        _walk_ranges(header, spec.transforms)


def apply(ds: pydicom.Dataset, raw: np.ndarray, spec: FieldSpec) -> np.ndarray:
    """The declared steps over the decoded pixels (``ds.pixel_array``: rows x columns,
    or frames x rows x columns). An enhanced object's frames each run with their own
    header (``frames.py``: a rescale or window per frame) over the union of their ranges."""
    values = raw.reshape(frames_of(ds), int(ds.Rows), int(ds.Columns))
    headers = frame_headers(ds)
    if headers is None:
        values = run_steps(ds, values, spec.transforms, _walk_ranges(ds, spec.transforms), spec)
    else:
        ranges = union_ranges(headers, spec.transforms)
        values = np.concatenate([run_steps(header, values[k:k + 1], spec.transforms, ranges, spec)
                                 for k, header in enumerate(headers)])
    return np.ascontiguousarray(values.reshape(spec.shape), dtype=spec.dtype)


def run_steps(ds: pydicom.Dataset, values: np.ndarray, steps: tuple[Transform, ...], ranges: list[Range],
              spec: FieldSpec) -> np.ndarray:
    """``steps`` (``ranges``: the range before each) over frames x rows x columns read
    with header ``ds``; ``volume.py`` runs the value steps of each slice through it."""
    if not steps or steps[0].op != "modality_lut":
        values = values.astype(np.float64)
    for step, before in zip(steps, ranges, strict=True):
        values = _STEPS[step.op](ds, values, step, before, spec)
    return values


def union_ranges(headers: list[pydicom.Dataset], steps: tuple[Transform, ...]) -> list[Range]:
    """The range before each step over several frames or slices, each with its own
    header: the union of theirs, so a scaling or inversion is the same on all of them."""
    each = [_walk_ranges(header, steps) for header in headers]
    return [(min(r[k][0] for r in each), max(r[k][1] for r in each)) for k in range(len(steps))]


def walk_ranges(ds: pydicom.Dataset, steps: tuple[Transform, ...]) -> list[Range]:
    """The value range before each step (``steps`` without ``resize`` or ``spacing``, which
    keep the range); raises ``Skip`` for a header a step cannot use. For ``volume.py``."""
    return _walk_ranges(ds, steps)


def _resizes(spec: FieldSpec) -> bool:
    return any(step.op == "resize" for step in spec.transforms)


# ---- value ranges, from the header alone ------------------------------------------

def stored_range(ds: pydicom.Dataset) -> Range:
    bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 16))
    if ds.get("PixelRepresentation", 0) == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def _walk_ranges(ds: pydicom.Dataset, steps: tuple[Transform, ...]) -> list[Range]:
    """The value range before each step; raises ``Skip`` for a header a step cannot use."""
    return _walk(ds, steps)[0]


def range_after(ds: pydicom.Dataset, steps: tuple[Transform, ...]) -> Range:
    """The value range after all ``steps``."""
    return _walk(ds, steps)[1]


def _walk(ds: pydicom.Dataset, steps: tuple[Transform, ...]) -> tuple[list[Range], Range]:
    ranges, current = [], stored_range(ds)
    for step in steps:
        ranges.append(current)
        current = _RANGES[step.op](ds, step, current)
    if not all(np.isfinite(current)):
        raise Skip("pixel values out of range after the modality LUT")
    return ranges, current


def _modality_range(ds: pydicom.Dataset, step: Transform, current: Range) -> Range:
    try:
        if ds.get("ModalityLUTSequence"):
            descriptor = ds.ModalityLUTSequence[0].LUTDescriptor
            entries = int(descriptor[0]) or 2**16
            domain = np.arange(int(descriptor[1]), int(descriptor[1]) + entries)
        else:
            domain = np.array(current)
            float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
        mapped = np.asarray(apply_modality_lut(domain, ds), dtype=np.float64)
    except Exception as exc:  # a damaged rescale or LUT: the record cannot be brought to the schema
        raise Skip("unusable modality LUT or rescale") from exc
    low, high = float(mapped.min()), float(mapped.max())
    if not (np.isfinite(low) and np.isfinite(high)) or low == high:
        raise Skip("unusable modality LUT or rescale")
    return low, high


def _window_range(ds: pydicom.Dataset, step: Transform, current: Range) -> Range:
    if "center" not in step.params:
        _header_window(ds, step)  # raises Skip when the header has none that works
    return 0.0, 1.0


def _intensity_range(ds: pydicom.Dataset, step: Transform, current: Range) -> Range:
    if "scale_to" in step.params:
        return tuple(step.params["scale_to"])
    return tuple(step.params["clip"])


def _same_range(ds: pydicom.Dataset, step: Transform, current: Range) -> Range:
    return current


_RANGES = {"modality_lut": _modality_range, "window": _window_range, "intensity": _intensity_range,
           "resize": _same_range, "invert_monochrome1": _same_range, "spacing": _same_range}


# ---- the steps ---------------------------------------------------------------------

def _modality(ds: pydicom.Dataset, values: np.ndarray, step: Transform, before: Range, spec: FieldSpec) -> np.ndarray:
    return np.asarray(apply_modality_lut(values, ds), dtype=np.float64)


def _window(ds: pydicom.Dataset, values: np.ndarray, step: Transform, before: Range, spec: FieldSpec) -> np.ndarray:
    if "center" in step.params:
        return window(values, step.params["center"], step.params["width"], step.params.get("function", "linear"))
    found = _header_window(ds, step)
    if found is None:  # the header's VOI LUT table: pydicom's own lookup, scaled to [0, 1]
        top = float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
        indices = np.rint(values).astype(np.int64)  # a LUT is indexed by whole modality values
        return np.asarray(apply_voi_lut(indices, ds, prefer_lut=True), dtype=np.float64) / top
    return window(values, *found)


def _header_window(ds: pydicom.Dataset, step: Transform) -> tuple[float, float, str] | None:
    """(center, width, function) of the header's first window; None when the header
    holds a VOI LUT table, which pydicom prefers too."""
    try:
        if ds.get("VOILUTSequence"):
            if int(ds.VOILUTSequence[0].LUTDescriptor[2]) < 1:
                raise Skip("no usable window in the header")
            return None
        center, width = _first(ds["WindowCenter"].value), _first(ds["WindowWidth"].value)
        function = step.params.get("function") or str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").lower()
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise Skip("no usable window in the header") from exc
    smallest = 1.0 if function == "linear" else np.finfo(float).tiny
    if function not in ("linear", "linear_exact", "sigmoid") or not np.isfinite([center, width]).all() \
            or width < smallest:
        raise Skip("no usable window in the header")
    return center, width, function


def _first(value: Any) -> float:
    return float(value[0] if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else value)


def window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 (linear), C.11.2.1.3.2 (linear exact) and C.11.2.1.3.1
    (sigmoid), as pydicom's ``apply_windowing`` computes them, onto [0, 1]."""
    if function == "sigmoid":
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "linear":
        center, width = center - 0.5, width - 1.0
    if width == 0:  # a linear window of width 1: a threshold
        return (values > center).astype(np.float64)
    return np.clip((values - center) / width + 0.5, 0.0, 1.0)


def _intensity(ds: pydicom.Dataset, values: np.ndarray, step: Transform, before: Range, spec: FieldSpec) -> np.ndarray:
    low, high = step.params.get("clip", before)
    values = np.clip(values, low, high) if "clip" in step.params else values
    if "scale_to" not in step.params:
        return values
    out_low, out_high = step.params["scale_to"]
    scaled: np.ndarray = out_low + (values - low) * ((out_high - out_low) / (high - low))
    return scaled


def _invert(ds: pydicom.Dataset, values: np.ndarray, step: Transform, before: Range, spec: FieldSpec) -> np.ndarray:
    if ds.get("PhotometricInterpretation") != "MONOCHROME1":
        return values
    return (before[0] + before[1]) - values


def _resize(ds: pydicom.Dataset, values: np.ndarray, step: Transform, before: Range, spec: FieldSpec) -> np.ndarray:
    from .resize import resize

    rows, columns = spec.shape[-2:]
    return resize(values, (rows, columns), step.params["interpolation"])


_STEPS = {"modality_lut": _modality, "window": _window, "intensity": _intensity, "resize": _resize,
          "invert_monochrome1": _invert}
