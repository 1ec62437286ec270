"""Declared preprocessing: the fixed vocabulary of pixel transforms a dataset's schema
may list for its image field, and their validation.

The transforms run in the broker, on the edge, before a record crosses into the sandbox;
researcher code never chooses or runs them. A schema names them in order, each a JSON
object with ``op`` and its parameters (a bare string for one without parameters)::

    "image": {"dtype": "float32", "shape": [1, 224, 224], "kind": "feature",
              "transforms": ["modality_lut", {"op": "window", "center": 40, "width": 400},
                             {"op": "resize", "interpolation": "area"}]}

Vocabulary (``edge_kernel/data/preprocess.py`` carries it out):

- ``modality_lut``: stored values to modality units (Hounsfield units for CT) through
  RescaleSlope/RescaleIntercept or the Modality LUT; first in the list when present.
- ``window``: ``center`` and ``width`` (both or neither: neither takes the header's
  window, or its VOI LUT), ``function`` ``linear`` | ``linear_exact`` | ``sigmoid``
  (default: the header's VOILUTFunction, else linear); maps to [0, 1]. After
  ``modality_lut``, because a window is given in modality units.
- ``resize``: to the declared shape's last two dimensions, ``interpolation``
  ``nearest`` | ``bilinear`` (``linear`` is the same) | ``area``.
- ``intensity``: ``clip`` ``[low, high]`` and/or ``scale_to`` ``[low, high]`` (the clip
  range, or without one the values' whole range, mapped linearly onto it).
- ``invert_monochrome1``: a MONOCHROME1 image flipped within its value range, so low
  values are dark as in MONOCHROME2; other images pass unchanged.
- ``spacing`` (series datasets only, ``volume.py``): ``mm`` ``[slice, row, column]``, the
  voxel size in millimetres the volume is resampled to, ``interpolation`` ``nearest`` |
  ``linear``; the resampled volume is then centred in the declared shape (cropped, or
  padded with the lowest value of its range).

In a dataset whose records are series (``"options": {"records": "series"}``) the field's
shape ends in (slices, rows, columns); the value steps run slice by slice, each with its
own header (a rescale can differ per slice), and ``resize`` (over all three axes) or
``spacing`` runs once on the assembled volume, so it must be the last step.

A field without ``transforms`` keeps the default: stored values scaled by bits stored to
[0, 1], MONOCHROME1 inverted, and the image's size equal to the schema's. That default is
the same as ``[{"op": "intensity", "scale_to": [0, 1]}, "invert_monochrome1"]``.

Everything here is pure: a mistake is a ``BadInput`` naming the dataset, field, step and
parameter, raised when the dataset is added or the edge starts, before anything is written.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

from jupyter_rapha.protocol.errors import BadInput
from jupyter_rapha.protocol.receipt import preprocessing_digest

INTERPOLATIONS = {"nearest": "nearest", "bilinear": "bilinear", "linear": "bilinear", "area": "area"}
SPACING_INTERPOLATIONS = {"nearest": "nearest", "linear": "linear", "trilinear": "linear"}
GEOMETRIC = ("resize", "spacing")
RECORDS = ("instance", "series")
WINDOW_FUNCTIONS = ("linear", "linear_exact", "sigmoid")
PIXEL_SOURCES = ("dicom-folder", "dicomweb")
FLOAT_DTYPES = ("float32", "float64")


class _Invalid(Exception):
    """A parameter value that does not fit; the text says what would."""


@dataclass(frozen=True)
class Transform:
    """One validated step; ``params`` are canonical (aliases resolved, numbers float)."""

    op: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, **self.params}

    def describe(self) -> str:
        """A short line for logs and ``rapha verify``: ``window(40/400)``, ``resize(area)``."""
        if self.op == "window":
            shown = [f"{self.params['center']:g}/{self.params['width']:g}" if "center" in self.params else "header"]
            shown += [self.params["function"]] if "function" in self.params else []
        else:
            shown = [f"{name} {value}" if isinstance(value, list) else str(value)
                     for name, value in self.params.items()]
        return f"{self.op}({', '.join(shown)})" if shown else self.op


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Invalid("a finite number")
    return float(value)


def _positive(value: Any) -> float:
    number = _number(value)
    if number <= 0:
        raise _Invalid("a number greater than 0")
    return number


def _range(value: Any) -> list[float]:
    expected = "a list of two finite numbers [low, high]"
    if not isinstance(value, list) or len(value) != 2:
        raise _Invalid(expected)
    try:
        low, high = (_number(v) for v in value)
    except _Invalid:
        raise _Invalid(expected) from None
    if not low < high:
        raise _Invalid("a list [low, high] with low below high")
    return [low, high]


def _voxel(value: Any) -> list[float]:
    expected = "a list of three voxel sizes in millimetres [slice, row, column], each from 0.01 to 100"
    if not isinstance(value, list) or len(value) != 3:
        raise _Invalid(expected)
    try:
        sizes = [_positive(v) for v in value]
    except _Invalid:
        raise _Invalid(expected) from None
    if not all(0.01 <= size <= 100 for size in sizes):
        raise _Invalid(expected)
    return sizes


def _choice(options: Any) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in options:
            raise _Invalid(f"one of {', '.join(options)}")
        return options[value.lower()] if isinstance(options, dict) else value.lower()
    return parse


# op -> {parameter: parser}; a parameter not listed is refused, never ignored.
_VOCABULARY: dict[str, dict[str, Callable[[Any], Any]]] = {
    "modality_lut": {},
    "window": {"center": _number, "width": _positive, "function": _choice(WINDOW_FUNCTIONS)},
    "resize": {"interpolation": _choice(INTERPOLATIONS)},
    "intensity": {"clip": _range, "scale_to": _range},
    "invert_monochrome1": {},
    "spacing": {"mm": _voxel, "interpolation": _choice(SPACING_INTERPOLATIONS)},
}
VOCABULARY = tuple(_VOCABULARY)


def parse_transforms(raw: Any, where: str) -> tuple[Transform, ...]:
    """Validate a schema's ``transforms`` list; ``where`` names the field in messages
    (``dataset cxr: field image``)."""
    if not isinstance(raw, list) or not raw:
        raise BadInput(f"{where}: 'transforms' must list at least one step, each one of {', '.join(VOCABULARY)} "
                       "(leave it out for the default scaling by bits stored)")
    steps = tuple(_step(item, f"{where}: transform {index + 1}") for index, item in enumerate(raw))
    _check_order(steps, where)
    return steps


def _step(item: Any, where: str) -> Transform:
    if isinstance(item, str):
        item = {"op": item}
    if not isinstance(item, dict) or not isinstance(item.get("op"), str):
        raise BadInput(f"{where}: a step is a name or an object with 'op', one of {', '.join(VOCABULARY)}")
    op = item["op"]
    if op not in _VOCABULARY:
        raise BadInput(f"{where}: unknown transform {op!r}; the edge knows {', '.join(VOCABULARY)}")
    parsers = _VOCABULARY[op]
    params: dict[str, Any] = {}
    for name, value in item.items():
        if name == "op":
            continue
        if name not in parsers:
            known = ", ".join(parsers) or "none"
            raise BadInput(f"{where} ({op}): unknown parameter {name!r}; {op} takes {known}")
        try:
            params[name] = parsers[name](value)
        except _Invalid as exc:
            raise BadInput(f"{where} ({op}): parameter {name!r} must be {exc}, not {_shown(value)}") from None
    _check_step(op, params, where)
    return Transform(op, params)


def _check_step(op: str, params: dict[str, Any], where: str) -> None:
    if op == "resize" and "interpolation" not in params:
        raise BadInput(f"{where} (resize): parameter 'interpolation' is required, one of {', '.join(INTERPOLATIONS)}")
    if op == "window" and ("center" in params) != ("width" in params):
        raise BadInput(f"{where} (window): give both 'center' and 'width', or neither to use the header's window")
    if op == "window" and params.get("function", "linear") == "linear" and params.get("width", 1.0) < 1:
        raise BadInput(f"{where} (window): parameter 'width' must be at least 1 for a linear window")
    if op == "spacing" and set(params) != {"mm", "interpolation"}:
        raise BadInput(f"{where} (spacing): give 'mm' [slice, row, column] and 'interpolation', one of "
                       f"{', '.join(SPACING_INTERPOLATIONS)}")
    if op == "intensity" and not params:
        raise BadInput(f"{where} (intensity): give 'clip', 'scale_to' or both")


def _check_order(steps: tuple[Transform, ...], where: str) -> None:
    ops = [step.op for step in steps]
    for op in set(ops):
        if ops.count(op) > 1:
            raise BadInput(f"{where}: transform {op!r} is listed {ops.count(op)} times; list each once")
    if "modality_lut" in ops and ops[0] != "modality_lut":
        raise BadInput(f"{where}: 'modality_lut' must be the first transform (it reads the stored values)")
    if "window" in ops and "modality_lut" not in ops:
        # A window is given in modality units (HU for CT); on stored values it would
        # silently cut the wrong range.
        raise BadInput(f"{where}: 'window' needs 'modality_lut' before it (a window is in modality units)")


def check_field(steps: tuple[Transform, ...], *, source: str, kind: str, dtype: str,
                shape: tuple[int, ...], where: str) -> None:
    """What a field must be for its transforms to apply: a DICOM image field with a
    floating-point dtype and at least two dimensions."""
    if not steps:
        return
    if source not in PIXEL_SOURCES:
        raise BadInput(f"{where}: transforms apply to DICOM images ({', '.join(PIXEL_SOURCES)}), not {source}")
    if kind != "feature":
        raise BadInput(f"{where}: transforms apply to an image field, not a {kind}")
    if dtype not in FLOAT_DTYPES:
        raise BadInput(f"{where}: transformed pixels are {' or '.join(FLOAT_DTYPES)}, not {dtype}")
    if len(shape) < 2:
        raise BadInput(f"{where}: a transformed image needs a shape of at least [rows, columns]")


def check_records(records: Any, fields: dict[str, Any], *, source: str, where: str) -> str:
    """A dataset's ``options.records``: ``instance`` (the default, one record per DICOM
    instance) or ``series`` (one record per series, its image a volume whose shape ends
    in (slices, rows, columns)). Returns the checked value. ``fields``: ``FieldSpec`` by name."""
    records = "instance" if records is None else records
    if records not in RECORDS:
        raise BadInput(f"{where}: options.records must be one of {', '.join(RECORDS)}, not {_shown(records)}")
    images = {name: spec for name, spec in fields.items() if spec.kind != "label"}
    for name, spec in images.items():
        ops = [step.op for step in spec.transforms]
        if records == "instance" and "spacing" in ops:
            raise BadInput(f"{where}: field {name}: 'spacing' resamples a volume; declare options.records "
                           "'series' or use 'resize'")
        if records != "series":
            continue
        if source not in PIXEL_SOURCES:
            raise BadInput(f"{where}: series records come from DICOM sources ({', '.join(PIXEL_SOURCES)}), "
                           f"not {source}")
        if len(spec.shape) < 3 or math.prod(spec.shape[:-3]) != 1:
            raise BadInput(f"{where}: field {name}: a volume's shape is [slices, rows, columns] "
                           "(or [1, slices, rows, columns])")
        if len(set(ops) & set(GEOMETRIC)) > 1:
            raise BadInput(f"{where}: field {name}: give 'resize' or 'spacing', not both")
        if any(op in GEOMETRIC for op in ops[:-1]):
            raise BadInput(f"{where}: field {name}: in a series dataset 'resize' or 'spacing' is the last "
                           "transform (it works on the assembled volume)")
    return str(records)


def canonical(steps: tuple[Transform, ...]) -> list[dict[str, Any]]:
    return [step.to_dict() for step in steps]


def receipt_entry(specs: dict[str, Any]) -> dict[str, Any] | None:
    """The receipt's ``dataset.preprocessing`` for the granted fields (``FieldSpec`` by
    name): ``{"sha256", "fields": {field: [steps]}}``; None when no field declares any."""
    fields = {name: canonical(spec.transforms) for name, spec in specs.items() if spec.transforms}
    return {"sha256": preprocessing_digest(fields), "fields": fields} if fields else None


def _shown(value: Any) -> str:
    """The value as the schema wrote it (schemas are the hospital's, not patient data)."""
    if isinstance(value, str):
        return f"the string {json.dumps(value)[:40]}"
    if isinstance(value, (list, dict)):
        return f"{'a list' if isinstance(value, list) else 'an object'} {json.dumps(value, default=str)[:40]}"
    return json.dumps(value, default=str)[:40]
