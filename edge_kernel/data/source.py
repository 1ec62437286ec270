"""What every dataset source gives the broker (the sources themselves, and the choice
between them, are in ``sources.py``).

A source is trusted code inside the broker. ``index()`` lists the usable, consented
records (sorted by pseudonym, so the order does not depend on storage) and counts the
ones it skipped under fixed, non-identifying reasons; ``load(ref)`` returns exactly the
granted fields of one record as arrays. A ``RecordRef`` never leaves the edge.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol
from collections.abc import Iterable

import numpy as np

from jupyter_rapha.protocol.errors import BadInput, Fault

from .registry import Dataset, FieldSpec

# Every reason a record can be skipped for, fixed strings on purpose: a file name or a
# header value in a reason could identify a patient (S2), and reasons go into the receipt.
CONSENT_REASON = "patient opted out"


class SourceFault(Fault):
    """A data source broke (unreachable PACS, unreadable export); one kind for all."""


class Skip(Exception):
    """A record that cannot be used; ``reason`` is a fixed, non-identifying string."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Where a record lives (file path, UIDs, row), kept only inside the broker."""

    pseudonym: bytes
    patient: bytes = field(repr=False)  # patient pseudonym, for per-patient provenance
    location: str = field(repr=False, default="")
    # SHA-256 of the record's stored bytes when indexed, where the source can tell
    # (a folder's file): names the record's entry in the disk cache (``record_store.py``)
    digest: bytes = field(repr=False, default=b"")


@dataclass
class Index:
    records: list[RecordRef]  # sorted by pseudonym
    skipped: dict[str, int]
    excluded: list[RecordRef] = field(default_factory=list)  # opted out; kept only for provenance

    @property
    def consent_excluded(self) -> int:
        return len(self.excluded)


class Source(Protocol):
    specs: dict[str, FieldSpec]

    def index(self, limit: int | None = None) -> Index:
        """``limit``: read at most this many records (a sample, for ``datasets add``)."""
        ...

    def load(self, ref: RecordRef) -> dict[str, np.ndarray]: ...


def granted_specs(dataset: Dataset, fields: Iterable[str]) -> dict[str, FieldSpec]:
    names = list(fields)
    unknown = [name for name in names if name not in dataset.fields]
    if unknown or not names:
        raise BadInput("the granted fields must be declared by the dataset")
    return {name: dataset.fields[name] for name in names}


def sorted_index(by_pseudonym: dict[bytes, RecordRef], skipped: dict[str, int], excluded: list[RecordRef]) -> Index:
    return Index([by_pseudonym[p] for p in sorted(by_pseudonym)], dict(skipped), excluded)


class RecordCache:
    """Decoded records kept between epochs, bounded in bytes so memory stays flat on a
    dataset of any size (least recently used out first)."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[bytes, dict[str, np.ndarray]] = OrderedDict()
        self._bytes = 0

    def get(self, key: bytes) -> dict[str, np.ndarray] | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: bytes, record: dict[str, np.ndarray]) -> None:
        size = sum(a.nbytes for a in record.values())
        if size > self.max_bytes or key in self._items:
            return
        self._items[key] = record
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= sum(a.nbytes for a in old.values())
