"""The synthetic dataset: real DICOM, learnable labels, fake identifiers that a leak test
can find; and the record pseudonym of docs/internals.md."""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from edge_kernel.data.pseudonym import record_pseudonym
from edge_kernel.cli import main as edge_cli
from edge_kernel.data.synth import (LABEL_CREATOR, LABEL_ELEMENT, LABEL_GROUP, SYNTH_IDENTIFIER_TAGS, SynthOptions,
                                    make_synthetic_dataset)
from jupyter_rapha.protocol.errors import BadInput
from tests.edge.conftest_data import HMAC_KEY, SYNTH_RECORDS, header_values


def _read_all(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]


def test_files_are_secondary_capture_monochrome_uint16(synth_folder):
    datasets = _read_all(synth_folder)
    assert len(datasets) == SYNTH_RECORDS
    for ds in datasets:
        assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.pixel_array.dtype == np.uint16 and ds.pixel_array.shape == (32, 32)


def test_label_lives_in_the_private_block(synth_folder):
    labels = [int(ds.private_block(LABEL_GROUP, LABEL_CREATOR)[LABEL_ELEMENT].value) for ds in _read_all(synth_folder)]
    assert set(labels) == {0, 1}
    assert min(Counter(labels).values()) >= SYNTH_RECORDS // 4


def test_label_is_learnable_from_the_pixels(synth_folder):
    hits = 0
    for ds in _read_all(synth_folder):
        pixels = ds.pixel_array.astype(float)
        guess = int(pixels[:, 16:].sum() > pixels[:, :16].sum())
        hits += guess == int(ds.private_block(LABEL_GROUP, LABEL_CREATOR)[LABEL_ELEMENT].value)
    assert hits >= 0.9 * SYNTH_RECORDS


def test_headers_carry_fake_identifiers_and_free_text(synth_folder):
    datasets = _read_all(synth_folder)
    for ds in datasets:
        for keyword in SYNTH_IDENTIFIER_TAGS:
            assert str(ds.get(keyword, "")), keyword
        assert str(ds.PatientName).split("^")[0] in ds.ImageComments
    per_patient = Counter(str(ds.PatientID) for ds in datasets)
    assert max(per_patient.values()) >= 2 and min(per_patient.values()) == 1
    assert len({str(ds.SOPInstanceUID) for ds in datasets}) == SYNTH_RECORDS
    assert len(header_values(synth_folder)) > 100


def test_file_names_carry_no_identifier(synth_folder):
    values = header_values(synth_folder)
    for path in synth_folder.iterdir():
        assert not any(value in path.name for value in values)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    make_synthetic_dataset(tmp_path / "a", 3, seed=1)
    make_synthetic_dataset(tmp_path / "b", 3, seed=1)
    make_synthetic_dataset(tmp_path / "c", 3, seed=2)
    first = (tmp_path / "a" / "img00001.dcm").read_bytes()
    assert first == (tmp_path / "b" / "img00001.dcm").read_bytes()
    assert first != (tmp_path / "c" / "img00001.dcm").read_bytes()


def test_entry_declares_the_schema_and_the_label_mapping(synth_entry):
    assert synth_entry.schema() == {
        "image": {"dtype": "float32", "shape": [1, 32, 32], "kind": "feature"},
        "finding": {"dtype": "int64", "shape": [], "kind": "label"},
    }
    assert synth_entry.labels["finding"] == {"source": "dicom-private", "creator": "RAPHA SYNTH",
                                             "group": 0x0019, "element": 0x10}


def test_refuses_an_empty_dataset(tmp_path):
    with pytest.raises(ValueError):
        make_synthetic_dataset(tmp_path, 0)


# --- pseudonyms ---------------------------------------------------------------------

def test_pseudonym_is_the_documented_hmac():
    expected = hmac.new(HMAC_KEY, b"record\0MRN1\x001.2.3", hashlib.sha256).digest()
    assert record_pseudonym(HMAC_KEY, "MRN1", "1.2.3") == expected


def test_pseudonym_depends_on_key_patient_and_instance():
    base = record_pseudonym(HMAC_KEY, "MRN1", "1.2.3")
    assert base == record_pseudonym(HMAC_KEY, "MRN1", "1.2.3")
    assert base != record_pseudonym(b"another key of enough length", "MRN1", "1.2.3")
    assert base != record_pseudonym(HMAC_KEY, "MRN2", "1.2.3")
    assert base != record_pseudonym(HMAC_KEY, "MRN1", "1.2.4")
    assert b"MRN1" not in base


