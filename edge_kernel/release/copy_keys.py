"""Keys that find where a record may sit inside a long run of released numbers.

A key is the pattern of ups and downs of KEY_WINDOW consecutive numbers (bit j is set
when number j+1 is larger than number j). It does not change when a copy is scaled by a
positive factor or shifted, and a negated copy has the complement key, so one sorted
table of record keys finds verbatim, affine and sign-flipped copies at any offset in one
pass over the released numbers. Only candidates found this way are checked exactly.

A record window is part of a record's signature only if it has no ties and enough turns
(changes between going up and going down): constant runs such as zero padding, and
smooth ramps, have keys that honest weights share, so they would match everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEY_BITS = 48
KEY_WINDOW = KEY_BITS + 1  # numbers covered by one key
KEY_MASK = np.uint64((1 << KEY_BITS) - 1)
MIN_TURNS = 12  # of the KEY_BITS - 1 places where the direction can change
MAX_ANCHORS = 128  # per record piece: a longer piece is keyed at a wider stride
MIN_STRIDE = 8
CHUNK = 1 << 22  # released numbers keyed at once, bounding memory


def window_keys(numbers: np.ndarray) -> np.ndarray:
    """The key of every window numbers[i : i + KEY_WINDOW], by doubling (6 passes, not 48)."""
    if len(numbers) < KEY_WINDOW:
        return np.zeros(0, dtype=np.uint64)
    ups = (numbers[1:] > numbers[:-1]).astype(np.uint64)
    keys, span, halves = ups, 1, {}
    while span < 32:
        keys = keys[:-span] | (keys[span:] << np.uint64(span))
        span *= 2
        halves[span] = keys
    return halves[32][:-16] | (halves[16][32:] << np.uint64(32))


def anchor_offsets(length: int) -> np.ndarray:
    """Where a piece of `length` numbers is keyed: a copy of at least KEY_WINDOW + stride
    consecutive numbers always covers one anchor."""
    last = length - KEY_WINDOW
    if last < 0:
        return np.zeros(0, dtype=np.int64)
    stride = max(MIN_STRIDE, -(-length // MAX_ANCHORS))
    return np.unique(np.append(np.arange(0, last + 1, stride), last))


def signature_anchors(piece: np.ndarray) -> np.ndarray:
    """The anchors of a piece whose windows are distinctive (no ties, enough turns)."""
    offsets = anchor_offsets(len(piece))
    if not len(offsets):
        return offsets
    steps = np.sign(np.diff(piece))
    ties = np.concatenate(([0], np.cumsum(steps == 0)))
    turns = np.concatenate(([0, 0], np.cumsum(steps[1:] != steps[:-1])))
    tie_count = ties[offsets + KEY_BITS] - ties[offsets]
    turn_count = turns[offsets + KEY_BITS] - turns[offsets + 1]
    distinctive: np.ndarray = offsets[(tie_count == 0) & (turn_count >= MIN_TURNS)]
    return distinctive


@dataclass(frozen=True)
class KeyTable:
    """Sorted record keys; entry i came from piece `piece[i]` at offset `offset[i]`,
    negated when `negated[i]`."""

    keys: np.ndarray
    piece: np.ndarray
    offset: np.ndarray
    negated: np.ndarray

    @classmethod
    def build(cls, pieces: list[np.ndarray]) -> KeyTable:
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for index, piece in enumerate(pieces):
            anchors = signature_anchors(piece)
            if not len(anchors):
                continue
            keys = window_keys(piece)[anchors]
            ids = np.full(len(anchors), index, dtype=np.int64)
            parts.append((keys, ids, anchors, np.zeros(len(anchors), dtype=bool)))
            parts.append((~keys & KEY_MASK, ids, anchors, np.ones(len(anchors), dtype=bool)))
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return cls(np.zeros(0, dtype=np.uint64), empty, empty, np.zeros(0, dtype=bool))
        keys, ids, offsets, negated = (np.concatenate(column) for column in zip(*parts))
        order = np.argsort(keys, kind="stable")
        return cls(keys[order], ids[order], offsets[order], negated[order])

    def keyed_pieces(self) -> set[int]:
        return set(np.unique(self.piece).tolist())

    def lookup(self, numbers: np.ndarray) -> list[tuple[int, int]]:
        """(position in numbers, table entry) for every window whose key is a record key."""
        if not len(self.keys):
            return []
        hits: list[tuple[int, int]] = []
        for start in range(0, max(0, len(numbers) - KEY_WINDOW + 1), CHUNK):
            keys = window_keys(numbers[start:start + CHUNK + KEY_WINDOW - 1])
            left = np.searchsorted(self.keys, keys, side="left")
            right = np.searchsorted(self.keys, keys, side="right")
            for position in np.flatnonzero(right > left):
                hits.extend((start + int(position), entry) for entry in range(left[position], right[position]))
        return hits
