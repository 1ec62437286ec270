"""Declared preprocessing carried out by the broker, checked against pydicom's reference
functions (``apply_modality_lut``, ``apply_voi_lut``) and against reference resizes
(torch's ``interpolate``, and a direct area-overlap sum), through the real folder source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from pydicom.dataset import Dataset as DicomDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from edge_kernel.data.dicom_folder import DicomFolderSource
from edge_kernel.data.registry import parse_dataset
from edge_kernel.data.resize import resize
from edge_kernel.data.synth import CT_INTERCEPT, LABEL_CREATOR, SynthOptions, make_synthetic_dataset

KEY = b"k" * 32
LABELS = {"finding": {"source": "dicom-private", "creator": LABEL_CREATOR, "group": 0x19, "element": 0x10}}


def source(folder: Path, shape: list[int], transforms: list | None) -> DicomFolderSource:
    image = {"dtype": "float32", "shape": shape, "kind": "feature"}
    if transforms is not None:
        image["transforms"] = transforms
    dataset = parse_dataset({"name": "t", "location": str(folder), "labels": LABELS,
                             "fields": {"image": image, "finding": {"dtype": "int64", "shape": [], "kind": "label"}}})
    return DicomFolderSource(folder, dataset, ["image", "finding"], KEY)


def records(src: DicomFolderSource) -> list[tuple[pydicom.Dataset, np.ndarray]]:
    """(the file as pydicom reads it, the image the broker hands over), every record."""
    index = src.index()
    assert index.skipped == {}
    return [(pydicom.dcmread(ref.location), src.load(ref)["image"]) for ref in index.records]


def write(tmp_path: Path, name: str, n: int = 6, seed: int = 5, **options) -> Path:
    folder = tmp_path / name
    make_synthetic_dataset(folder, n, seed=seed, options=SynthOptions(**options))
    return folder


# ---- modality LUT: Hounsfield units ------------------------------------------------------

@pytest.mark.parametrize("syntax", ["explicit", "rle"])
def test_hounsfield_units_match_apply_modality_lut(tmp_path, syntax):
    folder = write(tmp_path, "ct", sizes=((40, 48),), modality="CT", transfer_syntax=syntax)
    found = records(source(folder, [1, 40, 48], ["modality_lut"]))
    for ds, image in found:
        assert ds.RescaleIntercept == CT_INTERCEPT and ds.RescaleSlope == 1
        reference = apply_modality_lut(ds.pixel_array, ds)
        assert image.shape == (1, 40, 48) and image.dtype == np.float32
        assert np.abs(image[0] - reference).max() <= 0.5


def test_synthetic_ct_spans_real_tissue_ranges(tmp_path):
    folder = write(tmp_path, "ct", n=2, sizes=((64, 64),), modality="CT")
    for _, image in records(source(folder, [1, 64, 64], ["modality_lut"])):
        hu = image[0]
        assert abs(np.median(hu[:3, :3]) + 1000) < 30  # air in the corner
        assert abs(np.median(hu[10:13, 24:40]) - 40) < 30  # soft tissue, above the lesion
        assert (hu > 600).sum() >= 10 and ((hu > -150) & (hu < -50)).sum() >= 10  # bone and fat


def test_a_modality_lut_sequence_is_applied_as_pydicom_does(tmp_path):
    folder = write(tmp_path, "lut", n=2)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        item = DicomDataset()
        item.LUTDescriptor, item.ModalityLUTType = [4096, 0, 16], "US"
        item.add_new("LUTData", "US", [int(v) for v in (np.arange(4096) * 3 // 2 + 7)])
        ds.ModalityLUTSequence = [item]
        ds.save_as(path)
    for ds, image in records(source(folder, [1, 32, 32], ["modality_lut"])):
        assert np.array_equal(image[0], apply_modality_lut(ds.pixel_array, ds).astype(np.float32))


# ---- window: apply_voi_lut --------------------------------------------------------------

def voi_reference(ds: pydicom.Dataset) -> np.ndarray:
    """pydicom's window over its own HU, brought onto [0, 1] by its own output range."""
    hu = apply_modality_lut(ds.pixel_array, ds)
    low, high = apply_voi_lut(np.array([-1e9, 1e9]), ds)
    return (apply_voi_lut(hu, ds) - low) / (high - low)


def test_the_headers_window_matches_apply_voi_lut(tmp_path):
    folder = write(tmp_path, "ct", sizes=((32, 32),), modality="CT")
    found = records(source(folder, [1, 32, 32], ["modality_lut", "window"]))
    for ds, image in found:
        assert list(ds.WindowCenter) == [40, -600]  # the first, soft tissue, is the one used
        assert np.abs(image[0] - voi_reference(ds)).max() < 1e-5
    assert 0.0 < float(np.mean([image.mean() for _, image in found])) < 1.0


