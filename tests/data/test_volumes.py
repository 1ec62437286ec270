"""Series as records from a DICOM folder: CT series written with shuffled file names and a
rescale slope that differs per slice are assembled in slice order, in Hounsfield units as
pydicom's ``apply_modality_lut`` gives them slice by slice; an Enhanced CT object is read
as a volume from its functional groups; a series that cannot be one volume is skipped
with a fixed reason and nothing of it is cached."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels.processing import apply_modality_lut

from edge_kernel.cli import main as edge_cli
from edge_kernel.data import volume
from edge_kernel.data.dicom_folder import DicomFolderSource
from edge_kernel.data.pseudonym import patient_pseudonym, record_pseudonym, series_pseudonym
from edge_kernel.data.registry import parse_dataset
from edge_kernel.data.synth import (PIXEL_SPACING_MM, SLICE_SPACING_MM, SYNTH_IDENTIFIER_TAGS, SynthOptions,
                                    make_synthetic_dataset, synthetic_dataset_entry)
from edge_kernel.data.transforms import parse_transforms
from jupyter_rapha.protocol.errors import BadInput, SandboxFault
from tests.edge.conftest_data import HMAC_KEY

SLICES, SERIES = 6, 4
HU = parse_transforms(["modality_lut"], "test")
REASONS = {volume.TOO_FEW, volume.NO_GEOMETRY, volume.MIXED_OBJECTS, volume.MIXED_SIZES, volume.MIXED_ORIENTATIONS,
           volume.MIXED_PIXEL_SPACING, volume.MIXED_PHOTOMETRIC, volume.DUPLICATE_POSITION, volume.MISSING_SLICE,
           volume.UNEVEN_SPACING, volume.LABEL_DIFFERS}


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("series") / "dicom"
    make_synthetic_dataset(folder, SERIES, seed=5, options=SynthOptions(modality="CT", slices=SLICES, shuffle=True))
    return folder


def _source(folder: Path, transforms=HU, slices: int = SLICES, fields=("image", "finding"), **kw) -> DicomFolderSource:
    entry = synthetic_dataset_entry("ct-series", str(folder), slices=slices, transforms=transforms, **kw)
    return DicomFolderSource(folder, entry, list(fields), HMAC_KEY)


def _by_series(folder: Path) -> dict[str, list[tuple[Path, pydicom.Dataset]]]:
    """Each series' files in slice order by the reference: z of ImagePositionPatient."""
    found = defaultdict(list)
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        found[ds.SeriesInstanceUID].append((path, ds))
    return {uid: sorted(items, key=lambda item: float(item[1].ImagePositionPatient[2])) for uid, items in found.items()}


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_shuffled_ct_series_are_assembled_in_slice_order_in_hounsfield_units(ct_series):
    reference = _by_series(ct_series)
    assert len(reference) == SERIES and all(len(files) == SLICES for files in reference.values())
    # the files really are shuffled: the folder's name order is not the slice order
    assert any([p.name for p, _ in files] != sorted(p.name for p, _ in files) for files in reference.values())
    source = _source(ct_series)
    index = source.index()
    assert index.skipped == {} and len(index.records) == SERIES
    by_pseudonym = {ref.pseudonym: ref for ref in index.records}
    for uid, files in reference.items():
        first = files[0][1]
        assert {float(ds.RescaleSlope) for _, ds in files} == {1.0, 0.5}  # slope differs per slice
        pseudonym = series_pseudonym(HMAC_KEY, first.PatientID, uid)
        ref = by_pseudonym[pseudonym]
        assert ref.patient == patient_pseudonym(HMAC_KEY, first.PatientID)
        record = source.load(ref)
        assert record["image"].shape == (SLICES, 32, 32) and record["image"].dtype == np.float32
        for depth, (_, ds) in enumerate(files):
            expected = apply_modality_lut(ds.pixel_array, ds)
            assert np.abs(record["image"][depth] - expected).max() < 0.5
        assert record["finding"] == int(first.private_block(0x0019, "RAPHA SYNTH")[0x10].value)


def test_a_series_is_one_record_named_by_patient_and_series(ct_series):
    index = _source(ct_series).index()
    instances = {record_pseudonym(HMAC_KEY, ds.PatientID, ds.SOPInstanceUID)
                 for files in _by_series(ct_series).values() for _, ds in files}
    assert len({ref.pseudonym for ref in index.records}) == SERIES
    assert not {ref.pseudonym for ref in index.records} & instances
    # the series' location holds paths for the broker only; no record field carries one
    assert all(ref.location.count("\0") == SLICES for ref in index.records)


