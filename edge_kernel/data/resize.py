"""Image resizing in numpy for the broker (the edge never imports torch).

Separable, one axis after the other, over the last two axes of an array (frames first).
Pixel centres sit at half-integer positions, as in most imaging libraries:

- ``nearest``: output pixel i takes input pixel floor((i + 0.5) * n / m), computed in
  integers (torch's ``nearest-exact``, PIL's NEAREST).
- ``bilinear``: source position (i + 0.5) * n / m - 0.5, clamped at the edges, no
  antialiasing (torch's ``bilinear`` with ``align_corners=False``): for strong
  reduction, ``area`` is the one to declare.
- ``area``: each output pixel is the mean of the input area it covers, partial pixels
  weighted by their overlap (PIL's BOX, OpenCV's INTER_AREA when reducing; torch's
  ``area`` for whole-number ratios): whole pixels summed per span, the cut pixels at
  each span's edges weighted by their overlap.
"""

from __future__ import annotations

import numpy as np

INTERPOLATIONS = ("nearest", "bilinear", "area")


def resize(values: np.ndarray, shape: tuple[int, int], interpolation: str) -> np.ndarray:
    """``values`` (..., rows, columns) resized to (..., *shape), as float64."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}")
    rows, columns = shape
    out = _axis(np.asarray(values, dtype=np.float64), rows, values.ndim - 2, interpolation)
    return _axis(out, columns, values.ndim - 1, interpolation)


def resize_volume(values: np.ndarray, shape: tuple[int, int, int], interpolation: str) -> np.ndarray:
    """``values`` (slices, rows, columns) resized over all three axes, as float64."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}")
    out = _axis(np.asarray(values, dtype=np.float64), shape[0], 0, interpolation)
    return resize(out, shape[1:], interpolation)


def resample_axis(values: np.ndarray, size: int, axis: int, interpolation: str) -> np.ndarray:
    """One axis of ``values`` to ``size`` samples (``nearest``, ``bilinear`` or ``area``)."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}")
    return _axis(np.asarray(values, dtype=np.float64), size, axis, interpolation)


def _axis(values: np.ndarray, size: int, axis: int, interpolation: str) -> np.ndarray:
    length = values.shape[axis]
    if length == size:
        return values
    if interpolation == "nearest":
        return np.take(values, _nearest_indices(length, size), axis=axis)
    if interpolation == "bilinear":
        return _bilinear(values, length, size, axis)
    return _area(values, length, size, axis)


def _nearest_indices(length: int, size: int) -> np.ndarray:
    # floor((i + 0.5) * length / size) in integers: no rounding at exact boundaries
    return np.minimum(((2 * np.arange(size) + 1) * length) // (2 * size), length - 1)


def _bilinear(values: np.ndarray, length: int, size: int, axis: int) -> np.ndarray:
    source = np.maximum((np.arange(size) + 0.5) * (length / size) - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), length - 1)
    high = np.minimum(low + 1, length - 1)
    weight = _along(source - low, values.ndim, axis)
    blended: np.ndarray = np.take(values, low, axis=axis) * (1.0 - weight) + np.take(values, high, axis=axis) * weight
    return blended


def _area(values: np.ndarray, length: int, size: int, axis: int) -> np.ndarray:
    edges = np.arange(size + 1) * (length / size)
    edges[-1] = length  # exact, whatever the rounding of the product
    whole = np.floor(edges).astype(np.int64)
    fraction = _along(edges - whole, values.ndim, axis)
    # whole pixels of each span [edge k, edge k+1): one pass in C; a span inside a
    # single pixel (enlarging) has no whole pixel, but reduceat answers that pixel for it
    spans = np.add.reduceat(values, whole[:-1], axis=axis)
    empty = _along((whole[1:] == whole[:-1]).astype(values.dtype), values.ndim, axis)
    spans = spans * (1.0 - empty)
    # then the part of the pixel each edge cuts: added past the end, taken off at the start
    edge_pixels = np.take(values, np.minimum(whole, length - 1), axis=axis) * fraction
    total = spans + np.take(edge_pixels, np.arange(1, size + 1), axis=axis) \
        - np.take(edge_pixels, np.arange(size), axis=axis)
    mean: np.ndarray = total / (length / size)
    return mean


def _along(weights: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """1-D weights shaped to broadcast along ``axis`` of an ``ndim`` array."""
    shape = [1] * ndim
    shape[axis] = weights.shape[0]
    return weights.reshape(shape)
