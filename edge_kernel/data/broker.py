"""The data broker: the only code that reads clinical data for a job (S2, S3).

It runs in the edge process, in a thread, and serves one job over one private socket.
The job can only ask for "the next batch of loader N"; the broker alone decides which
records go into each batch. That is what makes it the meter (S3): it fixes the cohort
(the first ``max_records`` records of a permutation seeded with a secret only the edge
knows), counts each record the first time it is handed over, counts it *before* the
batch leaves, and refuses anything past the budget. Nothing the job sends can change
the count, widen the cohort or name a record.

A job of several processes (ranks) gets one channel per rank, all served by this one
broker: one meter, one cohort. Each rank's loaders walk only its own shard of the cohort
(positions ``rank, rank + W, ...``, cut to the same length for every rank so their epochs
have as many batches), so the shards are disjoint whatever the ranks ask, and a record is
counted once across them. The broker answers one request at a time, whichever rank asks.

Before the cohort is drawn, the broker holds back a part of the dataset for the
membership-inference check (``holdback.py``), with another edge-only seed: those records
are never in the cohort, so never served, counted, billed or put into the Merkle set.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np

from jupyter_rapha.protocol.errors import BudgetDenied, Fault, SandboxFault
from jupyter_rapha.protocol.merkle import MerkleTree

from ..wire.channel import SHM_ALIGN, Channel, ChannelError, SharedArena, shm_layout
from .feeder import Feeder
from ..wire.messages import LOADER_IN_DP_MODE
from .holdback import split_cohort
from .source import Index, RecordRef, Source
from .transforms import receipt_entry

log = logging.getLogger(__name__)

MAX_BATCH_SIZE = 4096
MAX_LOADERS = 16
MAX_LOT_SIZE = 65536
MAX_RANKS = 64  # as the job spec's processes  # a Poisson lot of the largest batch size stays far below this


@dataclass(frozen=True)
class MeterSummary:
    records_used: int
    records_root_hex: str
    pseudonyms_hex: tuple[str, ...]  # sorted
    skipped: dict[str, int]
    cohort_size: int
    consent_excluded: int = 0  # edge-side only: never put into a receipt
    # (record pseudonym, patient pseudonym, status) of every record known at job time, for
    # per-patient provenance; status is "used", "not used" or "opted out". Edge-side only.
    records_known: tuple[tuple[bytes, bytes, str], ...] = ()
    # the granted fields' declared transforms as applied, {"sha256", "fields"}, or None
    # for the default scaling; for the receipt, taken from the source the job ran on
    preprocessing: dict[str, Any] | None = None
    # sorted pseudonyms of the records held back from the job for the membership check;
    # edge-side only (provenance), never released: only their number goes into figures
    held_back_hex: tuple[str, ...] = ()

    @property
    def holdback_size(self) -> int:
        return len(self.held_back_hex)


class Meter:
    """Unique records handed to the job, refused past the budget."""

    def __init__(self, budget: int) -> None:
        if budget < 1:
            raise BudgetDenied("the budget must allow at least one record")
        self.budget = budget
        self._used: set[bytes] = set()
        self._lock = threading.Lock()

    @property
    def records_used(self) -> int:
        return len(self._used)

    def admit(self, pseudonyms: list[bytes]) -> None:
        """Count a batch before it is handed over; all or nothing."""
        with self._lock:
            fresh = set(pseudonyms) - self._used
            if len(self._used) + len(fresh) > self.budget:
                raise BudgetDenied("the record budget is spent", reasons=["budget exhausted"])
            self._used |= fresh

    def pseudonyms(self) -> list[bytes]:
        with self._lock:
            return sorted(self._used)


class _Loader:
    """One ``rapha.loader(...)``: a walk over the cohort, one epoch at a time."""

    def __init__(self, cohort_size: int, batch_size: int, shuffle: bool, seed: int,
                 positions: np.ndarray | None = None) -> None:
        # positions: a rank's shard, the cohort positions this loader walks; None: all
        self.positions = positions
        cohort_size = cohort_size if positions is None else len(positions)
        self.cohort_size, self.batch_size = cohort_size, batch_size
        self.shuffle, self.seed = shuffle, seed
        self.epoch = -1
        self.order: np.ndarray | None = None
        self.position = 0
        # One generator for the loader's life, each epoch's order the next draw: seeding a
        # fresh generator per epoch cost more than a whole batch in the broker's profile.
        self._rng = np.random.Generator(np.random.PCG64(seed))

    @property
    def batches(self) -> int:
        return -(-self.cohort_size // self.batch_size)

    def start_epoch(self, exhausted: bool = False) -> int:
        self.epoch += 1
        if exhausted:
            self.order = np.arange(0)  # the loader yields nothing more
        elif self.shuffle:
            self.order = self._rng.permutation(self.cohort_size)
        else:
            self.order = np.arange(self.cohort_size)
        self.position = 0
        return self.epoch

    def next_indices(self) -> list[int] | None:
        if self.order is None or self.position >= len(self.order):
            return None
        chunk = self.order[self.position:self.position + self.batch_size]
        self.position += len(chunk)
        if self.positions is not None:
            chunk = self.positions[chunk]
        indices: list[int] = chunk.tolist()  # Python ints, in one call
        return indices

    def upcoming(self, count: int) -> list[int]:
        """The next ``count`` records of this epoch, without moving on: prepared ahead."""
        if self.order is None or count <= 0:
            return []
        chunk = self.order[self.position:self.position + count]
        ahead: list[int] = (chunk if self.positions is None else self.positions[chunk]).tolist()
        return ahead


@dataclass
class _Rank:
    """What belongs to one rank's channel: its loaders, its epochs, its shared arena."""

    arena: SharedArena | None
    loaders: list[_Loader]
    epochs_started: int = 0
    shard: np.ndarray | None = None  # cohort positions; None: the whole cohort (one rank)


