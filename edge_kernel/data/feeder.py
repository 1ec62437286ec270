"""Records for the broker, prepared ahead of the job's requests.

Trusted broker code. The broker knows the order a loader walks its epoch (``_Loader``),
so while the job works on one batch the feeder has the next records decoded by a pool of
decoder processes (``record_decoder.FolderDecoder``; ``data.decode_workers``, by default
the cores the job does not need). The decoders run outside the sandbox and never run
researcher code: they read the dataset's files, preprocess and fill the disk cache
(``record_store.py``). Preparing a record is not handing it over: the broker still counts
each batch (S3) after the feeder returns it and before it crosses, exactly as without a
pool, so a pool of any size gives the same meter.

A decoder that dies, hangs past ``DECODE_TIMEOUT_SECONDS`` or fails makes the batch a
``SandboxFault`` (the job fails); nothing waits for it for ever. Decoders end with the
job (``close``, which kills them), die with the fork server they are forked from, which
ends with the edge (parent-death signal; the fork server's own watch on the edge), and a
decoder whose edge is already gone when it starts exits at once.

Sources that cannot hand out a decoder (DICOMweb, FHIR, CSV) are read by ``load`` in the
broker thread, as before.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol, runtime_checkable

import numpy as np

from jupyter_rapha.protocol.errors import RaphaError, SandboxFault

from .record_decoder import FolderDecoder, Prepared
from .record_store import RecordStore
from .source import RecordCache, RecordRef, Source

log = logging.getLogger(__name__)

DECODE_TIMEOUT_SECONDS = 300.0
AHEAD_PER_WORKER = 4  # records prepared ahead per decoder, beyond the batch asked for
AHEAD_MAX_BYTES = 256 * 1024 * 1024  # ... and never more than this many bytes of them
JOIN_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1


@runtime_checkable
class Decodable(Protocol):
    def decoder(self) -> FolderDecoder: ...


def default_workers() -> int:
    """The cores the job does not need: all but one (the job's), at least one."""
    return max(1, (os.cpu_count() or 1) - 1)


class Feeder:
    def __init__(self, source: Source, *, workers: int = 0, store: RecordStore | None = None,
                 memory_bytes: int = 256 * 1024 * 1024) -> None:
        self.source, self.store = source, store
        self.workers = workers if isinstance(source, Decodable) else 0
        decoder = source.decoder() if isinstance(source, Decodable) else None
        self._decoder = decoder.with_store(store.root) if decoder is not None and store is not None else decoder
        self._memory = RecordCache(memory_bytes)
        self._pending: dict[bytes, Future[Prepared | str]] = {}
        self._pool: ProcessPoolExecutor | None = None
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
            return [self._here(ref) for ref in refs]
        self._submit(refs)
        self._submit(upcoming)
        found = [self._collect(ref) for ref in refs]
        if self.store is not None:
            self.store.evict()
        return found

    def close(self) -> None:
        """Stop the decoders now: they hold nothing worth waiting for (a half-written
        cache entry has a temporary name, removed when the store is next opened)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list((pool._processes or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
        for process in processes:
            process.join(JOIN_SECONDS)

    def _here(self, ref: RecordRef) -> dict[str, np.ndarray]:
        found = self._memory.get(ref.pseudonym)
        if found is not None:
            return found
        assert self._decoder is not None
        return self._taken(ref, self._decoder.prepare(ref))

    def _taken(self, ref: RecordRef, prepared: Prepared) -> dict[str, np.ndarray]:
        self.decoded += prepared.decoded
        self.store_hits += not prepared.decoded
        self.store_damaged += prepared.damaged
        if self.store is not None and prepared.entry is not None:
            self.store.used(prepared.entry, prepared.entry_bytes)
        self._memory.put(ref.pseudonym, prepared.arrays)
        return prepared.arrays

    def _submit(self, refs: Sequence[RecordRef]) -> None:
        pool = self._started()
        for ref in refs:
            if ref.pseudonym in self._pending or self._memory.get(ref.pseudonym) is not None:
                continue
            try:
                self._pending[ref.pseudonym] = pool.submit(_prepare, ref)
            except (RuntimeError, BrokenProcessPool) as exc:  # shut down by close(), or broken
                if self._closed:
                    raise ConnectionAbortedError("the job ended") from exc
                raise SandboxFault("a decoder process stopped during the job") from exc

    def _collect(self, ref: RecordRef) -> dict[str, np.ndarray]:
        future = self._pending.pop(ref.pseudonym, None)
        if future is None:  # in memory since it was submitted for an earlier batch
            return self._here(ref)
        try:
            result = future.result(timeout=DECODE_TIMEOUT_SECONDS)
        except (BrokenProcessPool, CancelledError) as exc:
            if self._closed:  # the job ended and its decoders with it: no fault of theirs
                raise ConnectionAbortedError("the job ended") from exc
            raise SandboxFault("a decoder process stopped during the job") from exc
        except FutureTimeout as exc:
            raise SandboxFault("a record took too long to decode") from exc
        if isinstance(result, str):
            raise SandboxFault(result)
        return self._taken(ref, result)

    def _started(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise ConnectionAbortedError("the job ended")  # the broker reads it as a closed channel
            return self._pool or self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=_context(),
                                             initializer=_start_decoder, initargs=(self._decoder, os.getpid()))
        return self._pool


def _context() -> multiprocessing.context.BaseContext:
    """Decoders are forked from a fork server: a fresh single-threaded process started
    once per edge, with the decoding modules (pydicom, numpy) imported, so a job's
    decoders start in milliseconds. Never forked from the edge itself: it runs threads
    (server, broker, chain), and a forked copy could inherit a lock one of them held.
    Nor spawned: a spawned process imports the edge's main module again."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["edge_kernel.data.record_decoder"])
    return context


_DECODER: FolderDecoder | None = None


def _start_decoder(decoder: FolderDecoder, edge: int) -> None:
    """In a decoder process: die with the process that forked us (the fork server, which
    ends with the edge), and take the decoder."""
    global _DECODER
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if not _alive(edge) or os.getppid() == 1:  # the edge or fork server died before the signal was set
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C reaches the edge, which ends us
    _DECODER = decoder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prepare(ref: RecordRef) -> Prepared | str:
    """A record, or the fixed text of the fault it met (exceptions do not cross the
    process boundary reliably; the text is one of the decoder's own)."""
    if _DECODER is None:
        return "a decoder process was not started"
    try:
        return _DECODER.prepare(ref)
    except RaphaError as error:
        return error.message
    except Exception as exc:  # any other failure: the record is not served, the job fails
        log.error("decoder failed: %s", type(exc).__name__)  # the type only: a message may quote a header
        return "a record could not be decoded"
