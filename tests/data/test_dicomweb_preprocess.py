"""Declared preprocessing over DICOMweb against a real Orthanc: CT of mixed sizes stored
RLE Lossless, checked at index time from WADO-RS metadata, arrives in Hounsfield units,
windowed by the header and resized, the same as from a folder."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pydicom
import pytest

from edge_kernel.data.dicom_folder import DicomFolderSource
from edge_kernel.data.dicomweb import DicomWebSource
from edge_kernel.data.synth import SynthOptions, make_synthetic_dataset, synthetic_dataset_entry
from edge_kernel.data.transforms import parse_transforms
from tests.data.orthanc import start_orthanc
from tests.edge.conftest_data import HMAC_KEY

pytestmark = pytest.mark.needs_orthanc
STEPS = parse_transforms(["modality_lut", "window", {"op": "resize", "interpolation": "area"}], "test")


def test_rle_ct_of_mixed_sizes_through_dicomweb_matches_the_folder(tmp_path):
    folder = tmp_path / "dicom"
    make_synthetic_dataset(folder, 6, seed=12, options=SynthOptions(sizes=((64, 64), (48, 80)), modality="CT",
                                                                    transfer_syntax="rle"))
    orthanc = start_orthanc(tmp_path / "orthanc")
    try:
        for path in sorted(folder.iterdir()):
            orthanc.upload(path)
        studies = sorted({pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in folder.iterdir()})
        entry = synthetic_dataset_entry("pacs-ct", orthanc.dicomweb, transforms=STEPS)
        pacs = DicomWebSource(orthanc.dicomweb, replace(entry, source="dicomweb", options={"studies": studies}),
                              ["image", "finding"], HMAC_KEY)
        index = pacs.index()
        assert index.skipped == {} and len(index.records) == 6
        from_pacs = {ref.pseudonym: pacs.load(ref) for ref in index.records}
    finally:
        orthanc.stop()
    local = DicomFolderSource(folder, replace(entry, location=str(folder)), ["image", "finding"], HMAC_KEY)
    for ref in local.index().records:
        expected = local.load(ref)
        assert from_pacs[ref.pseudonym]["image"].shape == (1, 32, 32)
        assert np.array_equal(from_pacs[ref.pseudonym]["image"], expected["image"])
        assert from_pacs[ref.pseudonym]["finding"] == expected["finding"]