def test_default_scaling_and_a_volume_resize(ct_series):
    plain = _source(ct_series, transforms=())
    ref = plain.index().records[0]
    image = plain.load(ref)["image"]
    assert image.shape == (SLICES, 32, 32) and 0.0 <= image.min() and image.max() <= 1.0
    resized = _source(ct_series, transforms=parse_transforms(["modality_lut", {"op": "resize",
                                                                               "interpolation": "area"}], "t"),
                      slices=3, size=16)
    hu = _source(ct_series).load(ref)["image"].astype(np.float64)
    expected = hu.reshape(3, 2, 16, 2, 16, 2).mean(axis=(1, 3, 5))  # area over 2x2x2 blocks
    assert np.allclose(resized.load(ref)["image"], expected, atol=1e-3)


def test_spacing_resamples_to_millimetres_and_centres_the_volume(ct_series):
    ref = _source(ct_series).index().records[0]
    hu = _source(ct_series).load(ref)["image"].astype(np.float64)
    mm = [2 * SLICE_SPACING_MM, 2 * PIXEL_SPACING_MM, 2 * PIXEL_SPACING_MM]
    spaced = _source(ct_series, slices=4, size=16,
                     transforms=parse_transforms(["modality_lut", {"op": "spacing", "mm": mm,
                                                                   "interpolation": "linear"}], "t"))
    image = spaced.load(ref)["image"]
    # twice the voxel size: linear samples fall midway, the mean of 2x2x2 neighbours
    expected = hu.reshape(3, 2, 16, 2, 16, 2).mean(axis=(1, 3, 5))
    assert image.shape == (4, 16, 16)
    assert np.allclose(image[:3], expected, atol=1e-3)
    assert np.all(image[3] == -1024.0)  # outside the scanned field: the lowest HU the rescale gives
    native = _source(ct_series, transforms=parse_transforms(
        ["modality_lut", {"op": "spacing", "mm": [SLICE_SPACING_MM, PIXEL_SPACING_MM, PIXEL_SPACING_MM],
                          "interpolation": "nearest"}], "t"))
    assert np.array_equal(native.load(ref)["image"], hu.astype(np.float32))


def test_an_enhanced_ct_object_is_read_as_a_volume(tmp_path):
    folder = tmp_path / "enhanced"
    make_synthetic_dataset(folder, 2, seed=8, options=SynthOptions(modality="CT", frames=5, transfer_syntax="rle"))
    source = _source(folder, slices=5)
    index = source.index()
    assert index.skipped == {} and len(index.records) == 2
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == pydicom.uid.EnhancedCTImageStorage and "RescaleSlope" not in ds
        ref = next(r for r in index.records if r.pseudonym == series_pseudonym(HMAC_KEY, ds.PatientID,
                                                                                ds.SeriesInstanceUID))
        image = source.load(ref)["image"]
        frames = ds.pixel_array
        for depth, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
            rescale = group.PixelValueTransformationSequence[0]
            expected = apply_modality_lut(frames[depth], rescale)
            assert np.abs(image[depth] - expected).max() < 0.5


def _rewrite(path: Path, **changes) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


def _files_of_one_series(folder: Path) -> list[Path]:
    return [path for path, _ in next(iter(_by_series(folder).values()))]


def _damage(folder: Path, how: str) -> None:
    files = _files_of_one_series(folder)
    if how == "missing slice":
        files[2].unlink()
    elif how == "mixed orientation":
        _rewrite(files[3], ImageOrientationPatient=[1, 0, 0, 0, 0.8, -0.6])
    elif how == "pixel spacing":
        _rewrite(files[1], PixelSpacing=[0.7, 0.7])
    elif how == "uneven spacing":
        position = list(pydicom.dcmread(files[3]).ImagePositionPatient)
        _rewrite(files[3], ImagePositionPatient=position[:2] + [float(position[2]) + 1.0])
    elif how == "sizes":
        _rewrite(files[0], Rows=16, Columns=16, PixelData=np.zeros((16, 16), np.uint16).tobytes())
    elif how == "duplicate":
        position = pydicom.dcmread(files[1]).ImagePositionPatient
        _rewrite(files[2], ImagePositionPatient=position)
    elif how == "no position":
        ds = pydicom.dcmread(files[4])
        del ds.ImagePositionPatient
        ds.save_as(files[4])


@pytest.mark.parametrize("how, reason", [
    ("missing slice", volume.MISSING_SLICE), ("mixed orientation", volume.MIXED_ORIENTATIONS),
    ("pixel spacing", volume.MIXED_PIXEL_SPACING), ("uneven spacing", volume.UNEVEN_SPACING),
    ("sizes", volume.MIXED_SIZES), ("duplicate", volume.DUPLICATE_POSITION), ("no position", volume.NO_GEOMETRY)])
def test_a_series_that_is_not_one_volume_is_skipped_with_its_reason(ct_series, tmp_path, how, reason):
    folder = _copy(ct_series, tmp_path)
    _damage(folder, how)
    index = _source(folder).index()
    assert index.skipped == {reason: 1} and len(index.records) == SERIES - 1
    assert set(index.skipped) <= REASONS


