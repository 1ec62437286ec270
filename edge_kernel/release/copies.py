"""Disclosure check: are the records the job used copied into what it would release? (S5)

The threat: a cell that writes each batch into a weight (`Linear(1024, 48)` holds 48
flattened 32x32 images) or into metric values gets the records out under "receipt
verified". The broker knows exactly which records the job read, so every released
number is searched for them: verbatim and scaled, shifted, negated, transposed,
reversed, permuted within a row or tensor, downsampled 2x, reshaped, hidden in the low
bits of float32 weights, or smuggled as float32 bit patterns (copy_views names them all).

Pure numpy, no I/O: the check process (`check_main`) reads the held outputs and the
reloaded records and calls `scan_copies`. What leaves is `CopyReport.figures()`, numbers
only: no record data, no tensor names, no record indices.

A record's signature is each of its fields of at least MIN_PIECE_NUMBERS numbers (labels
and other scalars are not), in the forms below, keyed where it is distinctive (see
copy_keys: windows without ties and with enough turns). A record with no distinctive
window, such as all-zero padding or a smooth gradient, has no signature: it is not
counted in `records_scanned` and cannot match, so it cannot match every honest model.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from jupyter_rapha.protocol.errors import BadInput, RaphaError

from .copy_keys import KEY_WINDOW, KeyTable
from .copy_match import measure, permuted_copies
from .copy_values import RecordValues
from .copy_views import safe, streams

DEFAULT_MIN_CORRELATION = 0.95
MIN_PIECE_NUMBERS = 64
MAX_MEASURED = 200_000  # candidate alignments measured per scan before it gives up
MAX_NAME_DIGITS = 15  # a number spelled in a tensor name, kept exact as a float64
MAX_NAME_NUMBERS = 16  # numbers read from one name (a name has at most 128 characters)


class CopyScanOverload(RaphaError):
    """The released numbers produced more candidate copies than the scan measures; the
    check fails, so the release is refused (S4)."""


@dataclass(frozen=True)
class Piece:
    record: int
    form: str
    numbers: np.ndarray


@dataclass(frozen=True)
class CopyMatch:
    """Edge-side detail of one copy found (record index into the scanned sequence)."""

    record: int
    stream: str
    form: str
    numbers: int
    correlation: float


@dataclass(frozen=True)
class CopyReport:
    records_scanned: int
    numbers_scanned: int
    records_matched: int
    max_correlation: float
    seconds: float
    matches: tuple[CopyMatch, ...] = ()

    def figures(self) -> dict[str, int | float]:
        return {"records_scanned": self.records_scanned, "numbers_scanned": self.numbers_scanned,
                "records_matched": self.records_matched, "max_correlation": round(self.max_correlation, 6),
                "seconds": round(self.seconds, 3)}


def released_numbers(weights: Mapping[str, np.ndarray],
                     metrics: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    """Everything a release carries, as arrays: the tensors, the metric series, and the
    names and shapes read as numbers (a job chooses them, so they are a channel too)."""
    numbers = {f"weights/{name}": np.asarray(tensor) for name, tensor in weights.items()}
    numbers.update({f"metrics/{name}": np.asarray(list(series), dtype=np.float64) for name, series in metrics.items()})
    names = sorted(weights) + sorted(metrics)
    numbers["names/characters"] = np.array([ord(c) for name in names for c in name], dtype=np.float64)
    numbers.update(_spelled_numbers(names))
    dims = [dim for name in sorted(weights) for dim in np.shape(weights[name])]
    numbers["shapes"] = np.array(dims, dtype=np.float64)
    return numbers


def _spelled_numbers(names: list[str]) -> dict[str, np.ndarray]:
    """The numbers spelled in names, by their place in the name: "b0007_131" gives 7 to
    the first series and 131 to the second, so a counter beside the data does not
    interleave with it."""
    series: dict[int, list[float]] = {}
    for name in names:
        for place, digits in enumerate(re.findall(r"\d+", name)[:MAX_NAME_NUMBERS]):
            series.setdefault(place, []).append(float(digits[:MAX_NAME_DIGITS]))
    return {f"names/numbers {place}": np.array(values, dtype=np.float64) for place, values in series.items()}


def scan_copies(released: Mapping[str, np.ndarray], records: Sequence[Mapping[str, np.ndarray]], *,
                min_correlation: float = DEFAULT_MIN_CORRELATION) -> CopyReport:
    started = time.perf_counter()
    if not 0.0 < min_correlation <= 1.0:
        raise BadInput(f"min_correlation must be in (0, 1], not {min_correlation}")
    pieces = record_pieces(records)
    table = KeyTable.build([piece.numbers for piece in pieces])
    scan = _Scan(pieces, min_correlation)
    for name, numbers in streams(released):
        scan.keyed(name, numbers, table)
    scan.permuted(released)
    scanned = {pieces[index].record for index in table.keyed_pieces()}
    return CopyReport(len(scanned), _numbers_in(released), len(scan.matched), scan.best, time.perf_counter() - started,
                      tuple(scan.matches))


def record_pieces(records: Sequence[Mapping[str, np.ndarray]]) -> list[Piece]:
    pieces: list[Piece] = []
    for index, record in enumerate(records):
        for field in sorted(record):
            array = np.asarray(record[field])
            if array.dtype.kind in "biuf" and array.size >= MIN_PIECE_NUMBERS:
                pieces.extend(Piece(index, form, numbers) for form, numbers in _forms(safe(array)))
    return pieces


def _forms(values: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The record as a job could lay it out without losing it: flat, reversed, and for
    an image (its last two axes) transposed and downsampled 2x by averaging."""
    flat = values.ravel()
    forms = [("flat", flat), ("reversed", flat[::-1].copy())]
    if values.ndim >= 2:
        rows, columns = values.shape[-2:]
        images = values.reshape(-1, rows, columns)
        forms.append(("transposed", np.ascontiguousarray(images.transpose(0, 2, 1)).ravel()))
        if rows >= 16 and columns >= 16:
            even = images[:, : rows // 2 * 2, : columns // 2 * 2]
            pooled = even.reshape(len(images), rows // 2, 2, columns // 2, 2).mean(axis=(2, 4))
            forms.append(("downsampled 2x", pooled.ravel()))
    return forms


def _numbers_in(released: Mapping[str, np.ndarray]) -> int:
    return sum(int(np.asarray(array).size) for array in released.values())


class _Scan:
    """What the scan has found so far."""

    def __init__(self, pieces: list[Piece], min_correlation: float) -> None:
        self.pieces, self.min_correlation = pieces, min_correlation
        self.matched: set[int] = set()
        self.matches: list[CopyMatch] = []
        self.best = 0.0
        self.measured = 0

    def keyed(self, stream: str, numbers: np.ndarray, table: KeyTable) -> None:
        seen: set[tuple[int, int]] = set()
        for position, entry in table.lookup(numbers):
            index, anchor = int(table.piece[entry]), int(table.offset[entry])
            piece, shift = self.pieces[index], position - anchor
            if piece.record in self.matched or (index, shift) in seen:
                continue  # one copy found per record is enough; one alignment measured once
            self._count()
            alignment = measure(numbers, piece.numbers, shift, anchor)
            if alignment.length >= KEY_WINDOW:
                # a window at a copy's edge may hit by chance and measure short: the
                # alignment counts as measured only once it was measured in full
                seen.add((index, shift))
                self._record(piece.record, stream, piece.form, alignment.length, alignment.correlation)

    def permuted(self, released: Mapping[str, np.ndarray]) -> None:
        by_length: dict[int, list[Piece]] = {}
        for piece in self.pieces:
            if piece.form in ("flat", "downsampled 2x"):
                by_length.setdefault(len(piece.numbers), []).append(piece)
        flat = [(piece.record, piece.numbers) for piece in self.pieces if piece.form == "flat"]
        values = RecordValues.of(flat, 1 + max((record for record, _ in flat), default=-1))
        for name in sorted(released):
            array = np.asarray(released[name])
            if array.size < MIN_PIECE_NUMBERS or array.dtype.kind not in "biuf":
                continue
            units = [array.reshape(1, -1)] + ([array.reshape(-1, array.shape[-1])] if array.ndim >= 2 else [])
            for rows in units:
                candidates = by_length.get(rows.shape[1], [])
                if candidates:
                    self._permuted_rows(name, safe(rows), candidates)
            self._shuffled_together(name, safe(array.ravel()), by_length, values)

    def _permuted_rows(self, name: str, rows: np.ndarray, candidates: list[Piece]) -> None:
        stacked = np.stack([piece.numbers for piece in candidates])
        for _, index, correlation in permuted_copies(rows, stacked):
            self._record(candidates[index].record, f"{name} permuted", candidates[index].form, rows.shape[1],
                         correlation)

    def _shuffled_together(self, name: str, numbers: np.ndarray, by_length: dict[int, list[Piece]],
                           values: RecordValues) -> None:
        """A tensor holding the values of many records shuffled together: verbatim values
        record by record, or all records of one form pooled under an affine map."""
        for record, fraction in values.contained(numbers).items():
            self._record(record, f"{name} values", "flat", int(values.length[record]), fraction)
        for pieces in by_length.values():
            pooled = np.concatenate([piece.numbers for piece in pieces])
            if len(pooled) == len(numbers) and permuted_copies(numbers.reshape(1, -1), pooled.reshape(1, -1)):
                for piece in pieces:
                    self._record(piece.record, f"{name} pooled", piece.form, len(piece.numbers), 1.0)

    def _record(self, record: int, stream: str, form: str, length: int, correlation: float) -> None:
        self.best = max(self.best, correlation)
        if correlation >= self.min_correlation and record not in self.matched:
            self.matched.add(record)
            self.matches.append(CopyMatch(record, stream, form, length, correlation))

    def _count(self, measured: int = 1) -> None:
        self.measured += measured
        if self.measured > MAX_MEASURED:
            raise CopyScanOverload(f"the released numbers gave more than {MAX_MEASURED} candidate copies to measure",
                                   hint="the release is refused; a model of ordinary weights gives few or none")
