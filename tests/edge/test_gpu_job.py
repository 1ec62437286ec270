"""A job on the GPU through run_job: rapha.device is "cuda", the loader feeds the GPU.

Needs a CUDA GPU (``needs_gpu``: skipped elsewhere) and root for the sandbox. The cell
measures how long it waited for batches and how long the GPU took, and logs both; the
test checks that they were measured, not how they compare (figures belong to benchmarks):
the job's metrics are the figures for the note.
"""

from __future__ import annotations

import pytest

from edge_kernel.sandbox.runner import run_job
from edge_kernel.settings import SandboxSettings, Settings
from tests.edge.conftest_data import HMAC_KEY, SYNTH_RECORDS, make_spec

pytestmark = [pytest.mark.slow, pytest.mark.needs_gpu, pytest.mark.needs_root]

GPU_CELL = '''
import time
import torch

assert rapha.device == "cuda", rapha.device
model = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 5, stride=2), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.Linear(16 * 14 * 14, 2)).to(rapha.device)
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
loader = rapha.loader(batch_size=8, shuffle=True, seed=1)
batch_wait = gpu_busy = 0.0
for epoch in range(rapha.epochs):
    batches = iter(loader)
    while True:
        started = time.perf_counter()
        batch = next(batches, None)
        batch_wait += time.perf_counter() - started
        if batch is None:
            break
        started = time.perf_counter()
        image, finding = batch["image"].to(rapha.device), batch["finding"].to(rapha.device)
        loss = torch.nn.functional.cross_entropy(model(image), finding)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        torch.cuda.synchronize()
        gpu_busy += time.perf_counter() - started
rapha.log(on_cuda=1.0, batch_wait_s=batch_wait, gpu_busy_s=gpu_busy)
rapha.save(model.cpu())
'''


def test_a_job_trains_on_the_granted_gpu_fed_by_the_loader(synth_folder, synth_entry, tmp_path):
    settings = Settings(config_dir=tmp_path, edge_id="test-edge", sandbox=SandboxSettings(gpus=(0,)))
    spec = make_spec(GPU_CELL, params={"epochs": 3})
    outcome = run_job(spec, synth_entry, synth_folder, list(spec.fields), HMAC_KEY, tmp_path / "job", settings)
    assert (outcome.status, outcome.error, outcome.fault) == ("completed", None, None)
    assert outcome.metrics["on_cuda"] == [1.0] and outcome.meter.records_used == SYNTH_RECORDS
    wait, busy = outcome.metrics["batch_wait_s"][0], outcome.metrics["gpu_busy_s"][0]
    assert wait >= 0 and busy > 0
    print(f"batches waited {wait:.3f} s, GPU busy {busy:.3f} s: the GPU waited {wait / (wait + busy):.0%} of the loop")
