"""Series as records through DICOMweb against a real Orthanc: a CT series uploaded in
shuffled order and an Enhanced CT object are indexed from WADO-RS metadata, fetched in
one WADO-RS series request each, and arrive as the same volumes as from the folder, in
Hounsfield units per slice; a series with a missing slice is skipped with its reason."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pydicom
import pytest
from pydicom.pixels.processing import apply_modality_lut

from edge_kernel.data import volume
from edge_kernel.data.dicom_folder import DicomFolderSource
from edge_kernel.data.dicomweb import DicomWebSource
from edge_kernel.data.pseudonym import series_pseudonym
from edge_kernel.data.synth import SynthOptions, make_synthetic_dataset, synthetic_dataset_entry
from edge_kernel.data.transforms import parse_transforms
from tests.data.orthanc import start_orthanc
from tests.edge.conftest_data import HMAC_KEY

pytestmark = pytest.mark.needs_orthanc
SLICES = 5
HU = parse_transforms(["modality_lut"], "test")


def _studies(folder):
    return sorted({pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in folder.iterdir()})


def test_ct_series_and_enhanced_ct_through_orthanc_match_the_folder(tmp_path):
    series_folder, enhanced_folder = tmp_path / "series", tmp_path / "enhanced"
    make_synthetic_dataset(series_folder, 3, seed=6, options=SynthOptions(modality="CT", slices=SLICES, shuffle=True))
    make_synthetic_dataset(enhanced_folder, 2, seed=9, options=SynthOptions(modality="CT", frames=SLICES,
                                                                            transfer_syntax="rle"))
    orthanc = start_orthanc(tmp_path / "orthanc")
    try:
        for folder in (series_folder, enhanced_folder):
            for path in sorted(folder.iterdir()):  # the shuffled names: not the slice order
                orthanc.upload(path)
        # one more series, its middle slice never stored
        make_synthetic_dataset(tmp_path / "broken", 1, seed=30, options=SynthOptions(modality="CT", slices=SLICES))
        for path in sorted((tmp_path / "broken").iterdir())[:2] + sorted((tmp_path / "broken").iterdir())[3:]:
            orthanc.upload(path)
        studies = _studies(series_folder) + _studies(enhanced_folder) + _studies(tmp_path / "broken")
        entry = synthetic_dataset_entry("pacs-ct", orthanc.dicomweb, slices=SLICES, transforms=HU)
        pacs = DicomWebSource(orthanc.dicomweb, replace(entry, source="dicomweb", options={
            "studies": studies, "records": "series"}), ["image", "finding"], HMAC_KEY)
        index = pacs.index()
        assert index.skipped == {volume.MISSING_SLICE: 1} and len(index.records) == 5
        asked, get = [], pacs.session.get
        pacs.session.get = lambda url, **kw: asked.append(url) or get(url, **kw)  # type: ignore[method-assign]
        from_pacs = {ref.pseudonym: pacs.load(ref) for ref in index.records}
    finally:
        orthanc.stop()
    # one WADO-RS series retrieve per record (two only where the PACS refused to transcode)
    assert len({url for url in asked}) == 5 and all("/instances" not in url for url in asked)
    for folder in (series_folder, enhanced_folder):
        local = DicomFolderSource(folder, replace(entry, location=str(folder)), ["image", "finding"], HMAC_KEY)
        for ref in local.index().records:
            expected = local.load(ref)
            assert np.array_equal(from_pacs[ref.pseudonym]["image"], expected["image"])
            assert from_pacs[ref.pseudonym]["finding"] == expected["finding"]
    # and against pydicom's reference, slice by slice in position order
    files = sorted((pydicom.dcmread(p) for p in series_folder.iterdir()), key=lambda ds: ds.SeriesInstanceUID)
    for uid in {ds.SeriesInstanceUID for ds in files}:
        slices = sorted((ds for ds in files if ds.SeriesInstanceUID == uid),
                        key=lambda ds: float(ds.ImagePositionPatient[2]))
        image = from_pacs[series_pseudonym(HMAC_KEY, slices[0].PatientID, uid)]["image"]
        for depth, ds in enumerate(slices):
            assert np.abs(image[depth] - apply_modality_lut(ds.pixel_array, ds)).max() < 0.5
