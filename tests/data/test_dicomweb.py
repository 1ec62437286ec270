"""DICOMweb against a real Orthanc: scoped QIDO-RS and WADO-RS retrieval, training through
the PACS with consent applied, and every PACS failure wrapped into one fault."""

from __future__ import annotations

import socket
import threading
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from edge_kernel.data.consent import OptOutList
from edge_kernel.data.dicom_folder import DicomFolderSource
from edge_kernel.data.dicomweb import DicomWebSource
from edge_kernel.data.source import SourceFault
from edge_kernel.data.sources import open_source
from edge_kernel.data.synth import make_synthetic_dataset, synthetic_dataset_entry
from edge_kernel.sandbox.runner import run_job
from edge_kernel.settings import Settings
from tests.data.orthanc import start_orthanc
from tests.edge.conftest_data import HMAC_KEY, header_values, leaked, make_spec

pytestmark = pytest.mark.needs_orthanc
RECORDS = 30


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pacs")
    make_synthetic_dataset(root / "dicom", RECORDS, seed=11)
    orthanc = start_orthanc(root / "orthanc")
    try:
        headers = []
        for path in sorted((root / "dicom").glob("*.dcm")):
            orthanc.upload(path)
            headers.append((path, pydicom.dcmread(path, stop_before_pixels=True)))
        yield orthanc, root / "dicom", headers
    finally:
        orthanc.stop()


def _entry(pacs, studies=(), series=(), **options):
    orthanc, _, _ = pacs
    entry = replace(synthetic_dataset_entry("pacs-cxr", orthanc.dicomweb), source="dicomweb")
    return replace(entry, options={"studies": list(studies), "series": list(series), **options})


def _scope(headers, count):
    """The studies of the first ``count`` patients (each synthetic patient has one study)."""
    studies = sorted({ds.StudyInstanceUID for _, ds in headers})
    return studies[:count]


def test_index_is_scoped_to_the_declared_studies_and_series(pacs):
    _, folder, headers = pacs
    studies = _scope(headers, 5)
    one = next(ds for _, ds in headers if ds.StudyInstanceUID not in studies)
    entry = _entry(pacs, studies=studies, series=[{"study": one.StudyInstanceUID, "series": one.SeriesInstanceUID}])
    index = open_source(entry, entry.location, ["image", "finding"], HMAC_KEY).index()
    expected = {ds.SOPInstanceUID for _, ds in headers
                if ds.StudyInstanceUID in studies or ds.SeriesInstanceUID == one.SeriesInstanceUID}
    assert len(index.records) == len(expected) and index.skipped == {}
    # Same records, same pseudonyms as the files they came from.
    local = DicomFolderSource(folder, synthetic_dataset_entry("x", str(folder)), ["image"], HMAC_KEY).index()
    assert {r.pseudonym for r in index.records} <= {r.pseudonym for r in local.records}


def test_records_fetched_by_wado_rs_equal_the_files(pacs):
    _, folder, headers = pacs
    entry = _entry(pacs, studies=_scope(headers, 3))
    source = DicomWebSource(entry.location, entry, ["image", "finding"], HMAC_KEY)
    local = DicomFolderSource(folder, synthetic_dataset_entry("x", str(folder)), ["image", "finding"], HMAC_KEY)
    by_pseudonym = {ref.pseudonym: ref for ref in local.index().records}
    for ref in source.index().records:
        remote, here = source.load(ref), local.load(by_pseudonym[ref.pseudonym])
        assert remote.keys() == here.keys()
        assert all((remote[k] == here[k]).all() for k in remote)


TRAIN_CELL = '''
import hashlib, torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2))
optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
loader = rapha.loader(batch_size=4, shuffle=True, seed=2)
seen = set()
with open("received.bin", "wb") as dump:
    for epoch in range(rapha.epochs):
        for batch in loader:
            dump.write(batch["image"].numpy().tobytes())
            seen.update(hashlib.sha256(i.numpy().tobytes()).hexdigest() for i in batch["image"])
            loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
            optimiser.zero_grad(); loss.backward(); optimiser.step()
        rapha.log(loss=float(loss))
open("seen.txt", "w").write("\\n".join(sorted(seen)))
rapha.log(unique_seen=len(seen))
rapha.save(model)
'''


