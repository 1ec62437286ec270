"""A job over a series dataset, through run_job (a real job process and broker): each
batch item is one CT volume, the meter counts one record per series, and no header value
of any slice reaches the job."""

from __future__ import annotations

import json

import pytest

from edge_kernel.data.synth import SynthOptions, make_synthetic_dataset, synthetic_dataset_entry
from edge_kernel.data.transforms import parse_transforms
from edge_kernel.sandbox.runner import run_job
from edge_kernel.settings import Settings
from tests.edge.conftest_data import HMAC_KEY, header_values, leaked, make_spec

pytestmark = pytest.mark.slow
SERIES, SLICES = 6, 4

VOLUME_CELL = '''
import hashlib, json, torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.LazyLinear(2))
loader = rapha.loader(batch_size=4, shuffle=True, seed=3)
seen, shapes = set(), set()
with open("received.bin", "wb") as dump:
    for epoch in range(rapha.epochs):
        for batch in loader:
            dump.write(batch["image"].numpy().tobytes())
            shapes.add(tuple(batch["image"].shape[1:]))
            seen.update(hashlib.sha256(v.numpy().tobytes()).hexdigest() for v in batch["image"])
            loss = torch.nn.functional.cross_entropy(model(batch["image"].unsqueeze(1)), batch["finding"])
            loss.backward()
json.dump(sorted(shapes), open("shapes.json", "w"))
rapha.log(unique_seen=len(seen))
rapha.save(model)
'''


def test_a_job_reads_volumes_and_the_meter_counts_one_record_per_series(tmp_path):
    folder = tmp_path / "dicom"
    make_synthetic_dataset(folder, SERIES, seed=4, options=SynthOptions(modality="CT", slices=SLICES, shuffle=True))
    steps = parse_transforms(["modality_lut", {"op": "window", "center": 40, "width": 400}], "test")
    entry = synthetic_dataset_entry("synth-cxr", str(folder), slices=SLICES, transforms=steps)
    spec = make_spec(VOLUME_CELL, max_records=SERIES, params={"epochs": 2})
    workdir = tmp_path / "job"
    outcome = run_job(spec, entry, folder, ["image", "finding"], HMAC_KEY, workdir,
                      Settings(config_dir=tmp_path, edge_id="test-edge"))
    assert outcome.status == "completed", (outcome, (workdir / "stderr.txt").read_text()[-2000:])
    assert len(list(folder.iterdir())) == SERIES * SLICES
    assert outcome.meter.records_used == outcome.meter.cohort_size == SERIES
    assert len(outcome.meter.pseudonyms_hex) == SERIES
    assert outcome.metrics["unique_seen"] == [SERIES]
    assert json.loads((workdir / "shapes.json").read_text()) == [[SLICES, 32, 32]]
    assert outcome.meter.preprocessing is not None and "sha256" in outcome.meter.preprocessing
    assert leaked((workdir / "received.bin").read_bytes(), header_values(folder)) == []