@pytest.mark.parametrize("key,patient,uid", [
    (b"short", "MRN1", "1.2.3"), (HMAC_KEY, "", "1.2.3"), (HMAC_KEY, "MRN1", ""),
    (HMAC_KEY, "MRN1\0", "1.2.3"), (HMAC_KEY, "MRN1", "1.2\x003"),
])
def test_pseudonym_refuses_weak_key_empty_or_ambiguous_ids(key, patient, uid):
    with pytest.raises(BadInput):
        record_pseudonym(key, patient, uid)


# --- what a PACS holds: sizes, CT, MONOCHROME1, multi-frame, RLE -------------------------

def _variant(tmp_path: Path, name: str, n: int = 4, **options) -> list[pydicom.Dataset]:
    make_synthetic_dataset(tmp_path / name, n, seed=21, options=SynthOptions(**options))
    return _read_all(tmp_path / name)


def test_sizes_are_cycled_record_by_record(tmp_path):
    found = _variant(tmp_path, "sizes", n=6, sizes=((64, 64), (48, 80), (40, 30)))
    assert [ds.pixel_array.shape for ds in found] == [(64, 64), (48, 80), (40, 30)] * 2


def test_ct_is_stored_unsigned_with_a_hounsfield_rescale(tmp_path):
    for ds in _variant(tmp_path, "ct", sizes=((48, 48),), modality="CT"):
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage and ds.Modality == "CT"
        assert (ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType) == (-1024, 1, "HU")
        assert ds.PixelRepresentation == 0 and ds.BitsStored == 12 and ds.pixel_array.dtype == np.uint16
        assert list(ds.WindowCenter) == [40, -600] and list(ds.WindowWidth) == [400, 1500]
        hu = ds.pixel_array.astype(int) - 1024
        assert hu.min() < -950 and hu.max() > 600  # air and bone


def test_monochrome1_stores_the_same_image_inverted(tmp_path):
    plain = _variant(tmp_path, "m2")
    inverted = _variant(tmp_path, "m1", photometric="MONOCHROME1")
    for a, b in zip(plain, inverted, strict=True):
        assert b.PhotometricInterpretation == "MONOCHROME1"
        assert np.array_equal(b.pixel_array, 4095 - a.pixel_array)


def test_multi_frame_objects_carry_their_frame_count(tmp_path):
    for ds in _variant(tmp_path, "mf", frames=3):
        assert ds.NumberOfFrames == 3 and ds.pixel_array.shape == (3, 32, 32)
        assert ds.SOPClassUID == pydicom.uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage


def test_rle_lossless_keeps_pixels_and_planted_identifiers(tmp_path):
    plain = _variant(tmp_path, "plain", frames=2)
    rle = _variant(tmp_path, "rle", frames=2, transfer_syntax="rle")
    for a, b in zip(plain, rle, strict=True):
        assert b.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
        assert np.array_equal(a.pixel_array, b.pixel_array)
        for keyword in SYNTH_IDENTIFIER_TAGS:
            assert str(b.get(keyword, "")) and str(b.get(keyword)) == str(a.get(keyword)), keyword


@pytest.mark.parametrize("options", [{"sizes": ((4, 64),)}, {"modality": "MR"}, {"frames": 0},
                                     {"slices": 3}, {"modality": "CT", "slices": 2, "frames": 2},
                                     {"modality": "CT", "slices": 65}, {"transfer_syntax": "jpeg"},
                                     {"modality": "CT", "photometric": "MONOCHROME1"}])
def test_options_it_cannot_write_are_refused(tmp_path, options):
    with pytest.raises(ValueError):
        make_synthetic_dataset(tmp_path, 1, options=SynthOptions(**options))


def test_the_synth_command_writes_a_mixed_ct_and_refuses_bad_sizes(tmp_path, capsys):
    assert edge_cli(["synth", str(tmp_path / "ct"), "--n", "3", "--sizes", "40x48,32x32", "--modality", "CT",
                     "--transfer-syntax", "rle"]) == 0
    found = _read_all(tmp_path / "ct")
    assert [ds.pixel_array.shape for ds in found] == [(40, 48), (32, 32), (40, 48)]
    assert {ds.file_meta.TransferSyntaxUID for ds in found} == {pydicom.uid.RLELossless}
    assert edge_cli(["synth", str(tmp_path / "x"), "--sizes", "40x48,big"]) == 1
    assert "--sizes takes ROWSxCOLUMNS" in capsys.readouterr().err
    assert edge_cli(["synth", str(tmp_path / "y"), "--slices", "4"]) == 1
    assert "slices (1 to 64) make a CT series" in capsys.readouterr().err


