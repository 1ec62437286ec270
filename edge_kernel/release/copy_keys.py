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
from functools import cached_property

import numpy as np

KEY_BITS = 48
KEY_WINDOW = KEY_BITS + 1  # numbers covered by one key
KEY_MASK = np.uint64((1 << KEY_BITS) - 1)
MIN_TURNS = 12  # of the KEY_BITS - 1 places where the direction can change
MAX_ANCHORS = 128  # per record piece: a longer piece is keyed at a wider stride
MIN_STRIDE = 8
CHUNK = 1 << 22  # released numbers keyed at once, bounding memory
BITMAP_MAX_BITS = 27  # a 128 MiB filter at most
ROWS_AT_ONCE = 1 << 15  # record windows keyed at once, bounding memory


def window_keys(numbers: np.ndarray) -> np.ndarray:
    """The key of every window numbers[i : i + KEY_WINDOW]: the up bits packed into
    bytes, read back as 64-bit words from every byte and shifted by 0..7 bits."""
    count = len(numbers) - KEY_WINDOW + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    packed = np.concatenate((np.packbits(numbers[1:] > numbers[:-1], bitorder="little"), np.zeros(8, np.uint8)))
    words = -(-count // 8)
    starts = np.lib.stride_tricks.as_strided(packed, shape=(words, 8), strides=(1, 1))
    word = np.ascontiguousarray(starts).view("<u8").ravel()
    keys = np.empty(words * 8, dtype=np.uint64)
    for bit in range(8):
        keys[bit::8] = (word >> np.uint64(bit)) & KEY_MASK
    return keys[:count]


def packed_keys(windows: np.ndarray) -> np.ndarray:
    """The key of each row of `windows` (KEY_WINDOW numbers each)."""
    ups = np.packbits(windows[:, 1:] > windows[:, :-1], axis=1, bitorder="little")
    padded = np.zeros((len(windows), 8), dtype=np.uint8)
    padded[:, : ups.shape[1]] = ups
    keys: np.ndarray = padded.view("<u8").ravel().astype(np.uint64)
    return keys


def distinctive(windows: np.ndarray) -> np.ndarray:
    """Which rows of `windows` have no ties and enough turns to be part of a signature."""
    steps = np.sign(np.diff(windows, axis=1))
    turns = np.count_nonzero(steps[:, 1:] != steps[:, :-1], axis=1)
    found: np.ndarray = np.all(steps != 0, axis=1) & (turns >= MIN_TURNS)
    return found


def anchor_offsets(length: int) -> np.ndarray:
    """Where a piece of `length` numbers is keyed: a copy of at least KEY_WINDOW + stride
    consecutive numbers always covers one anchor."""
    last = length - KEY_WINDOW
    if last < 0:
        return np.zeros(0, dtype=np.int64)
    stride = max(MIN_STRIDE, -(-length // MAX_ANCHORS))
    return np.unique(np.append(np.arange(0, last + 1, stride), last))


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
        """Pieces of one length are keyed together, as rows of one array."""
        by_length: dict[int, list[int]] = {}
        for index, piece in enumerate(pieces):
            by_length.setdefault(len(piece), []).append(index)
        parts = [cls._keyed(np.stack([pieces[i] for i in ids]), np.array(ids)) for ids in by_length.values()]
        parts = [part for part in parts if len(part[0])]
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return cls(np.zeros(0, dtype=np.uint64), empty, empty, np.zeros(0, dtype=bool))
        keys, ids, offsets, negated = (np.concatenate(column) for column in zip(*parts, strict=True))
        order = np.argsort(keys)
        return cls(keys[order], ids[order], offsets[order], negated[order])

    @staticmethod
    def _keyed(rows: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        offsets = anchor_offsets(rows.shape[1])
        keys, pieces, anchors = [], [], []
        step = max(1, ROWS_AT_ONCE // max(1, len(offsets)))
        for start in range(0, len(rows) if len(offsets) else 0, step):
            windows = rows[start:start + step][:, offsets[:, None] + np.arange(KEY_WINDOW)].reshape(-1, KEY_WINDOW)
            kept = np.flatnonzero(distinctive(windows))
            keys.append(packed_keys(windows[kept]))
            pieces.append(ids[start + kept // len(offsets)])
            anchors.append(offsets[kept % len(offsets)])
        if not keys:
            return np.zeros(0, dtype=np.uint64), ids[:0], offsets, np.zeros(0, dtype=bool)
        found = np.concatenate(keys)
        negated = np.repeat(np.array([False, True]), len(found))
        return (np.concatenate((found, ~found & KEY_MASK)), np.tile(np.concatenate(pieces), 2),
                np.tile(np.concatenate(anchors), 2), negated)

    def keyed_pieces(self) -> set[int]:
        return set(np.unique(self.piece).tolist())

    def lookup(self, numbers: np.ndarray) -> list[tuple[int, int]]:
        """(position in numbers, table entry) for every window whose key is a record key."""
        if not len(self.keys):
            return []
        present = self._bitmap
        hits: list[tuple[int, int]] = []
        for start in range(0, max(0, len(numbers) - KEY_WINDOW + 1), CHUNK):
            keys = window_keys(numbers[start:start + CHUNK + KEY_WINDOW - 1])
            # a bitmap of the keys' low bits rules out most windows before any search
            positions = np.flatnonzero(present[(keys & self._bitmap_mask).astype(np.int64)])
            positions = positions[np.argsort(keys[positions])]  # sorted queries search fast
            left = np.searchsorted(self.keys, keys[positions], side="left")
            right = np.searchsorted(self.keys, keys[positions], side="right")
            found = right > left
            for position, first, last in zip(positions[found], left[found], right[found], strict=True):
                hits.extend((start + int(position), entry) for entry in range(first, last))
        return hits

    @cached_property
    def _bitmap_mask(self) -> np.uint64:
        bits = min(BITMAP_MAX_BITS, max(16, int(len(self.keys) * 32).bit_length()))
        return np.uint64((1 << bits) - 1)

    @cached_property
    def _bitmap(self) -> np.ndarray:
        present = np.zeros(int(self._bitmap_mask) + 1, dtype=bool)
        present[(self.keys & self._bitmap_mask).astype(np.int64)] = True
        return present
