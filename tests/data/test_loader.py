"""The RaphaDataLoader against a real broker: shared-memory batches, prefetch, early
break, several shuffled epochs under a budget; consent before counting; pydicom's own
warnings (which quote header values) silenced; registry entries of the foundation still
parse."""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import warnings

import numpy as np
import pytest
import torch

from edge_kernel.data import dicom_record
from edge_kernel.data.broker import Broker
from edge_kernel.data.consent import OptOutList
from edge_kernel.data.dicom_folder import DicomFolderSource
from edge_kernel.data.registry import parse_dataset
from edge_kernel.wire.channel import Channel, SharedArena
from edge_kernel.inside.runtime import BrokerRefused, Rapha
from jupyter_rapha.protocol.errors import BadInput, SandboxFault
from tests.edge.conftest_data import HMAC_KEY, SYNTH_RECORDS, header_values, leaked
from tests.edge.test_broker import RecordingSocket, _broken_folder


def _job_side(broker: Broker, shared: bool = True, arena_bytes: int = 16 * 1024 * 1024):
    """A Rapha object wired to the broker as the job process would be (same classes)."""
    arena = SharedArena.create(arena_bytes) if shared else None
    broker.arena = arena
    broker_end, job_end = socket.socketpair()
    thread = threading.Thread(target=broker.serve, args=(broker_end,), daemon=True)
    thread.start()
    recorder = RecordingSocket(job_end)
    job_arena = SharedArena.attach(os.dup(arena.fd)) if arena else None
    rapha = Rapha(Channel(recorder, max_payload_bytes=1 << 30), {}, {}, None, job_arena)
    return rapha, recorder, thread, job_end


def _finish(thread, job_end):
    job_end.close()
    thread.join(5)
    assert not thread.is_alive()


def _keys(batch) -> list[bytes]:
    return [image.numpy().tobytes() for image in batch["image"]]


def test_the_budget_holds_exactly_under_shuffle_prefetch_breaks_and_several_epochs(synth_folder, synth_entry):
    source = DicomFolderSource(synth_folder, synth_entry, ["image", "finding"], HMAC_KEY)
    broker = Broker(source, source.index(), 20, 3)
    rapha, recorder, thread, job_end = _job_side(broker)
    loader = rapha.loader(batch_size=6, shuffle=True, seed=4, prefetch=3)
    epochs = []
    for _ in range(4):
        epochs.append([k for batch in loader for k in _keys(batch)])
    for _batch in loader:  # stop early: prefetched answers are drained, the channel stays in step
        break
    other = rapha.loader(batch_size=20, shuffle=False, prefetch=0)
    again = [k for batch in other for k in _keys(batch)]
    _finish(thread, job_end)
    assert [len(e) for e in epochs] == [20] * 4 and len(loader) == 4
    assert all(set(e) == set(again) for e in epochs) and len(set(again)) == 20
    assert epochs[0] != epochs[1]  # reshuffled each epoch, same cohort
    assert broker.summary().records_used == 20 and not broker.job_misbehaved and broker.fault is None
    # the socket carried headers only: the pixels went through shared memory
    assert len(recorder.received) < 20 * 32 * 32 * 4


@pytest.mark.parametrize("arena_bytes", [16 * 1024 * 1024, 3 * 8 * 32 * 32 * 4 + 1024])
def test_leased_copied_and_socket_batches_are_identical_and_deterministic(synth_folder, synth_entry, arena_bytes):
    results = []
    for shared, copy in ((True, False), (False, False), (True, True), (True, False)):
        source = DicomFolderSource(synth_folder, synth_entry, ["image", "finding"], HMAC_KEY)
        broker = Broker(source, source.index(), 32, 9)
        rapha, recorder, thread, job_end = _job_side(broker, shared, arena_bytes)
        loader = rapha.loader(batch_size=8, seed=2, copy=copy)
        batches = list(loader)  # every batch kept: leases must not be written over
        _finish(thread, job_end)
        assert all(b["image"].dtype == torch.float32 and b["finding"].dtype == torch.int64 for b in batches)
        results.append(torch.cat([b["image"] for b in batches]))
        if shared and not copy and arena_bytes < 1 << 20:
            # a small arena fills with kept batches; the rest came over the socket, the same
            assert len(recorder.received) > 8 * 32 * 32 * 4
    assert len({image.numpy().tobytes() for image in results[0]}) == 32
    assert all(torch.equal(results[0], other) for other in results[1:])


def test_a_leased_region_is_reused_only_once_every_tensor_of_its_batch_is_gone(synth_folder, synth_entry):
    source = DicomFolderSource(synth_folder, synth_entry, ["image", "finding"], HMAC_KEY)
    broker = Broker(source, source.index(), 64, 1)
    rapha, _, thread, job_end = _job_side(broker)
    loader = rapha.loader(batch_size=8, shuffle=False, prefetch=2)
    first = next(iter(loader))  # the generator is dropped: its prefetched batches drained
    label = first["finding"]
    view = first["image"][3].numpy()[0, :4]  # a view of a view, through numpy
    expected = view.copy()
    del first
    assert rapha._arena.in_use() == 1  # held by the label tensor and the numpy view
    for _ in range(3):
        for batch in loader:  # noqa: B007 - the last batch stays bound, counted below
            pass
    assert np.array_equal(view, expected)  # later epochs did not write over it
    assert rapha._arena.in_use() == 2  # that batch, and the last one still bound to ``batch``
    del label, batch
    assert rapha._arena.in_use() == 1  # the view alone still holds it
    del view
    assert rapha._arena.in_use() == 0
    _finish(thread, job_end)


