"""Framing for the private socket between the broker and the job process.

One frame is ``magic | header length | payload length`` (big-endian), then a small JSON
header, then the raw bytes of numeric arrays, each starting on an 8-byte boundary.
There is no pickle anywhere: the job is untrusted, and unpickling its bytes would run
its code in the broker. Every length is bounded before anything is allocated, so a
hostile peer cannot make the other side reserve absurd memory, and only plain numeric
dtypes are accepted, so nothing but numbers can arrive as an array.
"""

from __future__ import annotations

import functools
import json
import math
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jupyter_rapha.protocol import bounded
from jupyter_rapha.protocol.errors import SandboxFault

MAGIC = b"RPH1"
PREFIX = struct.Struct("!4sIQ")
MAX_HEADER_BYTES = 64 * 1024
MAX_ARRAYS = 64
MAX_NDIM = 8
ALIGN = 8
READ_BUFFER = 2 * MAX_HEADER_BYTES  # a whole prefix and the largest header fit
ARRAY_DTYPES = ("float32", "float64", "int64", "int32", "uint8", "bool")


class ChannelError(SandboxFault):
    """The peer broke the framing, closed mid-frame or sent more than allowed."""


@dataclass
class Message:
    header: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


class Channel:
    def __init__(self, sock: socket.socket, *, max_payload_bytes: int, spin_seconds: float = 0.0) -> None:
        self.sock = sock
        self.max_payload_bytes = max_payload_bytes
        # > 0: poll this long for the next frame before blocking (the job's side; the
        # broker never spins, it serves from a shared edge process).
        self.spin_seconds = spin_seconds
        # Frames are read through a buffer: a header and the next requests queued behind it
        # usually arrive in one system call instead of one per part.
        self._buffer = bytearray(READ_BUFFER)
        self._view = memoryview(self._buffer)
        self._start = self._end = 0

    def send(self, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
        # copy only what is not C-contiguous (np.ascontiguousarray would turn 0-d into 1-d)
        contiguous = {name: a if a.flags.c_contiguous else a.copy(order="C") for name, a in (arrays or {}).items()}
        layout = [{"name": n, "dtype": str(a.dtype), "shape": list(a.shape)} for n, a in contiguous.items()]
        head = json.dumps({"msg": header, "arrays": layout}, separators=(",", ":")).encode("utf-8")
        sizes = [a.nbytes for a in contiguous.values()]
        self.sock.sendall(PREFIX.pack(MAGIC, len(head), _payload_size(sizes)) + head)
        for array, size in zip(contiguous.values(), sizes, strict=True):
            if size:
                # no copy; numpy's stubs declare the buffer protocol only from Python 3.12
                self.sock.sendall(memoryview(array.reshape(-1)).cast("B"))  # type: ignore[arg-type]
            if _pad(size):
                self.sock.sendall(bytes(_pad(size)))

    def recv(self) -> Message | None:
        """The next message, or None if the peer closed cleanly between frames."""
        if not self._fill(PREFIX.size, eof_ok=True):
            return None
        magic, head_len, payload_len = PREFIX.unpack_from(self._buffer, self._start)
        if magic != MAGIC or head_len > MAX_HEADER_BYTES or payload_len > self.max_payload_bytes:
            raise ChannelError("the peer sent a frame that is malformed or too large")
        self._fill(PREFIX.size + head_len)
        head = self._view[self._start + PREFIX.size:self._start + PREFIX.size + head_len]
        header, layout = _parse_header(head)
        self._start += PREFIX.size + head_len
        # The payload gets a fresh bytearray of its own: the arrays made from it share it.
        payload = bytearray(payload_len)
        buffered = min(payload_len, self._end - self._start)
        payload[:buffered] = self._view[self._start:self._start + buffered]
        self._start += buffered
        self._recv_into(memoryview(payload)[buffered:])
        return Message(header, _arrays(layout, payload))

    def close(self) -> None:
        self.sock.close()

    def _fill(self, size: int, *, eof_ok: bool = False) -> bool:
        """At least ``size`` unread bytes in the buffer (``size`` fits in it)."""
        if self._end - self._start >= size:
            return True
        if self._start:  # move the unread tail to the front
            tail = bytes(self._view[self._start:self._end])
            self._view[:len(tail)] = tail
            self._start, self._end = 0, len(tail)
        while self._end < size:
            if self.spin_seconds and self._spin():
                continue
            count = self.sock.recv_into(self._view[self._end:])
            if count == 0:
                if eof_ok and self._end == 0:
                    return False
                raise ChannelError("the peer closed the channel mid-frame")
            self._end += count
        return True

    def _spin(self) -> bool:
        """Poll without blocking until bytes arrive (True) or the spin time is up."""
        deadline = time.perf_counter() + self.spin_seconds
        view = self._view[self._end:]
        while time.perf_counter() < deadline:
            try:
                count = self.sock.recv_into(view, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            if count == 0:
                return False  # end of stream: the blocking read reports it
            self._end += count
            return True
        return False

    def _recv_into(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            count = self.sock.recv_into(view[got:])
            if count == 0:
                raise ChannelError("the peer closed the channel mid-frame")
            got += count


def _pad(size: int) -> int:
    return -size % ALIGN


def _payload_size(sizes: list[int]) -> int:
    return sum(size + _pad(size) for size in sizes)


def _parse_header(raw: bytes | bytearray | memoryview
                  ) -> tuple[dict[str, Any], list[tuple[str, np.dtype, tuple[int, ...]]]]:
    # the peer may be the job: bounded, so nesting cannot overflow the stack
    doc = bounded.loads(bytes(raw), what="the peer's message header", error=ChannelError)
    if not isinstance(doc, dict) or not isinstance(doc.get("msg"), dict):
        raise ChannelError("the peer sent a header of the wrong shape")
    layout = doc.get("arrays", [])
    if not isinstance(layout, list) or len(layout) > MAX_ARRAYS:
        raise ChannelError("the peer sent too many arrays")
    return doc["msg"], [_array_spec(item) for item in layout]


def _array_spec(item: Any) -> tuple[str, np.dtype, tuple[int, ...]]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or len(item["name"]) > 64:
        raise ChannelError("the peer sent an unnamed array")
    if item.get("dtype") not in ARRAY_DTYPES:
        raise ChannelError("the peer sent an array of a refused dtype")
    shape = item.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ChannelError("the peer sent an array of a malformed shape")
    return item["name"], np.dtype(item["dtype"]), tuple(shape)


def _arrays(layout: list[tuple[str, np.dtype, tuple[int, ...]]], payload: bytearray) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for name, dtype, shape in layout:
        count = math.prod(shape)  # Python ints: a hostile shape cannot overflow
        size = count * dtype.itemsize
        if name in arrays or offset + size > len(payload):
            raise ChannelError("the peer's arrays do not match its payload")
        arrays[name] = np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape)
        offset += size + _pad(size)
    if offset != len(payload):
        raise ChannelError("the peer's arrays do not match its payload")
    return arrays


# --- shared memory: batches written once by the broker, read in place by the job ---------

SHM_ALIGN = 64
SHM_BYTES = 256 * 1024 * 1024


class SharedArena:
    """A memfd both sides map: the broker writes a batch into it, the socket then carries
    only the header naming where each array lies.

    The job holds a writable mapping of the same file, so the broker never reads anything
    back from it (the job could change it at any time) and the file is sealed against
    shrinking and growing: a job that truncated it would make the broker's next write
    fault with SIGBUS, taking the edge down.
    """

    def __init__(self, fd: int, size: int) -> None:
        import mmap

        self.fd, self.size = fd, size
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    @classmethod
    def create(cls, size: int = SHM_BYTES) -> SharedArena | None:
        """A sealed arena, or None where memfd or seals are missing (the socket carries all)."""
        import fcntl
        import os

        try:
            fd = os.memfd_create("rapha-batches", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except (AttributeError, OSError):
            return None
        try:
            os.ftruncate(fd, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            return cls(fd, size)
        except (AttributeError, OSError):
            os.close(fd)
            return None

    @classmethod
    def attach(cls, fd: int) -> SharedArena:
        import os

        return cls(fd, os.fstat(fd).st_size)

    def array(self, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        count = math.prod(shape)
        if offset < 0 or offset % ALIGN or offset + count * dtype.itemsize > self.size:
            raise ChannelError("an array lies outside the shared arena")
        return np.frombuffer(self.mm, dtype=dtype, count=count, offset=offset).reshape(shape)

    def close(self) -> None:
        import os

        try:
            self.mm.close()
        except BufferError:
            pass  # arrays still view the mapping; it goes when they do
        os.close(self.fd)


def shm_layout(specs: dict[str, tuple[np.dtype, tuple[int, ...]]], count: int,
               base: int) -> tuple[list[dict[str, Any]], int]:
    """Where each array of a batch of ``count`` records lies from ``base``; total bytes.
    The answer is shared between calls: read it, never change it."""
    return _layout(tuple((name, dtype.str, shape) for name, (dtype, shape) in specs.items()), count, base)


@functools.lru_cache(maxsize=256)
def _layout(specs: tuple[tuple[str, str, tuple[int, ...]], ...], count: int,
            base: int) -> tuple[list[dict[str, Any]], int]:
    # Cached: a loader asks for the same batch shape at the same few regions every time,
    # and formatting dtypes per batch showed up in the broker's profile.
    layout, offset = [], base
    for name, code, shape in specs:
        dtype = np.dtype(code)
        full = (count, *shape)
        layout.append({"name": name, "dtype": str(dtype), "shape": list(full), "offset": offset})
        size = math.prod(full) * dtype.itemsize
        offset += size + (-size % SHM_ALIGN)
    return layout, offset - base


def shm_items(layout: Any) -> list[tuple[str, np.dtype, tuple[int, ...], int]]:
    """The arrays a reply names in the arena: name, dtype, shape and offset, well formed."""
    if not isinstance(layout, list) or len(layout) > MAX_ARRAYS:
        raise ChannelError("the peer named too many shared arrays")
    items, names = [], set()
    for item in layout:
        name, dtype, shape = _array_spec(item)
        offset = item.get("offset")
        if not isinstance(offset, int) or isinstance(offset, bool) or name in names:
            raise ChannelError("the peer named a shared array badly")
        names.add(name)
        items.append((name, dtype, shape, offset))
    return items

