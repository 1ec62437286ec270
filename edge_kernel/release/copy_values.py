"""Copies that keep a record's values but none of their order: the whole tensor shuffled,
so that values of many records are mixed in every row.

Such a copy still holds each record's values exactly, with their counts. A record's own
values are those no other scanned record has (pixel levels such as k/4095 are shared
across a cohort, so only the rarer ones, e.g. in a bright lesion, are its own). Trained
float32 weights almost never equal such a value to the last bit, so a record counts as
copied when at least MIN_CONTAINED of its own values, with their counts, are in one
released array. A record with fewer than MIN_DISTINCT own values (a mask of 0 and 1,
padding, or any record of a large cohort of coarsely quantised images) is left out of
this check: an honest tensor of zeros and ones would hold it.

Only verbatim values are found this way; a shuffled copy under an affine map is found
when it holds all the records used (copies.py compares the tensor's sorted profile with
the pooled records').
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_CONTAINED = 0.9
MIN_DISTINCT = 32


@dataclass(frozen=True)
class RecordValues:
    """Each record's distinct values and their counts, pooled: entry i is value[i],
    counted count[i] times in record owner[i]."""

    value: np.ndarray
    count: np.ndarray
    owner: np.ndarray
    length: np.ndarray  # numbers per record (0 when left out)

    @classmethod
    def of(cls, pieces: list[tuple[int, np.ndarray]], records: int) -> RecordValues:
        empty = np.zeros(0, dtype=np.int64)
        if not pieces:
            return cls(np.zeros(0), empty, empty, np.zeros(records, dtype=np.int64))
        distinct = [np.unique(numbers, return_counts=True) for _, numbers in pieces]
        value = np.concatenate([values for values, _ in distinct])
        count = np.concatenate([counts for _, counts in distinct])
        owner = np.concatenate([np.full(len(values), record)
                                for (record, _), (values, _) in zip(pieces, distinct, strict=True)])
        # only a value no other record has tells this record apart (quantised pixel
        # levels are shared by every record of a cohort)
        shared, holders = np.unique(value, return_counts=True)
        own = holders[np.searchsorted(shared, value)] == 1
        kept = own & (np.bincount(owner[own], minlength=records)[owner] >= MIN_DISTINCT)
        length = np.bincount(owner[kept], weights=count[kept], minlength=records).astype(np.int64)
        return cls(value[kept], count[kept], owner[kept], length)

    def contained(self, numbers: np.ndarray) -> dict[int, float]:
        """Record -> fraction of its values (with their counts) found in `numbers`, for
        the records at MIN_CONTAINED or more."""
        if not len(self.value) or not numbers.size:
            return {}
        distinct, count = np.unique(numbers, return_counts=True)
        place = np.minimum(np.searchsorted(distinct, self.value), len(distinct) - 1)
        found = np.where(distinct[place] == self.value, np.minimum(self.count, count[place]), 0)
        held = np.bincount(self.owner, weights=found, minlength=len(self.length))
        fraction = np.divide(held, self.length, out=np.zeros(len(self.length)), where=self.length > 0)
        return {int(record): float(fraction[record]) for record in np.flatnonzero(fraction >= MIN_CONTAINED)}
