"""The records reload: after a job, the edge reads the records it used and held back
again, through the job's own source, and gets exactly what the job's batches held."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge_kernel.data.broker import Broker
from edge_kernel.data.dicom_folder import DicomFolderSource
from edge_kernel.data.provenance import record_sets, save_provenance
from edge_kernel.data.reload import PSEUDONYM_KEY_FILE, reading_digest, reload_records
from edge_kernel.data.source import SourceFault
from edge_kernel.data.synth import make_synthetic_dataset, synthetic_dataset_entry
from edge_kernel.data.transforms import parse_transforms
from edge_kernel.settings import Settings
from jupyter_rapha.protocol.errors import BadInput, StorageFault
from tests.edge.conftest_data import HMAC_KEY, copy_folder, make_spec
from tests.edge.test_broker import epoch, open_loader, served

RECORDS = 40
HELD_BACK = 10


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo") / "synthetic-cxr"
    make_synthetic_dataset(folder, RECORDS, seed=7)  # what `rapha-edge init --demo` writes
    return folder


@pytest.fixture
def edge_settings(tmp_path) -> Settings:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / PSEUDONYM_KEY_FILE).write_text(HMAC_KEY.hex() + "\n")
    return Settings(config_dir=tmp_path, edge_id="test-edge")


def _job(entry, fields=("image", "finding")):
    """What a job's batches held, record by record, with each record's pseudonym: the
    loader walks the cohort in order (no shuffle), so batch position i is cohort[i]."""
    source = DicomFolderSource(entry.location, entry, fields, HMAC_KEY)
    broker = Broker(source, source.index(), RECORDS, 2, holdback_size=HELD_BACK, holdback_seed=4)
    with served(broker) as (channel, _):
        batches = epoch(channel, open_loader(channel, batch_size=7, shuffle=False)["loader"])
    seen = [{name: array[i] for name, array in batch.arrays.items()}
            for batch in batches for i in range(batch.header["count"])]
    return broker, [ref.pseudonym for ref in broker.cohort], seen


def _assert_same(reloaded, seen):
    assert len(reloaded) == len(seen)
    for again, original in zip(reloaded, seen, strict=True):
        assert again.keys() == original.keys()
        for name in original:
            assert again[name].dtype == original[name].dtype and again[name].shape == original[name].shape
            assert np.array_equal(again[name], original[name])


def test_the_used_records_come_back_as_the_job_saw_them(demo_folder, edge_settings):
    entry = synthetic_dataset_entry("synthetic-cxr", str(demo_folder))
    _, used, seen = _job(entry)
    spec = dataclasses.replace(make_spec("pass"), dataset="synthetic-cxr")
    reloaded = reload_records(entry, used, spec, edge_settings)
    _assert_same(reloaded, seen)
    assert {int(r["finding"]) for r in reloaded} == {0, 1}


def test_declared_transforms_are_applied_again(demo_folder, edge_settings):
    steps = parse_transforms([{"op": "intensity", "clip": [0, 1500], "scale_to": [-1, 1]},
                              {"op": "resize", "interpolation": "area"}], "synthetic-cxr.image")
    entry = synthetic_dataset_entry("synthetic-cxr", str(demo_folder), size=16, transforms=steps)
    _, used, seen = _job(entry)
    reloaded = reload_records(entry, used, dataclasses.replace(make_spec("pass"), dataset="synthetic-cxr"),
                              edge_settings)
    _assert_same(reloaded, seen)
    assert reloaded[0]["image"].shape == (1, 16, 16) and reloaded[0]["image"].min() < 0


def test_only_the_granted_fields_come_back(demo_folder, edge_settings):
    entry = synthetic_dataset_entry("synthetic-cxr", str(demo_folder))
    _, used, seen = _job(entry, fields=("image",))
    spec = dataclasses.replace(make_spec("pass", fields=("image",)), dataset="synthetic-cxr")
    reloaded = reload_records(entry, used, spec, edge_settings)
    assert all(record.keys() == {"image"} for record in reloaded)
    _assert_same(reloaded, seen)


def test_the_held_back_records_come_back_the_same_way(demo_folder, edge_settings):
    entry = synthetic_dataset_entry("synthetic-cxr", str(demo_folder))
    broker, _, _ = _job(entry)
    held_back = [ref.pseudonym for ref in broker.held_back]
    spec = dataclasses.replace(make_spec("pass"), dataset="synthetic-cxr")
    reloaded = reload_records(entry, held_back, spec, edge_settings)
    direct = [broker.source.load(ref) for ref in broker.held_back]
    assert len(reloaded) == HELD_BACK
    _assert_same(reloaded, [{k: np.asarray(v) for k, v in record.items()} for record in direct])


def test_a_record_gone_since_the_job_is_a_fault_that_names_no_record(demo_folder, edge_settings, tmp_path):
    folder = copy_folder(demo_folder, tmp_path / "copy")
    entry = synthetic_dataset_entry("synthetic-cxr", str(folder))
    _, used, _ = _job(entry)
    removed = sorted(folder.glob("*.dcm"))
    for path in removed:
        path.unlink()  # the whole folder: whichever records the job used are gone
    make_synthetic_dataset(folder, 3, seed=99)
    spec = dataclasses.replace(make_spec("pass"), dataset="synthetic-cxr")
    with pytest.raises(SourceFault) as fault:
        reload_records(entry, used, spec, edge_settings)
    assert f"{len(used)} of the job's records" in fault.value.message
    assert not any(p.hex()[:8] in fault.value.diagnostics() for p in used)


def test_a_pseudonym_the_dataset_never_had_is_a_fault(demo_folder, edge_settings):
    entry = synthetic_dataset_entry("synthetic-cxr", str(demo_folder))
    spec = dataclasses.replace(make_spec("pass"), dataset="synthetic-cxr")
    with pytest.raises(SourceFault):
        reload_records(entry, [b"\x00" * 32], spec, edge_settings)


def test_another_dataset_than_the_jobs_is_refused(demo_folder, edge_settings):
    entry = synthetic_dataset_entry("synthetic-cxr", str(demo_folder))
    with pytest.raises(BadInput):
        reload_records(entry, [], make_spec("pass"), edge_settings)  # the spec names synth-cxr


def test_without_the_pseudonym_key_nothing_is_read(demo_folder, tmp_path):
    entry = synthetic_dataset_entry("synthetic-cxr", str(demo_folder))
    spec = dataclasses.replace(make_spec("pass"), dataset="synthetic-cxr")
    with pytest.raises(StorageFault):
        reload_records(entry, [], spec, Settings(config_dir=tmp_path, edge_id="test-edge"))
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / PSEUDONYM_KEY_FILE).write_text("abcd")
    with pytest.raises(StorageFault):
        reload_records(entry, [], spec, Settings(config_dir=tmp_path, edge_id="test-edge"))


def test_a_dataset_whose_definition_changed_since_the_job_is_a_fault(demo_folder, edge_settings):
    entry = synthetic_dataset_entry("synthetic-cxr", str(demo_folder))
    _, used, seen = _job(entry)
    spec = dataclasses.replace(make_spec("pass"), dataset="synthetic-cxr")
    reading = reading_digest(entry, spec.fields)
    _assert_same(reload_records(entry, used, spec, edge_settings, reading=reading), seen)
    steps = parse_transforms([{"op": "intensity", "clip": [0, 1500], "scale_to": [0, 1]}], "synthetic-cxr.image")
    retransformed = synthetic_dataset_entry("synthetic-cxr", str(demo_folder), transforms=steps)
    with pytest.raises(SourceFault, match="definition changed"):
        reload_records(retransformed, used, spec, edge_settings, reading=reading)
    repriced = dataclasses.replace(entry, price_per_record="9", description="new words")
    assert reading_digest(repriced, spec.fields) == reading  # what does not change a record, does not count
    assert reading_digest(entry, ("image",)) != reading


def test_the_reading_is_kept_with_the_record_sets(demo_folder, tmp_path):
    entry = synthetic_dataset_entry("synthetic-cxr", str(demo_folder))
    broker, _, _ = _job(entry)
    save_provenance(tmp_path, broker.summary(), reading_digest(entry, ("image", "finding")))
    assert record_sets(tmp_path).reading == reading_digest(entry, ("finding", "image"))