def test_training_through_orthanc_with_consent_applied(pacs, tmp_path):
    import hashlib

    _, folder, headers = pacs
    entry = _entry(pacs, studies=sorted({ds.StudyInstanceUID for _, ds in headers}))
    patients = sorted({ds.PatientID for _, ds in headers})
    opted_out = set(patients[:4])
    (tmp_path / "opt-out.txt").write_text("# national opt-out export\n" + "\n".join(sorted(opted_out)) + "\n")
    consent = OptOutList.from_file(tmp_path / "opt-out.txt")
    spec = make_spec(TRAIN_CELL, max_records=RECORDS, params={"epochs": 2})
    workdir = tmp_path / "job"
    settings = Settings(config_dir=tmp_path, edge_id="test-edge")
    outcome = run_job(spec, entry, Path(entry.location), ["image", "finding"], HMAC_KEY, workdir, settings,
                      consent=consent)
    assert outcome.status == "completed", (outcome, (workdir / "stderr.txt").read_text()[-2000:])
    kept = [(p, ds) for p, ds in headers if ds.PatientID not in opted_out]
    assert outcome.meter.records_used == outcome.meter.cohort_size == len(kept) < RECORDS
    assert outcome.meter.consent_excluded == RECORDS - len(kept)
    assert outcome.metrics["unique_seen"] == [len(kept)]
    # No image of an opted-out patient reached model code.
    local = DicomFolderSource(folder, synthetic_dataset_entry("x", str(folder)), ["image"], HMAC_KEY)
    digest = {}
    for ref in local.index().records:
        digest[ref.pseudonym] = hashlib.sha256(local.load(ref)["image"].tobytes()).hexdigest()
    seen = set((workdir / "seen.txt").read_text().split())
    used = {bytes.fromhex(p) for p in outcome.meter.pseudonyms_hex}
    excluded = {hashlib.sha256(local.load(r)["image"].tobytes()).hexdigest()
                for r in local.index().records if r.pseudonym not in used}
    assert len(excluded) == RECORDS - len(kept) and not (seen & excluded)
    assert leaked((workdir / "received.bin").read_bytes(), header_values(folder)) == []


def test_an_unreachable_pacs_is_one_fault(pacs):
    entry = _entry(pacs, studies=["1.2.3"])
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    dead = replace(entry, location=f"http://127.0.0.1:{port}/dicom-web")
    with pytest.raises(SourceFault) as caught:
        open_source(dead, dead.location, ["image"], HMAC_KEY).index()
    assert "1.2.3" not in caught.value.diagnostics() and str(port) not in caught.value.diagnostics()


