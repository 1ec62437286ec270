"""Records for the broker, prepared ahead of the job's requests.

Trusted broker code. The broker knows the order a loader walks its epoch (``_Loader``),
so while the job works on one batch the feeder has the next records decoded by a pool of
decoder processes (``record_decoder.FolderDecoder``; ``data.decode_workers``, by default
the cores the job does not need). The decoders run outside the sandbox and never run
researcher code: they read the dataset's files, preprocess and fill the disk cache
(``record_store.py``). Preparing a record is not handing it over: the broker still counts
each batch (S3) after the feeder returns it and before it crosses, exactly as without a
pool, so a pool of any size gives the same meter.

Each decoder is a process of its own (``decoder_process.py``), asked for records in
turn and answering in order; it writes each record into a slot of a shared ring
(``decoder_ring.py``) that the feeder copies it out of. The feeder keeps ``IN_FLIGHT``
records waiting at each decoder, taken from the front of the window (the batch, then the
records ahead); while a record of the batch is still being prepared, the broker thread
prepares the window's last open record itself. So no core idles while a record of the
window is left to decode, and the broker thread, which also copies and hands over every
batch, decodes only what share of the window that leaves it (a fixed share left the
decoder waiting on the broker, measured). A decoder that dies, hangs past
``DECODE_TIMEOUT_SECONDS`` or fails makes the batch a ``SandboxFault`` (the job fails);
nothing waits for it for ever. Decoders end with the job (``close``: at most
``CLOSE_WAIT_SECONDS`` for their last cache writes, then killed), die with the edge
(parent-death signal), and one whose edge is already gone when it starts exits at once.

A DP job's records go to the edge's trainer, not the job: the runner starts the decoders
with the trainer and stops them with it. The trainer draws each Poisson lot itself, so
nothing is prepared ahead of a lot, but a lot's records are decoded by the pool in parallel
and later epochs read them from the disk cache.

Sources that cannot hand out a decoder (DICOMweb, FHIR, CSV) are read by ``load`` in the
broker thread, as before.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from jupyter_rapha.protocol.errors import SandboxFault

from .decoder_process import DecoderProcess
from .record_decoder import FolderDecoder, Prepared
from .record_store import BackgroundWriter, RecordStore
from .source import RecordCache, RecordRef, Source

log = logging.getLogger(__name__)

DECODE_TIMEOUT_SECONDS = 300.0
CLOSE_WAIT_SECONDS = 3.0  # for the decoders' last disk cache writes when the job ends
AHEAD_PER_WORKER = 4  # records prepared ahead per decoder, beyond the batch asked for
AHEAD_MAX_BYTES = 256 * 1024 * 1024  # ... and never more than this many bytes of them
IN_FLIGHT = 8  # records waiting at one decoder: enough that it never idles between answers
T = TypeVar("T")


@runtime_checkable
class Decodable(Protocol):
    def decoder(self) -> FolderDecoder | None:
        """What a decoder process runs for this source's records; None: read by ``load``."""
        ...


def default_workers() -> int:
    """The cores the job does not need: all but one (the job's), at least one."""
    return max(1, (os.cpu_count() or 1) - 1)


