"""The slots a decoder process writes its records into (``decoder_process.py``).

Trusted broker code. Each decoder of the pool has a ring of slots in a memfd that the
edge creates and the decoder maps (the job never sees it): the broker names a free slot
with each record it asks for, the decoder writes the record's arrays there and answers
with a small message (``InSlot``), and the broker copies the arrays out and frees the
slot. A slot holds one record of the granted schema, each field at a fixed offset
(``SlotLayout``); ``RING_BYTES`` bound one decoder's ring.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

import numpy as np

from .record_decoder import FolderDecoder, Prepared

RING_BYTES = 64 * 1024 * 1024  # one decoder's slots, at most
MAX_SLOTS = 16  # ... and at most this many (the feeder keeps IN_FLIGHT, 8, waiting at a decoder)
_ALIGN = 64


@dataclass(frozen=True)
class SlotLayout:
    """Where each field of one record lies in a slot: (name, dtype, shape, offset), in
    the schema's order; ``size`` is one slot's bytes."""

    fields: tuple[tuple[str, str, tuple[int, ...], int], ...]
    size: int

    @classmethod
    def of(cls, decoder: FolderDecoder) -> SlotLayout:
        fields, offset = [], 0
        for name, spec in decoder.specs.items():
            dtype = np.dtype(spec.dtype)
            fields.append((name, dtype.str, tuple(spec.shape), offset))
            offset += -(-dtype.itemsize * int(np.prod(spec.shape, dtype=np.int64)) // _ALIGN) * _ALIGN
        return cls(tuple(fields), max(offset, _ALIGN))

    def count(self) -> int:
        """How many slots a decoder gets: 0 for records too large for a ring."""
        return min(MAX_SLOTS, RING_BYTES // self.size)

    def fits(self, arrays: dict[str, np.ndarray]) -> bool:
        return arrays.keys() == {name for name, *_ in self.fields} and all(
            isinstance(arrays[name], np.ndarray) and arrays[name].dtype.str == dtype and arrays[name].shape == shape
            for name, dtype, shape, _ in self.fields)


class SlotRing:
    """The slots of one decoder, in a memfd mapped by the broker and by the decoder."""

    def __init__(self, layout: SlotLayout, count: int, fd: int | None = None) -> None:
        self.layout, self.count = layout, count
        self.fd = fd if fd is not None else os.memfd_create("rapha-decoded", os.MFD_CLOEXEC)
        if fd is None:
            os.ftruncate(self.fd, layout.size * count)
        self.map = mmap.mmap(self.fd, layout.size * count, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def _view(self, slot: int, dtype: str, shape: tuple[int, ...], offset: int) -> np.ndarray:
        count = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(self.map, np.dtype(dtype), count, slot * self.layout.size + offset).reshape(shape)

    def put(self, slot: int, arrays: dict[str, np.ndarray]) -> None:
        for name, dtype, shape, offset in self.layout.fields:
            np.copyto(self._view(slot, dtype, shape, offset), arrays[name], casting="no")

    def take(self, slot: int) -> dict[str, np.ndarray]:
        """A copy of the slot's record (the slot may then be used again)."""
        return {name: self._view(slot, dtype, shape, offset).copy()
                for name, dtype, shape, offset in self.layout.fields}

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:  # a view is still alive somewhere: the mapping goes with it
            pass
        os.close(self.fd)


@dataclass(frozen=True)
class InSlot:
    """A decoder's answer whose arrays are in ``slot``: ``prepared`` without them."""

    slot: int
    prepared: Prepared
