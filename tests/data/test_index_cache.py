"""The folder dataset's index kept between jobs (``index_cache.py``): unchanged files are
not read again; an added, changed and removed file are picked up; consent is applied
afresh; the file holds no identifier."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from edge_kernel.data.consent import OptOutList
from edge_kernel.data.dicom_folder import DicomFolderSource
from edge_kernel.data.registry import Dataset
from edge_kernel.data.source import Index
from edge_kernel.data.synth import make_synthetic_dataset
from tests.edge.conftest_data import HMAC_KEY, header_values

FIELDS = ["image", "finding"]


@pytest.fixture
def folder(synth_folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "dicom"
    shutil.copytree(synth_folder, copy)
    return copy


def _index(folder: Path, entry: Dataset, cache: Path, consent: OptOutList | None = None
           ) -> tuple[Index, int]:
    source = DicomFolderSource(folder, entry, FIELDS, HMAC_KEY, consent, cache_dir=cache)
    index = source.index()
    assert source.index_cache is not None
    return index, source.index_cache.reread


def _refs(index: Index) -> list[tuple[bytes, bytes, str, bytes]]:
    return [(r.pseudonym, r.patient, r.location, r.digest) for r in index.records]


def test_an_unchanged_folder_is_not_read_again(folder: Path, synth_entry: Dataset, tmp_path: Path) -> None:
    plain = DicomFolderSource(folder, synth_entry, FIELDS, HMAC_KEY).index()
    first, read = _index(folder, synth_entry, tmp_path / "cache")
    assert read == len(list(folder.iterdir()))
    second, read_again = _index(folder, synth_entry, tmp_path / "cache")
    assert read_again == 0
    assert _refs(first) == _refs(second) == _refs(plain)
    assert first.skipped == second.skipped == plain.skipped


def test_an_added_changed_and_removed_file_are_picked_up(folder: Path, synth_entry: Dataset,
                                                         tmp_path: Path) -> None:
    before, _ = _index(folder, synth_entry, tmp_path / "cache")
    files = sorted(folder.iterdir())
    removed, changed = files[0], files[1]
    removed.unlink()
    data = bytearray(changed.read_bytes())
    data[-1] ^= 1  # one pixel: the same record, another content digest
    changed.write_bytes(bytes(data))
    info = changed.stat()
    os.utime(changed, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
    other = tmp_path / "other"
    make_synthetic_dataset(other, 1, seed=99)
    added = next(other.iterdir())
    shutil.copy(added, folder / "zz-added.dcm")
    after, read = _index(folder, synth_entry, tmp_path / "cache")
    assert read == 2  # the added and the changed file, nothing else
    fresh = DicomFolderSource(folder, synth_entry, FIELDS, HMAC_KEY).index()
    assert _refs(after) == _refs(fresh)
    locations = {r.location: r for r in after.records}
    old = {r.location: r for r in before.records}
    assert str(removed) not in locations
    assert str(folder / "zz-added.dcm") in locations and str(folder / "zz-added.dcm") not in old
    assert locations[str(changed)].digest != old[str(changed)].digest
    assert locations[str(changed)].pseudonym == old[str(changed)].pseudonym


def test_consent_is_applied_afresh_over_a_cached_index(folder: Path, synth_entry: Dataset,
                                                       tmp_path: Path) -> None:
    import pydicom

    everyone, _ = _index(folder, synth_entry, tmp_path / "cache")
    patient_id = str(pydicom.dcmread(sorted(folder.iterdir())[0]).PatientID)
    consent = OptOutList(frozenset({patient_id}))
    opted, read = _index(folder, synth_entry, tmp_path / "cache", consent)
    plain = DicomFolderSource(folder, synth_entry, FIELDS, HMAC_KEY, consent).index()
    assert read == 0
    assert opted.consent_excluded == plain.consent_excluded >= 1
    assert _refs(opted) == _refs(plain)
    assert len(opted.records) == len(everyone.records) - opted.consent_excluded


def test_the_index_file_holds_no_identifier(folder: Path, synth_entry: Dataset, tmp_path: Path) -> None:
    _index(folder, synth_entry, tmp_path / "cache")
    (cached,) = (tmp_path / "cache").iterdir()
    assert cached.name.startswith("index-") and cached.stat().st_mode & 0o777 == 0o600
    text = cached.read_bytes()
    assert [v for v in header_values(folder) if v.encode() in text] == []
    assert b"dcm" not in text and str(folder).encode() not in text


def test_a_damaged_index_file_is_read_again_from_the_folder(folder: Path, synth_entry: Dataset,
                                                            tmp_path: Path) -> None:
    first, _ = _index(folder, synth_entry, tmp_path / "cache")
    (cached,) = (tmp_path / "cache").iterdir()
    cached.write_text('{"version": 1, "files": {"x": [1, 2, {"p": "zz"}]}')
    again, read = _index(folder, synth_entry, tmp_path / "cache")
    assert read == len(list(folder.iterdir()))
    assert _refs(again) == _refs(first)
    cached.write_text("not json")
    assert _refs(_index(folder, synth_entry, tmp_path / "cache")[0]) == _refs(first)


def test_another_reading_keeps_an_index_of_its_own(folder: Path, synth_entry: Dataset, tmp_path: Path) -> None:
    _index(folder, synth_entry, tmp_path / "cache")
    source = DicomFolderSource(folder, synth_entry, ["image"], HMAC_KEY, cache_dir=tmp_path / "cache")
    source.index()
    assert source.index_cache is not None and source.index_cache.reread == len(list(folder.iterdir()))
    assert len(list((tmp_path / "cache").iterdir())) == 2
