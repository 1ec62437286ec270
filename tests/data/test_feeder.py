"""The broker's decoder pool and disk cache (``feeder.py``, ``record_decoder.py``,
``record_store.py``): the same records and the same meter as the broker thread alone,
later jobs served from the cache, damaged entries decoded again, a killed decoder a
fault and never a hang, no decoder left behind."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_kernel.data import decoder_ring
from edge_kernel.data.broker import Broker
from edge_kernel.data.decoder_process import _answer
from edge_kernel.data.decoder_ring import MAX_SLOTS, InSlot, SlotLayout, SlotRing
from edge_kernel.data.dicom_folder import DicomFolderSource
from edge_kernel.data.feeder import Feeder, default_workers
from edge_kernel.data.record_decoder import Prepared
from edge_kernel.data.record_store import (MAGIC, PARTIAL_SUFFIX, BackgroundWriter, RecordStore,
                                           read_entry, write_entry)
from edge_kernel.data.registry import Dataset
from edge_kernel.data.source import Index
from edge_kernel.wire.channel import Channel
from jupyter_rapha.protocol.errors import SandboxFault
from tests.edge.conftest_data import HMAC_KEY

FIELDS = ["image", "finding"]


def _source(folder: Path, entry: Dataset) -> tuple[DicomFolderSource, Index]:
    source = DicomFolderSource(folder, entry, FIELDS, HMAC_KEY)
    return source, source.index()


def _same(left: list[dict[str, np.ndarray]], right: list[dict[str, np.ndarray]]) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert (a[name].dtype, a[name].shape) == (b[name].dtype, b[name].shape)
            assert a[name].tobytes() == b[name].tobytes()


def _alive(pids: list[int]) -> list[int]:
    found = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state != "Z":
            found.append(pid)
    return found


@pytest.mark.parametrize("workers", [1, 2])
def test_the_pool_gives_the_records_the_broker_thread_gives(synth_folder: Path, synth_entry: Dataset,
                                                             workers: int) -> None:
    source, index = _source(synth_folder, synth_entry)
    refs = index.records
    alone = Feeder(source).records(refs)
    pooled = Feeder(source, workers=workers)
    try:
        batches = [pooled.records(refs[i:i + 8], refs[i + 8:i + 16]) for i in range(0, len(refs), 8)]
    finally:
        pooled.close()
    _same([r for batch in batches for r in batch], alone)
    _same(alone, [source.load(ref) for ref in refs])
    assert pooled.decoded == len(refs)  # prepared ahead once, never twice


def _drive(broker: Broker, loaders: list[tuple[int, bool]], epochs: int) -> list[int]:
    """Serve a broker as a job would: open loaders, walk epochs; returns batch sizes."""
    broker_end, job_end = socket.socketpair()
    thread = threading.Thread(target=broker.serve, args=(broker_end,), daemon=True)
    thread.start()
    channel = Channel(job_end, max_payload_bytes=1 << 30)

    def ask(request: dict) -> dict:
        channel.send(request)
        message = channel.recv()
        assert message is not None
        return message.header

    sizes = []
    for batch_size, shuffle in loaders:
        loader = ask({"op": "open", "batch_size": batch_size, "shuffle": shuffle, "seed": 3})["loader"]
        for _ in range(epochs):
            ask({"op": "epoch", "loader": loader})
            while not (header := ask({"op": "next", "loader": loader})).get("end"):
                sizes.append(header["count"])
    job_end.close()
    thread.join(30)
    assert not thread.is_alive()
    return sizes


def test_the_meter_counts_the_same_with_0_1_and_2_decoders(synth_folder: Path, synth_entry: Dataset) -> None:
    summaries, served = [], []
    for workers in (0, 1, 2):
        source, index = _source(synth_folder, synth_entry)
        feeder = Feeder(source, workers=workers)
        broker = Broker(source, index, 40, cohort_seed=11, max_epochs=3, holdback_size=8, holdback_seed=5,
                        feeder=feeder)
        try:
            served.append(_drive(broker, [(7, True), (16, False)], epochs=2))
        finally:
            feeder.close()
        assert broker.fault is None and not broker.job_misbehaved
        summaries.append(broker.summary())
    assert summaries[0] == summaries[1] == summaries[2]
    assert served[0] == served[1] == served[2]
    assert summaries[0].records_used == 40


def test_a_second_job_reads_the_disk_cache(synth_folder: Path, synth_entry: Dataset, tmp_path: Path) -> None:
    source, index = _source(synth_folder, synth_entry)
    first = Feeder(source, workers=2, store=RecordStore(tmp_path / "records", 1 << 30))
    try:
        fresh = first.records(index.records)
    finally:
        first.close()
    assert (first.decoded, first.store_hits) == (len(index.records), 0)
    source, index = _source(synth_folder, synth_entry)  # the next job: a new source, broker and feeder
    second = Feeder(source, workers=2, store=RecordStore(tmp_path / "records", 1 << 30))
    try:
        again = second.records(index.records)
    finally:
        second.close()
    assert (second.decoded, second.store_hits) == (0, len(index.records))
    _same(again, fresh)
    alone = Feeder(source, store=RecordStore(tmp_path / "records", 1 << 30))  # the broker thread, same store
    _same(alone.records(index.records), fresh)
    assert alone.decoded == 0


def test_cache_entries_are_private_and_named_by_digests(synth_folder: Path, synth_entry: Dataset,
                                                        tmp_path: Path) -> None:
    source, index = _source(synth_folder, synth_entry)
    Feeder(source, store=RecordStore(tmp_path / "records", 1 << 30)).records(index.records[:4])
    entries = sorted((tmp_path / "records").iterdir())
    assert len(entries) == 4
    assert (tmp_path / "records").stat().st_mode & 0o777 == 0o700
    for entry in entries:
        assert len(entry.name) == 64 and all(c in "0123456789abcdef" for c in entry.name)
        assert entry.stat().st_mode & 0o777 == 0o600
        assert entry.read_bytes().startswith(MAGIC)


def test_a_damaged_cache_entry_is_decoded_again_not_served(synth_folder: Path, synth_entry: Dataset,
                                                           tmp_path: Path) -> None:
    source, index = _source(synth_folder, synth_entry)
    refs = index.records[:6]
    fresh = Feeder(source, store=RecordStore(tmp_path / "records", 1 << 30)).records(refs)
    entries = sorted((tmp_path / "records").iterdir())
    flipped = bytearray(entries[0].read_bytes())
    flipped[-3] ^= 0x40  # one pixel's byte
    entries[0].write_bytes(bytes(flipped))
    entries[1].write_bytes(entries[1].read_bytes()[:100])  # truncated
    entries[2].write_bytes(b"")
    (tmp_path / "records" / f"{entries[3].name}.123.456{PARTIAL_SUFFIX}").write_bytes(b"half")  # a crash's
    source, index = _source(synth_folder, synth_entry)
    store = RecordStore(tmp_path / "records", 1 << 30)
    assert not list((tmp_path / "records").glob(f"*{PARTIAL_SUFFIX}"))  # removed when the store opens
    feeder = Feeder(source, workers=1, store=store)
    try:
        again = feeder.records(refs)
    finally:
        feeder.close()
    _same(again, fresh)
    assert (feeder.decoded, feeder.store_damaged, feeder.store_hits) == (3, 3, 3)
    assert feeder.decoded + feeder.store_hits == len(refs)
    assert len(list((tmp_path / "records").iterdir())) == 6  # rewritten whole


def test_the_disk_cache_keeps_to_its_bound_least_recently_used_out(synth_folder: Path, synth_entry: Dataset,
                                                                   tmp_path: Path) -> None:
    source, index = _source(synth_folder, synth_entry)
    refs = index.records[:10]
    Feeder(source, store=RecordStore(tmp_path / "records", 1 << 30)).records(refs[:1])
    entry_bytes = next((tmp_path / "records").iterdir()).stat().st_size
    store = RecordStore(tmp_path / "records", 4 * entry_bytes)
    feeder = Feeder(source, store=store, memory_bytes=0)
    feeder.records(refs[:4])
    feeder.records(refs[:1])  # the first is used again: it stays
    feeder.records(refs[4:6])
    store.evict()
    assert store.bytes_held <= 4 * entry_bytes
    assert len(list((tmp_path / "records").iterdir())) == 4
    later = Feeder(source, store=RecordStore(tmp_path / "records", 4 * entry_bytes), memory_bytes=0)
    later.records(refs[:1] + refs[3:6])
    assert later.decoded == 0  # the first (used again), the fourth, fifth and sixth were kept


def test_a_killed_decoder_fails_the_job_without_a_hang_and_leaves_no_process(
        synth_folder: Path, synth_entry: Dataset) -> None:
    source, index = _source(synth_folder, synth_entry)
    feeder = Feeder(source, workers=2)
    broker = Broker(source, index, len(index.records), cohort_seed=1, feeder=feeder)
    broker_end, job_end = socket.socketpair()
    thread = threading.Thread(target=broker.serve, args=(broker_end,), daemon=True)
    thread.start()
    channel = Channel(job_end, max_payload_bytes=1 << 30)
    channel.send({"op": "open", "batch_size": 4, "shuffle": False, "seed": 0})
    loader = channel.recv().header["loader"]
    channel.send({"op": "epoch", "loader": loader})
    channel.recv()
    channel.send({"op": "next", "loader": loader})
    assert channel.recv().header["count"] == 4
    pids = feeder.decoder_pids()
    assert pids
    os.kill(pids[0], signal.SIGKILL)
    started = time.monotonic()
    ended = False
    for _ in range(len(index.records)):  # the fault comes with the next batch asked for, or soon after
        channel.send({"op": "next", "loader": loader})
        message = channel.recv()
        if message is None:
            ended = True
            break
    thread.join(30)
    assert ended and not thread.is_alive()
    assert time.monotonic() - started < 30
    assert isinstance(broker.fault, SandboxFault)
    assert broker.fault.message == "a decoder process stopped during the job"
    feeder.close()
    deadline = time.monotonic() + 10
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive(pids) == []
    job_end.close()


def test_closing_a_feeder_stops_its_decoders(synth_folder: Path, synth_entry: Dataset) -> None:
    source, index = _source(synth_folder, synth_entry)
    feeder = Feeder(source, workers=2)
    feeder.records(index.records[:4], index.records[4:12])
    pids = feeder.decoder_pids()
    assert len(pids) >= 1
    feeder.close()
    assert _alive(pids) == []
    with pytest.raises(ConnectionAbortedError):  # a broker still asking reads a closed job
        feeder.records(index.records[20:24])


def test_a_changed_file_is_a_fault_not_another_record(synth_folder: Path, synth_entry: Dataset,
                                                      tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    folder.mkdir()
    for path in sorted(synth_folder.glob("*.dcm"))[:4]:
        (folder / path.name).write_bytes(path.read_bytes())
    source, index = _source(folder, synth_entry)
    changed = Path(index.records[0].location)
    data = bytearray(changed.read_bytes())
    data[-1] ^= 1  # one pixel: same header, same pseudonym, another record
    changed.write_bytes(bytes(data))
    feeder = Feeder(source, workers=1)
    try:
        with pytest.raises(SandboxFault, match="changed or vanished"):
            feeder.records(index.records[:1])
    finally:
        feeder.close()


def test_default_workers_leave_the_job_a_core() -> None:
    assert default_workers() == max(1, (os.cpu_count() or 1) - 1)


def test_a_cache_disk_that_fails_costs_a_decode_not_the_job(synth_folder: Path, synth_entry: Dataset,
                                                            tmp_path: Path) -> None:
    source, index = _source(synth_folder, synth_entry)
    store = RecordStore(tmp_path / "records", 1 << 30)
    (tmp_path / "records").chmod(0o500)  # read-only: every write fails (root: a file where the folder was)
    if os.access(tmp_path / "records", os.W_OK):
        (tmp_path / "records").chmod(0o700)
        (tmp_path / "records").rmdir()
        (tmp_path / "records").write_bytes(b"")
    try:
        feeder = Feeder(source, store=store)
        _same(feeder.records(index.records[:3]), Feeder(source).records(index.records[:3]))
        assert feeder.decoded == 3
    finally:
        if (tmp_path / "records").is_dir():
            (tmp_path / "records").chmod(0o700)


EDGE_THAT_DIES = '''
import sys
from pathlib import Path
from edge_kernel.data.dicom_folder import DicomFolderSource
from edge_kernel.data.feeder import Feeder
from edge_kernel.data.synth import synthetic_dataset_entry
from tests.edge.conftest_data import HMAC_KEY
folder = Path(sys.argv[1])
source = DicomFolderSource(folder, synthetic_dataset_entry("synth-cxr", str(folder)), ["image", "finding"], HMAC_KEY)
feeder = Feeder(source, workers=2)
refs = source.index().records
feeder.records(refs[:4], refs[4:12])
print(" ".join(map(str, feeder.decoder_pids())), flush=True)
sys.stdin.read()
'''


def test_decoders_die_with_an_edge_that_is_killed(synth_folder: Path) -> None:
    import subprocess
    import sys

    edge = subprocess.Popen([sys.executable, "-c", EDGE_THAT_DIES, str(synth_folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    assert edge.stdout is not None
    pids = [int(pid) for pid in edge.stdout.readline().split()]
    assert len(pids) == 2 and _alive(pids) == pids
    edge.kill()  # no close(), no cleanup: the parent-death signal alone
    edge.wait()
    deadline = time.monotonic() + 10
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive(pids) == []


def test_background_writes_are_the_entries_written_in_place(tmp_path: Path) -> None:
    arrays = {"image": np.arange(12, dtype=np.float32).reshape(1, 3, 4), "finding": np.asarray(1, np.int64)}
    size = write_entry(tmp_path / "inplace", arrays)
    writer = BackgroundWriter(max_bytes=2 * size)  # the third put waits for the writer's thread
    for name in ("a", "b", "c"):
        assert writer.put(tmp_path / name, arrays) == size
    assert writer.drain(10)
    for name in ("a", "b", "c"):
        assert (tmp_path / name).read_bytes() == (tmp_path / "inplace").read_bytes()
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
        found, damaged, read = read_entry(tmp_path / name)
        assert found is not None and not damaged and read == size
        assert found["image"].tobytes() == arrays["image"].tobytes()
    writer.close(10)
    assert writer.put(tmp_path / "late", arrays) is None  # after close: dropped, never half-written
    assert not (tmp_path / "late").exists()
    assert not list(tmp_path.glob(f"*{PARTIAL_SUFFIX}"))


def test_a_background_write_that_fails_is_dropped_and_the_rest_written(tmp_path: Path) -> None:
    arrays = {"image": np.ones((1, 4, 4), np.float32)}
    writer = BackgroundWriter()
    writer.put(tmp_path / "missing-folder" / "x", arrays)  # fails: no such folder
    writer.put(tmp_path / "y", arrays)
    assert writer.drain(10)
    writer.close(10)
    assert not (tmp_path / "missing-folder").exists()
    assert read_entry(tmp_path / "y")[0] is not None


def test_an_idle_writer_drops_what_finds_it_behind_and_drain_writes_the_rest(tmp_path: Path) -> None:
    arrays = {"image": np.arange(12, dtype=np.float32).reshape(1, 3, 4)}
    size = write_entry(tmp_path / "inplace", arrays)
    writer = BackgroundWriter(max_bytes=2 * size, idle=True)
    with writer._changed:  # hold the writer's thread back: the entries wait
        kept = [writer.put(tmp_path / name, arrays) for name in ("a", "b", "c", "d")]
    assert kept[:2] == [size, size] and kept[2:] == [None, None] and writer.dropped == 2  # never blocked
    assert writer.drain(10)
    writer.close(10)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == (tmp_path / "inplace").read_bytes()
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()
    assert not list(tmp_path.glob(f"*{PARTIAL_SUFFIX}"))


def test_decoders_finish_their_cache_writes_when_the_feeder_closes(synth_folder: Path, synth_entry: Dataset,
                                                                  tmp_path: Path) -> None:
    source, index = _source(synth_folder, synth_entry)
    feeder = Feeder(source, workers=2, store=RecordStore(tmp_path / "records", 1 << 30))
    try:
        feeder.records(index.records[:20])
    finally:
        feeder.close()
    assert feeder.decoded == 20
    entries = [p for p in (tmp_path / "records").iterdir()]
    assert len(entries) == 20 and not [p for p in entries if p.name.endswith(PARTIAL_SUFFIX)]
    assert all(read_entry(p)[0] is not None for p in entries)


def test_a_decoder_writes_its_records_into_its_slots_and_the_slots_come_back(synth_folder: Path,
                                                                             synth_entry: Dataset) -> None:
    source, index = _source(synth_folder, synth_entry)
    refs = index.records
    feeder = Feeder(source, workers=1)
    try:
        pooled = feeder.records(refs[:12], refs[12:24])
        (process,) = feeder._processes
        assert process.ring is not None and process.ring.count == MAX_SLOTS
        # every answer read so far has freed its slot; only those still asked hold one
        assert len(process.free) + len(process.in_flight) == process.ring.count
        assert all(slot is not None for _, slot in process.in_flight)
    finally:
        feeder.close()
    _same(pooled, Feeder(source).records(refs[:12]))  # copies, which outlive the ring


def test_a_decoder_answers_in_its_slot_or_through_the_socket(synth_folder: Path, synth_entry: Dataset) -> None:
    source, index = _source(synth_folder, synth_entry)
    decoder = source.decoder()
    assert decoder is not None
    ref = index.records[0]
    expected = decoder.prepare(ref).arrays
    ring = SlotRing(SlotLayout.of(decoder), 2)
    try:
        in_slot = _answer(decoder, (ref, 1), None, ring)
        assert isinstance(in_slot, InSlot) and in_slot.slot == 1 and in_slot.prepared.arrays == {}
        _same([ring.take(1)], [expected])
        for no_slot in (None, 2, -1, "1"):  # asked without a (valid) slot: the arrays travel in the answer
            through = _answer(decoder, (ref, no_slot), None, ring)
            assert isinstance(through, Prepared)
            _same([through.arrays], [expected])
        assert _answer(decoder, ref, None, ring) == "unknown request"
        assert _answer(decoder, (b"x", 0), None, ring) == "unknown request"
        odd = dict(expected, image=expected["image"].astype(np.float64))  # not the schema: not in a slot
        assert not ring.layout.fits(odd) and ring.layout.fits(expected)
        assert not ring.layout.fits({"image": expected["image"]})
    finally:
        ring.close()


def test_records_too_large_for_a_ring_travel_through_the_socket(synth_folder: Path, synth_entry: Dataset,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoder_ring, "RING_BYTES", 100)  # less than one record
    source, index = _source(synth_folder, synth_entry)
    feeder = Feeder(source, workers=2)
    try:
        pooled = feeder.records(index.records[:10], index.records[10:20])
        assert all(process.ring is None for process in feeder._processes)
    finally:
        feeder.close()
    _same(pooled, Feeder(source).records(index.records[:10]))
    assert 10 <= feeder.decoded <= 20  # records ahead may be prepared too, none twice
