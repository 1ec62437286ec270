"""Exact checks of the candidates that the keys found, and of permuted copies.

A key match says only that ups and downs agree over KEY_WINDOW numbers. Here the copy is
measured: an affine map (scale, offset, sign) is fitted on the matched window, the match
is grown along the record as long as the released numbers stay on that map (within a
quarter of the record's typical step between neighbours, a few outliers allowed), and
the Pearson correlation of the grown run is what counts. A run shorter than KEY_WINDOW numbers is not a copy.

A copy permuted within a row or a tensor has no order left to key on; its values still
have exactly the record's sorted profile under an affine map. Honest weights that happen
to have a similar distribution differ from it by sampling noise (about 1e-3 in 1 -
correlation for a thousand numbers), a copy only by float rounding (below 1e-10).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .copy_keys import KEY_WINDOW

# Off the fitted map by more than this fraction of the window's typical step between
# neighbours: the step, not the window's spread, so a window over a bright blob does not
# let honest numbers beside a copy pass as part of it. 8-bit quantisation stays inside.
RESIDUAL_TOLERANCE = 0.25
MAX_OUTLIER_RUN = 2  # consecutive numbers off the map that do not end a run
PROFILE_POINTS = 32
PROFILE_SCREEN = 1e-5  # 1 - correlation of 32-point profiles, to pick candidates
PERMUTED_EXACT = 1e-8  # 1 - correlation of the whole sorted profiles, to call a copy
SCREEN_CELLS = 1 << 22  # rows x candidates screened at once, bounding memory


@dataclass(frozen=True)
class Alignment:
    length: int
    correlation: float


def measure(numbers: np.ndarray, piece: np.ndarray, shift: int, anchor: int) -> Alignment:
    """The copy of `piece` in `numbers` with piece[i] at numbers[i + shift], grown from
    the window at piece[anchor]."""
    low, high = max(0, -shift), min(len(piece), len(numbers) - shift)
    record, released = piece[low:high], numbers[low + shift:high + shift]
    start = anchor - low
    window = slice(start, start + KEY_WINDOW)
    scale, offset = _fit(record[window], released[window])
    spread = abs(scale) * float(np.median(np.abs(np.diff(record[window]))))
    if not (np.isfinite(scale) and spread > 0):
        return Alignment(0, 0.0)
    on_map = np.abs(released - (scale * record + offset)) <= RESIDUAL_TOLERANCE * spread
    first, last = _run_around(on_map, start, start + KEY_WINDOW)
    if last - first < KEY_WINDOW:
        return Alignment(last - first, 0.0)
    return Alignment(last - first, abs(_pearson(record[first:last], released[first:last])))


def _fit(record: np.ndarray, released: np.ndarray) -> tuple[float, float]:
    centred = record - record.mean()
    denominator = float(centred @ centred)
    if denominator == 0:
        return float("nan"), 0.0
    scale = float(centred @ (released - released.mean())) / denominator
    return scale, float(released.mean() - scale * record.mean())


def _run_around(on_map: np.ndarray, start: int, stop: int) -> tuple[int, int]:
    """The run of on-map numbers holding [start, stop), ended by MAX_OUTLIER_RUN + 1
    consecutive numbers off the map; trimmed to on-map numbers at both ends."""
    off = (~on_map).astype(np.int64)
    width = MAX_OUTLIER_RUN + 1
    sums = np.convolve(off, np.ones(width, dtype=np.int64), mode="valid")
    breaks = np.flatnonzero(sums == width)
    after = breaks[breaks >= start]
    before = breaks[breaks < start]
    last = int(after[0]) if len(after) else len(on_map)
    first = int(before[-1]) + width if len(before) else 0
    if last < stop or first > start:
        first, last = start, stop  # the window itself is off the map: measured as it is
    inside = np.flatnonzero(on_map[first:last])
    if not len(inside):
        return start, start
    return first + int(inside[0]), first + int(inside[-1]) + 1


def _pearson(left: np.ndarray, right: np.ndarray) -> float:
    left, right = left - left.mean(), right - right.mean()
    denominator = float(np.sqrt((left @ left) * (right @ right)))
    return float(left @ right) / denominator if denominator > 0 else 0.0


def sorted_profile(rows: np.ndarray) -> np.ndarray:
    """Each row sorted and standardised; rows without spread become all zero."""
    return _standardised(np.sort(rows, axis=-1))


def permuted_copies(rows: np.ndarray, pieces: np.ndarray) -> list[tuple[int, int, float]]:
    """(row, piece, correlation) for rows that hold a piece's values in any order, under
    an affine map of either sign. rows and pieces have the same length."""
    piece_profiles = sorted_profile(pieces)
    # a negated copy sorts to the reversed, negated profile
    both = np.concatenate([piece_profiles, -piece_profiles[:, ::-1]])
    points = np.linspace(0, rows.shape[1] - 1, PROFILE_POINTS).round().astype(np.int64)
    screened = _standardised(both[:, points])
    found = []
    step = max(1, SCREEN_CELLS // len(both))
    for start in range(0, len(rows), step):
        profiles = sorted_profile(rows[start:start + step])
        screen = _standardised(profiles[:, points]) @ screened.T
        for row, candidate in zip(*np.nonzero(screen >= 1 - PROFILE_SCREEN), strict=True):
            correlation = float(profiles[row] @ both[candidate])
            if correlation >= 1 - PERMUTED_EXACT:
                found.append((start + int(row), int(candidate % len(pieces)), correlation))
    return found


def _standardised(rows: np.ndarray) -> np.ndarray:
    centred = rows - rows.mean(axis=-1, keepdims=True)
    norm = np.sqrt(np.sum(centred * centred, axis=-1, keepdims=True))
    standardised: np.ndarray = np.divide(centred, norm, out=np.zeros_like(centred), where=norm > 0)
    return standardised