class Broker:
    def __init__(self, source: Source, index: Index, max_records: int, cohort_seed: int,
                 arena: SharedArena | None = None, max_epochs: int | None = None,
                 holdback_size: int = 0, holdback_seed: int = 0, feeder: Feeder | None = None,
                 private: bool = False, world_size: int = 1) -> None:
        self.source = source
        # Prepares records (in decoder processes, ahead of the job's requests); the broker
        # still counts each batch before it crosses. The caller closes a feeder it passes.
        self.feeder = feeder if feeder is not None else Feeder(source)
        # DP mode: the job's channel gets no record at all (every loader refused); only the
        # edge's trainer, on a channel of its own (serve(trainer=True)), asks for lots.
        self.private = private
        self.specs = dict(source.specs)
        self._layout = schema_layout(self.specs)
        self._record_bytes = sum(dtype.itemsize * int(np.prod(shape)) for dtype, shape in self._layout.values())
        self.meter = Meter(max_records)
        # The policy's epoch obligation: past it, a loader's epochs are empty.
        self.max_epochs = max_epochs
        self.skipped = dict(index.skipped)
        self.index = index
        # Held back first, so that no budget or cohort draw can reach those records.
        self.held_back, eligible = split_cohort(index.records, holdback_size, holdback_seed)
        # The cohort: drawn by the edge, fixed for the whole job, never larger than the budget.
        order = np.random.default_rng(cohort_seed).permutation(len(eligible))
        self.cohort: list[RecordRef] = [eligible[int(i)] for i in order[:max_records]]
        if not 1 <= world_size <= MAX_RANKS:
            raise SandboxFault(f"a job has 1 to {MAX_RANKS} processes")
        self.world_size = world_size
        self._ranks = [_Rank(arena if r == 0 else None, [], 0, self._shard(r)) for r in range(world_size)]
        self._answer_lock = threading.Lock()  # ranks' requests, one at a time (the feeder is not shared-safe)
        self.batches_served = 0
        self.trainer_progress: dict[str, int] = {}  # a DP job's step and epoch, as its trainer reports them
        self.fault: Fault | None = None
        self.job_misbehaved = False

    def _shard(self, rank: int) -> np.ndarray | None:
        if self.world_size == 1:
            return None
        per_rank = len(self.cohort) // self.world_size  # equal lengths: no rank waits on a last batch
        return np.arange(rank, per_rank * self.world_size, self.world_size)

    # Rank 0's state under the names a one-process job always had.
    @property
    def arena(self) -> SharedArena | None:
        return self._ranks[0].arena

    @arena.setter
    def arena(self, arena: SharedArena | None) -> None:
        self._ranks[0].arena = arena

    @property
    def loaders(self) -> list[_Loader]:
        return self._ranks[0].loaders

    @property
    def epochs_started(self) -> int:
        """Passes started, the most any rank started (ranks walk their epochs side by side)."""
        return max(rank.epochs_started for rank in self._ranks)

    def summary(self) -> MeterSummary:
        pseudonyms = self.meter.pseudonyms()
        tree = MerkleTree.sorted_unique(pseudonyms)
        return MeterSummary(
            records_used=len(pseudonyms), records_root_hex=tree.root.hex(),
            pseudonyms_hex=tuple(p.hex() for p in pseudonyms), skipped=dict(self.skipped),
            cohort_size=len(self.cohort), consent_excluded=self.index.consent_excluded,
            records_known=self._records_known(set(pseudonyms)),
            preprocessing=receipt_entry(self.specs),
            held_back_hex=tuple(sorted(r.pseudonym.hex() for r in self.held_back)))

    def _records_known(self, used: set[bytes]) -> tuple[tuple[bytes, bytes, str], ...]:
        held_back = {r.pseudonym for r in self.held_back}
        known = [(r.pseudonym, r.patient, _status(r.pseudonym, used, held_back)) for r in self.index.records]
        known += [(r.pseudonym, r.patient, "opted out") for r in self.index.excluded]
        return tuple(known)

    def progress(self) -> dict[str, int]:
        # Passes started across loaders, as max_epochs counts them: a cell that opens a fresh
        # rapha.loader() each epoch (the usual way to write it) is in epoch 3 after three.
        epochs = self.epochs_started if self.max_epochs is None else min(self.epochs_started, self.max_epochs)
        counts = {"records_used": self.meter.records_used, "batches": self.batches_served,
                  "epochs": epochs, "cohort_size": len(self.cohort)}
        # A DP job: the edge's trainer says which step and epoch its lots are for (hyperparameters
        # and counts of its own, no record data).
        return {**counts, **self.trainer_progress}

    def serve(self, sock: socket.socket, *, trainer: bool = False, rank: int = 0,
              arena: SharedArena | None = None) -> None:
        """Answer the job (or, ``trainer``, the edge's DP trainer) until it closes its end;
        never raises (the runner reads ``fault`` and ``job_misbehaved``). ``rank``: which
        of a distributed job's processes this channel is, with its own ``arena``."""
        channel = Channel(sock, max_payload_bytes=0)  # the job never sends arrays
        if rank:
            self._ranks[rank].arena = arena
        try:
            self._loop(channel, trainer, self._ranks[rank])
        except ChannelError:
            self.job_misbehaved = True
            log.warning("job broke the broker protocol; channel closed")
        except Fault as fault:
            self.fault = fault
            log.error("broker fault: %s", fault.diagnostics())
        except OSError:
            log.info("job channel closed")
        finally:
            channel.close()

    def _loop(self, channel: Channel, trainer: bool, rank: _Rank) -> None:
        while (message := channel.recv()) is not None:
            try:
                with self._answer_lock:
                    if trainer:
                        header, arrays = self._lot(message.header)
                    elif self.private:
                        header, arrays = {"ok": False, "error": LOADER_IN_DP_MODE}, {}
                    else:
                        header, arrays = self._answer(message.header, rank)
            except BudgetDenied:
                header, arrays = {"ok": False, "error": "budget exhausted"}, {}
            channel.send(header, arrays)

    def _answer(self, request: dict[str, Any], rank: _Rank) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        op = request.get("op")
        if op == "open":
            return self._open(request, rank), {}
        loader = self._loader(request.get("loader"), rank)
        if loader is None:
            return {"ok": False, "error": "unknown loader"}, {}
        if op == "epoch":
            # Counted across loaders: opening a fresh loader must not buy more passes.
            rank.epochs_started += 1
            exhausted = self.max_epochs is not None and rank.epochs_started > self.max_epochs
            epoch = loader.start_epoch(exhausted)
            # the decoders start on the epoch's first records now, not at its first batch
            # (prepared, not handed over: nothing is counted until a batch is asked for)
            if ahead := self.feeder.lookahead(loader.batch_size, self._record_bytes):
                self.feeder.records([], [self.cohort[i] for i in loader.upcoming(ahead + loader.batch_size)])
            return {"ok": True, "epoch": epoch}, {}
        if op == "next":
            return self._next(loader, request.get("shm_offset"), rank.arena)
        return {"ok": False, "error": "unknown request"}, {}

    def _lot(self, request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """One Poisson lot for the trainer: cohort positions it drew, each at most once.
        Counted before it is handed over, like every batch (S3)."""
        indices = request.get("indices")
        if request.get("op") != "lot" or not isinstance(indices, list) or len(indices) > MAX_LOT_SIZE \
                or not all(_plain_int(i, 0, len(self.cohort) - 1) for i in indices) \
                or len(set(indices)) != len(indices):
            return {"ok": False, "error": "a lot names distinct cohort positions"}, {}
        refs = [self.cohort[i] for i in indices]
        columns = self._granted(self.feeder.records(refs))
        self.meter.admit([ref.pseudonym for ref in refs])  # BudgetDenied: refused, nothing handed over
        self.batches_served += 1
        self._trainer_at(request)
        arrays = {name: _fill(np.empty((len(refs), *shape), dtype), columns[name]) if refs
                  else np.empty((0, *shape), dtype) for name, (dtype, shape) in self._layout.items()}
        return {"ok": True, "count": len(refs)}, arrays

    def _trainer_at(self, request: dict[str, Any]) -> None:
        """The trainer's step k of N and epoch e of E, for the job's progress; malformed
        counts are ignored (the trainer is the edge's own code, the counts only a display)."""
        names = {"step": "steps", "steps": "steps_total", "epoch": "epochs", "epochs": "epochs_total"}
        counts = {shown: request.get(sent) for sent, shown in names.items()}
        plain = {shown: value for shown, value in counts.items() if _plain_int(value, 0, 2**31)}
        if len(plain) == len(names):
            self.trainer_progress = plain

    def _open(self, request: dict[str, Any], rank: _Rank) -> dict[str, Any]:
        batch_size, shuffle, seed = request.get("batch_size"), request.get("shuffle"), request.get("seed")
        if not _plain_int(batch_size, 1, MAX_BATCH_SIZE) or not isinstance(shuffle, bool) \
                or not _plain_int(seed, 0, 2**63 - 1):
            return {"ok": False, "error": f"loader needs batch_size 1-{MAX_BATCH_SIZE}, shuffle, seed >= 0"}
        if len(rank.loaders) >= MAX_LOADERS:
            return {"ok": False, "error": f"at most {MAX_LOADERS} loaders per job"}
        rank.loaders.append(_Loader(len(self.cohort), batch_size, shuffle, seed, rank.shard))
        loader = rank.loaders[-1]
        _, batch_bytes = shm_layout(self._layout, batch_size, 0)
        return {"ok": True, "loader": len(rank.loaders) - 1, "batches": loader.batches,
                "records": loader.cohort_size, "batch_bytes": batch_bytes,
                "shm_bytes": rank.arena.size if rank.arena else 0}

    def _loader(self, loader_id: Any, rank: _Rank) -> _Loader | None:
        if not _plain_int(loader_id, 0, len(rank.loaders) - 1):
            return None
        return rank.loaders[int(loader_id)]

    def _next(self, loader: _Loader, shm_offset: Any = None,
              arena: SharedArena | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        indices = loader.next_indices()
        if indices is None:
            return {"ok": True, "end": True}, {}
        refs = [self.cohort[i] for i in indices]
        ahead = loader.upcoming(self.feeder.lookahead(loader.batch_size, self._record_bytes))
        columns = self._granted(self.feeder.records(refs, [self.cohort[i] for i in ahead]))
        try:
            # Count first, hand over after: a batch the meter refuses never leaves.
            self.meter.admit([ref.pseudonym for ref in refs])
        except BudgetDenied:
            return {"ok": True, "end": True, "budget_exhausted": True}, {}
        self.batches_served += 1
        header: dict[str, Any] = {"ok": True, "end": False, "count": len(refs)}
        layout, size = shm_layout(self._layout, len(refs), shm_offset if _plain_int(shm_offset, 0, 2**62) else 0)
        if arena is not None and _plain_int(shm_offset, 0, arena.size - size) and shm_offset % SHM_ALIGN == 0:
            for item in layout:  # written once, straight into the job's view
                out = arena.array(item["offset"], np.dtype(item["dtype"]), tuple(item["shape"]))
                _fill(out, columns[item["name"]])
            header["shm"] = layout
            return header, {}
        arrays = {}
        for name, (dtype, shape) in self._layout.items():
            arrays[name] = _fill(np.empty((len(refs), *shape), dtype), columns[name])
        return header, arrays

    def _granted(self, records: list[dict[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
        return granted_columns(self._layout, records)


Layout = dict[str, tuple[np.dtype[Any], tuple[int, ...]]]


def schema_layout(specs: dict[str, Any]) -> Layout:
    """Each granted field's numpy dtype and shape, as the job receives it."""
    return {name: (np.dtype(spec.dtype), tuple(spec.shape)) for name, spec in specs.items()}


def granted_columns(layout: Layout, records: list[dict[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """S2, checked again at the boundary, before anything is counted or written:
    exactly the granted fields, each a numpy array or scalar of its declared dtype (byte
    order included) and shape. Returns the batch by field. One pass per field collects
    the distinct (type, dtype, shape) of the batch, usually one, which is then checked:
    cheaper than comparing every record. The records reload (``reload.py``) passes through
    the same check, so that a check after the job sees the records as the job did."""
    names = layout.keys()
    if any(record.keys() != names for record in records):
        raise SandboxFault("a record carried fields that were not granted")
    columns = {}
    for name, (dtype, shape) in layout.items():
        column = [record[name] for record in records]
        try:
            kinds: set[tuple[type, Any, Any]] = {(type(value), value.dtype, value.shape) for value in column}
        except AttributeError:
            kinds = {(object, None, None)}  # not an array at all
        for kind, found_dtype, found_shape in kinds:
            if not issubclass(kind, (np.ndarray, np.generic)) or found_dtype != dtype or found_shape != shape:
                raise SandboxFault("a record did not match the declared schema")
        columns[name] = column
    return columns


def _status(pseudonym: bytes, used: set[bytes], held_back: set[bytes]) -> str:
    if pseudonym in used:
        return "used"
    # read by the edge's own membership check after the job, never by the job
    return "held back" if pseudonym in held_back else "not used"


def _fill(out: np.ndarray, column: list[np.ndarray]) -> np.ndarray:
    """One field of a batch, already checked against the schema, into ``out``."""
    if out.ndim == 1:
        out[:] = column  # scalars (labels): one conversion of the list, no per-item views
    else:
        np.stack(column, out=out, casting="no")  # one copy, straight into the destination
    return out


def _plain_int(value: Any, low: int, high: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