def test_a_pacs_that_never_answers_times_out_as_a_fault(pacs):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    held = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # accept, never answer
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        entry = _entry(pacs, studies=["1.2.3"], timeout_seconds=0.5)
        slow = replace(entry, location=f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web")
        with pytest.raises(SourceFault):
            open_source(slow, slow.location, ["image"], HMAC_KEY).index()
    finally:
        stop.set()
        listener.close()
        for conn in held:
            conn.close()


def test_an_undeclared_scope_or_a_bad_url_is_refused(pacs):
    with pytest.raises(SourceFault):
        DicomWebSource(_entry(pacs).location, _entry(pacs), ["image"], HMAC_KEY)
    with pytest.raises(SourceFault):
        DicomWebSource("file:///etc", _entry(pacs, studies=["1.2"]), ["image"], HMAC_KEY)
    with pytest.raises(SourceFault):
        DicomWebSource(_entry(pacs).location, _entry(pacs, studies=["1.2/../x"]), ["image"], HMAC_KEY)


def test_an_unknown_study_gives_an_empty_index(pacs):
    entry = _entry(pacs, studies=["1.2.3.4.5.6.7"])
    index = open_source(entry, entry.location, ["image"], HMAC_KEY).index()
    assert index.records == [] and index.skipped == {}


@pytest.fixture(scope="module")
def pacs_extra(tmp_path_factory, pacs):
    """A second PACS: one study split over five series, and records stored compressed
    (RLE Lossless encoded here, JPEG Lossless transcoded by Orthanc itself)."""
    import requests
    from pydicom.uid import RLELossless, generate_uid

    _, folder, _ = pacs
    root = tmp_path_factory.mktemp("pacs-extra")
    orthanc = start_orthanc(root / "orthanc")
    files = sorted(folder.glob("*.dcm"))
    try:
        study = generate_uid()
        for number, path in enumerate(files[:5]):
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, generate_uid(), generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(root / f"series{number}.dcm")
            orthanc.upload(root / f"series{number}.dcm")
        rle = pydicom.dcmread(files[5])
        rle.compress(RLELossless)
        rle.save_as(root / "rle.dcm")
        orthanc.upload(root / "rle.dcm")
        stored = orthanc.upload(files[6])
        jpeg = requests.post(f"{orthanc.url}/instances/{stored['ID']}/modify",
                             json={"Transcode": "1.2.840.10008.1.2.4.70", "Force": True}, timeout=30)
        jpeg.raise_for_status()
        requests.delete(f"{orthanc.url}/instances/{stored['ID']}", timeout=30).raise_for_status()
        (root / "jpeg.dcm").write_bytes(jpeg.content)
        orthanc.upload(root / "jpeg.dcm")
        yield orthanc, study, [files[5], files[6]], [root / "rle.dcm", root / "jpeg.dcm"]
    finally:
        orthanc.stop()


def _extra_entry(orthanc, studies, **options):
    entry = replace(synthetic_dataset_entry("pacs-extra", orthanc.dicomweb), source="dicomweb")
    return replace(entry, options={"studies": list(studies), "series": [], **options})


@pytest.mark.parametrize("page_size", [1, 2, 5, 500])
def test_qido_answers_are_read_page_by_page(pacs_extra, page_size):
    orthanc, study, _, _ = pacs_extra
    entry = _extra_entry(orthanc, [study], qido_page_size=page_size)
    index = DicomWebSource(entry.location, entry, ["image"], HMAC_KEY).index()
    assert len(index.records) == 5 and index.skipped == {}  # all five series, whatever the page


def test_a_bad_page_size_is_refused(pacs_extra):
    orthanc, study, _, _ = pacs_extra
    for bad in (0, -1, True, "10", 10**6):
        with pytest.raises(SourceFault):
            DicomWebSource(orthanc.dicomweb, _extra_entry(orthanc, [study], qido_page_size=bad), ["image"], HMAC_KEY)


def test_records_stored_compressed_arrive_as_the_original_pixels(pacs_extra):
    orthanc, _, originals, compressed = pacs_extra
    syntaxes = {str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID) for path in compressed}
    assert syntaxes == {"1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.70"}  # RLE, JPEG Lossless
    studies = [str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID) for path in compressed]
    entry = _extra_entry(orthanc, studies)
    source = DicomWebSource(entry.location, entry, ["image", "finding"], HMAC_KEY)
    index = source.index()
    assert len(index.records) == 2 and index.skipped == {}
    folder = originals[0].parent
    local = DicomFolderSource(folder, synthetic_dataset_entry("x", str(folder)), ["image", "finding"], HMAC_KEY)
    wanted = {pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in originals}
    expected = {}
    for ref in local.index().records:
        record = local.load(ref)
        expected[record["image"].tobytes()] = record
    for ref in index.records:
        got = source.load(ref)
        assert got["image"].tobytes() in expected  # lossless: the very pixels of the original
    assert len(wanted) == 2