def test_skip_reasons_carry_no_identifier(ct_series, tmp_path):
    folder = _copy(ct_series, tmp_path)
    _damage(folder, "missing slice")
    values = {str(ds.get(k, "")) for files in _by_series(folder).values() for _, ds in files
              for k in SYNTH_IDENTIFIER_TAGS}
    text = json.dumps(_source(folder).index().skipped)
    assert not [v for v in values if len(v) >= 4 and v in text]
    assert "copy" not in text and ".dcm" not in text


def test_a_series_that_changes_during_a_job_is_a_fault_and_is_not_cached(ct_series, tmp_path):
    folder = _copy(ct_series, tmp_path)
    source = _source(folder)
    index = source.index()
    files = _files_of_one_series(folder)
    ds = pydicom.dcmread(files[0])
    ref = next(r for r in index.records if r.pseudonym == series_pseudonym(HMAC_KEY, ds.PatientID,
                                                                            ds.SeriesInstanceUID))
    files[3].unlink()  # a slice deleted after indexing
    with pytest.raises(SandboxFault):
        source.load(ref)
    assert source.cache.get(ref.pseudonym) is None
    other = next(r for r in index.records if r is not ref)
    assert source.load(other)["image"].shape == (SLICES, 32, 32)


def test_a_series_with_a_differing_label_or_a_mixed_object_is_skipped(ct_series, tmp_path):
    folder = _copy(ct_series, tmp_path)
    files = _files_of_one_series(folder)
    ds = pydicom.dcmread(files[0])
    block = ds.private_block(0x0019, "RAPHA SYNTH")
    block[0x10].value = str(1 - int(block[0x10].value))
    ds.save_as(files[0])
    assert _source(folder).index().skipped == {volume.LABEL_DIFFERS: 1}
    assert _source(folder, fields=("image",)).index().skipped == {}  # a label not granted is not read
    make_synthetic_dataset(tmp_path / "mf", 1, seed=2, options=SynthOptions(modality="CT", frames=SLICES))
    multi = pydicom.dcmread(next((tmp_path / "mf").iterdir()))
    multi.PatientID, multi.SeriesInstanceUID = ds.PatientID, ds.SeriesInstanceUID
    multi.save_as(folder / "extra.dcm")
    assert volume.MIXED_OBJECTS in _source(folder).index().skipped


def test_a_sample_counts_series_and_never_cuts_one_short(ct_series):
    index = _source(ct_series).index(limit=2)
    assert len(index.records) == 2 and index.skipped == {}


def test_registry_refuses_what_a_series_dataset_cannot_be():
    def entry(records="series", shape=(SLICES, 32, 32), transforms=None, source="dicom-folder"):
        image = {"dtype": "float32", "shape": list(shape), "kind": "feature"}
        if transforms is not None:
            image["transforms"] = transforms
        return {"name": "vol", "source": source, "location": "x", "options": {"records": records},
                "fields": {"image": image}}

    assert parse_dataset(entry()).series_records
    assert parse_dataset(entry(shape=(1, SLICES, 32, 32))).series_records
    cases = [
        (entry(records="study"), "options.records must be one of instance, series"),
        (entry(shape=(32, 32)), "a volume's shape is [slices, rows, columns]"),
        (entry(shape=(2, SLICES, 32, 32)), "a volume's shape is [slices, rows, columns]"),
        (entry(transforms=[{"op": "resize", "interpolation": "area"}, "modality_lut"]), "'modality_lut' must be"),
        (entry(transforms=["modality_lut", {"op": "resize", "interpolation": "area"}, "invert_monochrome1"]),
         "'resize' or 'spacing' is the last transform"),
        (entry(transforms=[{"op": "spacing", "mm": [1, 1], "interpolation": "linear"}]),
         "parameter 'mm' must be a list of three voxel sizes"),
        (entry(transforms=[{"op": "spacing", "mm": [1, 1, "1"], "interpolation": "linear"}]),
         "parameter 'mm' must be a list of three voxel sizes"),
        (entry(transforms=[{"op": "spacing", "mm": [1, 1, 1]}]), "give 'mm' [slice, row, column] and"),
        (entry(transforms=[{"op": "spacing", "mm": [1, 1, 1], "interpolation": "cubic"}]),
         "parameter 'interpolation' must be one of nearest, linear"),
        (entry(records="instance", transforms=[{"op": "spacing", "mm": [1, 1, 1], "interpolation": "linear"}]),
         "'spacing' resamples a volume"),
    ]
    for data, message in cases:
        with pytest.raises(BadInput, match=None) as refused:
            parse_dataset(data)
        assert message in refused.value.diagnostics(), (message, refused.value.diagnostics())