@pytest.mark.parametrize("center,width,function", [(-600, 1500, "linear"), (40, 80, "linear_exact"),
                                                   (300, 1, "linear"), (40, 350, "sigmoid")])
def test_a_declared_window_matches_apply_voi_lut(tmp_path, center, width, function):
    folder = write(tmp_path, "ct", n=3, sizes=((32, 32),), modality="CT")
    step = {"op": "window", "center": center, "width": width, "function": function}
    for ds, image in records(source(folder, [1, 32, 32], ["modality_lut", step])):
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, function.upper()
        assert np.abs(image[0] - voi_reference(ds)).max() < 1e-5


def test_a_voi_lut_table_in_the_header_is_used_as_apply_voi_lut_does(tmp_path):
    folder = write(tmp_path, "ct", n=2, sizes=((32, 32),), modality="CT")
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        item = DicomDataset()
        item.LUTDescriptor = [2048, 0, 12]  # HU 0 .. 2047 onto 12 bits; below 0 the first entry
        item.add_new("LUTData", "US", [int(v) for v in np.clip((np.arange(2048) - 20) * 8, 0, 4095)])
        ds.VOILUTSequence = [item]
        ds.save_as(path)
    for ds, image in records(source(folder, [1, 32, 32], ["modality_lut", "window"])):
        hu = apply_modality_lut(ds.pixel_array, ds).astype(np.int64)
        assert np.abs(image[0] - apply_voi_lut(hu, ds) / 4095.0).max() < 1e-6


def test_a_record_without_a_window_is_skipped_at_index_time(tmp_path):
    folder = write(tmp_path, "xr", n=4)  # secondary capture: no window in the header
    index = source(folder, [1, 32, 32], ["modality_lut", "window"]).index()
    assert index.records == [] and index.skipped == {"no usable window in the header": 4}


# ---- resize: against reference resizes ----------------------------------------------------