class Feeder:
    def __init__(self, source: Source, *, workers: int = 0, store: RecordStore | None = None,
                 memory_bytes: int = 256 * 1024 * 1024) -> None:
        self.source, self.store = source, store
        decoder = source.decoder() if isinstance(source, Decodable) else None
        self.workers = workers if decoder is not None else 0
        self._decoder = decoder.with_store(store.root) if decoder is not None and store is not None else decoder
        self._memory = RecordCache(memory_bytes)
        self._processes: list[DecoderProcess] = []
        # the broker thread's own share is written to the disk cache in the background too
        self._writer: BackgroundWriter | None = None
        self._asked: dict[bytes, DecoderProcess] = {}  # pseudonym -> the decoder preparing it
        self._answered: dict[bytes, Prepared | str] = {}  # answers read before they were wanted
        self._window: deque[RecordRef] = deque()  # the batch and the records ahead, not yet asked for
        self._done: set[bytes] = set()  # records of this batch already returned
        self._closed = False
        self._lock = threading.Lock()  # close() comes from the runner's thread
        # Edge-side counters for tests and benchmarks; never put into progress or a receipt.
        self.decoded = self.store_hits = self.store_damaged = 0

    def lookahead(self, batch_size: int, record_bytes: int) -> int:
        """How many records past the current batch to prepare."""
        if self.workers == 0:
            return 0
        wanted = max(batch_size, AHEAD_PER_WORKER * self.workers)
        return max(self.workers, min(wanted, AHEAD_MAX_BYTES // max(record_bytes, 1)))

    def records(self, refs: Sequence[RecordRef], upcoming: Sequence[RecordRef] = ()) -> list[dict[str, np.ndarray]]:
        """The records of one batch, in order; starts on ``upcoming`` before returning."""
        if self._decoder is None:
            return [self.source.load(ref) for ref in refs]
        if self.workers == 0:
            found = [self._here(ref) for ref in refs]
        else:
            self._window = deque(ref for ref in (*refs, *upcoming) if self._open(ref))
            self._top_up()
            found = [self._collect(ref) for ref in refs]
            self._window.clear()
            self._done.clear()
        if self.store is not None:
            self.store.evict()
        return found

    def start(self) -> None:
        """Start the decoders now (else at the first batch): beside the job process's own
        start, so they are ready when it asks. The parent-death signal follows the thread
        that starts them: call this from a thread that lives as long as the job."""
        if self.workers > 0 and self._decoder is not None:
            self._started()

    def decoder_pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    def close(self) -> None:
        """Stop the decoders: each is told the job is over, given ``CLOSE_WAIT_SECONDS``
        (all together) to finish its disk cache writes, then killed. Nothing else is worth
        waiting for: an unfinished write costs a later decode, and a half-written entry
        has a temporary name, removed when the store is next opened."""
        with self._lock:
            self._closed = True
            processes, self._processes = self._processes, []
        for process in processes:
            process.end()
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        if self._writer is not None:
            self._writer.close(CLOSE_WAIT_SECONDS)
        for process in processes:
            process.wait(deadline - time.monotonic())
            process.kill()

    def _here(self, ref: RecordRef) -> dict[str, np.ndarray]:
        found = self._memory.get(ref.pseudonym)
        if found is not None:
            return found
        if self._decoder is None:
            return self.source.load(ref)
        return self._taken(ref, self._prepared_here(ref))

    def _prepared_here(self, ref: RecordRef) -> Prepared:
        assert self._decoder is not None
        return self._decoder.prepare(ref, self._writer)

    def _taken(self, ref: RecordRef, prepared: Prepared | str) -> dict[str, np.ndarray]:
        if isinstance(prepared, str):
            raise SandboxFault(prepared)  # one of the decoder's fixed texts
        self.decoded += prepared.decoded
        self.store_hits += not prepared.decoded
        self.store_damaged += prepared.damaged
        if self.store is not None and prepared.entry is not None:
            self.store.used(prepared.entry, prepared.entry_bytes)
        self._memory.put(ref.pseudonym, prepared.arrays)
        return prepared.arrays

    def _open(self, ref: RecordRef) -> bool:
        """Not yet asked of a decoder, prepared, nor in memory."""
        return ref.pseudonym not in self._asked and ref.pseudonym not in self._answered \
            and ref.pseudonym not in self._done and self._memory.get(ref.pseudonym) is None

    def _top_up(self) -> None:
        """Ask each decoder for the next open records of the window, in order, until it
        has ``IN_FLIGHT`` waiting, each into a free slot (an answer through the socket
        would block its decoder until the broker reads it: a full socket buffer)."""
        processes = self._started()
        while self._window:
            process = min(processes, key=lambda p: len(p.in_flight))
            if len(process.in_flight) >= IN_FLIGHT or process.ring is not None and not process.free:
                return
            ref = self._window.popleft()
            if self._open(ref):
                self._guarded(process.ask, ref)
                self._asked[ref.pseudonym] = process

    def _collect(self, ref: RecordRef) -> dict[str, np.ndarray]:
        """A record of the batch. While the decoder preparing it is not done, the broker
        thread prepares the window's last open record itself (the decoders take the
        window from its front): no core waits while there is a record to decode, and
        the broker thread, which also hands the batches over, takes what share is left."""
        while True:
            if ref.pseudonym in self._answered:
                self._done.add(ref.pseudonym)
                return self._taken(ref, self._answered.pop(ref.pseudonym))
            process = self._asked.get(ref.pseudonym)
            if process is None:  # not asked of a decoder, or in memory since an earlier batch
                self._done.add(ref.pseudonym)
                return self._here(ref)
            if not self._guarded(process.ready) and self._steal():
                continue
            pseudonym, answer = self._guarded(process.answer, DECODE_TIMEOUT_SECONDS)
            del self._asked[pseudonym]  # a decoder answers in the order it was asked
            self._answered[pseudonym] = answer
            self._top_up()

    def _steal(self) -> bool:
        while self._window:
            ref = self._window.pop()
            if self._open(ref):
                self._answered[ref.pseudonym] = self._prepared_here(ref)
                return True
        return False

    def _guarded(self, step: Callable[..., T], *args: Any) -> T:
        try:
            return step(*args)
        except (SandboxFault, OSError) as exc:
            if self._closed:  # the job ended and its decoders with it: no fault of theirs
                raise ConnectionAbortedError("the job ended") from exc
            if isinstance(exc, SandboxFault):
                raise
            raise SandboxFault("a decoder process stopped during the job") from exc

    def _started(self) -> list[DecoderProcess]:
        with self._lock:
            if self._closed:
                raise ConnectionAbortedError("the job ended")  # the broker reads it as a closed channel
            if not self._processes and self._decoder is not None:
                if self._decoder.store_root is not None and self._writer is None:
                    self._writer = BackgroundWriter(idle=True)
                try:
                    for _ in range(self.workers):
                        self._processes.append(DecoderProcess(self._decoder))
                except OSError as exc:  # it died before it took its decoder
                    raise SandboxFault("a decoder process could not be started") from exc
            return self._processes
