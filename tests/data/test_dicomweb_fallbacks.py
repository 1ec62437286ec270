"""DICOMweb against a PACS that behaves differently from Orthanc, played by a small HTTP
server on loopback: it ignores QIDO ``offset``, leaves compressed pixel data out of its
metadata, and cannot transcode (406 for uncompressed). The source must still list each
series once, check the compressed record at index time, and fetch it as stored."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

from edge_kernel.data.dicom_folder import DicomFolderSource
from edge_kernel.data.dicomweb import DicomWebSource
from edge_kernel.data.synth import make_synthetic_dataset, synthetic_dataset_entry
from tests.edge.conftest_data import HMAC_KEY


@pytest.fixture()
def odd_pacs(tmp_path):
    make_synthetic_dataset(tmp_path / "dicom", 2, seed=5)
    original = sorted((tmp_path / "dicom").glob("*.dcm"))[0]
    ds = pydicom.dcmread(original)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    stored = (tmp_path / "rle.dcm").read_bytes()
    metadata = ds.to_json_dict(bulk_data_threshold=1 << 30, bulk_data_element_handler=lambda _: "")
    metadata.pop("7FE00010", None)  # left out, as some PACS do for encapsulated pixel data
    study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    series_item = {"0020000D": {"vr": "UI", "Value": [study]}, "0020000E": {"vr": "UI", "Value": [series]}}
    asked: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            path, accept = self.path.split("?")[0], self.headers.get("Accept", "")
            asked.append((path, accept))
            if path == f"/dicom-web/studies/{study}/series":
                self._send(200, "application/dicom+json", json.dumps([series_item]).encode())  # any offset
            elif path == f"/dicom-web/studies/{study}/series/{series}/metadata":
                self._send(200, "application/dicom+json", json.dumps([metadata]).encode())
            elif path.startswith(f"/dicom-web/studies/{study}/series/{series}/instances/"):
                if "transfer-syntax=*" not in accept:
                    self._send(406, "text/plain", b"cannot transcode")
                    return
                body = (b"--frontier\r\nContent-Type: application/dicom\r\n\r\n" + stored + b"\r\n--frontier--\r\n")
                self._send(200, 'multipart/related; type="application/dicom"; boundary=frontier', body)
            else:
                self._send(404, "text/plain", b"")

        def _send(self, status, content_type, body):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web", study, original, asked
    finally:
        server.shutdown()
        server.server_close()


def test_an_odd_pacs_still_gives_each_record_once_checked_and_decoded(odd_pacs):
    url, study, original, asked = odd_pacs
    entry = replace(synthetic_dataset_entry("odd", url), source="dicomweb",
                    options={"studies": [study], "qido_page_size": 1})
    source = DicomWebSource(url, entry, ["image", "finding"], HMAC_KEY)
    index = source.index()
    assert len(index.records) == 1 and index.skipped == {}
    queries = [path for path, _ in asked if path.endswith("/series")]
    assert len(queries) == 2  # the repeated page brought nothing new: the query ended
    fetches = [accept for path, accept in asked if "/instances/" in path]
    assert "1.2.840.10008.1.2.1" in fetches[0] and fetches[1].endswith("transfer-syntax=*")  # native first
    local = DicomFolderSource(original.parent, synthetic_dataset_entry("x", str(original.parent)),
                              ["image", "finding"], HMAC_KEY)
    expected = {local.load(ref)["image"].tobytes() for ref in local.index().records}
    got = source.load(index.records[0])
    assert got["image"].tobytes() in expected and got["image"].dtype == np.float32
