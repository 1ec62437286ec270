"""The header each frame of a multi-frame object is read with.

An enhanced object (Enhanced CT/MR, PS3.3 C.7.6.16) keeps a frame's rescale, window and
geometry in functional groups: the frame's own item of PerFrameFunctionalGroupsSequence,
else the SharedFunctionalGroupsSequence, else the top level. pydicom's
``apply_modality_lut`` and ``apply_voi_lut`` read the top level only, so each frame gets a
small header of its own holding the object's pixel description and the frame's values.
"""

from __future__ import annotations

from typing import Any

import pydicom

from .source import Skip

_PIXEL_DESCRIPTION = ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
                      "BitsStored", "HighBit", "PixelRepresentation", "ModalityLUTSequence", "VOILUTSequence",
                      "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "VOILUTFunction")
_FRAME_VALUES = (("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
                 ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction")))


def frame_groups(ds: pydicom.Dataset) -> list[tuple[pydicom.Dataset, pydicom.Dataset]] | None:
    """(per-frame item, shared item) of every frame, or None for an object without
    per-frame functional groups; raises ``Skip`` when their count is not the frames'."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return None
    if len(per_frame) != int(ds.get("NumberOfFrames", 1) or 1):
        raise Skip("frame count differs from the functional groups")
    shared = (ds.get("SharedFunctionalGroupsSequence") or [pydicom.Dataset()])[0]
    return [(group, shared) for group in per_frame]


def group_value(group: pydicom.Dataset, shared: pydicom.Dataset, sequence: str, keyword: str) -> Any:
    """A frame's value of ``keyword`` inside ``sequence``: its own, else the shared one."""
    for place in (group, shared):
        items = place.get(sequence) or []
        if items and keyword in items[0]:
            return items[0][keyword].value
    return None


def frame_header(ds: pydicom.Dataset, group: pydicom.Dataset, shared: pydicom.Dataset) -> pydicom.Dataset:
    """What the value steps read for one frame."""
    header = pydicom.Dataset()
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta  # the endianness of an OW lookup table
    for keyword in _PIXEL_DESCRIPTION:
        if keyword in ds:
            header[keyword] = ds[keyword]
    for sequence, keywords in _FRAME_VALUES:
        for keyword in keywords:
            value = group_value(group, shared, sequence, keyword)
            if value is not None:
                setattr(header, keyword, value)
    return header


def frame_headers(ds: pydicom.Dataset) -> list[pydicom.Dataset] | None:
    """Each frame's header, or None when every frame reads the object's own."""
    groups = frame_groups(ds)
    return None if groups is None else [frame_header(ds, group, shared) for group, shared in groups]
