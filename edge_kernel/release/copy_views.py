"""The ways a job could lay a record out in the numbers it releases, each as one stream.

Every stream is one long float64 run: the released arrays in name order, joined, so a
record split across tensors or metric series is one run again. Each stream names a way
of hiding a copy:

- `values`: the numbers as they are (verbatim, affine, sign, any reshape that keeps
  the order, e.g. a conv kernel or a Linear row holding a flattened record);
- `axis N last`: each array read with axis N varying fastest (transposition, a record
  stored down a column);
- `low 8 bits`, `low 16 bits`, `low 16 bits as float16`, `low 16 bit pairs as float32`,
  `float16 low 6 bits`: bits of float32 (float16) weights that change an honest weight
  too little to notice;
- `bytes as float32`: an array's raw bytes, or small integers (0..255) read as bytes,
  taken as float32 bit patterns (a record's float32 bytes smuggled as another dtype, or
  as byte-valued metrics).

Numbers that are not finite, or are too large to square, become 0: a NaN planted in a
tensor must not stop the scan.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

SAFE_MAGNITUDE = 1e30


def streams(released: Mapping[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    arrays = [np.asarray(released[name]) for name in sorted(released)]
    arrays = [array for array in arrays if array.size and _numeric(array)]
    if not arrays:
        return
    yield "values", _joined(array.ravel() for array in arrays)
    deepest = max(array.ndim for array in arrays)
    for axis in range(deepest - 1):
        stacked = [np.moveaxis(array, axis, -1).ravel() for array in arrays if array.ndim > axis + 1]
        yield f"axis {axis} last", _joined(stacked)
    yield from _low_bits(arrays)
    yield from _bytes_as_float32(arrays)


def safe(numbers: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):  # garbage bit patterns are expected here
        values = np.asarray(numbers, dtype=np.float64)
        return np.where(np.isfinite(values) & (np.abs(values) < SAFE_MAGNITUDE), values, 0.0)


def _numeric(array: np.ndarray) -> bool:
    return array.dtype.kind in "biuf"


def _joined(parts: Iterator[np.ndarray] | list[np.ndarray]) -> np.ndarray:
    return safe(np.concatenate([np.asarray(part, dtype=np.float64) for part in parts]))


def _low_bits(arrays: list[np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    halves = [array.ravel() for array in arrays if array.dtype == np.float16]
    if halves:  # float16 weights have 10 mantissa bits: the low 6 change a weight by under 1%
        yield "float16 low 6 bits", (np.concatenate(halves).view(np.uint16) & 0x3F).astype(np.float64)
    floats = [array.ravel() for array in arrays if array.dtype == np.float32]
    if not floats:
        return
    bits = np.ascontiguousarray(np.concatenate(floats)).view(np.uint32)
    yield "low 8 bits", (bits & 0xFF).astype(np.float64)
    low16 = (bits & 0xFFFF).astype(np.uint16)
    yield "low 16 bits", low16.astype(np.float64)
    yield "low 16 bits as float16", safe(low16.view(np.float16))
    pairs = low16[: len(low16) // 2 * 2].reshape(-1, 2).astype(np.uint32)
    for name, high, low in (("high first", 0, 1), ("low first", 1, 0)):
        joined = (pairs[:, high] << 16) | pairs[:, low]
        yield f"low 16 bit pairs as float32, {name}", safe(joined.view(np.float32))


def _bytes_as_float32(arrays: list[np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    raw = [np.ascontiguousarray(array.ravel()).view(np.uint8) for array in arrays if array.dtype != np.float32]
    raw += [small for small in map(_small_integers, arrays) if small is not None]
    data = np.concatenate(raw) if raw else np.zeros(0, np.uint8)
    for shift in range(4):
        usable = (len(data) - shift) // 4 * 4
        if usable >= 4:
            yield f"bytes as float32, offset {shift}", safe(data[shift:shift + usable].view("<f4"))


def _small_integers(array: np.ndarray) -> np.ndarray | None:
    """An array of whole numbers in 0..255 (e.g. a metric series) read as bytes."""
    values = array.ravel().astype(np.float64)
    if not np.all(np.isfinite(values)):
        return None
    if not (np.all(values == np.round(values)) and values.min() >= 0 and values.max() <= 255):
        return None
    return values.astype(np.uint8)
