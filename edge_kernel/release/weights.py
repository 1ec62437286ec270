"""Release check for weights (S5): a well-formed safetensors file of numeric tensors.

Parsed here by hand rather than loaded, so that nothing the job wrote is executed or
deserialised into objects on the edge. Free-text metadata is refused because it is a
side channel for anything the job read.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any

from jupyter_rapha.protocol import bounded
from jupyter_rapha.protocol.contract import OUTPUT_LIMITS
from jupyter_rapha.protocol.errors import ReleaseDenied
from jupyter_rapha.protocol.jobspec import OutputPolicy

NUMERIC_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
MAX_HEADER_BYTES = OUTPUT_LIMITS.weights_header_bytes
MAX_TENSORS = OUTPUT_LIMITS.weight_tensors
MAX_DIMS = OUTPUT_LIMITS.weight_dims
HEADER_DEPTH = 4  # {"name": {"shape": [...]}} is three levels
_TENSOR_NAME = re.compile(r"^[A-Za-z0-9_.]{1,128}$")
_ALLOWED_METADATA: tuple[dict[str, str], ...] = ({}, {"format": "pt"})


@dataclass(frozen=True)
class WeightsSummary:
    byte_size: int
    tensors: int
    parameters: int
    checked: bytes = field(repr=False)  # the bytes these figures are of: the ones to release


def check_weights(data: bytes | None, policy: OutputPolicy) -> WeightsSummary:
    if not data:
        raise ReleaseDenied("the job saved no weights", hint="call rapha.save(model) at the end of the cell")
    if len(data) > policy.max_weights_bytes:
        raise ReleaseDenied(f"weights are {len(data)} bytes, over the output limit of {policy.max_weights_bytes}")
    header, body_size = _header(data)
    metadata = header.pop("__metadata__", {})
    if metadata not in _ALLOWED_METADATA:
        raise ReleaseDenied("weights carry free-form metadata, which may not leave the edge")
    if not header or len(header) > MAX_TENSORS:
        raise ReleaseDenied(f"weights must hold from 1 to {MAX_TENSORS} tensors")
    parameters = _check_layout(header, body_size)
    return WeightsSummary(len(data), len(header), parameters, data)


def _header(data: bytes) -> tuple[dict[str, Any], int]:
    if len(data) < 8:
        raise ReleaseDenied("weights file is not safetensors (too short)")
    (length,) = struct.unpack("<Q", data[:8])
    if length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise ReleaseDenied("weights file is not safetensors (bad header length)")
    # the job wrote this header: bounded like any request body (depth, UTF-8, surrogates)
    header = bounded.loads(data[8:8 + length], what="weights header", max_depth=HEADER_DEPTH, error=ReleaseDenied)
    if not isinstance(header, dict):
        raise ReleaseDenied("weights header is not a JSON object")
    return header, len(data) - 8 - length


def _check_layout(header: dict[str, Any], body_size: int) -> int:
    spans, parameters = [], 0
    for name, info in header.items():
        if not _TENSOR_NAME.fullmatch(name):
            raise ReleaseDenied("a tensor name is not of letters, digits, '_' or '.' (at most 128)")
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ReleaseDenied("a tensor entry is malformed")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        width = NUMERIC_DTYPES.get(dtype) if isinstance(dtype, str) else None
        if width is None:
            raise ReleaseDenied(f"tensor dtype {str(dtype)[:8]!r} is not a numeric type")
        if not (isinstance(shape, list) and len(shape) <= MAX_DIMS and all(_whole(d) for d in shape)):
            raise ReleaseDenied("a tensor shape is malformed")
        count = 1
        for dim in shape:
            count *= dim
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_whole(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= body_size and offsets[1] - offsets[0] == count * width):
            raise ReleaseDenied("a tensor's data offsets do not match its shape")
        spans.append((offsets[0], offsets[1]))
        parameters += count
    _check_spans(sorted(spans), body_size)
    return parameters


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_spans(spans: list[tuple[int, int]], body_size: int) -> None:
    # Gaps or overlaps would leave bytes that belong to no tensor: a hiding place.
    position = 0
    for start, end in spans:
        if start != position:
            raise ReleaseDenied("weights hold bytes outside any tensor")
        position = end
    if position != body_size:
        raise ReleaseDenied("weights hold trailing bytes outside any tensor")