def area_reference(image: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Each output pixel as the overlap-weighted mean of the input pixels it covers."""
    height, width = image.shape
    out = np.zeros((rows, columns))
    for i in range(rows):
        top, bottom = i * height / rows, (i + 1) * height / rows
        for j in range(columns):
            left, right = j * width / columns, (j + 1) * width / columns
            total = 0.0
            for r in range(int(top), min(height, int(np.ceil(bottom)))):
                for c in range(int(left), min(width, int(np.ceil(right)))):
                    total += image[r, c] * (min(bottom, r + 1) - max(top, r)) * (min(right, c + 1) - max(left, c))
            out[i, j] = total / ((bottom - top) * (right - left))
    return out


@pytest.mark.parametrize("shape", [(64, 48), (37, 53), (20, 30), (33, 31), (96, 64)])
@pytest.mark.parametrize("interpolation,mode", [("nearest", "nearest-exact"), ("bilinear", "bilinear")])
def test_resize_matches_torch_interpolate(shape, interpolation, mode):
    image = np.random.default_rng(sum(shape)).random(shape)
    extra = {"align_corners": False} if mode == "bilinear" else {}
    expected = F.interpolate(torch.from_numpy(image)[None, None], size=(32, 24), mode=mode, **extra)[0, 0].numpy()
    assert np.abs(resize(image, (32, 24), interpolation) - expected).max() < 1e-9


@pytest.mark.parametrize("shape,target", [((64, 48), (32, 24)), ((96, 64), (32, 32))])
def test_area_matches_torch_for_whole_number_ratios(shape, target):
    image = np.random.default_rng(1).random(shape)
    expected = F.interpolate(torch.from_numpy(image)[None, None], size=target, mode="area")[0, 0].numpy()
    assert np.abs(resize(image, target, "area") - expected).max() < 1e-9


@pytest.mark.parametrize("shape,target", [((37, 53), (32, 32)), ((20, 30), (32, 32)), ((33, 31), (40, 17))])
def test_area_matches_the_overlap_weighted_mean(shape, target):
    image = np.random.default_rng(2).random(shape)
    assert np.abs(resize(image, target, "area") - area_reference(image, *target)).max() < 1e-9


def test_resize_works_frame_by_frame():
    stack = np.random.default_rng(3).random((3, 40, 50))
    out = resize(stack, (20, 25), "area")
    assert out.shape == (3, 20, 25)
    for frame in range(3):
        assert np.allclose(out[frame], resize(stack[frame], (20, 25), "area"))


def test_mixed_sizes_are_all_brought_to_the_declared_shape(tmp_path):
    folder = write(tmp_path, "mixed", n=6, sizes=((64, 64), (48, 80), (40, 30)))
    assert source(folder, [1, 32, 32], None).index().skipped == {"image size differs from the schema": 6}
    steps = [{"op": "intensity", "scale_to": [0, 1]}, {"op": "resize", "interpolation": "bilinear"}]
    found = records(source(folder, [1, 32, 32], steps))
    assert len(found) == 6 and {ds.pixel_array.shape for ds, _ in found} == {(64, 64), (48, 80), (40, 30)}
    for ds, image in found:
        expected = F.interpolate(torch.from_numpy(ds.pixel_array / 4095.0)[None, None], size=(32, 32),
                                 mode="bilinear", align_corners=False)[0, 0].numpy()
        assert image.shape == (1, 32, 32) and np.abs(image[0] - expected).max() < 1e-6


# ---- MONOCHROME1, default scaling, frames, RLE ----------------------------------------------

def test_monochrome1_is_inverted_to_the_same_image_as_monochrome2(tmp_path):
    mono2 = write(tmp_path, "m2", n=4, seed=9)
    mono1 = write(tmp_path, "m1", n=4, seed=9, photometric="MONOCHROME1")
    steps = [{"op": "intensity", "scale_to": [0, 1]}, "invert_monochrome1"]
    plain, flipped = records(source(mono2, [1, 32, 32], steps)), records(source(mono1, [1, 32, 32], steps))
    for (ds2, image2), (ds1, image1) in zip(plain, flipped, strict=True):
        assert ds1.PhotometricInterpretation == "MONOCHROME1" and ds2.PhotometricInterpretation == "MONOCHROME2"
        assert not np.array_equal(ds1.pixel_array, ds2.pixel_array)
        assert np.array_equal(image1, image2)
        assert np.allclose(image1[0], 1.0 - ds1.pixel_array / 4095.0, atol=1e-6)
    kept = records(source(mono1, [1, 32, 32], steps[:1]))  # not declared: left as stored
    assert np.allclose(kept[0][1][0], kept[0][0].pixel_array / 4095.0, atol=1e-6)


def test_the_documented_default_equals_scaling_then_inversion(tmp_path):
    steps = [{"op": "intensity", "scale_to": [0, 1]}, "invert_monochrome1"]
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        folder = write(tmp_path, photometric, n=3, photometric=photometric)
        default = records(source(folder, [1, 32, 32], None))
        declared = records(source(folder, [1, 32, 32], steps))
        for (_, a), (_, b) in zip(default, declared, strict=True):
            assert np.allclose(a, b, atol=1e-6)


def test_intensity_clips_then_scales(tmp_path):
    folder = write(tmp_path, "ct", n=2, sizes=((32, 32),), modality="CT")
    step = {"op": "intensity", "clip": [-1000, 1000], "scale_to": [-1, 1]}
    for ds, image in records(source(folder, [1, 32, 32], ["modality_lut", step])):
        expected = np.clip(apply_modality_lut(ds.pixel_array, ds), -1000, 1000) / 1000.0
        assert np.abs(image[0] - expected).max() < 1e-6


def test_multi_frame_objects_fill_a_frames_first_shape(tmp_path):
    folder = write(tmp_path, "mf", n=3, frames=4, sizes=((40, 40),), transfer_syntax="rle")
    steps = [{"op": "intensity", "scale_to": [0, 1]}, {"op": "resize", "interpolation": "area"}]
    for ds, image in records(source(folder, [4, 20, 20], steps)):
        assert ds.NumberOfFrames == 4 and ds.pixel_array.shape == (4, 40, 40)
        expected = ds.pixel_array.reshape(4, 20, 2, 20, 2).mean(axis=(2, 4)) / 4095.0
        assert image.shape == (4, 20, 20) and np.abs(image - expected).max() < 1e-6
    assert source(folder, [1, 20, 20], steps).index().skipped == {"frame count differs from the schema": 3}
    assert source(folder, [4, 40, 40], None).index().skipped == {"more than one frame": 3}


def test_rle_records_decode_to_the_same_images(tmp_path):
    steps = [{"op": "intensity", "scale_to": [0, 1]}, {"op": "resize", "interpolation": "nearest"}]
    native = records(source(write(tmp_path, "a", sizes=((48, 40),)), [1, 24, 24], steps))
    rle = records(source(write(tmp_path, "b", sizes=((48, 40),), transfer_syntax="rle"), [1, 24, 24], steps))
    assert str(rle[0][0].file_meta.TransferSyntaxUID) == pydicom.uid.RLELossless
    for (_, a), (_, b) in zip(native, rle, strict=True):
        assert np.array_equal(a, b)


def test_a_header_past_the_pixel_bound_is_skipped(tmp_path, monkeypatch):
    from edge_kernel.data import preprocess

    folder = write(tmp_path, "big", n=2, sizes=((64, 64),))
    monkeypatch.setattr(preprocess, "MAX_PIXELS_PER_RECORD", 64 * 64 - 1)
    steps = [{"op": "resize", "interpolation": "area"}]
    assert source(folder, [1, 32, 32], steps).index().skipped == {"image too large": 2}
