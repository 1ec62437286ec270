"""The broker is the meter (S3) and the field filter (S2); the source skips bad files.

Brokers here run for real in a thread on a socketpair; the test plays the job with the
real framing and records every byte that crosses to it.
"""

from __future__ import annotations

import shutil
import socket
import struct
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from edge_kernel.data.broker import Broker, Meter
from edge_kernel.data.dicom_folder import DicomFolderSource
from edge_kernel.data.synth import synthetic_dataset_entry
from edge_kernel.wire.channel import MAGIC, PREFIX, Channel, ChannelError
from jupyter_rapha.protocol.errors import BadInput, BudgetDenied, SandboxFault
from jupyter_rapha.protocol.merkle import MerkleTree
from tests.edge.conftest_data import HMAC_KEY, SYNTH_RECORDS, header_values, leaked


class RecordingSocket:
    """The job's end of the socket, keeping a copy of every byte it received."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = bytearray()

    def recv_into(self, view: memoryview) -> int:
        count = self.sock.recv_into(view)
        self.received += view[:count]
        return count

    def sendall(self, data) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


def make_broker(folder: Path, entry, fields=("image", "finding"), max_records=SYNTH_RECORDS, seed=1) -> Broker:
    source = DicomFolderSource(folder, entry, fields, HMAC_KEY)
    return Broker(source, source.index(), max_records, seed)


@contextmanager
def served(broker: Broker):
    broker_end, job_end = socket.socketpair()
    thread = threading.Thread(target=broker.serve, args=(broker_end,))
    thread.start()
    recorder = RecordingSocket(job_end)
    try:
        yield Channel(recorder, max_payload_bytes=1 << 30), recorder
    finally:
        job_end.close()
        thread.join(5)
        assert not thread.is_alive()


def assert_cut_off(channel: Channel) -> None:
    try:
        assert channel.recv() is None
    except ConnectionResetError:
        pass  # the broker hung up with our bytes unread: the kernel resets the connection


def ask(channel: Channel, request: dict):
    channel.send(request)
    return channel.recv()


def open_loader(channel: Channel, batch_size=8, shuffle=True, seed=0) -> dict:
    reply = ask(channel, {"op": "open", "batch_size": batch_size, "shuffle": shuffle, "seed": seed}).header
    assert reply["ok"], reply
    return reply


def epoch(channel: Channel, loader: int) -> list:
    assert ask(channel, {"op": "epoch", "loader": loader}).header["ok"]
    batches = []
    while not (message := ask(channel, {"op": "next", "loader": loader})).header.get("end"):
        batches.append(message)
    return batches


def image_keys(batches) -> list[bytes]:
    return [image.tobytes() for batch in batches for image in batch.arrays["image"]]


@pytest.fixture(scope="module")
def pseudonym_of(synth_folder, synth_entry) -> dict[bytes, bytes]:
    """Image bytes -> pseudonym, from the source itself (every synthetic image is unique)."""
    source = DicomFolderSource(synth_folder, synth_entry, ["image"], HMAC_KEY)
    return {source.load(ref)["image"].tobytes(): ref.pseudonym for ref in source.index().records}


# --- S3: the meter ------------------------------------------------------------------

def test_budget_smaller_than_the_dataset_stops_the_loader_exactly_at_the_budget(synth_folder, synth_entry):
    broker = make_broker(synth_folder, synth_entry, max_records=20)
    with served(broker) as (channel, _):
        reply = open_loader(channel, batch_size=8)
        assert (reply["batches"], reply["records"]) == (3, 20)
        batches = epoch(channel, reply["loader"])
    assert [b.header["count"] for b in batches] == [8, 8, 4]
    assert len(set(image_keys(batches))) == 20
    summary = broker.summary()
    assert (summary.records_used, summary.cohort_size) == (20, 20)


def test_a_second_epoch_over_the_same_records_does_not_count_again(synth_folder, synth_entry):
    broker = make_broker(synth_folder, synth_entry, max_records=30)
    with served(broker) as (channel, _):
        loader = open_loader(channel, batch_size=7)["loader"]
        first = image_keys(epoch(channel, loader))
        assert broker.meter.records_used == 30
        second = image_keys(epoch(channel, loader))
        other = open_loader(channel, batch_size=30, shuffle=False)["loader"]
        third = image_keys(epoch(channel, other))
    assert set(first) == set(second) == set(third) and first != second  # reshuffled, same cohort
    assert broker.summary().records_used == 30


def test_progress_counts_epochs_across_loaders_as_a_cell_opens_them(synth_folder, synth_entry):
    # The usual cell opens a fresh rapha.loader() in each epoch: three passes are epoch 3.
    broker = make_broker(synth_folder, synth_entry, max_records=12)
    with served(broker) as (channel, _):
        for _ in range(3):
            epoch(channel, open_loader(channel, batch_size=4)["loader"])
        progress = broker.progress()
    assert progress == {"records_used": 12, "batches": 9, "epochs": 3, "cohort_size": 12}


def test_records_are_counted_before_the_batch_arrives(synth_folder, synth_entry):
    broker = make_broker(synth_folder, synth_entry)
    with served(broker) as (channel, _):
        loader = open_loader(channel, batch_size=5)["loader"]
        ask(channel, {"op": "epoch", "loader": loader})
        batch = ask(channel, {"op": "next", "loader": loader})
        assert batch.header["count"] == 5 and broker.meter.records_used == 5


def test_meter_refuses_past_the_budget_all_or_nothing():
    meter = Meter(5)
    meter.admit([b"a", b"b", b"c"])
    meter.admit([b"a", b"b", b"c", b"d", b"e"])
    with pytest.raises(BudgetDenied):
        meter.admit([b"a", b"f"])
    assert meter.records_used == 5 and b"f" not in meter.pseudonyms()
    meter.admit([b"a", b"e"])  # records already counted cross again for free
    with pytest.raises(BudgetDenied):
        Meter(0)


def test_summary_root_is_the_merkle_root_of_the_records_that_crossed(synth_folder, synth_entry, pseudonym_of):
    broker = make_broker(synth_folder, synth_entry, max_records=12)
    with served(broker) as (channel, _):
        seen = image_keys(epoch(channel, open_loader(channel)["loader"]))
    pseudonyms = sorted(pseudonym_of[key] for key in seen)
    summary = broker.summary()
    assert summary.pseudonyms_hex == tuple(p.hex() for p in pseudonyms)
    assert summary.records_root_hex == MerkleTree.sorted_unique(pseudonyms).root.hex()
    assert summary.skipped == {}


def test_the_edge_seed_fixes_the_cohort_and_the_job_seed_only_the_order(synth_folder, synth_entry):
    cohorts = []
    for edge_seed, job_seed in ((1, 0), (1, 99), (2, 0)):
        with served(make_broker(synth_folder, synth_entry, max_records=16, seed=edge_seed)) as (channel, _):
            cohorts.append(image_keys(epoch(channel, open_loader(channel, seed=job_seed)["loader"])))
    assert set(cohorts[0]) == set(cohorts[1]) and cohorts[0] != cohorts[1]
    assert set(cohorts[0]) != set(cohorts[2])


def test_loader_order_is_deterministic_for_a_seed(synth_folder, synth_entry):
    with served(make_broker(synth_folder, synth_entry, max_records=16)) as (channel, _):
        a, b = open_loader(channel, seed=3)["loader"], open_loader(channel, seed=3)["loader"]
        plain = open_loader(channel, shuffle=False)["loader"]
        assert image_keys(epoch(channel, a)) == image_keys(epoch(channel, b))
        assert image_keys(epoch(channel, plain)) == image_keys(epoch(channel, plain))


# --- S2: only granted fields, never a header value ------------------------------------

@pytest.mark.parametrize("fields", [("image",), ("finding",), ("image", "finding")])
def test_only_granted_fields_cross(synth_folder, synth_entry, fields):
    with served(make_broker(synth_folder, synth_entry, fields=fields, max_records=10)) as (channel, _):
        batches = epoch(channel, open_loader(channel, batch_size=4)["loader"])
    for batch in batches:
        assert set(batch.arrays) == set(fields)
        if "image" in fields:
            image = batch.arrays["image"]
            assert image.dtype == np.float32 and image.shape[1:] == (1, 32, 32)
            assert 0.0 <= image.min() and image.max() <= 1.0
        if "finding" in fields:
            assert batch.arrays["finding"].dtype == np.int64 and batch.arrays["finding"].ndim == 1


def test_no_header_value_or_pseudonym_crosses_the_socket(synth_folder, synth_entry):
    broker = make_broker(synth_folder, synth_entry)
    with served(broker) as (channel, recorder):
        loader = open_loader(channel)["loader"]
        epoch(channel, loader)
        epoch(channel, loader)
    received = bytes(recorder.received)
    assert len(received) > SYNTH_RECORDS * 32 * 32 * 4
    assert leaked(received, header_values(synth_folder)) == []
    assert not any(bytes.fromhex(p) in received for p in broker.summary().pseudonyms_hex)


def test_an_unknown_field_or_label_source_is_refused(synth_folder, synth_entry):
    with pytest.raises(BadInput):
        DicomFolderSource(synth_folder, synth_entry, ["PatientName"], HMAC_KEY)
    with pytest.raises(BadInput):
        DicomFolderSource(synth_folder, synth_entry, [], HMAC_KEY)
    free_text = synthetic_dataset_entry("x", "x")
    free_text.labels["finding"] = {"source": "dicom-keyword", "keyword": "ImageComments"}
    with pytest.raises(BadInput):
        DicomFolderSource(synth_folder, free_text, ["finding"], HMAC_KEY)


# --- malformed files -------------------------------------------------------------------

def _broken_folder(synth_folder: Path, root: Path) -> Path:
    folder = root / "mixed"
    folder.mkdir()
    good = sorted(synth_folder.glob("*.dcm"))[:8]
    for path in good:
        shutil.copy(path, folder / path.name)
    ds = pydicom.dcmread(good[0])
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    ds.save_as(folder / "truncated_pixels.dcm")
    unlabelled = pydicom.dcmread(good[1])
    del unlabelled[0x0019, 0x0010]
    del unlabelled[0x0019, 0x1010]
    unlabelled.SOPInstanceUID = unlabelled.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    unlabelled.save_as(folder / "unlabelled.dcm")
    anonymous = pydicom.dcmread(good[2])
    del anonymous.PatientID
    anonymous.save_as(folder / "anonymous.dcm")
    (folder / "garbage.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 300)
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    shutil.copy(good[3], folder / "zz_duplicate.dcm")
    (folder / "link.dcm").symlink_to(good[4])
    for name in ("MR_truncated.dcm", "no_meta.dcm", "rtplan_truncated.dcm", "badVR.dcm", "CT_small.dcm"):
        shutil.copy(get_testdata_file(name, download=False), folder / f"pydicom_{name}")
    return folder


def test_malformed_files_are_skipped_and_counted_with_a_reason(synth_folder, synth_entry, tmp_path):
    folder = _broken_folder(synth_folder, tmp_path)
    source = DicomFolderSource(folder, synth_entry, ["image", "finding"], HMAC_KEY)
    index = source.index()
    assert len(index.records) == 8
    assert index.skipped == {
        "unreadable pixel data": 1,  # truncated pixels
        "label missing": 1,
        "missing patient id or instance uid": 2,  # anonymous, garbage (parses to nothing)
        "not a DICOM file": 3,  # empty, notes.txt, no_meta
        "duplicate instance": 1,
        "not a regular file": 1,  # symlink: never followed
        "image size differs from the schema": 2,  # MR_truncated (64x64), CT_small (128x128)
        "no pixel data": 1,  # rtplan_truncated
        "malformed DICOM element": 1,  # badVR
    }
    names = {path.name for path in folder.iterdir()} | header_values(synth_folder)
    assert not any(name in reason for reason in index.skipped for name in names)
    broker = Broker(source, index, 100, 1)
    assert broker.summary().skipped == index.skipped and broker.summary().cohort_size == 8


def test_pydicom_truncated_pixel_data_is_skipped(tmp_path):
    for name in ("MR_truncated.dcm", "MR_small.dcm"):
        shutil.copy(get_testdata_file(name, download=False), tmp_path / name)
    entry = synthetic_dataset_entry("mr", str(tmp_path), size=64)
    index = DicomFolderSource(tmp_path, entry, ["image"], HMAC_KEY).index()
    assert len(index.records) == 1 and index.skipped == {"unreadable pixel data": 1}


def test_a_record_that_changes_during_the_job_fails_closed(synth_folder, synth_entry, tmp_path):
    folder = shutil.copytree(synth_folder, tmp_path / "copy")
    broker = make_broker(folder, synth_entry, max_records=4)
    for path in folder.glob("*.dcm"):
        path.write_bytes(b"replaced")
    with served(broker) as (channel, _):
        loader = open_loader(channel)["loader"]
        ask(channel, {"op": "epoch", "loader": loader})
        channel.send({"op": "next", "loader": loader})
        assert channel.recv() is None  # the broker stops; nothing of the record crossed
    assert broker.fault is not None and broker.meter.records_used == 0



class _OffSchemaSource:
    """Records that break the declared schema in one way each (a buggy or hostile source
    plugin); the broker must stop rather than convert or pass them on."""

    def __init__(self, bad: dict) -> None:
        from edge_kernel.data.registry import FieldSpec
        self.specs = {"image": FieldSpec("float32", (2, 2)), "label": FieldSpec("int64", (), "label")}
        self.bad = bad

    def index(self):
        import hashlib
        from edge_kernel.data.source import Index, RecordRef
        return Index([RecordRef(hashlib.sha256(b"r%d" % i).digest(), hashlib.sha256(b"p%d" % i).digest(), str(i))
                      for i in range(4)], {})

    def load(self, ref):
        record = {"image": np.ones((2, 2), np.float32), "label": np.asarray(1, np.int64)}
        return {**record, **self.bad} if ref.location == "2" else record


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("bad", [
    {"image": np.ones((2, 2), np.float64)},                   # another dtype
    {"image": np.ones((2, 2), ">f4")},                        # another byte order
    {"image": np.ones((2, 3), np.float32)},                   # another shape
    {"image": np.ones((4,), np.float32)},                     # same size, another shape
    {"image": [[1.0, 1.0], [1.0, 1.0]]},                      # not an array
    {"label": np.asarray(1, np.int32)},
    {"label": np.asarray([1], np.int64)},
    {"label": 1},
    {"label": np.asarray(1, np.int64), "name": np.zeros(1)},  # a field not granted
])
def test_a_record_off_the_declared_schema_stops_the_broker_before_anything_crosses(bad, shared):
    from edge_kernel.wire.channel import SharedArena
    source = _OffSchemaSource(bad)
    arena = SharedArena.create(1 << 20) if shared else None
    broker = Broker(source, source.index(), 4, 1, arena)
    with served(broker) as (channel, _):
        loader = open_loader(channel, batch_size=4, shuffle=False)["loader"]
        ask(channel, {"op": "epoch", "loader": loader})
        channel.send({"op": "next", "loader": loader, "shm_offset": 0})
        assert_cut_off(channel)
    assert isinstance(broker.fault, SandboxFault) and broker.meter.records_used == 0
    if arena is not None:
        assert not any(arena.mm[:4096])  # nothing was written for the job to read
        arena.close()


# --- the job cannot steer the broker -----------------------------------------------------

@pytest.mark.parametrize("request_", [
    {"op": "open", "batch_size": 0, "shuffle": True, "seed": 0},
    {"op": "open", "batch_size": 10**9, "shuffle": True, "seed": 0},
    {"op": "open", "batch_size": True, "shuffle": True, "seed": 0},
    {"op": "open", "batch_size": "8", "shuffle": True, "seed": 0},
    {"op": "open", "batch_size": 8, "shuffle": 1, "seed": 0},
    {"op": "open", "batch_size": 8, "shuffle": True, "seed": -1},
    {"op": "next", "loader": 5},
    {"op": "next", "loader": "0"},
    {"op": "epoch"},
    {"op": "count", "records": 0},
    {"records_used": 0},
])
def test_bad_requests_are_answered_with_an_error_and_change_nothing(synth_folder, synth_entry, request_):
    broker = make_broker(synth_folder, synth_entry, max_records=8)
    with served(broker) as (channel, _):
        reply = ask(channel, request_).header
        assert reply["ok"] is False and isinstance(reply["error"], str)
        assert len(epoch(channel, open_loader(channel)["loader"])) == 1  # still serving
    assert broker.summary().records_used == 8 and not broker.job_misbehaved


def test_next_before_an_epoch_yields_nothing(synth_folder, synth_entry):
    broker = make_broker(synth_folder, synth_entry, max_records=8)
    with served(broker) as (channel, _):
        loader = open_loader(channel)["loader"]
        assert ask(channel, {"op": "next", "loader": loader}).header == {"ok": True, "end": True}
    assert broker.summary().records_used == 0


def test_loaders_are_bounded(synth_folder, synth_entry):
    with served(make_broker(synth_folder, synth_entry, max_records=8)) as (channel, _):
        for _ in range(16):
            open_loader(channel)
        reply = ask(channel, {"op": "open", "batch_size": 8, "shuffle": True, "seed": 0}).header
        assert reply["ok"] is False


def test_a_job_that_sends_arrays_is_cut_off(synth_folder, synth_entry):
    broker = make_broker(synth_folder, synth_entry, max_records=8)
    with served(broker) as (channel, _):
        try:
            channel.send({"op": "open"}, {"records_used": np.zeros(3)})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the broker read the header, saw arrays and cut the job off before the rest arrived
        assert_cut_off(channel)
    assert broker.job_misbehaved


def test_an_absurd_frame_length_is_refused_before_allocation(synth_folder, synth_entry):
    broker = make_broker(synth_folder, synth_entry, max_records=8)
    with served(broker) as (channel, recorder):
        recorder.sendall(PREFIX.pack(MAGIC, 2**31, 0))
        assert_cut_off(channel)
    assert broker.job_misbehaved
    broker = make_broker(synth_folder, synth_entry, max_records=8)
    with served(broker) as (channel, recorder):
        recorder.sendall(struct.pack("!4sIQ", b"EVIL", 2, 0) + b"{}")
        assert_cut_off(channel)
    assert broker.job_misbehaved


# --- framing ---------------------------------------------------------------------------

def _pair(max_payload=1 << 20):
    a, b = socket.socketpair()
    return Channel(a, max_payload_bytes=max_payload), Channel(b, max_payload_bytes=max_payload)


def test_channel_round_trips_arrays_aligned_and_without_pickle():
    left, right = _pair()
    arrays = {"a": np.arange(3, dtype=np.uint8), "b": np.ones((2, 3), np.float32), "c": np.asarray(7, np.int64),
              "d": np.zeros((0, 4), np.float64), "e": np.array([True, False]),
              "f": np.arange(12, dtype=np.int32).reshape(3, 4).T}  # not contiguous
    left.send({"hello": [1, "x"]}, arrays)
    message = right.recv()
    assert message.header == {"hello": [1, "x"]}
    for name, array in arrays.items():
        got = message.arrays[name]
        assert got.dtype == array.dtype and got.shape == array.shape and np.array_equal(got, array)
        assert got.ctypes.data % 8 == 0 or got.size == 0
    left.close()
    assert right.recv() is None


@pytest.mark.parametrize("layout,payload", [
    ([{"name": "x", "dtype": "object", "shape": [1]}], 8),
    ([{"name": "x", "dtype": "<U8", "shape": [1]}], 32),
    ([{"name": "x", "dtype": "float32", "shape": [2**62, 4]}], 8),
    ([{"name": "x", "dtype": "float32", "shape": [-1]}], 8),
    ([{"name": "x", "dtype": "float32", "shape": [3]}], 8),
    ([{"name": "x", "dtype": "float32", "shape": [1]}, {"name": "x", "dtype": "float32", "shape": [1]}], 16),
    ("nope", 0),
])
def test_channel_refuses_forged_layouts(layout, payload):
    import json
    left, right = _pair()
    head = json.dumps({"msg": {}, "arrays": layout}).encode()
    left.sock.sendall(PREFIX.pack(MAGIC, len(head), payload) + head + bytes(payload))
    with pytest.raises(ChannelError):
        right.recv()



@pytest.mark.parametrize("spin", [0.0, 0.0005, 0.05])
def test_channel_frames_arrive_whole_however_the_bytes_are_split(spin):
    left, right = _pair()
    right.spin_seconds = spin  # the job's side polls before it sleeps; the same frames
    frames = [({"n": i, "pad": "x" * (i * 997 % 5000)}, {"a": np.arange(i * 30, dtype=np.int64)}) for i in range(60)]
    frames.insert(30, ({"big": True}, {"a": np.arange(40_000, dtype=np.int64)}))  # more than the read buffer
    import io
    stream = io.BytesIO()

    class Sink:
        def sendall(self, data):
            stream.write(bytes(data))

    writer = Channel(Sink(), max_payload_bytes=0)
    for header, arrays in frames:
        writer.send(header, arrays)
    data = stream.getvalue()
    # seven bytes at a time (the prefix split too), odd chunks (some late), all at once: the same
    def send(chunk):
        for i in range(0, len(data), chunk):
            if chunk == 4093 and i % 7 == 0:
                time.sleep(0.002)  # longer than a short spin: the read blocks, then resumes
            left.sock.sendall(data[i:i + chunk])

    for chunk in (7, 4093, len(data)):
        sender = threading.Thread(target=send, args=(chunk,))
        sender.start()
        for header, arrays in frames:
            message = right.recv()
            assert message.header == header and np.array_equal(message.arrays["a"], arrays["a"])
            assert message.arrays["a"].flags.writeable  # a buffer of its own, not the read buffer
        sender.join()
    left.close()
    assert right.recv() is None


def test_channel_refuses_oversize_frames_and_mid_frame_eof():
    left, right = _pair(max_payload=16)
    left.send({}, {"x": np.zeros(100)})
    with pytest.raises(ChannelError):
        right.recv()
    left, right = _pair()
    left.sock.sendall(PREFIX.pack(MAGIC, 100, 0) + b"{")
    left.close()
    with pytest.raises(ChannelError):
        right.recv()
    left, right = _pair()
    left.sock.sendall(PREFIX.pack(MAGIC, 5, 0) + b"\xff\xfe{}x")
    with pytest.raises(ChannelError):
        right.recv()


def test_an_empty_folder_gives_an_empty_cohort_and_a_missing_one_faults(synth_entry, tmp_path):
    (tmp_path / "empty").mkdir()
    broker = make_broker(tmp_path / "empty", synth_entry, max_records=8)
    with served(broker) as (channel, _):
        reply = open_loader(channel)
        assert (reply["batches"], reply["records"]) == (0, 0)
        assert epoch(channel, reply["loader"]) == []
    assert broker.summary().records_used == 0
    with pytest.raises(SandboxFault):
        DicomFolderSource(tmp_path / "missing", synth_entry, ["image"], HMAC_KEY).index()
