"""Chest X-rays of several sizes, as a PACS holds them, used by a real job at a real edge:
`rapha-edge synth --sizes` writes them, `datasets add` declares a resize, every record
arrives in the sandbox with the declared shape, the meter counts them all, and the
receipt names the preprocessing, which `rapha verify` shows."""

from __future__ import annotations

import base64
import json

import pydicom
import pytest

from edge_kernel.cli import main as edge_cli
from edge_kernel.data.registry import DatasetRegistry
from edge_kernel.data.transforms import receipt_entry
from jupyter_rapha.cli import main as rapha_cli
from jupyter_rapha.client import EdgeClient
from tests.harness import complete_job, init_edge, start_edge

pytestmark = pytest.mark.slow

RECORDS = 30  # above the demo policy's minimum cohort
SIZES = {(64, 64), (48, 80), (40, 56)}
SCHEMA = {
    "fields": {"image": {"dtype": "float32", "shape": [1, 32, 32], "kind": "feature",
                         "transforms": [{"op": "intensity", "scale_to": [0, 1]}, "invert_monochrome1",
                                        {"op": "resize", "interpolation": "area"}]},
               "finding": {"dtype": "int64", "shape": [], "kind": "label"}},
    "labels": {"finding": {"source": "dicom-private", "creator": "RAPHA SYNTH", "group": 25, "element": 16}},
}
CELL = """
import torch
seen = 0
for batch in rapha.loader(batch_size=7, shuffle=False):
    image = batch["image"]
    assert tuple(image.shape[1:]) == (1, 32, 32), tuple(image.shape)
    assert image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    seen += int(image.shape[0])
rapha.log(records_seen=float(seen))
rapha.save({"w": torch.zeros(1)})
"""


def test_mixed_size_xrays_are_all_used_after_a_declared_resize(tmp_path, capsys):
    root = tmp_path / "edge"
    key = init_edge(root, records=8)
    folder = root / "data" / "mixed-cxr"
    assert edge_cli(["synth", str(folder), "--n", str(RECORDS), "--seed", "4",
                     "--sizes", ",".join(f"{r}x{c}" for r, c in sorted(SIZES))]) == 0
    assert {pydicom.dcmread(p).pixel_array.shape for p in folder.iterdir()} == SIZES
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    # the demo's dataset name, so the demo policy releases it; now over the mixed folder
    assert edge_cli(["datasets", "add", "synthetic-cxr", "--replace", "--path", "data/mixed-cxr", "--schema",
                     str(tmp_path / "schema.json"), "--sensitivity", "synthetic", "--price", "0.01",
                     "--config", str(root)]) == 0
    assert f"{RECORDS} usable" in capsys.readouterr().out  # the add's own sample read them all
    expected = receipt_entry(DatasetRegistry(root).get("synthetic-cxr").fields)
    edge = start_edge(root)
    try:
        client = EdgeClient(edge.url, key)
        job_id = complete_job(client, key, CELL, fields=("image",), budget=RECORDS, timeout=240)
        receipt, metrics, weights = client.receipt(job_id), client.metrics(job_id), client.weights(job_id)
        public_key = client.edge_info()["public_key"]
    finally:
        edge.stop()
    assert metrics["records_seen"] == [float(RECORDS)]
    dataset = json.loads(base64.b64decode(receipt["envelope"]["payload"]))["predicate"]["dataset"]
    assert dataset["records_used"] == RECORDS and dataset["cohort_size"] == RECORDS and dataset["skipped"] == {}
    assert dataset["preprocessing"] == expected
    assert dataset["preprocessing"]["fields"]["image"][-1] == {"op": "resize", "interpolation": "area"}

    (tmp_path / "receipt.json").write_text(json.dumps(receipt))
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))  # verify checks both against the receipt
    (tmp_path / "weights.safetensors").write_bytes(weights)
    capsys.readouterr()
    assert rapha_cli(["verify", str(tmp_path / "receipt.json"), "--offline", "--edge-key", public_key]) == 0
    out = capsys.readouterr().out
    assert "PASS preprocessing" in out and "image: intensity, invert_monochrome1, resize" in out
    assert expected["sha256"][:16] in out
