"""The held-back records: a random part of the cohort the job never sees.

A membership-inference check compares the released model's loss on the records the job
trained on with its loss on records of the same population it did not see. Those must be
drawn by the edge, before the job starts, with a seed the job cannot compute (keyed with
the hospital's secret): a job that could predict the held-back set could train on it
through some other channel, or shape its model so that the check sees nothing.

Held-back records are never handed to the job: not counted by the meter, not billed, not
in the receipt's Merkle set. Their pseudonyms stay edge-side, in the job's provenance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar
from collections.abc import Sequence

import numpy as np

from jupyter_rapha.protocol.errors import PolicyDenied

T = TypeVar("T")

# What a policy that says "holdback" without numbers gets: the SACRO-ML practice of a
# tenth of the data, with a floor under which an AUC is mostly noise.
DEFAULT_FRACTION = 0.1
DEFAULT_MINIMUM = 50


@dataclass(frozen=True)
class Holdback:
    """The policy's holdback obligation: ``fraction`` of the cohort, at least ``minimum``."""

    fraction: float = DEFAULT_FRACTION
    minimum: int = DEFAULT_MINIMUM

    def size(self, cohort_size: int) -> int:
        """Records held back from a cohort of ``cohort_size``; none when holding them back
        would leave the job less than half the cohort (the check is then not possible,
        and its figures say so with a holdback size of 0)."""
        wanted = max(self.minimum, math.ceil(self.fraction * cohort_size))
        return 0 if 2 * wanted > cohort_size else wanted


def parse_holdback(value: Any) -> Holdback:
    """The obligation as the policy writes it, ``{"fraction": 0.1, "minimum": 50}``.

    A malformed one denies the job (S4): a typo must not quietly turn the check off."""
    if not isinstance(value, dict) or set(value) - {"fraction", "minimum"}:
        raise _malformed("an object with 'fraction' and 'minimum'")
    fraction = value.get("fraction", DEFAULT_FRACTION)
    minimum = value.get("minimum", DEFAULT_MINIMUM)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 0.5:
        raise _malformed("'fraction' a number above 0 and at most 0.5")
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
        raise _malformed("'minimum' a positive whole number")
    return Holdback(float(fraction), minimum)


def split_cohort(records: Sequence[T], held_back: int, seed: int) -> tuple[list[T], list[T]]:
    """``(held back, the rest)``: ``held_back`` records drawn uniformly with ``seed``; the
    rest keep their order (the broker draws the job's cohort from them with its own seed)."""
    if held_back <= 0:
        return [], list(records)
    chosen = np.random.default_rng(seed).choice(len(records), size=held_back, replace=False)
    mask = np.zeros(len(records), dtype=bool)
    mask[chosen] = True
    return ([records[int(i)] for i in np.flatnonzero(mask)],
            [records[int(i)] for i in np.flatnonzero(~mask)])


def _malformed(expected: str) -> PolicyDenied:
    return PolicyDenied("obligation 'holdback' is malformed",
                        reasons=[f"the policy's obligation 'holdback' must be {expected}"])