def test_datasets_add_shows_the_series_skip_reasons(ct_series, tmp_path, capsys):
    root = tmp_path / "edge"
    assert edge_cli(["init", str(root)]) == 0
    folder = _copy(ct_series, root / "data")
    _damage(folder, "missing slice")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"fields": {"image": {"dtype": "float32", "shape": [SLICES, 32, 32],
                                                       "kind": "feature", "transforms": ["modality_lut"]}},
                                  "options": {"records": "series"}}))
    capsys.readouterr()
    assert edge_cli(["datasets", "add", "ct", "--path", str(folder), "--schema", str(schema),
                     "--config", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"{SERIES - 1} usable" in out and f"1 {volume.MISSING_SLICE}" in out


def test_the_example_series_schema_reads_a_synthetic_ct_series(tmp_path):
    schema = json.loads((Path(__file__).resolve().parents[2] / "examples" / "schema-ct-series.json").read_text())
    folder = tmp_path / "ct"
    assert edge_cli(["synth", str(folder), "--n", "2", "--modality", "CT", "--size", "64", "--slices", "16",
                     "--shuffle"]) == 0
    dataset = parse_dataset({"name": "ct-series", "location": str(folder), **schema})
    source = DicomFolderSource(folder, dataset, ["image", "finding"], HMAC_KEY)
    index = source.index()
    assert index.skipped == {} and len(index.records) == 2
    image = source.load(index.records[0])["image"]
    assert image.shape == (16, 32, 32) and 0.0 <= image.min() < image.max() <= 1.0


def test_the_series_pseudonym_is_the_documented_hmac():
    import hashlib
    import hmac

    expected = hmac.new(HMAC_KEY, b"series\0MRN1\x001.2.3", hashlib.sha256).digest()
    assert series_pseudonym(HMAC_KEY, "MRN1", "1.2.3") == expected
    assert series_pseudonym(HMAC_KEY, "MRN1", "1.2.3") != record_pseudonym(HMAC_KEY, "MRN1", "1.2.3")
    for key, patient, uid in ((b"short", "MRN1", "1.2.3"), (HMAC_KEY, "", "1.2.3"), (HMAC_KEY, "MRN1", ""),
                              (HMAC_KEY, "MRN1\0", "1.2.3")):
        with pytest.raises(BadInput):
            series_pseudonym(key, patient, uid)


def test_series_of_mixed_sizes_stored_rle_are_all_used_after_a_resize(tmp_path):
    folder = tmp_path / "mixed"
    make_synthetic_dataset(folder, 2, seed=13, options=SynthOptions(modality="CT", slices=4, sizes=((32, 32), (24, 40)),
                                                                    transfer_syntax="rle"))
    assert {pydicom.dcmread(p).file_meta.TransferSyntaxUID for p in folder.iterdir()} == {pydicom.uid.RLELossless}
    exact = _source(folder, slices=4).index()
    assert exact.skipped == {"image size differs from the schema": 1} and len(exact.records) == 1
    resized = _source(folder, slices=4, size=16,
                      transforms=parse_transforms(["modality_lut", {"op": "resize", "interpolation": "area"}], "t"))
    index = resized.index()
    assert index.skipped == {} and len(index.records) == 2
    assert all(resized.load(ref)["image"].shape == (4, 16, 16) for ref in index.records)


def test_an_enhanced_ct_read_as_one_instance_gets_each_frame_its_own_rescale(tmp_path):
    folder = tmp_path / "enhanced"
    make_synthetic_dataset(folder, 2, seed=8, options=SynthOptions(modality="CT", frames=4))
    entry = synthetic_dataset_entry("ct-frames", str(folder), frames=4, transforms=HU)
    source = DicomFolderSource(folder, entry, ["image"], HMAC_KEY)
    index = source.index()
    assert index.skipped == {} and len(index.records) == 2
    for ref in index.records:
        ds = pydicom.dcmread(ref.location)
        image = source.load(ref)["image"]
        for frame, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
            expected = apply_modality_lut(ds.pixel_array[frame], group.PixelValueTransformationSequence[0])
            assert np.abs(image[frame] - expected).max() < 0.5


def test_a_volume_with_only_a_resize_keeps_stored_values_as_an_instance_record_does(ct_series):
    steps = parse_transforms([{"op": "resize", "interpolation": "nearest"}], "t")
    source = _source(ct_series, transforms=steps)
    by_pseudonym = {ref.pseudonym: ref for ref in source.index().records}
    for uid, files in _by_series(ct_series).items():
        image = source.load(by_pseudonym[series_pseudonym(HMAC_KEY, files[0][1].PatientID, uid)])["image"]
        # stored units in slice order, neither scaled to [0, 1] nor rescaled to HU
        assert np.array_equal(image, np.stack([ds.pixel_array for _, ds in files]).astype(np.float32))