def test_the_arena_is_sealed_against_resizing():
    arena = SharedArena.create(1 << 20)
    assert arena is not None
    seals = fcntl.fcntl(arena.fd, fcntl.F_GET_SEALS)
    assert seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_GROW and seals & fcntl.F_SEAL_SEAL
    with pytest.raises(OSError):
        os.ftruncate(arena.fd, 0)  # a job that tried this would crash the broker's next write
    with pytest.raises(SandboxFault):
        arena.array(1 << 20, np.dtype("float32"), (4,))
    arena.close()


def test_bad_loader_arguments_fail_early_in_the_job(synth_folder, synth_entry):
    source = DicomFolderSource(synth_folder, synth_entry, ["image"], HMAC_KEY)
    broker = Broker(source, source.index(), 8, 1)
    rapha, _, thread, job_end = _job_side(broker)
    with pytest.raises(ValueError):
        rapha.loader(prefetch=99)
    with pytest.raises(BrokerRefused):
        rapha.loader(batch_size=0)
    _finish(thread, job_end)


def test_opted_out_patients_never_cross_and_the_cohort_is_counted_after(synth_folder, synth_entry, tmp_path):
    import pydicom

    pids = sorted({str(pydicom.dcmread(p, stop_before_pixels=True).PatientID) for p in synth_folder.glob("*.dcm")})
    (tmp_path / "optout.txt").write_text("\n".join(pids[:10]) + "\n")
    consent = OptOutList.from_file(tmp_path / "optout.txt")
    everyone = DicomFolderSource(synth_folder, synth_entry, ["image"], HMAC_KEY)
    excluded_images = {everyone.load(r)["image"].tobytes() for r in everyone.index().records}
    source = DicomFolderSource(synth_folder, synth_entry, ["image"], HMAC_KEY, consent)
    index = source.index()
    kept_images = {source.load(r)["image"].tobytes() for r in index.records}
    excluded_images -= kept_images
    assert index.consent_excluded == len(excluded_images) > 0
    broker = Broker(source, index, 1000, 1)
    rapha, _, thread, job_end = _job_side(broker)
    seen = {k for batch in rapha.loader(batch_size=16) for k in _keys(batch)}
    _finish(thread, job_end)
    assert seen == kept_images and not (seen & excluded_images)
    assert broker.summary().cohort_size == len(index.records) == SYNTH_RECORDS - len(excluded_images)
    with pytest.raises(SandboxFault):
        OptOutList.from_file(tmp_path / "missing.txt")  # a configured list that is gone stops the job


def test_pydicom_warnings_never_surface(synth_folder, synth_entry, tmp_path):
    folder = _broken_folder(synth_folder, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        dicom_record.quiet_pydicom()
        DicomFolderSource(folder, synth_entry, ["image", "finding"], HMAC_KEY).index()
    assert [str(w.message) for w in caught] == []


def test_labels_naming_identifying_or_free_text_attributes_are_refused(synth_folder, synth_entry):
    for keyword in ("PatientAge", "ImageComments", "StudyDate", "PatientWeight", "SOPInstanceUID"):
        label = {"source": "dicom-tag", "keyword": keyword}
        entry = parse_dataset({**synth_entry.to_dict(), "labels": {"finding": label}})
        with pytest.raises(BadInput):
            DicomFolderSource(synth_folder, entry, ["finding"], HMAC_KEY)
    entry = parse_dataset({**synth_entry.to_dict(), "labels": {"finding": {"source": "dicom-tag", "keyword": "Rows"}}})
    index = DicomFolderSource(synth_folder, entry, ["finding"], HMAC_KEY).index()
    assert len(index.records) == SYNTH_RECORDS


def test_registry_entries_of_the_foundation_still_parse_and_unknown_sources_are_refused(synth_entry):
    old = {k: v for k, v in synth_entry.to_dict().items() if k not in ("features", "options", "opt_out")}
    parsed = parse_dataset(old)
    assert parsed.source == "dicom-folder" and parsed.features == {} and parsed.opt_out == ""
    with pytest.raises(BadInput):
        parse_dataset({**old, "source": "ftp"})
    with pytest.raises(BadInput):
        parse_dataset({**old, "options": []})


def test_no_header_value_crosses_through_shared_memory(synth_folder, synth_entry):
    source = DicomFolderSource(synth_folder, synth_entry, ["image", "finding"], HMAC_KEY)
    broker = Broker(source, source.index(), SYNTH_RECORDS, 1)
    rapha, recorder, thread, job_end = _job_side(broker)
    for _ in rapha.loader(batch_size=16, copy=False):
        pass
    shared = bytes(rapha._arena.shared.mm[:])
    _finish(thread, job_end)
    values = header_values(synth_folder)
    assert leaked(shared, values) == [] and leaked(bytes(recorder.received), values) == []


def test_leases_freed_by_the_collector_or_another_thread_do_not_deadlock_or_leak(synth_folder, synth_entry):
    import gc

    source = DicomFolderSource(synth_folder, synth_entry, ["image", "finding"], HMAC_KEY)
    broker = Broker(source, source.index(), 64, 1)
    rapha, _, thread, job_end = _job_side(broker, arena_bytes=6 * 8 * 32 * 32 * 4 + 4096)
    loader = rapha.loader(batch_size=8, prefetch=2)
    handed = []
    for _ in range(3):
        for batch in loader:
            cycle = {"batch": batch}
            cycle["self"] = cycle  # only the collector frees this one, possibly mid-allocation
            handed.append(batch)
            if len(handed) == 4:  # another thread drops its references
                worker = threading.Thread(target=handed.clear)
                worker.start()
                worker.join()
        del batch, cycle
    handed.clear()
    gc.collect()
    assert rapha._arena.in_use() == 0
    _finish(thread, job_end)