# --- CT volumes: series of slices, Enhanced CT, shuffled names --------------------------

def test_a_ct_series_per_record_with_geometry_and_a_slope_per_slice(tmp_path):
    found = _variant(tmp_path, "series", n=3, modality="CT", slices=5)
    assert len(found) == 15 and len({ds.SeriesInstanceUID for ds in found}) == 3
    for uid in {ds.SeriesInstanceUID for ds in found}:
        slices = sorted((ds for ds in found if ds.SeriesInstanceUID == uid), key=lambda ds: ds.InstanceNumber)
        z = [float(ds.ImagePositionPatient[2]) for ds in slices]
        assert np.allclose(np.diff(z), 2.5) and all(list(ds.ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
                                                    for ds in slices)
        assert [float(ds.RescaleSlope) for ds in slices] == [1.0, 0.5, 1.0, 0.5, 1.0]
        assert {float(ds.RescaleIntercept) for ds in slices} == {-1024.0}
        assert len({ds.PatientID for ds in slices}) == 1 and len({ds.SOPInstanceUID for ds in slices}) == 5
        labels = {ds.private_block(LABEL_GROUP, LABEL_CREATOR)[LABEL_ELEMENT].value for ds in slices}
        assert len(labels) == 1  # one label per series
        for ds in slices:  # every slice carries the planted identifiers
            assert all(str(ds.get(keyword, "")) for keyword in SYNTH_IDENTIFIER_TAGS)
            hu = ds.pixel_array * float(ds.RescaleSlope) - 1024
            assert hu.min() < -950 and hu.max() > 600


def test_an_enhanced_ct_object_holds_its_geometry_per_frame(tmp_path):
    for ds in _variant(tmp_path, "enhanced", n=2, modality="CT", frames=4, transfer_syntax="rle"):
        assert ds.SOPClassUID == pydicom.uid.EnhancedCTImageStorage and ds.NumberOfFrames == 4
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless and ds.pixel_array.shape == (4, 32, 32)
        shared = ds.SharedFunctionalGroupsSequence[0]
        assert list(shared.PixelMeasuresSequence[0].PixelSpacing) == [0.8, 0.8]
        frames = ds.PerFrameFunctionalGroupsSequence
        assert [float(f.PixelValueTransformationSequence[0].RescaleSlope) for f in frames] == [1.0, 0.5, 1.0, 0.5]
        assert np.allclose(np.diff([float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in frames]), 2.5)
        assert all(str(ds.get(keyword, "")) for keyword in SYNTH_IDENTIFIER_TAGS)


def test_shuffle_names_files_out_of_order_and_keeps_their_content(tmp_path):
    plain = _variant(tmp_path, "in-order", n=2, modality="CT", slices=4)
    make_synthetic_dataset(tmp_path / "shuffled", 2, seed=21, options=SynthOptions(modality="CT", slices=4,
                                                                                  shuffle=True))
    shuffled = _read_all(tmp_path / "shuffled")
    assert [ds.SOPInstanceUID for ds in shuffled] != [ds.SOPInstanceUID for ds in plain]
    assert sorted(ds.SOPInstanceUID for ds in shuffled) == sorted(ds.SOPInstanceUID for ds in plain)
    by_uid = {ds.SOPInstanceUID: ds for ds in plain}
    assert all(np.array_equal(ds.pixel_array, by_uid[ds.SOPInstanceUID].pixel_array) for ds in shuffled)


def test_the_synth_command_writes_shuffled_ct_series(tmp_path, capsys):
    assert edge_cli(["synth", str(tmp_path / "s"), "--n", "2", "--modality", "CT", "--slices", "3",
                     "--shuffle"]) == 0
    assert "series of 3 slices" in capsys.readouterr().out and len(_read_all(tmp_path / "s")) == 6
    assert edge_cli(["synth", str(tmp_path / "e"), "--n", "2", "--modality", "CT", "--frames", "3"]) == 0
    assert {ds.SOPClassUID for ds in _read_all(tmp_path / "e")} == {pydicom.uid.EnhancedCTImageStorage}
